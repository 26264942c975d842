"""The review feature's part of the running proxy, behind one small interface for the Engine:
learnt adjustments on the hot path, thumbnails of calm/block verdicts, the nightly refit and
the review page on the proxy's own asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from moodgate.config import Settings
from moodgate.policy import Action, Policy, PolicyScheduler, Profile
from moodgate.record.store import read_labels, recent_decisions
from moodgate.review.adjust import LearntProfiles
from moodgate.review.learn import FitReport, PreferenceLearner
from moodgate.review.thumbs import ThumbnailStore, ThumbnailWriter, thumbs_dir

if TYPE_CHECKING:
    from moodgate.pipeline import Verdict
    from moodgate.review.app import ReviewServer

log = logging.getLogger(__name__)

_DISABLED = {"", "off", "none", "no", "false"}


def learner_for(settings: Settings, policy: Callable[[], Policy]) -> PreferenceLearner:
    database = settings.database
    return PreferenceLearner(
        settings.state_dir,
        policy,
        labels=lambda child: read_labels(database, child),
        recent=lambda child, since: recent_decisions(database, child, since, 1_000_000),
    )


class ReviewService:
    def __init__(self, settings: Settings, policy: Callable[[], Policy]) -> None:
        self.settings = settings
        self._policy = policy
        self.learnt = LearntProfiles(settings.state_dir)
        self.thumbnails = (
            ThumbnailWriter(ThumbnailStore(thumbs_dir(settings.state_dir)))
            if settings.review_thumbnails
            else None
        )
        self.server: ReviewServer | None = None

    # -- hot path ----------------------------------------------------------------------
    def adjust(self, profile: Profile) -> Profile:
        return self.learnt.apply(profile)

    def keep(self, body: bytes, verdict: Verdict) -> str:
        """A uid for the decision row; queues thumbnails when the item was calmed or blocked
        (the bytes are only referenced here; decoding happens on the thumbnail thread)."""
        uid = uuid.uuid4().hex
        if self.thumbnails is not None and verdict.action in (Action.CALM, Action.BLOCK):
            after = verdict.body if verdict.action is Action.CALM else None
            self.thumbnails.submit(uid, body, after)
        return uid

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, scheduler: PolicyScheduler) -> None:
        scheduler.add_nightly("preference-refit", self.refit, hour=3, minute=30)
        scheduler.add_nightly("thumbnail-purge", self.purge_thumbnails, hour=3, minute=10)
        listen = (self.settings.review_listen or "").strip()
        if listen.lower() in _DISABLED:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.warning("review page not started: it needs the proxy's running event loop")
            return
        from moodgate.review.app import ReviewServer, make_app, review_context

        context = review_context(
            self.settings.state_dir, self.settings.database,
            lambda: self.learnt.policy(self._policy()), self._policy,
        )  # fmt: skip
        server = ReviewServer(make_app(context), listen)  # ValueError: not a LAN address
        try:
            server.start()
        except OSError as exc:
            # The filter matters more than the page: keep filtering. A warning, not an
            # error: mitmproxy exits on any error logged while it starts.
            log.warning("review page not started on %s: %s", listen, exc)
            return
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.thumbnails is not None:
            self.thumbnails.close()

    # -- nightly -----------------------------------------------------------------------
    def refit(self) -> list[FitReport]:
        reports = learner_for(self.settings, self._policy).refit_all()
        self.learnt.reload()
        return reports

    def purge_thumbnails(self) -> int:
        removed = ThumbnailStore(thumbs_dir(self.settings.state_dir)).purge(
            self.settings.retention_days
        )
        log.info("retention: removed %d thumbnails", removed)
        return removed
