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
from moodgate.judged_copies import JudgedCopies
from moodgate.media import SNIFF_BYTES, MediaKind, sniff
from moodgate.media.inline import InlineImage, find_inline_images, replace_inline_images
from moodgate.media.video import Sampling
from moodgate.pinning import PINNED_APPS_FILE, PinnedHosts
from moodgate.pipeline import FAST_PATH_BYTES, ImagePipeline, ScoreCache, Verdict, body_key
from moodgate.policy import Action, Client, Policy, PolicyScheduler, PolicyWatcher, Profile
from moodgate.record.store import DecisionRow, DecisionStore
from moodgate.review.service import ReviewService
from moodgate.runtime import AdaptiveScorer, build_scorer
from moodgate.runtime.build import build_explicit
from moodgate.runtime.lag import LoopLag
from moodgate.service import kv_line
from moodgate.video_pipeline import VideoPipeline, VideoRequest, VideoSettings, VideoVerdict

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
        # Adaptive over every slice when the model is there (runtime/); in_flight is read
        # when a worker picks a slice, so it needs the engine's live counter.
        self.explicit = build_explicit(settings)
        self.scorer = build_scorer(
            settings, in_flight=lambda: self.in_flight, explicit=self.explicit.scorer
        )
        self.adaptive = self.scorer if isinstance(self.scorer, AdaptiveScorer) else None
        self.pipeline = ImagePipeline(
            self.scorer,
            Calmer(self.scorer, StyleBank.default()),
            cache=ScoreCache(settings.cache_entries),
            explicit=self.explicit.scorer,
        )
        self.video = VideoPipeline(
            self.scorer, self.pipeline.calmer, video_settings(settings), self.explicit.scorer
        )
        self.copies = JudgedCopies(settings.video_copies_mb * 1024 * 1024)
        self.lag = LoopLag()
        self.pinned = PinnedHosts(path=settings.state_dir / PINNED_APPS_FILE)
        self.scheduler = PolicyScheduler()
        self.policy = PolicyWatcher(
            settings.policy,
            on_change=self._policy_changed,
            on_error=lambda error: log.error("policy rejected, the last good one stays: %s", error),
            neighbours=settings.neighbours,
        )
        self.store = DecisionStore(settings.database)
        # Learnt rule adjustments, thumbnails and the parents' review page.
        self.review = ReviewService(settings, lambda: self.policy.current)
        self.executor = ThreadPoolExecutor(settings.worker_count, thread_name_prefix="moodgate")
        # Video bodies take seconds; their own, smaller pool keeps images from queueing behind
        # a re-encode (a player fetches a stream's segments one after another anyway).
        self.video_executor = ThreadPoolExecutor(
            max(1, settings.worker_count // 2), thread_name_prefix="moodgate-video"
        )
        self.in_flight = 0
        self.decided = 0
        # "auto" that ended up heuristic means the model was missing or corrupt: flag it.
        self.scorer_fallback = settings.scorer == "auto" and self.scorer.name == "heuristic"

    def start(self) -> None:
        """From mitmproxy's event loop (the `running` hook)."""
        if self.adaptive is not None and self.adaptive.shed_overload:
            self.lag.start()
        self.store.start()
        self.policy.start()
        self.scheduler.set_policy(self.policy.current)
        self.scheduler.add_nightly("retention-purge", self.purge)
        self.review.start(self.scheduler)
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
        self.lag.stop()
        self.review.stop()
        self.scheduler.shutdown()
        self.policy.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.video_executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def profile(self, client: Client) -> Profile:
        policy: Policy = self.policy.current
        return self.review.adjust(policy.profile_for(client, datetime.now().astimezone()))

    def _work(
        self,
        body: bytes,
        profile: Profile,
        host: str,
        claimed: MediaKind | None,
        key: bytes | None = None,
    ) -> Verdict:
        """In a worker: judge, and tell the adaptive scorer how long a scored item took."""
        start = time.perf_counter()
        verdict = self.pipeline.judge(body, profile, host, claimed, key)
        if self.adaptive is not None:
            self.adaptive.observe(verdict, (time.perf_counter() - start) * 1000.0)
        return verdict

    async def judge(self, response: MediaResponse) -> Verdict:
        """The verdict for one body, within the deadline; recorded before returning."""
        if VideoPipeline.kind_of(response.body, response.claimed_kind) is not None:
            return await self.judge_video(response)
        start = time.perf_counter()
        profile = self.profile(response.client)
        body = response.body
        # Hashed once, here, when the cache can use it; the worker gets the same key.
        cache = self.pipeline.cache
        key = body_key(body) if cache.enabled and len(body) <= FAST_PATH_BYTES else None
        cached = self.pipeline.judge_if_cached(body, profile, response.host, key)
        if cached is not None:  # a known image that passes: no worker, no queue
            uid = self.review.keep(response.body, cached)
            self.record(response, profile, cached, (time.perf_counter() - start) * 1000.0, uid)
            return cached
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            shedding = self.adaptive if self.adaptive and self.adaptive.shed_overload else None
            if shedding is not None and shedding.shed(self.in_flight, self.lag.lag_ms):
                raise TimeoutError("shed: the narrowest slice would miss the latency budget, "
                                   "or the event loop runs late")  # fmt: skip
            expected = shedding.expected_ms(self.in_flight) if shedding is not None else 0.0
            admitted = time.perf_counter()
            future = loop.run_in_executor(
                self.executor, self._work, body, profile, response.host, response.claimed_kind, key
            )
            verdict = await asyncio.wait_for(future, self.settings.deadline_ms / 1000.0)
            if shedding is not None and verdict.outcome == "scored":
                # How long it really took teaches the shedding what its prediction misses.
                shedding.waited(expected, (time.perf_counter() - admitted) * 1000.0)
        except TimeoutError as exc:
            reason = str(exc) or f"no decision within {self.settings.deadline_ms} ms"
            verdict = self.pipeline.fallback(profile, "timeout", reason, response.claimed_kind)
        except Exception as exc:  # a bug in a stage must not break the family's internet
            log.exception("pipeline failed for %s", response.host)
            verdict = self.pipeline.fallback(
                profile, "error", f"internal: {exc}", response.claimed_kind
            )
        finally:
            self.in_flight -= 1
        uid = self.review.keep(response.body, verdict)
        self.record(response, profile, verdict, (time.perf_counter() - start) * 1000.0, uid)
        return verdict

    async def judge_video(self, response: MediaResponse) -> Verdict:
        """Video has its own, longer budget; the worker also stops itself when it is spent."""
        start = time.perf_counter()
        profile = self.profile(response.client)
        client = response.client.viewer
        request = VideoRequest(response.body, client, response.host, response.path,
                               response.claimed_kind)
        budget = self.settings.video_deadline_ms / 1000.0
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            submitted = time.monotonic()

            def work() -> Verdict:
                # Time spent queued for the video worker counts against the same budget.
                return self.video.judge(request, profile, budget - (time.monotonic() - submitted))

            future = loop.run_in_executor(self.video_executor, work)
            verdict: Verdict = await asyncio.wait_for(future, budget + 0.5)
        except TimeoutError:
            verdict = await self._video_fallback(
                profile, "timeout", f"no decision within {self.settings.video_deadline_ms} ms",
                request,
            )  # fmt: skip
        except Exception as exc:  # a bug in a stage must not break the family's internet
            log.exception("video pipeline failed for %s", response.host)
            verdict = await self._video_fallback(profile, "error", f"internal: {exc}", request)
        finally:
            self.in_flight -= 1
        uid = self.review.keep(response.body, verdict)
        self.record(response, profile, verdict, (time.perf_counter() - start) * 1000.0, uid)
        return verdict

    async def _video_fallback(
        self, profile: Profile, outcome: str, error: str, request: VideoRequest
    ) -> Verdict:
        """on_timeout / on_error; a blocking fallback builds its placeholder off the loop."""
        kind = VideoPipeline.kind_of(request.body, request.claimed_kind)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(
                self.video_executor, self.video.fallback, profile, outcome, error, kind, request
            )
            return await asyncio.wait_for(future, 3.0)
        except Exception:  # no placeholder in time: the same action without one (403 or pass)
            return self.video.fallback(profile, outcome, error, kind)

    async def judge_inline(self, response: MediaResponse) -> bytes | None:
        """Judge the images inlined as `data:` URIs in a page, script, stylesheet or SVG; the
        new text when any was calmed or blocked, else None. One row per inlined image."""
        start = time.perf_counter()
        profile = self.profile(response.client)
        if not profile.inspect.images or profile.for_host(response.host) is not None:
            return None  # a listed host's page is its own decision: images inside it too
        budget = self.settings.deadline_ms / 1000.0
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            future = loop.run_in_executor(
                self.executor, self._inline_work, response.body, profile, response.host,
                time.monotonic() + budget,
            )  # fmt: skip
            text, judged = await asyncio.wait_for(future, budget + 2.0)
        except Exception as exc:  # incl. the safety-net timeout: the page itself stays
            log.warning("inline images in %s%s not judged: %s", response.host, response.path,
                        exc or type(exc).__name__)  # fmt: skip
            return None
        finally:
            self.in_flight -= 1
        ms = (time.perf_counter() - start) * 1000.0 / max(1, len(judged))
        for index, (image, verdict) in enumerate(judged):
            inline = MediaResponse(
                client=response.client, host=response.host,
                path=f"{response.path}#inline-{index + 1}",
                content_type=f"{verdict.kind.mime if verdict.kind else 'image'} (inline)",
                body=image.data,
            )  # fmt: skip
            self.record(inline, profile, verdict, ms, self.review.keep(image.data, verdict))
        return text

    def _inline_work(
        self, text: bytes, profile: Profile, host: str, deadline: float
    ) -> tuple[bytes | None, list[tuple[InlineImage, Verdict]]]:
        """In a worker: each inlined image judged like a fetched one, until the deadline;
        the rest get on_timeout."""
        judged: list[tuple[InlineImage, Verdict]] = []
        for image in find_inline_images(text, profile.inspect.min_bytes):
            if time.monotonic() < deadline:
                verdict = self.pipeline.judge(image.data, profile, host)
            else:
                verdict = self.pipeline.fallback(
                    profile, "timeout", f"no decision within {self.settings.deadline_ms} ms",
                    sniff(image.data[:SNIFF_BYTES]), image.data,
                )  # fmt: skip
            if verdict.outcome != "error" or verdict.action is not Action.PASS:
                judged.append((image, verdict))  # not-an-image payloads are not news
        changed = {image: v.body for image, v in judged if v.body is not None}
        return (replace_inline_images(text, changed) if changed else None), judged

    def judge_unreadable(self, response: MediaResponse, reason: str) -> Verdict:
        """An image that cannot be scored (a 206 fragment, a format no decoder here reads):
        the host lists, then on_error. No placeholder: a blocked one is answered 403 (a
        placeholder would not fit a fragment's Content-Range, nor a format not made here)."""
        profile = self.profile(response.client)
        forced = profile.for_host(response.host)
        kind = response.claimed_kind
        if forced is not None:
            verdict = Verdict(forced.action, forced.rule, "host-list", kind=kind)
        elif not profile.inspect.images:
            verdict = ImagePipeline.not_inspected(profile, kind)
        else:
            verdict = self.pipeline.fallback(profile, "error", reason, None)
            verdict.kind = kind
        self.record(response, profile, verdict, 0.0)
        return verdict

    def judge_unbuffered(
        self, response: MediaResponse, reason: str, passed: str = "streamed"
    ) -> Verdict:
        """Media that is not buffered, so never judged: video too large, of unknown size, or
        not inspected; a picture over max_image_bytes. Passed (streamed through, or held but
        not read: `passed` names the outcome) or, by the policy's on_too_large, blocked."""
        profile = self.profile(response.client)
        rule = f"{profile.child}/{reason}"
        kind = response.claimed_kind
        made = VideoVerdict if kind is None or kind.is_video else Verdict
        if reason != "video-not-inspected" and profile.too_large_action is Action.BLOCK:
            verdict = made(Action.BLOCK, rule, "too-large", kind=kind)
        else:
            verdict = made(Action.PASS, rule, passed, kind=kind)
        self.record(response, profile, verdict, 0.0)
        return verdict

    def record(
        self,
        response: MediaResponse,
        profile: Profile,
        verdict: Verdict,
        ms: float,
        uid: str | None = None,
    ) -> None:
        info = verdict.info or (verdict.video if isinstance(verdict, VideoVerdict) else None)
        emotion, after = verdict.emotion, verdict.after
        kind = verdict.kind or response.claimed_kind
        self.decided += 1
        # One key=value line per decision for the journal; the path stays in the database.
        log.info(kv_line(
            "decision", child=profile.child, action=verdict.action.value, rule=verdict.rule,
            outcome=verdict.outcome, host=response.host, kind=kind.value if kind else None,
            ms=round(ms, 1),
        ))  # fmt: skip
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
                uid=uid,
            )
        )


def video_settings(settings: Settings) -> VideoSettings:
    sampling = Sampling(fps=settings.video_sample_fps, max_frames=settings.video_max_frames)
    return VideoSettings(sampling=sampling, hold_segments=settings.video_hold_segments)
