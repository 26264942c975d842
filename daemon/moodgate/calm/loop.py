"""The closed loop: raise the calming strength until the scorer agrees the target is reached.

All searching happens on thumbnails (≤ 256 px) of a few sampled frames; only the chosen
strength is applied at full size, to every frame, with one mapping, so an animation cannot
flicker between differently calmed frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from moodgate.calm.blend import Blend, StyleSelector
from moodgate.calm.colour import measure
from moodgate.calm.styles import StyleBank, thumbnail
from moodgate.calm.transfer import CalmSettings, CalmTransform
from moodgate.emotion.base import Emotion, Scorer, VATarget, score
from moodgate.media.image import sample_indices

SAMPLED_FRAMES = 4
_WORK_MODES = ("RGB", "RGBA")


@dataclass(frozen=True)
class CalmOutcome:
    frames: list[Image.Image]  # same size and mode as the input frames
    alpha: float
    before: Emotion
    after: Emotion
    reached: bool
    styles: tuple[tuple[str, float], ...] = ()  # the blend used: (style name, weight)


@dataclass(frozen=True)
class _Attempt:
    alpha: float
    lut: ImageFilter.Color3DLUT
    after: Emotion


def _work_mode(frame: Image.Image) -> Image.Image:
    if frame.mode in _WORK_MODES:
        return frame
    has_alpha = frame.mode in ("LA", "PA") or "transparency" in frame.info
    return frame.convert("RGBA" if has_alpha else "RGB")


def _restore_mode(frame: Image.Image, mode: str) -> Image.Image:
    if frame.mode == mode:
        return frame
    if mode == "P":
        return frame.convert("RGB").quantize(256) if frame.mode == "RGB" else frame.quantize(256)
    return frame.convert(mode)


def _flatten(frame: Image.Image) -> np.ndarray:
    """RGB for scoring: transparency shown over white, as media.image does for the scorer."""
    if frame.mode == "RGBA":
        canvas = Image.new("RGBA", frame.size, (255, 255, 255, 255))
        canvas.alpha_composite(frame)
        frame = canvas
    return np.asarray(frame.convert("RGB"))


class Calmer:
    """Calms frames toward a VA target, checking each attempt with `scorer`."""

    def __init__(
        self,
        scorer: Scorer,
        styles: StyleBank | None = None,
        max_alpha: float = 1.0,
        steps: int = 4,
        settings: CalmSettings | None = None,
        selector: StyleSelector | None = None,
        margin: float = 0.03,
    ) -> None:
        if not 0.0 < max_alpha <= 1.0:
            raise ValueError("max_alpha must be in (0, 1]")
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.scorer = scorer
        self.styles = styles if styles is not None else StyleBank.default()
        self.max_alpha = max_alpha
        self.steps = steps
        self.settings = settings or CalmSettings()
        self.selector = selector or StyleSelector()
        # The loop judges thumbnails; the full-size, re-encoded result scores a little
        # differently, so it aims this far inside the target to still be inside downstream.
        self.margin = margin

    def calm(
        self,
        frames: Sequence[Image.Image],
        target: VATarget,
        before: Emotion | None = None,
        strength: float | None = None,
    ) -> CalmOutcome:
        """Calm `frames` (one image, or every frame of an animation) toward `target`.

        With `strength`, one shot at that α and no loop. With `before`, the original is not
        re-scored. The result is the first α that reaches the target, else the attempt that
        came closest (reached=False: whether to keep it is the caller's policy).
        """
        if not frames:
            raise ValueError("no frames to calm")
        originals = list(frames)
        work = [_work_mode(f) for f in originals]
        picks = sample_indices(len(work), SAMPLED_FRAMES)
        thumbs = [thumbnail(work[i]) for i in picks]
        if before is None:
            before = score(self.scorer, [_flatten(t) for t in thumbs])
        if strength is None and target.reached(before):
            return CalmOutcome([f.copy() for f in originals], 0.0, before, before, True)
        scale = max(work[0].size) / max(thumbs[0].size)
        image_stats = measure([np.asarray(t) for t in thumbs])
        blend = self.selector.blend(image_stats, target, self.styles.styles)
        transform = CalmTransform(image_stats, blend.stats, self.settings.for_target(target))

        if strength is not None:
            alpha = float(np.clip(strength, 0.0, 1.0))
            lut = transform.lut(alpha)
            after = self._score(transform, thumbs, alpha, lut)
            return self._finish(
                originals, work, transform, alpha, lut, scale, before, after, target, blend
            )

        aim = VATarget(
            None if target.arousal_at_most is None else target.arousal_at_most - self.margin,
            None if target.valence_at_least is None else target.valence_at_least + self.margin,
        )
        best: _Attempt | None = None
        for step in range(1, self.steps + 1):
            alpha = self.max_alpha * step / self.steps
            lut = transform.lut(alpha)
            attempt = _Attempt(alpha, lut, self._score(transform, thumbs, alpha, lut))
            # Strictly better only: on a tie the gentler attempt is kept.
            if best is None or aim.shortfall(attempt.after) < aim.shortfall(best.after):
                best = attempt
            if aim.reached(attempt.after):
                break
        assert best is not None
        return self._finish(
            originals,
            work,
            transform,
            best.alpha,
            best.lut,
            scale,
            before,
            best.after,
            target,
            blend,
        )

    def _score(
        self,
        transform: CalmTransform,
        thumbs: Sequence[Image.Image],
        alpha: float,
        lut: ImageFilter.Color3DLUT,
    ) -> Emotion:
        calmed = [transform.apply_with(t, alpha, lut) for t in thumbs]
        return score(self.scorer, [_flatten(c) for c in calmed])

    def _finish(
        self,
        originals: list[Image.Image],
        work: list[Image.Image],
        transform: CalmTransform,
        alpha: float,
        lut: ImageFilter.Color3DLUT,
        scale: float,
        before: Emotion,
        after: Emotion,
        target: VATarget,
        blend: Blend,
    ) -> CalmOutcome:
        out = [
            _restore_mode(transform.apply_with(w, alpha, lut, scale), o.mode)
            for w, o in zip(work, originals, strict=True)
        ]
        return CalmOutcome(out, alpha, before, after, target.reached(after), blend.weights)
