"""Every slice's speed beside its accuracy: the speed–accuracy curve (docs/slices.png).

    .venv/bin/python bench/slices.py --plot docs/slices.png     # the documented run
    .venv/bin/python bench/slices.py --quick                    # seconds; what the tests run

For every (width, precision) in models/manifest.json, model only (frames decoded once up front):
- one caller (single-threaded: one inference thread, one item at a time), and
- all cores (one caller per core sharing the slice, as the daemon's workers do);
round-robin over the slices in short turns, so background load is spread over all of them.
Two timings per slice: the Scorer as the daemon calls it (resize + normalise + inference), and
the bare onnxruntime session on a ready tensor, which separates the model from its Python
glue. `--profile` adds onnxruntime's per-operator profile of the widest fp32 and the narrowest
int8 slice, which says where the time goes when int8 is not as fast as its FLOPs suggest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Budget,
    Series,
    has_model,
    load_bench_slices,
    model_dir_or_default,
    plot,
    table,
    temporary_corpus,
)

from moodgate.emotion.base import Scorer
from moodgate.emotion.nested import model_source
from moodgate.media.image import frames_for_scoring
from moodgate.runtime.calibration import SliceKey, slice_label

COLOURS = {"fp32": (31, 119, 180), "int8": (214, 39, 40), "n/a": (44, 160, 44)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0, help="per slice and mode")
    parser.add_argument("--turn", type=int, default=8, help="items per turn in the round-robin")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--plot", type=Path, help="write the speed-accuracy PNG here")
    parser.add_argument("--profile", action="store_true", help="per-operator ORT profile")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.seconds, args.turn = 3, 0.3, 2
    return args


def run_turn(scorer: Scorer, frames: list[np.ndarray], callers: int, items: int) -> float:
    """`items` scorings by `callers` threads sharing the scorer; returns wall seconds."""
    if callers == 1:
        start = time.perf_counter()
        for n in range(items):
            scorer.score_frames([frames[n % len(frames)]])
        return time.perf_counter() - start
    per = max(1, items // callers)

    def work(offset: int) -> None:
        for n in range(per):
            scorer.score_frames([frames[(offset + n) % len(frames)]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def input_shape(dims: list[Any], size: int) -> list[int]:
    """A batch of one at the slice's input size: files shared by several sizes leave H, W
    symbolic."""
    batch, channels = (d if isinstance(d, int) else 1 for d in dims[:2])
    return [batch, channels, size, size]


class BareSession:
    """The slice's onnxruntime session on a ready tensor: the model without its Python glue."""

    def __init__(self, path: Path, size: int, fold_weights: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        if fold_weights:  # let constant folding dequantize int8 weights once, at load
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        self.session = ort.InferenceSession(model_source(path), options,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        spec = self.session.get_inputs()[0]
        shape = input_shape(spec.shape, size)
        self.feed = {spec.name: np.random.default_rng(0).normal(size=shape).astype(np.float32)}

    def score_frames(self, frames: object) -> None:
        self.session.run(None, self.feed)


def measure(
    scorers: dict[SliceKey, Scorer],
    bare: dict[SliceKey, dict[str, BareSession]],
    images: list[bytes],
    args: argparse.Namespace,
    budget: Budget,
) -> dict[str, dict[str, float]]:
    """ms/img and img/s per slice and mode, every mode and slice in one round-robin."""
    frames = {
        key: [frames_for_scoring(d, size=s.input_size)[1][0] for d in images]
        for key, s in scorers.items()
    }
    runners: dict[str, tuple[dict[SliceKey, Any], int]] = {
        "1 thread": (scorers, 1),
        f"{args.cores} cores": (scorers, args.cores),
    }
    for variant in ("bare", "bare folded"):
        sessions = {k: v[variant] for k, v in bare.items() if variant in v}
        if sessions:
            runners[variant] = (sessions, 1)
    spent: dict[tuple[SliceKey, str], float] = defaultdict(float)
    done: dict[tuple[SliceKey, str], int] = defaultdict(int)
    for runner, _ in runners.values():  # warm-up
        for key, scorer in runner.items():
            run_turn(scorer, frames[key], 1, 2)
    total = args.seconds * len(scorers) * len(runners)
    started = time.perf_counter()
    while time.perf_counter() - started < total and budget.left() > 30:
        for mode, (runner, callers) in runners.items():
            for key, scorer in runner.items():
                items = args.turn * callers
                spent[key, mode] += run_turn(scorer, frames[key], callers, items)
                done[key, mode] += max(1, items // callers) * callers
    out: dict[str, dict[str, float]] = {}
    for key in scorers:
        row: dict[str, float] = {}
        for mode in runners:
            seconds, count = spent[key, mode], done[key, mode]
            row[f"{mode} img/s"] = count / seconds if seconds else float("nan")
            row[f"{mode} ms/img"] = 1000 * seconds / count if count else float("nan")
        out[slice_label(key)] = row
    return out


def session_path(model_dir: Path, entry: dict[str, Any]) -> Path:
    return model_dir / str(entry["file"])


def bare_sessions(
    model_dir: Path, entries: dict[SliceKey, dict[str, Any]]
) -> dict[SliceKey, dict[str, BareSession]]:
    out: dict[SliceKey, dict[str, BareSession]] = {}
    for key, entry in entries.items():
        path = session_path(model_dir, entry)
        size = int(entry["input_size"])
        out[key] = {"bare": BareSession(path, size)}
        if key[1] == "int8":
            out[key]["bare folded"] = BareSession(path, size, fold_weights=True)
    return out


def profile_ops(model_dir: Path, entry: dict[str, Any], runs: int = 30) -> dict[str, float]:
    """Milliseconds per run by operator type, from onnxruntime's own profiler."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as work:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "profile")
        session = ort.InferenceSession(model_source(session_path(model_dir, entry)), options,
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        spec = session.get_inputs()[0]
        tensor = np.zeros(input_shape(spec.shape, int(entry["input_size"])), np.float32)
        for _ in range(runs):
            session.run(None, {spec.name: tensor})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event.get("args", {}).get("op_name", "?")] += event["dur"] / 1000.0 / runs
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def mean_r(accuracy: dict[str, Any] | None) -> float | None:
    if not accuracy:
        return None
    values = [float(accuracy[k]) for k in ("valence_r", "arousal_r") if k in accuracy]
    return sum(values) / len(values) if values else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = Budget(args.limit_s)
    scorers, entries = load_bench_slices(args.model_dir)
    with temporary_corpus(args.images, scale=0.4 if args.quick else 1.0) as corpus:
        images = [corpus.read(item) for item in corpus.images]
    model_dir = model_dir_or_default(args.model_dir)
    speed = measure(scorers, bare_sessions(model_dir, entries), images, args, budget)
    rows, summary = [], {"cores": args.cores, "slices": {}}
    for key, scorer in scorers.items():
        label = slice_label(key)
        entry = entries.get(key, {})
        accuracy = entry.get("val") if isinstance(entry.get("val"), dict) else None
        row = speed[label]
        record = {**row, "input_size": scorer.input_size, "mflops": entry.get("mflops"),
                  "session_ms": row.get("bare ms/img"), "accuracy": accuracy,
                  "mean_r": mean_r(accuracy)}  # fmt: skip
        summary["slices"][label] = record  # type: ignore[index]
        valence = accuracy.get("valence_r") if accuracy else None
        arousal = accuracy.get("arousal_r") if accuracy else None
        rows.append([label, scorer.input_size, entry.get("mflops", "-"),
                     row["1 thread ms/img"], row["1 thread img/s"],
                     row[f"{args.cores} cores img/s"], row.get("bare ms/img", "-"),
                     row.get("bare folded ms/img", "-"),
                     valence if valence is not None else "-",
                     arousal if arousal is not None else "-"])  # fmt: skip
    model = "the nested model" if has_model(args.model_dir) else "NO MODEL: heuristic scorer"
    print(f"{len(images)} images; model only (decoded up front); {model}")
    print(table(["slice", "input", "MFLOPs", "ms/img 1 thr", "img/s 1 thr",
                 f"img/s {args.cores} cores", "bare ms", "bare folded ms", "valence r",
                 "arousal r"],
                rows))  # fmt: skip
    # The reference is the full model in fp32; a manifest that ships no full fp32 file (the
    # size limit) is compared against its widest slice, and the output says so.
    full_key = (1.0, "fp32") if (1.0, "fp32") in scorers else next(iter(scorers))
    full = summary["slices"][slice_label(full_key)]  # type: ignore[index]
    int8 = [k for k in scorers if k[1] == "int8" and k != full_key]
    if int8:
        narrow_key = min(int8, key=lambda k: k[0])
        narrow = summary["slices"][slice_label(narrow_key)]  # type: ignore[index]
        ratio = narrow["1 thread img/s"] / full["1 thread img/s"]
        flops = (full["mflops"] or 0) / (narrow["mflops"] or 1)
        bare_ratio = (full["session_ms"] or 0) / (narrow["session_ms"] or 1)
        folded = full["session_ms"] / narrow.get("bare folded ms/img", float("nan"))
        reference = slice_label(full_key)
        summary.update(narrow_vs_full=ratio, flops_ratio=flops, bare_ratio=bare_ratio,
                       bare_folded_ratio=folded, reference=reference,
                       target_met=ratio >= 4.0)  # fmt: skip
        print(f"bare sessions: narrowest int8 unfolded {bare_ratio:.2f}x the {reference}, with "
              f"its int8 weights dequantized once at load {folded:.2f}x")  # fmt: skip
        print(f"narrowest int8 ({slice_label(narrow_key)}) vs {reference}: {ratio:.2f}x images/s "
              f"(bare session {bare_ratio:.2f}x; MFLOPs ratio {flops:.2f}x); target >= 4x: "
              f"{'met' if ratio >= 4.0 else 'NOT met'}")  # fmt: skip
        if args.profile:
            for key in (full_key, narrow_key):
                ops = profile_ops(model_dir, entries[key])
                summary[f"profile {slice_label(key)}"] = ops  # type: ignore[index]
                top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:6])
                print(f"profile {slice_label(key)} (ms/run by op): {top}")
    if args.plot:
        draw(args.plot, summary["slices"], args.cores)  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


def draw(path: Path, slices: dict[str, dict[str, Any]], cores: int) -> None:
    """Speed against accuracy; speed against MFLOPs while the manifest has no accuracy."""
    with_accuracy = any(s["mean_r"] for s in slices.values())
    series = []
    for precision, colour in COLOURS.items():
        chosen = [(label, s) for label, s in slices.items() if label.endswith(precision)]
        if with_accuracy:
            points = [(s["1 thread ms/img"], s["mean_r"] or 0.0) for _, s in chosen]
        else:
            points = [(s["mflops"] or 0.0, s["1 thread ms/img"]) for _, s in chosen]
        if points:
            order = sorted(range(len(points)), key=lambda i: points[i][0])
            series.append(Series(precision, [points[i] for i in order], colour,
                                 [chosen[i][0] for i in order]))  # fmt: skip
    if with_accuracy:
        plot(path, series, "moodgate slices: speed vs accuracy (validation, mean Pearson r "
             "of valence and arousal)", "ms per image, model only, 1 thread (lower is faster)",
             "mean r")  # fmt: skip
    else:
        plot(path, series, "moodgate slices: ms per image (model only, 1 thread) against "
             "MFLOPs; no accuracy in the manifest yet", "MFLOPs", "ms per image")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
