"""Fake model slices and a fake manifest for the runtime tests: no ONNX, no real timings."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from moodgate.emotion import Emotion

SLICES = [(1.0, "fp32"), (1.0, "int8"), (0.5, "int8"), (0.25, "int8")]


class FakeSlice:
    """A slice whose 'latency' is charged to a fake clock; scores are a function of width."""

    def __init__(
        self,
        width: float,
        precision: str,
        ms: float = 1.0,
        clock: FakeTimer | None = None,
        input_size: int = 64,
    ) -> None:
        self.name = "nested"
        self.width = width
        self.precision = precision
        self.input_size = input_size
        self.ms = ms
        self.clock = clock
        self.calls = 0
        self.during: Callable[[], None] | None = None  # runs mid-scoring (to race a switch)

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.ms / 1000.0
        if self.during is not None:
            self.during()
        return [Emotion(0.1 * self.width, -0.5 + 0.1 * self.width) for _ in frames]


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_manifest(model_dir: Path, slices: Sequence[tuple[float, str]] = SLICES) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "width": width,
            "precision": precision,
            "file": f"emotion_w{width:g}_{precision}.onnx",
            "sha256": "0" * 64,
            "mflops": round(400 * width, 1),
            "params": 1000,
            "input_size": 64,
            "val": {"valence_r": 0.5 * width + 0.2, "arousal_r": 0.4 * width + 0.2},
        }
        for width, precision in slices
    ]
    path = model_dir / "manifest.json"
    path.write_text(json.dumps({"slices": entries}))
    return path


class FakeLoader:
    """Stands in for nested.load_scorer; counts loads, latency per slice from a table."""

    def __init__(self, ms: dict[tuple[float, str], float] | None = None) -> None:
        self.ms = ms or {}
        self.loaded: list[tuple[float, str, int]] = []

    def __call__(
        self, model_dir: Path, width: float, precision: str, threads: int, pool: object = None
    ) -> FakeSlice:
        self.loaded.append((width, precision, threads))
        return FakeSlice(width, precision, self.ms.get((width, precision), 1.0))
