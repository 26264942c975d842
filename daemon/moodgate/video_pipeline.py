"""One video body in, one verdict out: progressive files and single HLS / DASH segments.

The video counterpart of pipeline.py: sniff → sample frames (media.video) → score → clip
emotion (frames plus motion) → policy decision (with per-stream hysteresis for segments) →
pass untouched | calm (re-encode with one colour mapping for every frame) | block (placeholder).

Stateful where streams need it: fMP4 init segments are remembered per client and stream, and
so is the last treatment of each stream, so one arousing segment is handled consistently.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from moodgate.calm import Calmer, CalmTransform
from moodgate.calm.colour import measure
from moodgate.calm.loop import SAMPLED_FRAMES
from moodgate.calm.styles import thumbnail
from moodgate.emotion import Emotion, Scorer, VATarget
from moodgate.emotion.base import aggregate
from moodgate.emotion.explicit import ExplicitScorer, with_explicit
from moodgate.media import MediaError, MediaKind, segments, sniff, video
from moodgate.media.image import sample_indices
from moodgate.media.video import (
    ColourMapping,
    Deadline,
    Motion,
    SampledClip,
    Sampling,
    VideoInfo,
    VideoLimits,
)
from moodgate.pipeline import Verdict
from moodgate.policy import Action, Decision, Profile

_SEVERITY = {Action.PASS: 0, Action.CALM: 1, Action.BLOCK: 2}


@dataclass
class VideoVerdict(Verdict):
    video: VideoInfo | None = None
    motion: Motion | None = None
    held: bool = False  # the decision came from the stream's memory, not this segment alone


@dataclass(frozen=True)
class VideoRequest:
    """A video body and where it came from: the stream memory and init cache key on these."""

    body: bytes
    client: str  # "address/user": one viewer
    host: str
    path: str
    claimed_kind: MediaKind | None = None

    @property
    def stream(self) -> tuple[str, str, str]:
        """Segments of one rendition share a directory; that is the stream's identity."""
        return (self.client, self.host, str(PurePosixPath(self.path).parent))


def clip_emotion(frames: Sequence[Emotion], motion: Motion) -> Emotion:
    """Per-frame scores (mean valence, 90th-percentile arousal) with motion raising arousal:
    a' = a + (1 − a)·m, so a still clip keeps its colour score and a flashing one nears +1."""
    base = aggregate(frames)
    term = motion.arousal_term
    return Emotion(base.valence, base.arousal + (1.0 - base.arousal) * term, base.explicit)


def frame_target(target: VATarget, motion: Motion) -> VATarget:
    """The arousal the frames must reach so the clip, motion included, lands in `target`."""
    if target.arousal_at_most is None:
        return target
    term = min(motion.arousal_term, 0.99)
    bound = (target.arousal_at_most - term) / (1.0 - term)
    return VATarget(max(-1.0, bound), target.valence_at_least)


