"""The running filter: the stages built from Settings, a bounded worker pool, and the deadline.

The addon hands each media response here as plain data (client, host, path, bytes) and gets a
Verdict back within the deadline, whatever happens in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from moodgate.calm import Calmer, StyleBank
from moodgate.config import Settings
from moodgate.emotion.registry import create_scorer
from moodgate.media import MediaKind
from moodgate.pipeline import ImagePipeline, ScoreCache, Verdict
from moodgate.policy import Client, Policy, PolicyScheduler, PolicyWatcher, Profile
from moodgate.record.store import DecisionRow, DecisionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaResponse:
    """A response the addon decided to inspect, reduced to what the stages need."""

    client: Client
    host: str
    path: str  # already stripped of its query string unless configured otherwise
    content_type: str
    body: bytes
    claimed_kind: MediaKind | None = None


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scorer = create_scorer(
            settings.scorer, settings.model_dir, settings.model_width, settings.precision
        )
        self.pipeline = ImagePipeline(
            self.scorer,
            Calmer(self.scorer, StyleBank.default()),
            cache=ScoreCache(settings.cache_entries),
        )
        self.scheduler = PolicyScheduler()
        self.policy = PolicyWatcher(
            settings.policy,
            on_change=self._policy_changed,
            on_error=lambda error: log.error("policy rejected, the last good one stays: %s", error),
            neighbours=settings.neighbours,
        )
        self.store = DecisionStore(settings.database)
        self.executor = ThreadPoolExecutor(settings.worker_count, thread_name_prefix="moodgate")
        self.in_flight = 0

    def start(self) -> None:
        self.store.start()
        self.policy.start()
        self.scheduler.set_policy(self.policy.current)
        self.scheduler.add_nightly("retention-purge", self.purge)
        self.scheduler.start()
        log.info(
            "moodgate ready: scorer=%s width=%s precision=%s policy=%s db=%s",
            self.scorer.name, self.scorer.width, self.scorer.precision,
            self.settings.policy or "<embedded default>", self.settings.database,
        )  # fmt: skip

    def _policy_changed(self, policy: Policy) -> None:
        log.info("policy reloaded from %s", policy.source)
        self.scheduler.set_policy(policy)

    def purge(self) -> int:
        removed = self.store.purge(self.settings.retention_days)
        log.info("retention: removed %d decisions older than %s days", removed,
                 self.settings.retention_days)
        return removed

    def stop(self) -> None:
        self.scheduler.shutdown()
        self.policy.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def profile(self, client: Client) -> Profile:
        policy: Policy = self.policy.current
        return policy.profile_for(client, datetime.now().astimezone())

    async def judge(self, response: MediaResponse) -> Verdict:
        """The verdict for one body, within the deadline; recorded before returning."""
        start = time.perf_counter()
        profile = self.profile(response.client)
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            future = loop.run_in_executor(
                self.executor,
                self.pipeline.judge,
                response.body,
                profile,
                response.host,
                response.claimed_kind,
            )
            verdict = await asyncio.wait_for(future, self.settings.deadline_ms / 1000.0)
        except TimeoutError:
            verdict = self.pipeline.fallback(
                profile, "timeout", f"no decision within {self.settings.deadline_ms} ms",
                response.claimed_kind,
            )  # fmt: skip
        except Exception as exc:  # a bug in a stage must not break the family's internet
            log.exception("pipeline failed for %s", response.host)
            verdict = self.pipeline.fallback(
                profile, "error", f"internal: {exc}", response.claimed_kind
            )
        finally:
            self.in_flight -= 1
        self.record(response, profile, verdict, (time.perf_counter() - start) * 1000.0)
        return verdict

    def record(
        self, response: MediaResponse, profile: Profile, verdict: Verdict, ms: float
    ) -> None:
        info = verdict.info
        emotion, after = verdict.emotion, verdict.after
        kind = verdict.kind or response.claimed_kind
        self.store.record(
            DecisionRow(
                client=response.client.address,
                child=profile.child,
                host=response.host,
                path=response.path,
                content_type=response.content_type,
                kind=kind.value if kind else "unknown",
                bytes=len(response.body),
                action=verdict.action.value,
                rule=verdict.rule,
                width=info.width if info else None,
                height=info.height if info else None,
                valence=emotion.valence if emotion else None,
                arousal=emotion.arousal if emotion else None,
                explicit=emotion.explicit if emotion else None,
                outcome=verdict.outcome,
                error=verdict.error,
                scorer=verdict.scorer,
                model_width=verdict.model_width,
                precision=verdict.precision,
                window=profile.window,
                calm_alpha=verdict.calm_alpha,
                calm_reached=verdict.calm_reached,
                after_valence=after.valence if after else None,
                after_arousal=after.arousal if after else None,
                ms=round(ms, 2),
            )
        )
