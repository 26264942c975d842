"""Measure every shipped slice (and the hand-crafted baseline) on the validation split.

Torch-free: this is what `moodgate eval-model` runs on the router itself, so the latency
column is the real per-image cost (resize + onnxruntime, one thread, batch of one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moodgate.emotion.datasets import DEFAULT_SEED, load_all, read_rgb, split
from moodgate.emotion.nested import load_manifest, load_scorer


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def _measure(score_one, frames: Sequence[np.ndarray], y: np.ndarray) -> dict:
    preds, times = [], []
    score_one(frames[0])  # warm-up: first run allocates
    for f in frames:
        t = time.perf_counter()
        preds.append(score_one(f))
        times.append((time.perf_counter() - t) * 1000.0)
    p = np.asarray(preds, np.float64)
    return {
        "valence_r": _pearson(p[:, 0], y[:, 0]),
        "arousal_r": _pearson(p[:, 1], y[:, 1]),
        "valence_rmse": float(np.sqrt(np.mean((np.clip(p[:, 0], -1, 1) - y[:, 0]) ** 2))),
        "arousal_rmse": float(np.sqrt(np.mean((np.clip(p[:, 1], -1, 1) - y[:, 1]) ** 2))),
        "ms_per_image": float(np.median(times)),
    }


def evaluate(data: list[str], model_dir: Path, threads: int = 1) -> list[dict]:
    """One row per (width, precision) in the manifest, plus the heuristic baseline."""
    manifest = load_manifest(Path(model_dir))
    seed = int(manifest.get("split", {}).get("seed", DEFAULT_SEED))
    _, val = split(load_all(data), seed=seed)
    frames = [read_rgb(s.path) for s in val]
    y = np.array([[s.valence, s.arousal] for s in val], np.float64)
    rows = []
    for spec in sorted(manifest["slices"], key=lambda s: (-s["width"], s["precision"])):
        scorer = load_scorer(Path(model_dir), spec["width"], spec["precision"], threads, 1)

        def one(f: np.ndarray, scorer=scorer) -> tuple[float, float]:
            e = scorer.predict([f])[0]
            return float(e[0]), float(e[1])

        rows.append(
            {
                "scorer": scorer.name,
                "width": spec["width"],
                "precision": spec["precision"],
                "input_size": spec["input_size"],
                "params": spec["params"],
                "mflops": spec["mflops"],
                "n_val": len(val),
                **_measure(one, frames, y),
            }
        )
    try:
        from moodgate.emotion.heuristic import HeuristicScorer
    except ImportError:  # the baseline is optional for this table
        return rows
    h = HeuristicScorer()

    def one_h(f: np.ndarray) -> tuple[float, float]:
        e = h.score_frames([f])[0]
        return e.valence, e.arousal

    rows.append(
        {
            "scorer": getattr(h, "name", "heuristic"),
            "width": None,
            "precision": "n/a",
            "input_size": getattr(h, "input_size", None),
            "params": 0,
            "mflops": None,
            "n_val": len(val),
            **_measure(one_h, frames, y),
        }
    )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    head = (
        "| scorer | width | precision | input | params | MFLOPs | val r (V) | val r (A) "
        "| RMSE (V) | RMSE (A) | ms/img |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        width = "-" if r["width"] is None else f"{r['width']:g}"
        mf = "-" if r["mflops"] is None else f"{r['mflops']:.1f}"
        lines.append(
            f"| {r['scorer']} | {width} | {r['precision']} | {r['input_size'] or '-'} "
            f"| {r['params']:,} | {mf} | {r['valence_r']:.3f} | {r['arousal_r']:.3f} "
            f"| {r['valence_rmse']:.3f} | {r['arousal_rmse']:.3f} | {r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)