class InitCache:
    """fMP4 init segments per client and host, newest first, so media segments can be decoded.

    Several renditions often share one directory (init-0.m4s, init-1.m4s …); a segment is
    matched to the init whose name shares most tokens with its own, then the newest.
    """

    def __init__(self, per_client: int = 16, clients: int = 256, ttl: float = 3600.0) -> None:
        self.per_client = per_client
        self.clients = clients
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, str], list[tuple[str, str, bytes, float]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def put(self, client: str, host: str, path: str, init: bytes) -> None:
        folder, name = _split(path)
        with self._lock:
            entries = self._entries.pop((client, host), [])
            entries = [e for e in entries if (e[0], e[1]) != (folder, name)]
            entries.insert(0, (folder, name, init, time.monotonic()))
            self._entries[(client, host)] = entries[: self.per_client]
            while len(self._entries) > self.clients:
                self._entries.popitem(last=False)

    def find(self, client: str, host: str, path: str) -> bytes | None:
        folder, name = _split(path)
        now = time.monotonic()
        with self._lock:
            entries = [e for e in self._entries.get((client, host), []) if now - e[3] < self.ttl]
        if not entries:
            return None
        tokens = _tokens(name)
        best = max(
            enumerate(entries),
            key=lambda ie: (ie[1][0] == folder, len(tokens & _tokens(ie[1][1])), -ie[0]),
        )
        return best[1][2]


def _split(path: str) -> tuple[str, str]:
    pure = PurePosixPath(path)
    return str(pure.parent), pure.name


_GENERIC = {"init", "mp4", "m4s", "m4v", "m4a", "cmfv", "cmfa", "seg", "segment", "chunk"}


def _tokens(name: str) -> set[str]:
    parts = "".join(c if c.isalnum() else " " for c in name.lower()).split()
    return {p for p in parts if p not in _GENERIC}


@dataclass
class _Held:
    decision: Decision
    remaining: int
    seen: float
    alpha: float | None = None  # the calming strength that set the stream's look


class StreamMemory:
    """Hysteresis per stream: a harsher treatment applies at once; a milder one only after
    `hold` consecutive segments asked for it, so one arousing segment in a calm stream is
    followed by a few consistently treated ones instead of a flicker between looks."""

    def __init__(self, hold: int = 2, ttl: float = 120.0, capacity: int = 1024) -> None:
        self.hold = hold
        self.ttl = ttl
        self.capacity = capacity
        self._streams: OrderedDict[tuple[str, str, str], _Held] = OrderedDict()
        self._lock = threading.Lock()

    def decide(self, stream: tuple[str, str, str], decision: Decision) -> tuple[Decision, bool]:
        now = time.monotonic()
        with self._lock:
            held = self._streams.pop(stream, None)
            if held is not None and now - held.seen > self.ttl:
                held = None
            severity = _SEVERITY[decision.action]
            if held is None or severity >= _SEVERITY[held.decision.action]:
                if severity > 0:
                    self._remember(stream, _Held(decision, self.hold, now))
                return decision, False
            if held.remaining > 0:
                held.remaining -= 1
                held.seen = now
                self._remember(stream, held)
                kept = held.decision
                return replace(kept, rule=f"{kept.rule}/held"), True
            if severity > 0:
                self._remember(stream, _Held(decision, self.hold, now))
            return decision, False

    def alpha(self, stream: tuple[str, str, str]) -> float | None:
        with self._lock:
            held = self._streams.get(stream)
            return held.alpha if held is not None else None

    def set_alpha(self, stream: tuple[str, str, str], alpha: float) -> None:
        with self._lock:
            held = self._streams.get(stream)
            if held is not None:
                held.alpha = alpha

    def _remember(self, stream: tuple[str, str, str], held: _Held) -> None:
        self._streams[stream] = held
        while len(self._streams) > self.capacity:
            self._streams.popitem(last=False)


@dataclass
class CalmPlan:
    """A calming decided on a few sampled frames, applicable to every frame of the clip."""

    alpha: float
    reached: bool
    after: Emotion
    mapping: ColourMapping


class VideoCalmer:
    """Runs the image Calmer's closed loop on sampled frames to choose α and the style blend,
    then rebuilds the same CalmTransform, LUT and softening so each video frame costs one
    blur-mix and one LUT pass (done by FFmpeg's filters, see media.video.ColourMapping)."""

    def __init__(self, calmer: Calmer) -> None:
        self.calmer = calmer

    def plan(
        self,
        frames: Sequence[np.ndarray],
        target: VATarget,
        before: Emotion,
        full_width: int,
        strength: float | None = None,
    ) -> CalmPlan:
        """With `strength`, that α in one shot (a held stream keeps its look); else the loop."""
        picked = [Image.fromarray(frames[i]) for i in sample_indices(len(frames), SAMPLED_FRAMES)]
        outcome = self.calmer.calm(picked, target, before=before, strength=strength)
        thumbs = [thumbnail(p) for p in picked]
        stats = measure([np.asarray(t) for t in thumbs])
        blend = self.calmer.selector.blend(stats, target, self.calmer.styles.styles)
        transform = CalmTransform(stats, blend.stats, self.calmer.settings)
        alpha = outcome.alpha
        lut = transform.lut(alpha)
        # What CalmTransform.apply_with does at full size: σ grows with frame ÷ thumbnail.
        scale = full_width / max(1, thumbs[0].width)
        settings = self.calmer.settings
        mapping = ColourMapping(
            size=settings.lut_size,
            table=tuple(float(v) for v in lut.table),
            blur_sigma=settings.soften_radius * scale,
            blur_amount=alpha * settings.soften,
        )
        return CalmPlan(alpha, outcome.reached, outcome.after, mapping)


@dataclass
class VideoSettings:
    sampling: Sampling = field(default_factory=Sampling)
    limits: VideoLimits = field(default_factory=VideoLimits)
    hold_segments: int = 2


class VideoPipeline:
    """Judges video bodies for one scorer; thread-safe (its caches lock themselves)."""

    def __init__(
        self,
        scorer: Scorer,
        calmer: Calmer | None = None,
        settings: VideoSettings | None = None,
        explicit: ExplicitScorer | None = None,
    ) -> None:
        self.scorer = scorer
        self.explicit = explicit  # rates `explicit` for profiles whose rules test it
        self.settings = settings or VideoSettings()
        self.calmer = VideoCalmer(calmer or Calmer(scorer))
        self.inits = InitCache()
        self.memory = StreamMemory(hold=self.settings.hold_segments)
        # Video is scored on the slice chosen at start; explicit steps with it.
        self.explicit_size = explicit.size_for(scorer.width, scorer.input_size) if explicit else 0
        size = max(scorer.input_size, self.explicit_size, 64)
        self.sampling = replace(self.settings.sampling, size=size)

    @staticmethod
    def kind_of(body: bytes, claimed: MediaKind | None) -> MediaKind | None:
        kind = sniff(body[:512])
        if kind is not None:
            return kind if kind.is_video else None
        return claimed if claimed is not None and claimed.is_video else None

    def judge(
        self, request: VideoRequest, profile: Profile, budget: float | None = None
    ) -> VideoVerdict:
        deadline = Deadline(budget)
        kind = self.kind_of(request.body, request.claimed_kind)
        init: bytes | None = None
        try:
            if kind is None:
                raise MediaError("not-a-video", "body is not MP4, WebM or MPEG-TS video")
            if kind is MediaKind.MP4 and segments.is_init_segment(request.body):
                self.inits.put(request.client, request.host, request.path, request.body)
                return VideoVerdict(Action.PASS, f"{profile.child}/init-segment", "skipped",
                                    kind=kind)
            segment = self._is_segment(request.body, kind)
            if kind is MediaKind.MP4 and segment:
                init = self.inits.find(request.client, request.host, request.path)
                if init is None:
                    raise MediaError("no-init", "fMP4 segment before its init segment")
            forced = profile.for_host(request.host)
            if forced is not None:
                return self._forced(forced, request.body, kind, init, segment, deadline)
            if not profile.inspect.video:
                return VideoVerdict(Action.PASS, f"{profile.child}/video-not-inspected",
                                    "skipped", kind=kind)
            clip = video.sample(request.body, kind, self.sampling, self.settings.limits,
                                init=init, deadline=deadline)
            emotion = clip_emotion(self.scorer.score_frames(clip.frames), clip.motion)
            if profile.tests_explicit:
                emotion = with_explicit(emotion, self.explicit, clip.frames, self.explicit_size)
            decision, held = profile.decide(emotion), False
            if segment:
                decision, held = self.memory.decide(request.stream, decision)
            verdict = self._act(decision, held, request.body, kind, init, segment, clip,
                                emotion, deadline,
                                self.memory.alpha(request.stream) if held else None)
            if segment and not held and verdict.calm_alpha is not None:
                self.memory.set_alpha(request.stream, verdict.calm_alpha)
            return verdict
        except MediaError as exc:
            return self.fallback(profile, "error", str(exc), kind, request, deadline)

    @staticmethod
    def _is_segment(body: bytes, kind: MediaKind) -> bool:
        """HLS TS segments and fMP4 media segments; everything else is a progressive file."""
        if kind is MediaKind.MPEGTS:
            return True
        return kind is MediaKind.MP4 and segments.is_media_segment(body)

    def _forced(
        self, decision: Decision, body: bytes, kind: MediaKind, init: bytes | None,
        segment: bool, deadline: Deadline,
    ) -> VideoVerdict:  # fmt: skip
        if decision.action is not Action.BLOCK:
            return VideoVerdict(Action.PASS, decision.rule, "host-list", kind=kind)
        blocked = self._placeholder(body, kind, init, segment, deadline)
        return VideoVerdict(Action.BLOCK, decision.rule, "host-list", body=blocked, kind=kind)

    def _placeholder(
        self, body: bytes, kind: MediaKind, init: bytes | None, segment: bool, deadline: Deadline
    ) -> bytes:
        limits = self.settings.limits
        if segment:
            return video.placeholder_segment(body, kind, init, limits, deadline)
        return video.placeholder_clip(video.probe(body, kind, limits), limits=limits)

    def _act(
        self, decision: Decision, held: bool, body: bytes, kind: MediaKind, init: bytes | None,
        segment: bool, clip: SampledClip, emotion: Emotion, deadline: Deadline,
        strength: float | None = None,
    ) -> VideoVerdict:  # fmt: skip
        scorer = self.scorer
        verdict = VideoVerdict(
            decision.action, decision.rule, "scored", kind=kind, emotion=emotion,
            scorer=scorer.name, model_width=scorer.width, precision=scorer.precision,
            video=clip.info, motion=clip.motion, held=held,
        )  # fmt: skip
        if decision.action is Action.BLOCK:
            verdict.body = self._placeholder(body, kind, init, segment, deadline)
        elif decision.action is Action.CALM and decision.target is not None:
            frames_before = aggregate(scorer.score_frames(clip.frames))
            plan = self.calmer.plan(clip.frames, frame_target(decision.target, clip.motion),
                                    frames_before, clip.info.width, strength)
            # Colour is calmed by the mapping; flashes, if any, by FFmpeg's photosensitivity
            # filter. Other motion stays, so the clip keeps the rest of its motion term.
            mapping = replace(plan.mapping, reduce_flashes=clip.motion.flash_rate > 0.0)
            calmed, motion = None, clip.motion
            if plan.alpha > 0.0 or mapping.reduce_flashes:
                calmed = video.recode(body, kind, mapping, init=init,
                                      limits=self.settings.limits, deadline=deadline)
                if mapping.reduce_flashes:  # measured on the output, not assumed gone
                    motion = video.sample(calmed, kind, self.sampling, self.settings.limits,
                                          init=init, deadline=deadline).motion
            verdict.after = clip_emotion([plan.after], motion)
            verdict.calm_alpha = plan.alpha
            verdict.calm_reached = decision.target.reached(verdict.after)
            if not verdict.calm_reached and decision.if_unreached is Action.BLOCK:
                verdict.action = Action.BLOCK
                verdict.rule = f"{decision.rule}/unreached"
                verdict.body = self._placeholder(body, kind, init, segment, deadline)
            else:
                verdict.body = calmed
        return verdict

    def fallback(
        self,
        profile: Profile,
        outcome: str,
        error: str,
        kind: MediaKind | None,
        request: VideoRequest | None = None,
        deadline: Deadline | None = None,
    ) -> VideoVerdict:
        """The policy's on_error / on_timeout action. Blocking a segment still tries for a
        placeholder, so playback continues; when even that is impossible the addon sends 403."""
        action = profile.on_timeout if outcome == "timeout" else profile.on_error
        rule = f"{profile.child}/on_{outcome}"
        if action is not Action.BLOCK:
            return VideoVerdict(Action.PASS, rule, outcome, kind=kind, error=error)
        body = None
        if request is not None and kind is not None:
            try:
                segment = self._is_segment(request.body, kind)
                init = (
                    self.inits.find(request.client, request.host, request.path)
                    if kind is MediaKind.MP4 and segment else None
                )  # fmt: skip
                if not (kind is MediaKind.MP4 and segment and init is None):
                    body = self._placeholder(request.body, kind, init, segment,
                                             deadline or Deadline(2.0))
            except (MediaError, TimeoutError):
                body = None
        return VideoVerdict(Action.BLOCK, rule, outcome, body=body, kind=kind, error=error)
