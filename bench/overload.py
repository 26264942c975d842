"""Overload: offered image load rising to 4× what the widest slice can sustain, then falling.
The slice should step down, p95 added latency stay within the budget, nothing fail, and the
slice climb back once the load is gone.

    .venv/bin/python bench/overload.py --plot docs/overload.png   # the documented run
    .venv/bin/python bench/overload.py --quick                    # seconds; what the tests run

1. Capacity C: images/s that `moodgate serve` pinned to the widest slice (w1/fp32) sustains,
   closed loop, 2 clients per worker, score cache off (every image decoded and scored).
2. Open loop through an adaptive `moodgate serve` (default policy, cache off): phases at
   0.5, 1, 2, 4 and again 0.5 × C, arrivals evenly spaced; latency counts from the scheduled
   send time, so a client falling behind is charged to the proxy, not hidden.
The slice that scored each image and when comes from moodgate's own decision rows.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Budget,
    Client,
    Item,
    MitmDump,
    Moodgate,
    OriginServer,
    Series,
    closed_loop,
    has_model,
    percentile,
    plot,
    running,
    stack,
    table,
    temporary_corpus,
)

PHASES = (0.5, 1.0, 2.0, 4.0, 0.5)


@dataclass
class Sent:
    phase: int
    scheduled: float  # time.time() of the planned send
    latency: float  # seconds from the planned send to the last byte
    status: int
    header: str


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--phase-s", type=float, default=15.0)
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--budget-ms", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=0, help="moodgate workers; 0: per core")
    parser.add_argument("--pool", type=int, default=96, help="client connections")
    parser.add_argument("--shed", action="store_true", help="moodgate's shed_overload on")
    parser.add_argument("--phases", default=",".join(f"{f:g}" for f in PHASES),
                        help="offered load per phase, in multiples of C")  # fmt: skip
    parser.add_argument(
        "--control",
        action="store_true",
        help="then the same schedule through plain mitmdump, for comparison",
    )
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    args.phases = [float(f) for f in args.phases.split(",")]
    if args.quick:
        args.images, args.phase_s, args.capacity_s, args.pool = 4, 0.5, 1.0, 8
    return args


def settings(args: argparse.Namespace, pinned: bool) -> dict[str, object]:
    values: dict[str, object] = {"scorer": "auto", "cache_entries": 0, "workers": args.workers,
                                 "latency_budget_ms": args.budget_ms}  # fmt: skip
    if args.model_dir:
        values["model_dir"] = str(args.model_dir)
    if args.shed and not pinned:
        values["shed_overload"] = True
    if pinned and has_model(args.model_dir):
        # Adaptive with a budget nothing exceeds: it stays on the widest slice (the same code
        # path as the measured run, only the selector never steps down).
        values["latency_budget_ms"] = 1e9
    return values


def capacity(origin: OriginServer, images: list[Item], args: argparse.Namespace,
             work: Path, pinned: Moodgate | None = None) -> float:  # fmt: skip
    """Images/s of moodgate pinned to the widest slice, closed loop, 2 clients per worker."""
    clients = 2 * (args.workers or len(os.sched_getaffinity(0)))
    if pinned is not None:
        results, wall = closed_loop(origin, pinned.port, images, clients, args.capacity_s,
                                    100_000)  # fmt: skip
    else:
        with Moodgate(work / "pinned", settings(args, pinned=True)) as own:
            closed_loop(origin, own.port, images, 1, 30.0, len(images))  # warm-up
            results, wall = closed_loop(origin, own.port, images, clients, args.capacity_s,
                                        100_000)  # fmt: skip
    served = sum(r.ok for r in results)
    if not served:
        statuses = Counter(r.status for r in results)
        raise SystemExit(f"the pinned proxy served nothing in {wall:.1f} s (statuses "
                         f"{dict(statuses)}): cannot measure the capacity")  # fmt: skip
    return served / wall


def open_loop(origin: OriginServer, port: int, images: list[Item], rates: list[float],
              phase_s: float, pool: int) -> tuple[list[Sent], list[float]]:  # fmt: skip
    jobs: queue.Queue[tuple[int, float, Item] | None] = queue.Queue()
    start = time.time() + 0.5
    starts, at, n = [], start, 0
    for phase, rate in enumerate(rates):
        starts.append(at)
        count = max(1, int(rate * phase_s))
        for k in range(count):
            jobs.put((phase, at + k / rate, images[n % len(images)]))
            n += 1
        at += phase_s
    starts.append(at)
    sent: list[Sent] = []
    lock = threading.Lock()

    def worker() -> None:
        client = Client(origin, port, timeout=60.0)
        while (job := jobs.get()) is not None:
            phase, scheduled, item = job
            delay = scheduled - time.time()
            if delay > 0:
                time.sleep(delay)
            result = client.get(item)
            done = time.time()
            with lock:
                sent.append(Sent(phase, scheduled, done - scheduled, result.status, result.header))
        client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(pool)]
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=phase_s * len(rates) + 120)
    return sent, starts


def slice_timeline(database: Path) -> list[tuple[float, str, float]]:
    """(epoch seconds, slice, engine ms) per scored decision."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT time, model_width, precision, ms FROM decisions "
                          "WHERE outcome = 'scored' ORDER BY time").fetchall()  # fmt: skip
    out = []
    for stamp, width, precision, ms in rows:
        label = f"w{width:g}/{precision}" if width is not None else "?"
        out.append((datetime.fromisoformat(stamp).timestamp(), label, float(ms)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = Budget(args.limit_s)
    scale = 0.4 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="moodgate-overload-") as work, \
            temporary_corpus(args.images, scale=scale) as corpus:  # fmt: skip
        work_dir = Path(work)
        images = corpus.images
        origin = OriginServer(corpus.root, work_dir / "origin.log")
        moodgate = Moodgate(work_dir / "adaptive", settings(args, pinned=False))
        with running(origin, moodgate):
            closed_loop(origin, moodgate.port, images, 1, 30.0, len(images))  # warm-up
            # Without a model there is one "slice": the adaptive proxy is the pinned one.
            pinned = moodgate if not has_model(args.model_dir) else None
            rate_c = capacity(origin, images, args, work_dir, pinned)
            rates = [rate_c * f for f in args.phases]
            needed = args.phase_s * len(rates) + 15
            if budget.left() < needed:
                raise SystemExit(f"not enough time left for {needed:.0f} s of load")
            sent, starts = open_loop(origin, moodgate.port, images, rates, args.phase_s,
                                     args.pool)  # fmt: skip
            time.sleep(1.0)  # the decision store writes in batches
            timeline = slice_timeline(moodgate.database)
        control: list[Sent] = []
        if args.control and budget.left() > needed:
            with running(origin, MitmDump(work_dir / "mitm")) as (_, mitm):
                closed_loop(origin, mitm.port, images, 1, 30.0, len(images))  # warm-up
                control, _ = open_loop(origin, mitm.port, images, rates, args.phase_s, args.pool)
    return report(args, rate_c, rates, sent, starts, timeline, control)


def report(args: argparse.Namespace, rate_c: float, rates: list[float], sent: list[Sent],
           starts: list[float], timeline: list[tuple[float, str, float]],
           control: list[Sent]) -> int:  # fmt: skip
    rows, phases = [], []
    for phase, rate in enumerate(rates):
        mine = [s for s in sent if s.phase == phase]
        plain = [s.latency * 1000 for s in control if s.phase == phase and s.status == 200]
        ms = [s.latency * 1000 for s in mine if s.status == 200]
        failed = sum(s.status != 200 for s in mine)
        used = Counter(label for t, label, _ in timeline if starts[phase] <= t < starts[phase + 1])
        shed = sum(1 for s in mine if "outcome=timeout" in s.header)
        total = sum(used.values()) or 1
        mix = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in used.most_common())
        p95 = percentile(ms, 95)
        within = p95 <= args.budget_ms
        phases.append({"offered_x": args.phases[phase], "offered_per_s": rate, "sent": len(mine),
                       "failed": failed, "p50_ms": percentile(ms, 50), "p95_ms": p95,
                       "p99_ms": percentile(ms, 99), "slices": dict(used),
                       "within_budget": within, "unscored_timeout_or_shed": shed,
                       "mitmdump_p95_ms": percentile(plain, 95)})  # fmt: skip
        factor = args.phases[phase]
        rows.append([f"{factor:g}x", rate, len(mine), failed, shed, percentile(ms, 50), p95,
                     percentile(ms, 99), percentile(plain, 95), "yes" if within else "NO",
                     mix or "-"])  # fmt: skip
    model = "the nested model" if has_model(args.model_dir) else "NO MODEL: heuristic scorer"
    print(
        f"capacity of the widest slice C = {rate_c:.1f} images/s; budget {args.budget_ms:g} ms; "
        f"{args.phase_s:g} s per phase; {model}; shedding {'on' if args.shed else 'off'}"
    )
    print(table(["offered", "img/s", "sent", "failed", "unscored", "p50 ms", "p95 ms", "p99 ms",
                 "mitmdump p95", "p95<=budget", "slices that scored"], rows))  # fmt: skip
    peak = max(phases, key=lambda p: p["offered_x"])
    failed_total = sum(p["failed"] for p in phases)
    met = peak["within_budget"] and failed_total == 0
    print(
        f"at {peak['offered_x']:g}x: p95 {peak['p95_ms']:.0f} ms vs budget {args.budget_ms:g} ms, "
        f"{failed_total} failed requests in all; target: {'met' if met else 'NOT met'}"
    )
    if args.plot and timeline:
        draw(args.plot, sent, starts, timeline, args.budget_ms, args.phases)
    if args.json:
        summary = {"capacity_per_s": rate_c, "budget_ms": args.budget_ms, "phases": phases,
                   "target_met": met}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def draw(path: Path, sent: list[Sent], starts: list[float],
         timeline: list[tuple[float, str, float]], budget_ms: float,
         factors: list[float]) -> None:  # fmt: skip
    origin, end = starts[0], starts[-1]
    cap = 10 * budget_ms  # beyond ten budgets the exact height tells nothing more
    buckets: dict[int, list[float]] = defaultdict(list)
    for s in sent:
        if s.status == 200:
            buckets[int(s.scheduled - origin)].append(s.latency * 1000)
    p95 = [(float(k), min(cap, percentile(v, 95))) for k, v in sorted(buckets.items())]
    widths: dict[int, list[float]] = defaultdict(list)
    for t, label, _ in timeline:
        if origin <= t <= end + 5 and label.startswith("w"):
            widths[int(t - origin)].append(float(label[1:].split("/")[0]))
    mean_width = [(float(k), sum(v) / len(v)) for k, v in sorted(widths.items())]
    phases = ", ".join(f"{f:g}" for f in factors)
    with tempfile.TemporaryDirectory() as work:
        top, bottom = Path(work) / "top.png", Path(work) / "bottom.png"
        plot(
            top,
            [Series("p95 latency of images sent in that second", p95, (214, 39, 40))],
            f"moodgate under rising load ({phases} x capacity of the widest slice, "
            f"{int(end - origin) // len(factors)} s each); p95 clipped at {cap:g} ms",
            "seconds",
            "ms",
            size=(900, 380),
            hline=(budget_ms, f"budget {budget_ms:g} ms"),
        )
        plot(
            bottom,
            [Series("mean width of the slices that scored", mean_width, (31, 119, 180))],
            "slice in use (1 = full model)",
            "seconds",
            "width",
            size=(900, 300),
        )
        stack([top, bottom], path)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
