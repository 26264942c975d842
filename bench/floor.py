"""The floor: what judging an image must cost at least, and how close the proxy's pass path is.

    .venv/bin/python bench/floor.py              # the documented run
    .venv/bin/python bench/floor.py --quick      # seconds; what the tests run

In-process, one thread, round-robin over the variants for every image (interleaved):
- draft decode only: Pillow's reduced-size JPEG decode to the slice's input size
  (media.image.frames_for_scoring, exactly what the pipeline does first);
- draft decode + model, for every slice: the emotion slice and, because the default policy's
  preset tests `explicit`, the explicit classifier at the size paired with that slice (the
  pipeline decodes once, at the larger of the two sizes);
- the whole pipeline (ImagePipeline.judge with the default policy), on images it passes.

Then through real processes, one request at a time (no queueing), each image fetched through
plain mitmdump and through `moodgate serve` back to back (order alternating): the per-image
difference is what moodgate adds on its pass path. The target: its median ≤ 1.5× the median
floor (draft decode + model) of the slice the daemon chose.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Budget,
    Client,
    MitmDump,
    Moodgate,
    OriginServer,
    has_model,
    load_bench_explicit,
    load_bench_slices,
    percentile,
    running,
    table,
    temporary_corpus,
)

from moodgate.emotion import Scorer, score
from moodgate.emotion.explicit import ExplicitScorer, WithExplicit
from moodgate.media.image import frames_for_scoring
from moodgate.pipeline import ImagePipeline, ScoreCache
from moodgate.policy import Action, default_policy
from moodgate.policy import Client as PolicyClient
from moodgate.runtime.calibration import slice_label


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--budget-ms", type=float, default=150.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 4, 1
    return args


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return (time.perf_counter() - start) * 1000.0


def judge_floor(data: bytes, scorer: Scorer, explicit: ExplicitScorer | None) -> None:
    """Decode once, score the emotion, rate explicit: what the pass path cannot avoid."""
    judge = WithExplicit(scorer, explicit) if explicit is not None else scorer
    score(judge, frames_for_scoring(data, size=judge.input_size)[1])


def in_process(
    images: list[bytes], args: argparse.Namespace, budget: Budget, explicit: ExplicitScorer | None
) -> dict:
    scorers, _ = load_bench_slices(args.model_dir)
    profile = default_policy().profile_for(PolicyClient("10.0.0.9", None),
                                           datetime.now().astimezone())  # fmt: skip
    samples: dict[str, list[float]] = {}
    passes: dict[str, list[float]] = {}
    pipelines = {
        key: ImagePipeline(s, cache=ScoreCache(0), explicit=explicit)
        for key, s in scorers.items()
    }
    for data in images:  # warm every session and decoder once
        for scorer in scorers.values():
            judge_floor(data, scorer, explicit)
    for _ in range(args.repeats):
        if budget.left() < 20:
            break
        for data in images:
            for key, scorer in scorers.items():
                label = slice_label(key)
                size = scorer.input_size
                samples.setdefault(f"decode@{size}", []).append(
                    timed(lambda d=data, s=size: frames_for_scoring(d, size=s))
                )
                samples.setdefault(f"decode+{label}", []).append(
                    timed(lambda d=data, s=scorer: judge_floor(d, s, explicit))
                )
                start = time.perf_counter()
                verdict = pipelines[key].judge(data, profile, "bench.example")
                if verdict.action is Action.PASS:
                    ms = (time.perf_counter() - start) * 1000.0
                    passes.setdefault(f"pipeline {label}", []).append(ms)
    return {"floor": samples, "pipeline_pass": passes}


def proxied(corpus, args: argparse.Namespace, budget: Budget,  # type: ignore[no-untyped-def]
            explicit: ExplicitScorer | None) -> dict:  # fmt: skip
    """Per-image moodgate − mitmdump, one request at a time, on images moodgate passes."""
    settings = {"scorer": "auto", "latency_budget_ms": args.budget_ms, "cache_entries": 0}
    if args.model_dir:
        settings["model_dir"] = str(args.model_dir)
    added: list[float] = []
    mitm_ms: list[float] = []
    slices: dict[str, int] = {}
    # The floor again, per image right beside its proxied pair, so the ratio compares like
    # with like on a machine whose background load drifts.
    scorers, _ = load_bench_slices(args.model_dir)
    beside: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="moodgate-floor-") as work:
        work_dir = Path(work)
        origin = OriginServer(corpus.root, work_dir / "origin.log")
        mitm = MitmDump(work_dir / "mitm")
        moodgate = Moodgate(work_dir / "moodgate", settings)
        with running(origin, mitm, moodgate):
            clients = {"mitm": Client(origin, mitm.port), "moodgate": Client(origin, moodgate.port)}
            for item in corpus.images:  # warm-up
                for client in clients.values():
                    client.get(item)
            for repeat in range(args.repeats):
                if budget.left() < 10:
                    break
                for index, item in enumerate(corpus.images):
                    order = ["mitm", "moodgate"]
                    if (repeat + index) % 2:
                        order.reverse()
                    got = {name: clients[name].get(item) for name in order}
                    if got["moodgate"].header.startswith("pass") and got["mitm"].ok:
                        added.append((got["moodgate"].seconds - got["mitm"].seconds) * 1000.0)
                        mitm_ms.append(got["mitm"].seconds * 1000.0)
                        data = corpus.read(item)
                        for key, s in scorers.items():
                            beside.setdefault(f"decode+{slice_label(key)}", []).append(
                                timed(lambda d=data, s=s: judge_floor(d, s, explicit))
                            )
            for client in clients.values():
                client.close()
        import sqlite3

        with sqlite3.connect(moodgate.database) as db:
            for width, precision, count in db.execute(
                "SELECT model_width, precision, count(*) FROM decisions "
                "WHERE outcome = 'scored' GROUP BY 1, 2"
            ):
                slices[f"w{width:g}/{precision}"] = count
    return {"added_ms": added, "mitm_ms": mitm_ms, "slices": slices, "beside": beside}


def chosen_floor(floor: dict[str, list[float]], slices: dict[str, int]) -> tuple[str, float]:
    """The floor for the slice moodgate used most (its choice at idle)."""
    label = max(slices, key=lambda k: slices[k]) if slices else ""
    key = f"decode+{label}"
    if key not in floor:  # no model: the heuristic is the only "slice"
        key = next(k for k in floor if k.startswith("decode+"))
    return key, statistics.median(floor[key])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = Budget(args.limit_s)
    scale = 0.4 if args.quick else 1.0
    explicit = load_bench_explicit(args.model_dir)
    with temporary_corpus(args.images, scale=scale) as corpus:
        images = [corpus.read(item) for item in corpus.images]
        local = in_process(images, args, budget, explicit)
        remote = proxied(corpus, args, budget, explicit)
    floor = local["floor"]
    rows = [[name, len(v), percentile(v, 50), percentile(v, 95)] for name, v in floor.items()]
    rows += [[name, len(v), percentile(v, 50), percentile(v, 95)]
             for name, v in local["pipeline_pass"].items()]  # fmt: skip
    added = remote["added_ms"]
    rows.append(["proxy: moodgate - mitmdump (pass)", len(added), percentile(added, 50),
                 percentile(added, 95)])  # fmt: skip
    rows.append(["proxy: mitmdump alone", len(remote["mitm_ms"]),
                 percentile(remote["mitm_ms"], 50), percentile(remote["mitm_ms"], 95)])  # fmt: skip
    model = "the nested model" if has_model(args.model_dir) else "NO MODEL: heuristic scorer"
    if explicit is not None:
        model += " + the explicit classifier (decode+X = decode, slice X, explicit beside it)"
    print(f"{len(images)} images x {args.repeats} repeats, one thread, {model}")
    print(table(["what (per image)", "n", "median ms", "p95 ms"], rows))
    summary: dict[str, object] = {
        "rows": [dict(zip(["name", "n", "p50_ms", "p95_ms"], r, strict=True)) for r in rows],
        "slices": remote["slices"],
    }
    if added:
        key, floor_ms = chosen_floor(remote["beside"] or floor, remote["slices"])
        ratio = statistics.median(added) / floor_ms
        summary.update(floor_key=key, floor_ms=floor_ms, added_ms=statistics.median(added),
                       ratio=ratio, target_met=ratio <= 1.5)  # fmt: skip
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(f"moodgate pass path adds {statistics.median(added):.2f} ms median per image; "
              f"floor ({key}, timed beside each proxied pair) {floor_ms:.2f} ms: "
              f"{ratio:.2f}x; target <= 1.5x: {verdict} "
              f"(slices used {remote['slices']})")  # fmt: skip
    else:
        print("no image passed through moodgate: nothing to compare with the floor")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
