"""Runtime scorer for the nested Lite0 slices: onnxruntime + numpy + Pillow, never torch.

`models/manifest.json` lists every shipped (width, precision) file with its sha256; a slice is
loaded only if its bytes match, so a half-copied or tampered model fails loudly instead of
scoring garbage.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moodgate.emotion.base import Emotion
from moodgate.emotion.datasets import NORM_MEAN, NORM_STD, resize_rgb

MANIFEST = "manifest.json"


class ModelIntegrityError(RuntimeError):
    """The model file is missing or its sha256 differs from the manifest."""


def load_manifest(model_dir: Path) -> dict:
    path = Path(model_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {model_dir}; train or install the model first")
    manifest = json.loads(path.read_text())
    if not manifest.get("slices"):
        raise ValueError(f"{path}: manifest lists no slices")
    return manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_file(model_dir: Path, spec: dict, listed_in: str) -> Path:
    """`spec["file"]` in `model_dir`, after checking that its bytes match `spec["sha256"]`."""
    path = Path(model_dir) / spec["file"]
    if not path.exists():
        raise ModelIntegrityError(f"{path} is listed in {listed_in} but missing")
    digest = sha256_file(path)
    if digest != spec["sha256"]:
        raise ModelIntegrityError(
            f"{path}: sha256 {digest} does not match {listed_in}'s {spec['sha256']}"
        )
    return path


def _describe(slices: Sequence[dict]) -> str:
    return ", ".join(f"{s['width']:g}/{s['precision']}" for s in slices)


def pick_slice(manifest: dict, width: float | None = None, precision: str | None = None) -> dict:
    """The widest slice whose width is ≤ `width` (None = widest), of `precision`.

    precision None takes any precision, fp32 first among equally wide slices.
    """
    slices = manifest["slices"]
    same = sorted(
        (s for s in slices if precision is None or s["precision"] == precision),
        key=lambda s: (-s["width"], s["precision"] != "fp32"),
    )
    fits = [s for s in same if width is None or s["width"] <= width + 1e-9]
    if not fits:
        raise ValueError(
            f"no {precision or 'any-precision'} slice with width ≤ {width}; available "
            f"(width/precision): {_describe(slices)}"
        )
    return fits[0]


def model_source(path: Path) -> str | bytes:
    """What onnxruntime loads for a slice file: its path, or for `.onnx.xz` its unpacked bytes.

    fp32 weights that would not fit the size limit ship xz-packed (lossless, ≈ 8 % smaller)."""
    return lzma.decompress(Path(path).read_bytes()) if Path(path).suffix == ".xz" else str(path)


def open_session(path: Path, intra_op_threads: int = 1) -> Any:
    """An onnxruntime session for a slice file; `.onnx.xz` files are unpacked in memory."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    # int8 files are weight-only (int8 codes → DequantizeLinear → float Conv). Left to its
    # QDQ handling, onnxruntime keeps the DequantizeLinear nodes and re-dequantises every
    # weight on every run (measured 2× slower than fp32); with it off, constant folding
    # turns them into float weights once at load, so int8 runs as fast as fp32.
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(
        model_source(path), sess_options=opts, providers=["CPUExecutionProvider"]
    )


class SessionPool:
    """One onnxruntime session per (file, threads), shared by the slices that file holds.

    Slices that differ only in input size are one file with their read-outs side by side;
    each session holds the whole network as float weights, so sharing keeps one copy of them
    in memory instead of one per slice. onnxruntime sessions may run concurrently."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[Path, int], Any] = {}
        self._verified: dict[tuple[Path, str], Path] = {}

    def verified_file(self, model_dir: Path, spec: dict, listed_in: str) -> Path:
        """`verified_file`, once per file and digest: a file's later slices share the
        session its first one opened, so hashing it again would check nothing that runs."""
        key = ((Path(model_dir) / spec["file"]).resolve(), str(spec["sha256"]))
        if key not in self._verified:
            self._verified[key] = verified_file(model_dir, spec, listed_in)
        return self._verified[key]

    def get(self, path: Path, intra_op_threads: int = 1) -> Any:
        key = (Path(path).resolve(), intra_op_threads)
        if key not in self._sessions:
            self._sessions[key] = open_session(Path(path), intra_op_threads)
        return self._sessions[key]

    @property
    def open_sessions(self) -> int:
        # a count, not __len__: an empty pool must stay truthy where `pool or ...` is written
        return len(self._sessions)


class NestedOnnxScorer:
    """One slice of the nested network as a Scorer."""

    def __init__(
        self,
        path: Path,
        spec: dict,
        intra_op_threads: int = 1,
        batch_size: int = 4,
        pool: SessionPool | None = None,
    ) -> None:
        self.session = (pool if pool is not None else SessionPool()).get(path, intra_op_threads)
        self._input = self.session.get_inputs()[0].name
        self.spec = spec
        self.width = float(spec["width"])
        self.precision = str(spec["precision"])
        self.input_size = int(spec["input_size"])
        # The pipeline decodes straight to input_size × input_size for this scorer.
        self.square_input = True
        self.name = f"nested-lite0-w{self.width:g}-{self.precision}"
        norm = spec.get("normalisation", {})
        self._mean = np.asarray(norm.get("mean", [NORM_MEAN] * 3), np.float32).reshape(1, 1, 3)
        self._std = np.asarray(norm.get("std", [NORM_STD] * 3), np.float32).reshape(1, 1, 3)
        self._inv_std = 1.0 / self._std
        self.batch_size = max(1, batch_size)
        # Slices that differ only in input size share one file; its output holds every such
        # slice's read-out side by side, and this slice's pair starts at `output_offset`.
        self._offset = int(spec.get("output_offset", 0))

    def _prep(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            frame = np.stack([frame] * 3, -1)
        if frame.shape[:2] != (self.input_size, self.input_size) or frame.shape[2] != 3:
            frame = resize_rgb(frame, self.input_size)
        x = frame.astype(np.float32)
        x -= self._mean
        x *= self._inv_std
        return x.transpose(2, 0, 1)

    def predict(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (N, 2) valence/arousal predictions, unclipped."""
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = np.stack([self._prep(f) for f in frames[i : i + self.batch_size]])
            y = self.session.run(None, {self._input: x})[0]
            out.append(y[:, self._offset : self._offset + 2])
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def score_frames(self, frames: Sequence[np.ndarray]) -> list[Emotion]:
        return [Emotion(float(v), float(a)) for v, a in self.predict(frames)]


def load_scorer(
    model_dir: Path,
    width: float | None = None,
    precision: str | None = None,
    intra_op_threads: int = 1,
    batch_size: int = 4,
    pool: SessionPool | None = None,
) -> NestedOnnxScorer:
    """Load the slice nearest below `width` (None = widest) after checking its sha256.
    Slices loaded through one `pool` share the session of the file they share."""
    model_dir = Path(model_dir)
    spec = pick_slice(load_manifest(model_dir), width, precision)
    verify = pool.verified_file if pool is not None else verified_file
    return NestedOnnxScorer(
        verify(model_dir, spec, "the manifest"), spec, intra_op_threads, batch_size, pool
    )
