"""One media body in, one verdict out: decode → score → policy decision → pass | calm | block.

Pure and synchronous (bytes and a policy profile in, a Verdict out), so it runs in a worker
thread, in the CLI and in tests alike. The addon only moves bytes between flows and this.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from moodgate.calm import Calmer
from moodgate.emotion import Emotion, Scorer, score
from moodgate.emotion.explicit import ExplicitScorer, with_explicit
from moodgate.media import MediaError, MediaKind, sniff
from moodgate.media.image import (
    ImageInfo,
    ImageLimits,
    decode_full,
    encode_like,
    frames_for_scoring,
    placeholder,
    probe,
)
from moodgate.policy import Action, Decision, Profile


@dataclass
class Verdict:
    """What to do with a body, and why. `body` is None when the original passes untouched."""

    action: Action
    rule: str
    outcome: str  # scored | cached | skipped | host-list | error | timeout
    body: bytes | None = None
    kind: MediaKind | None = None
    info: ImageInfo | None = None
    emotion: Emotion | None = None
    after: Emotion | None = None
    calm_alpha: float | None = None
    calm_reached: bool | None = None
    error: str | None = None
    scorer: str | None = None
    model_width: float | None = None
    precision: str | None = None


@dataclass(frozen=True)
class _Scored:
    info: ImageInfo
    emotion: Emotion
    scorer: str
    model_width: float
    precision: str


class ScoreCache:
    """LRU of scores by body hash: the same logo on every page is decoded and scored once."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, _Scored] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> _Scored | None:
        entry = self.peek(key)
        with self._lock:
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
        return entry

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def peek(self, key: bytes) -> _Scored | None:
        """Like `get`, for a look that may not be used: no hit or miss is counted."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, entry: _Scored) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


# Bodies up to this size are looked up in the score cache on the event loop (hashing 2 MB
# takes about 1 ms); bigger ones always go to a worker.
FAST_PATH_BYTES = 2 * 1024 * 1024


def body_key(data: bytes) -> bytes:
    """The score cache's key: SHA-256 (hardware-accelerated here, twice BLAKE2b's speed)."""
    return hashlib.sha256(data).digest()[:16]


def blocked_body(kind: MediaKind | None, info: ImageInfo | None) -> bytes | None:
    """A same-size, same-format placeholder; a 1×1 one when the size is unknown."""
    if info is not None:
        return placeholder(info)
    if kind is not None and kind.is_image:
        return placeholder(ImageInfo(kind, 1, 1, 1, False))
    return None  # the addon answers 403 instead


class ImagePipeline:
    """Judges image bodies for one scorer; thread-safe."""

    def __init__(
        self,
        scorer: Scorer,
        calmer: Calmer | None = None,
        limits: ImageLimits | None = None,
        cache: ScoreCache | None = None,
        max_frames: int = 4,
        explicit: ExplicitScorer | None = None,
    ) -> None:
        self.scorer = scorer
        # Rates `explicit` for profiles whose rules test it; None: explicit stays unrated.
        self.explicit = explicit
        self.calmer = calmer or Calmer(scorer)
        self.limits = limits or ImageLimits()
        self.cache = cache if cache is not None else ScoreCache()
        self.max_frames = max_frames

    def judge_if_cached(
        self, data: bytes, profile: Profile, host: str, key: bytes | None = None
    ) -> Verdict | None:
        """The verdict without decoding or scoring when a score for these bytes is cached and
        it passes, or when the profile does not inspect images; else None (the caller runs
        `judge`, with the same `key`). Cheap enough for the event loop; `key` is
        `body_key(data)`, computed here when not given."""
        if profile.for_host(host) is not None:
            return None
        kind = sniff(data[:512])
        if kind is None or not kind.is_image:
            return None
        if not profile.inspect.images:
            return self.not_inspected(profile, kind)
        if not self.cache.enabled or len(data) > FAST_PATH_BYTES:
            return None
        if len(data) < profile.inspect.min_bytes:
            return None
        cached = self.cache.peek(key or body_key(data))
        if cached is None or cached.model_width < self.scorer.width:
            return None  # not seen, or scored by a narrower slice than the one running now
        if self._lacks_explicit(cached.emotion, profile.tests_explicit):
            return None
        info = cached.info
        if profile.inspect.too_small(info.width, info.height):
            return None
        decision = profile.decide(cached.emotion)
        if decision.action is not Action.PASS:
            return None  # calming and placeholders are work for a worker
        return self._act(decision, data, cached, "cached")

    def judge(
        self,
        data: bytes,
        profile: Profile,
        host: str,
        claimed_kind: MediaKind | None = None,
        key: bytes | None = None,
    ) -> Verdict:
        """`key`, when given, is `body_key(data)`, already computed by the caller."""
        kind = sniff(data[:512])
        forced = profile.for_host(host)
        try:
            if kind is None or not kind.is_image:
                raise MediaError("not-an-image", "body is not a JPEG, PNG, GIF, WebP or AVIF image")
            if forced is not None:
                return self._apply_forced(forced, data, kind)
            if not profile.inspect.images:
                return self.not_inspected(profile, kind)
            if len(data) < profile.inspect.min_bytes:
                return Verdict(Action.PASS, f"{profile.child}/small", "skipped", kind=kind)
            info = probe(data, self.limits)
            if profile.inspect.too_small(info.width, info.height):
                small = f"{profile.child}/small"
                return Verdict(Action.PASS, small, "skipped", kind=kind, info=info)
            if key is None and self.cache.enabled:
                key = body_key(data)
            scored, outcome = self._score(data, info, key, profile.tests_explicit)
            return self._act(profile.decide(scored.emotion), data, scored, outcome)
        except MediaError as exc:
            return self.fallback(profile, "error", str(exc), kind or claimed_kind, data)

    def fallback(
        self,
        profile: Profile,
        outcome: str,
        error: str,
        kind: MediaKind | None,
        data: bytes | None = None,
    ) -> Verdict:
        """The policy's on_error / on_timeout action, applied without touching the scorer."""
        action = profile.on_timeout if outcome == "timeout" else profile.on_error
        rule = f"{profile.child}/on_{outcome}"
        if action is not Action.BLOCK:
            return Verdict(Action.PASS, rule, outcome, kind=kind, error=error)
        info = None
        if data is not None:
            try:
                info = probe(data, self.limits)
            except MediaError:
                info = None
        body = blocked_body(kind, info)
        return Verdict(Action.BLOCK, rule, outcome, body=body, kind=kind, info=info, error=error)

    @staticmethod
    def not_inspected(profile: Profile, kind: MediaKind | None) -> Verdict:
        """`inspect: {images: false}`: passed unscored, but still on the record."""
        return Verdict(Action.PASS, f"{profile.child}/images-not-inspected", "skipped", kind=kind)

    def _apply_forced(self, decision: Decision, data: bytes, kind: MediaKind) -> Verdict:
        if decision.action is Action.BLOCK:
            info = probe(data, self.limits)
            return Verdict(Action.BLOCK, decision.rule, "host-list", body=placeholder(info),
                           kind=kind, info=info)
        return Verdict(Action.PASS, decision.rule, "host-list", kind=kind)

    def _lacks_explicit(self, emotion: Emotion, wanted: bool) -> bool:
        """A cached score without the explicit rating a profile wants (and could have)."""
        return wanted and self.explicit is not None and emotion.explicit is None

    def _score(
        self, data: bytes, info: ImageInfo, key: bytes | None, rate_explicit: bool = False
    ) -> tuple[_Scored, str]:
        """`key` is None when the cache is off."""
        explicit = self.explicit if rate_explicit else None
        # An adaptive scorer (runtime/) names the slice for this item up front, so the slice
        # recorded is the one that scored, whatever the load switches to meanwhile.
        pick = getattr(self.scorer, "pick", None)
        scorer: Scorer = pick() if pick is not None else self.scorer
        cached = self.cache.get(key) if key is not None else None
        # A score from a narrower slice (taken under load) is redone once a wider one runs.
        if (
            cached is not None
            and cached.model_width >= scorer.width
            and not self._lacks_explicit(cached.emotion, rate_explicit)
        ):
            return cached, "cached"
        explicit_size = explicit.size_for(scorer.width, scorer.input_size) if explicit else 0
        info, frames = frames_for_scoring(
            data, size=max(scorer.input_size, explicit_size), limits=self.limits,
            max_frames=self.max_frames, info=info, square=getattr(scorer, "square_input", False),
        )  # fmt: skip
        emotion = score(scorer, frames)
        timed = getattr(scorer, "timed", None)  # an adaptive slice counts it as model time
        with timed() if timed is not None and explicit is not None else contextlib.nullcontext():
            emotion = with_explicit(emotion, explicit, frames, explicit_size)
        entry = _Scored(info, emotion, scorer.name, scorer.width, scorer.precision)
        if key is not None:
            self.cache.put(key, entry)
        return entry, "scored"

    @staticmethod
    def _too_large_to_calm(verdict: Verdict, decision: Decision, info: ImageInfo) -> Verdict:
        """Too many pixels to decode whole here: calming cannot get anywhere, so the rule's
        if_unreached decides, as for any calm that falls short (keep: the original passes)."""
        verdict.calm_alpha, verdict.calm_reached, verdict.after = 0.0, False, verdict.emotion
        verdict.rule = f"{decision.rule}/too-large-to-calm"
        if decision.if_unreached is Action.BLOCK:
            verdict.action, verdict.body = Action.BLOCK, placeholder(info)
        else:
            verdict.action = Action.PASS
        return verdict

    def _act(self, decision: Decision, data: bytes, scored: _Scored, outcome: str) -> Verdict:
        verdict = Verdict(
            decision.action, decision.rule, outcome, kind=scored.info.kind, info=scored.info,
            emotion=scored.emotion, scorer=scored.scorer, model_width=scored.model_width,
            precision=scored.precision,
        )  # fmt: skip
        if decision.action is Action.BLOCK:
            verdict.body = placeholder(scored.info)
        elif decision.action is Action.CALM and decision.target is not None:
            # The header check refuses an animation over the calm budget before any decoding;
            # the running sum, one whose canvas a GIF frame grew.
            calm_limits = replace(self.limits, max_total_pixels=self.limits.max_calm_pixels)
            try:
                decoded = decode_full(data, calm_limits)
            except MediaError as exc:
                if exc.reason != "too-large":
                    raise
                return self._too_large_to_calm(verdict, decision, scored.info)
            calmed = self.calmer.calm(decoded.frames, decision.target, before=scored.emotion)
            verdict.after = calmed.after
            verdict.calm_alpha = calmed.alpha
            verdict.calm_reached = calmed.reached
            if not calmed.reached and decision.if_unreached is Action.BLOCK:
                verdict.action = Action.BLOCK
                verdict.rule = f"{decision.rule}/unreached"
                verdict.body = placeholder(scored.info)
            else:
                verdict.body = encode_like(decoded, calmed.frames)
        return verdict

