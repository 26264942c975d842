"""A deliberately slow scorer, loaded by a real proxy with `--scorer slow_scorer:SlowScorer`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from moodgate.emotion import Emotion
from moodgate.emotion.heuristic import HeuristicScorer


class SlowScorer(HeuristicScorer):
    name = "slow-test"

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        time.sleep(float(os.environ.get("SLOW_SCORER_SECONDS", "2")))
        return super().score_frames(frames)
