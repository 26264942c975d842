"""The Scorer interface: RGB frames in, valence and arousal in −1…+1 out.

Every scorer (the hand-crafted baseline, each nested ONNX slice) implements this, so the
addon, the calm loop and the CLI never care which one is in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Emotion:
    """A point on the valence–arousal circumplex; both axes are clipped to −1…+1."""

    valence: float
    arousal: float
    explicit: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "valence", float(np.clip(self.valence, -1.0, 1.0)))
        object.__setattr__(self, "arousal", float(np.clip(self.arousal, -1.0, 1.0)))


@dataclass(frozen=True)
class VATarget:
    """A region a calmed item should land in: arousal at most A and/or valence at least V."""

    arousal_at_most: float | None = None
    valence_at_least: float | None = None

    def reached(self, emotion: Emotion) -> bool:
        if self.arousal_at_most is not None and emotion.arousal > self.arousal_at_most:
            return False
        return not (self.valence_at_least is not None and emotion.valence < self.valence_at_least)

    def shortfall(self, emotion: Emotion) -> float:
        """How far outside the region the emotion lies (0 when inside); used to rank attempts."""
        gap = 0.0
        if self.arousal_at_most is not None:
            gap += max(0.0, emotion.arousal - self.arousal_at_most)
        if self.valence_at_least is not None:
            gap += max(0.0, self.valence_at_least - emotion.valence)
        return gap


@runtime_checkable
class Scorer(Protocol):
    """Scores RGB uint8 frames (H×W×3). Frames may be any size; scorers resize themselves."""

    name: str
    width: float  # fraction of the full model's MFLOPs this slice costs (1.0 = full)
    precision: str  # "fp32", "int8", or "n/a" for the heuristic
    input_size: int  # the side length the scorer wants; decoders aim for ≥ this

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        """One Emotion per frame."""
        ...


def aggregate(emotions: Sequence[Emotion], arousal_quantile: float = 0.9) -> Emotion:
    """Collapse per-frame scores into one: mean valence, a high quantile of arousal.

    A single violent frame in an animation should dominate arousal, while valence is the
    overall tone, hence the asymmetry.
    """
    if not emotions:
        raise ValueError("no frames to aggregate")
    if len(emotions) == 1:
        return emotions[0]
    valence = float(np.mean([e.valence for e in emotions]))
    arousal = float(np.quantile([e.arousal for e in emotions], arousal_quantile))
    explicit_values = [e.explicit for e in emotions if e.explicit is not None]
    explicit = float(max(explicit_values)) if explicit_values else None
    return Emotion(valence, arousal, explicit)


def score(scorer: Scorer, frames: Sequence[np.ndarray]) -> Emotion:
    """Score several frames (an animation's samples) as one item."""
    return aggregate(scorer.score_frames(frames))
