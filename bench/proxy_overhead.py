"""Proxy overhead, side by side: the same corpus, the same clients, through (a) plain mitmdump
and (b) `moodgate serve` with the default policy, plus (c) straight to the origin, interleaved
round by round (the order alternates) so background load hits every variant alike.

    .venv/bin/python bench/proxy_overhead.py                      # the documented run
    .venv/bin/python bench/proxy_overhead.py --quick              # seconds; what the tests run

Reported per variant: requests/s and images/s, image latency p50/p95/p99 and what the proxy
adds to it over going direct, CPU seconds per image of the proxy process (utime + stime from
/proc/<pid>/stat, all threads), failures; then the moodgate/mitmdump ratios per round.
Moodgate's score cache is off unless --cache: every image is decoded and scored, the worst case.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Budget,
    MitmDump,
    Moodgate,
    OriginServer,
    Result,
    closed_loop,
    page_sequence,
    percentile,
    running,
    table,
    temporary_corpus,
)

VARIANTS = ("direct", "mitmdump", "moodgate")


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    rounds: list[tuple[int, float, float]] = field(default_factory=list)  # (n, wall, cpu)

    def add(self, results: list[Result], wall: float, cpu: float) -> None:
        self.results += results
        self.wall += wall
        self.cpu += cpu
        self.rounds.append((len(results), wall, cpu))

    @property
    def images(self) -> list[Result]:
        return [r for r in self.results if r.is_image and r.ok]

    def image_ms(self, q: float) -> float:
        return percentile([r.seconds * 1000 for r in self.images], q)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant per round")
    parser.add_argument("--scorer", default="auto")
    parser.add_argument("--budget-ms", type=float, default=150.0)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--cache", action="store_true", help="leave moodgate's score cache on")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few requests")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    parser.add_argument("--limit-s", type=float, default=900.0, help="hard wall-clock limit")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.clients, args.rounds, args.seconds = 4, 2, 1, 1.0
    return args


def moodgate_settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = {
        "scorer": args.scorer,
        "latency_budget_ms": args.budget_ms,
        "cache_entries": 4096 if args.cache else 0,
    }
    if args.model_dir:
        settings["model_dir"] = str(args.model_dir)
    return settings


def slices_used(database: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT scorer, model_width, precision, count(*) FROM decisions "
                "WHERE outcome = 'scored' GROUP BY 1, 2, 3"
            ).fetchall()
    except sqlite3.Error:
        return {}
    return {f"{s} w{w:g}/{p}" if w is not None else str(s): n for s, w, p, n in rows}


def run(args: argparse.Namespace) -> dict[str, object]:
    budget = Budget(args.limit_s)
    scale = 0.4 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="moodgate-overhead-") as work, \
            temporary_corpus(args.images, scale=scale) as corpus:  # fmt: skip
        work_dir = Path(work)
        sequence = page_sequence(corpus)
        origin = OriginServer(corpus.root, work_dir / "origin.log")
        mitm = MitmDump(work_dir / "mitm")
        moodgate = Moodgate(work_dir / "moodgate", moodgate_settings(args))
        with running(origin, mitm, moodgate):
            ports = {"direct": None, "mitmdump": mitm.port, "moodgate": moodgate.port}
            pids = {"direct": origin, "mitmdump": mitm, "moodgate": moodgate}
            for variant in VARIANTS:  # warm up: connections, CA, model sessions
                closed_loop(origin, ports[variant], sequence, 1, 30.0, len(sequence))
            tallies = {v: Tally() for v in VARIANTS}
            for round_ in range(args.rounds):
                if budget.left() < 3 * args.seconds + 30:
                    print(f"stopping after {round_} rounds: the time limit is near")
                    break
                order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    process = pids[variant]
                    cpu0 = process.cpu_seconds()
                    results, wall = closed_loop(origin, ports[variant], sequence, args.clients,
                                                args.seconds, 100_000)  # fmt: skip
                    tallies[variant].add(results, wall, process.cpu_seconds() - cpu0)
            headers = Counter(r.header.split(";")[0] for r in tallies["moodgate"].images)
            outcomes = Counter(
                part.strip().split("=", 1)[1]
                for r in tallies["moodgate"].images
                for part in r.header.split(";")
                if part.strip().startswith("outcome=")
            )
        used = slices_used(moodgate.database)
    return summarise(args, tallies, dict(headers), dict(outcomes), used, corpus_stats(corpus))


def corpus_stats(corpus: object) -> dict[str, object]:
    images = corpus.images  # type: ignore[attr-defined]
    sizes = [i.size / 1024 for i in images]
    return {"images": len(images), "kb_min": min(sizes), "kb_median": statistics.median(sizes),
            "kb_max": max(sizes)}  # fmt: skip


def summarise(
    args: argparse.Namespace,
    tallies: dict[str, Tally],
    actions: dict[str, int],
    outcomes: dict[str, int],
    used: dict[str, int],
    corpus: dict[str, object],
) -> dict[str, object]:
    direct = tallies["direct"]
    summary: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()},
                                  "corpus": corpus, "variants": {}}  # fmt: skip
    rows = []
    for name, tally in tallies.items():
        n_images = len(tally.images)
        failed = sum(not r.ok for r in tally.results)
        row = {
            "requests": len(tally.results),
            "failed": failed,
            "rps": len(tally.results) / tally.wall if tally.wall else 0.0,
            "images_per_s": n_images / tally.wall if tally.wall else 0.0,
            "p50_ms": tally.image_ms(50),
            "p95_ms": tally.image_ms(95),
            "p99_ms": tally.image_ms(99),
            "added_p50_ms": tally.image_ms(50) - direct.image_ms(50),
            "added_p95_ms": tally.image_ms(95) - direct.image_ms(95),
            "added_p99_ms": tally.image_ms(99) - direct.image_ms(99),
            "cpu_s": tally.cpu,
            "cpu_ms_per_image": 1000 * tally.cpu / n_images if n_images else float("nan"),
        }
        summary["variants"][name] = row  # type: ignore[index]
        rows.append([name, row["requests"], failed, row["rps"], row["images_per_s"],
                     row["p50_ms"], row["p95_ms"], row["p99_ms"], row["added_p50_ms"],
                     row["added_p95_ms"], row["added_p99_ms"],
                     row["cpu_ms_per_image"]])  # fmt: skip
    print(f"corpus: {corpus}; {args.clients} clients; {args.rounds} rounds x {args.seconds} s "
          "per variant, interleaved")  # fmt: skip
    print(table(["variant", "requests", "failed", "req/s", "img/s", "p50 ms", "p95 ms", "p99 ms",
                 "+p50 ms", "+p95 ms", "+p99 ms", "proxy CPU ms/img"], rows))  # fmt: skip
    ratios = []
    for (n_m, wall_m, _), (n_g, wall_g, _) in zip(
        tallies["mitmdump"].rounds, tallies["moodgate"].rounds, strict=False
    ):
        if n_m and wall_m and wall_g:
            ratios.append((n_g / wall_g) / (n_m / wall_m))
    variants = summary["variants"]  # type: ignore[assignment]
    mitm, mood = variants["mitmdump"], variants["moodgate"]  # type: ignore[index]
    throughput = mood["rps"] / mitm["rps"] if mitm["rps"] else float("nan")
    cpu_ratio = mood["cpu_ms_per_image"] / mitm["cpu_ms_per_image"]
    summary.update(
        throughput_ratio=throughput,
        throughput_ratio_rounds=ratios,
        cpu_per_image_ratio=cpu_ratio,
        moodgate_actions=actions,
        moodgate_outcomes=outcomes,
        moodgate_slices=used,
        target_met=throughput >= 0.70,
    )
    print(f"moodgate/mitmdump throughput: {throughput:.2f} (per round: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); target >= 0.70: "
          f"{'met' if throughput >= 0.70 else 'NOT met'}")  # fmt: skip
    print(f"moodgate/mitmdump proxy CPU per image: {cpu_ratio:.2f}x")
    print(f"moodgate actions {actions}; outcomes {outcomes}; slices that scored {used}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    summary = run(args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
