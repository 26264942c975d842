"""How explicit a picture is (0…1), from the converted nsfwjs classifier: onnxruntime only.

The classifier gives five probabilities (drawing, hentai, neutral, porn, sexy); policies test
one number, `explicit`, their weighted sum (`explicit.json` names the weights). Like the
emotion slices, the file is loaded only if its sha256 matches its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from moodgate.emotion.base import Emotion, Scorer
from moodgate.emotion.datasets import resize_rgb
from moodgate.emotion.nested import verified_file

MANIFEST = "explicit.json"


class ExplicitScorer:
    """Rates RGB uint8 frames; `rate(frames)` gives one explicit value per frame."""

    name = "nsfwjs-mobilenetv2"

    def __init__(self, path: Path, spec: dict, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        self.spec = spec
        self.input_size = int(spec["input_size"])
        self.input_sizes = sorted({self.input_size, *map(int, spec.get("input_sizes", []))})
        self.classes = tuple(spec["classes"])
        weights = spec["explicit_weights"]
        self._weights = np.asarray([float(weights.get(c, 0.0)) for c in self.classes], np.float32)

    def size_for(self, slice_width: float, slice_input: int) -> int:
        """The input size to pair with an emotion slice: full size beside the full model;
        beside a narrower slice (a small device, or a burst) the smallest size that is not
        below the slice's own, so explicit steps down with it (explicit.md measures each)."""
        if slice_width >= 1.0:
            return self.input_size
        return next((s for s in self.input_sizes if s >= slice_input), self.input_size)

    def _prep(self, frame: np.ndarray, size: int) -> np.ndarray:
        if frame.ndim == 2:
            frame = np.stack([frame] * 3, -1)
        if frame.shape[:2] != (size, size) or frame.shape[2] != 3:
            frame = resize_rgb(frame, size)
        return (frame.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)

    def probabilities(self, frames: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
        """(N, 5) class probabilities, in `self.classes` order, at `size` (default full)."""
        if not frames:
            return np.zeros((0, len(self.classes)), np.float32)
        x = np.stack([self._prep(f, size or self.input_size) for f in frames])
        return self.session.run(None, {self._input: x})[0]

    def rate(self, frames: Sequence[np.ndarray], size: int | None = None) -> list[float]:
        probs = self.probabilities(frames, size)
        return [float(np.clip(v, 0.0, 1.0)) for v in probs @ self._weights]


def load_explicit(model_dir: Path, intra_op_threads: int = 1) -> ExplicitScorer:
    """Raises FileNotFoundError when no explicit model ships, ModelIntegrityError when its
    bytes differ from the manifest."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {model_dir}")
    spec = json.loads(manifest_path.read_text())
    return ExplicitScorer(verified_file(model_dir, spec, MANIFEST), spec, intra_op_threads)


class WithExplicit:
    """An emotion slice paired with the explicit classifier at the size that goes with it:
    what one picture costs under a policy that tests `explicit` (calibration times this)."""

    def __init__(self, scorer: Scorer, explicit: ExplicitScorer) -> None:
        self.scorer = scorer
        self.explicit = explicit
        self.name = f"{scorer.name}+explicit"
        self.width = scorer.width
        self.precision = scorer.precision
        self.size = explicit.size_for(scorer.width, scorer.input_size)
        # Decoders aim for the larger of the two sizes, as the pipeline does.
        self.input_size = max(scorer.input_size, self.size)

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        emotions = self.scorer.score_frames(frames)
        rated = self.explicit.rate(frames, self.size)
        return [replace(e, explicit=x) for e, x in zip(emotions, rated, strict=True)]


def with_explicit(
    emotion: Emotion,
    explicit: ExplicitScorer | None,
    frames: Sequence[np.ndarray],
    size: int | None = None,
) -> Emotion:
    """`emotion` with `explicit` rated over `frames` at `size` (the most explicit frame
    counts); as it is when no classifier is given."""
    if explicit is None or not frames:
        return emotion
    return replace(emotion, explicit=max(explicit.rate(frames, size)))
