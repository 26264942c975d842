"""Style selection: weight every style by emotional fit and colour fit, blend into one target.

Weights are a softmax of two penalties:
- the style's distance in VA space from the target region (0 inside it), so styles that
  already look the way the result should feel dominate;
- the Wasserstein-2 distance between the style's Lab Gaussian and the image's, i.e. how far
  the transfer would have to move the image's colours: a compatible style changes mood
  without repainting the scene (the same reasoning as choosing a reference image by content
  similarity in example-based transfer, Reinhard et al. 2001, §4).
The kept styles are blended by their Wasserstein barycenter (see gaussian.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moodgate.calm.colour import ColourStats
from moodgate.calm.gaussian import barycenter, wasserstein2
from moodgate.calm.styles import NEUTRAL_CALM, Style
from moodgate.emotion.base import VATarget


@dataclass(frozen=True)
class Blend:
    stats: ColourStats
    weights: tuple[tuple[str, float], ...]  # (style name, weight), largest first


@dataclass(frozen=True)
class StyleSelector:
    va_scale: float = 0.25  # a style this far outside the target region weighs e^-0.5 as much
    colour_scale: float = 20.0  # Lab units of W2 distance per e-fold of weight
    keep: int = 8  # at most this many styles enter the blend; the rest weigh next to nothing

    def region_distance(self, style: Style, target: VATarget) -> float:
        arousal_gap = valence_gap = 0.0
        if target.arousal_at_most is not None:
            arousal_gap = max(0.0, style.emotion.arousal - target.arousal_at_most)
        if target.valence_at_least is not None:
            valence_gap = max(0.0, target.valence_at_least - style.emotion.valence)
        return float(np.hypot(arousal_gap, valence_gap))

    def blend(self, image: ColourStats, target: VATarget, styles: Sequence[Style]) -> Blend:
        candidates = list(styles) or [NEUTRAL_CALM]
        logits = np.array(
            [
                -0.5 * (self.region_distance(s, target) / self.va_scale) ** 2
                - wasserstein2(image.mean, image.cov, s.stats.mean, s.stats.cov) / self.colour_scale
                for s in candidates
            ]
        )
        order = np.argsort(-logits, kind="stable")[: self.keep]
        weights = np.exp(logits[order] - logits[order].max())
        weights /= weights.sum()
        chosen = [candidates[i] for i in order]
        mean, cov = barycenter(
            [s.stats.mean for s in chosen], [s.stats.cov for s in chosen], weights
        )
        stats = ColourStats.from_arrays(
            mean,
            cov,
            float(np.dot(weights, [s.stats.contrast for s in chosen])),
            float(np.dot(weights, [s.stats.saturation_mean for s in chosen])),
            float(np.dot(weights, [s.stats.saturation_std for s in chosen])),
        )
        named = tuple((s.name, float(w)) for s, w in zip(chosen, weights, strict=True))
        return Blend(stats, named)
