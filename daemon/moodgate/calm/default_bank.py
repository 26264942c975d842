"""Derive the shipped style bank from the calmest, most pleasant OASIS training images.

Human ratings choose the images (they define what calm and pleasant means); the scorer gives
each its predicted VA, because style selection compares styles with the scorer's targets.
Only validation-free training images are used (the project's fixed split), and only numbers
are written out, never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodgate.calm.styles import Style, StyleBank, summarise_bytes
from moodgate.emotion.base import Emotion, Scorer
from moodgate.emotion.datasets import Sample, load_oasis, split


@dataclass(frozen=True)
class DefaultBankBuilder:
    count: int = 24
    min_valence: float = 0.25  # rated, −1…+1
    max_arousal: float = -0.2  # rated, −1…+1

    def choose(self, samples: list[Sample]) -> list[Sample]:
        calm = [
            s for s in samples if s.valence >= self.min_valence and s.arousal <= self.max_arousal
        ]
        calm.sort(key=lambda s: (s.arousal - s.valence, str(s.path)))
        return calm[: self.count]

    def build(self, oasis_dir: Path, scorer: Scorer) -> tuple[StyleBank, dict[str, object]]:
        train, _ = split(load_oasis(Path(oasis_dir)))
        chosen = self.choose(train)
        if not chosen:
            raise ValueError(f"{oasis_dir}: no calm, pleasant training images found")
        styles = []
        for sample in chosen:
            emotion, stats = summarise_bytes(sample.path.read_bytes(), scorer)
            styles.append(
                Style(
                    name=f"oasis:{sample.path.stem}",
                    emotion=emotion,
                    stats=stats,
                    source=f"oasis:{sample.path.stem}",
                    rated=Emotion(sample.valence, sample.arousal),
                )
            )
        bank = StyleBank(styles=styles, scorer=scorer.name)
        return bank, {"derived_from": self._provenance(train, chosen)}

    def _provenance(self, train: list[Sample], chosen: list[Sample]) -> dict[str, object]:
        """Where the calm images sit in colour relative to the arousing ones: the data's cast."""
        ranked = sorted(train, key=lambda s: (-s.arousal, str(s.path)))
        arousing = ranked[: len(ranked) // 3]

        def mean_lab(samples: list[Sample]) -> list[float]:
            stats = [summarise_bytes(s.path.read_bytes(), _NullScorer())[1] for s in samples]
            return [round(float(v), 2) for v in np.mean([st.mean for st in stats], axis=0)]

        return {
            "dataset": "OASIS (Kurdi et al. 2017), training split of moodgate.emotion.datasets",
            "rule": (
                f"rated valence ≥ {self.min_valence}, rated arousal ≤ {self.max_arousal}, "
                f"top {self.count} by valence − arousal"
            ),
            "chosen": len(chosen),
            "mean_lab_chosen": mean_lab(chosen),
            "mean_lab_arousing_third": mean_lab(arousing),
        }


class _NullScorer:
    """Statistics only: the provenance summary needs colours, not predictions."""

    name = "none"
    width = 1.0
    precision = "n/a"
    input_size = 256

    def score_frames(self, frames: list[np.ndarray]) -> list[Emotion]:
        return [Emotion(0.0, 0.0) for _ in frames]
