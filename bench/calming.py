"""Benchmark calming on the most arousing OASIS validation images; draw a benign contact sheet.

    .venv/bin/python bench/calming.py --oasis ../shared/data/oasis --scorer heuristic
    .venv/bin/python bench/calming.py --oasis ../shared/data/oasis --sheet docs/calming-sheet.png

Images: the validation part of the project's fixed split (moodgate.emotion.datasets.split,
seeded, 80/20 stratified by Category), the third with the highest *rated* arousal. Each is
upscaled (Lanczos) to about one megapixel and stored as a quality-90 JPEG in memory, so the
timing is for a realistic 1-MP JPEG: decode_full → Calmer.calm → encode_like.

Two views of the same runs:
- the driver: the scorer that steered the loop, on its own thumbnails (CalmOutcome);
- the judge: the hand-crafted scorer re-scoring the original and the encoded output bytes
  independently (frames_for_scoring), i.e. what the proxy would see downstream.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from moodgate.calm import Calmer, StyleBank, ssim_luminance
from moodgate.emotion.base import Emotion, Scorer, VATarget, score
from moodgate.emotion.datasets import Sample, load_oasis, split
from moodgate.emotion.heuristic import HeuristicScorer
from moodgate.emotion.registry import create_scorer
from moodgate.media.image import decode_full, encode_like, frames_for_scoring

REPO = Path(__file__).resolve().parents[1]
TARGET = VATarget(arousal_at_most=-0.2)
MEGAPIXEL = 1_000_000
# Themes that show nothing disturbing; only these may appear on the contact sheet.
BENIGN_THEMES = (
    "Beach", "Sunset", "Lake", "Fireworks", "Rainbow", "Rollercoaster", "Celebration",
    "Galaxy", "Waterfall", "Sunflower", "Sailing", "Flowers", "Bubble", "Rubber duck",
    "Yarn", "Candle", "Present", "Dessert", "Soccer", "Car race", "Lightning",
)  # fmt: skip


@dataclass
class Row:
    theme: str
    rated_arousal: float
    before: tuple[float, float]  # driver's (valence, arousal)
    after: tuple[float, float]
    judge_before: tuple[float, float]
    judge_after: tuple[float, float]
    alpha: float
    reached: bool
    ssim: float
    ms: float  # wall clock
    cpu_ms: float  # this process's CPU time: less disturbed by other jobs on a shared machine


def top_arousal_third(samples: list[Sample]) -> list[Sample]:
    ranked = sorted(samples, key=lambda s: (-s.arousal, str(s.path)))
    return ranked[: math.ceil(len(ranked) / 3)]


def megapixel_jpeg(path: Path) -> bytes:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    scale = math.sqrt(MEGAPIXEL / (rgb.width * rgb.height))
    big = rgb.resize(
        (round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS
    )
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    return out.getvalue()


def judge(scorer: Scorer, data: bytes) -> Emotion:
    _, frames = frames_for_scoring(data, size=scorer.input_size)
    return score(scorer, frames)


def run_one(
    calmer: Calmer,
    referee: Scorer,
    sample: Sample,
    strength: float | None = None,
    target: VATarget = TARGET,
) -> Row:
    data = megapixel_jpeg(sample.path)
    started, cpu_started = time.perf_counter(), time.process_time()
    decoded = decode_full(data)
    outcome = calmer.calm(decoded.frames, target, strength=strength)
    output = encode_like(decoded, outcome.frames)
    ms = (time.perf_counter() - started) * 1000.0
    cpu_ms = (time.process_time() - cpu_started) * 1000.0
    similarity = ssim_luminance(decoded.frames[0], decode_full(output).frames[0])
    jb, ja = judge(referee, data), judge(referee, output)
    return Row(
        theme=sample.path.stem,
        rated_arousal=sample.arousal,
        before=(outcome.before.valence, outcome.before.arousal),
        after=(outcome.after.valence, outcome.after.arousal),
        judge_before=(jb.valence, jb.arousal),
        judge_after=(ja.valence, ja.arousal),
        alpha=outcome.alpha,
        reached=outcome.reached,
        ssim=similarity,
        ms=ms,
        cpu_ms=cpu_ms,
    )


def summarise(rows: list[Row], view: str, target: VATarget = TARGET) -> dict[str, float]:
    if view == "driver":
        pairs = [(Emotion(*r.before), Emotion(*r.after)) for r in rows]
    else:
        pairs = [(Emotion(*r.judge_before), Emotion(*r.judge_after)) for r in rows]
    needing = [(b, a) for b, a in pairs if not target.reached(b)]
    return {
        "images": len(pairs),
        "mean_arousal_drop": statistics.fmean(b.arousal - a.arousal for b, a in pairs),
        "mean_valence_change": statistics.fmean(a.valence - b.valence for b, a in pairs),
        "reach_share": sum(target.reached(a) for _, a in pairs) / len(pairs),
        "needing_calm": len(needing),
        "mean_drop_needing": (
            statistics.fmean(b.arousal - a.arousal for b, a in needing) if needing else 0.0
        ),
        "reach_share_needing": (
            sum(target.reached(a) for _, a in needing) / len(needing) if needing else 1.0
        ),
        "mean_ssim": statistics.fmean(r.ssim for r in rows),
        "median_ms": statistics.median(r.ms for r in rows),
        "median_cpu_ms": statistics.median(r.cpu_ms for r in rows),
    }


def markdown(summary: dict[str, float], title: str, target: VATarget = TARGET) -> str:
    share_needing = 100 * summary["reach_share_needing"]
    goal = f"arousal ≤ {target.arousal_at_most:+.2f}"
    if target.valence_at_least is not None:
        goal += f", valence ≥ {target.valence_at_least:+.2f}"
    lines = [
        f"**{title}**",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| images (validation, top third rated arousal) | {summary['images']} | |",
        f"| mean predicted arousal drop, all | {summary['mean_arousal_drop']:.3f} | ≥ 0.25 |",
        f"| mean predicted valence change, all | {summary['mean_valence_change']:+.3f} | |",
        f"| share reaching the target ({goal}), all | {100 * summary['reach_share']:.1f} % "
        "| ≥ 80 % |",
        f"| images outside the target before calming | {summary['needing_calm']} | |",
        f"| mean arousal drop, those only | {summary['mean_drop_needing']:.3f} | |",
        f"| share reaching the target, those only | {share_needing:.1f} % | |",
        f"| mean SSIM (luminance) to original | {summary['mean_ssim']:.3f} | ≥ 0.75 |",
        f"| median ms per 1-MP JPEG, end to end (wall) | {summary['median_ms']:.1f} | < 150 |",
        f"| median CPU ms per 1-MP JPEG, end to end | {summary['median_cpu_ms']:.1f} | |",
    ]
    return "\n".join(lines)


def contact_sheet(calmer: Calmer, samples: list[Sample], out: Path, count: int = 6) -> list[str]:
    """Before/after pairs of benign, pleasant (rated valence ≥ 0) images, most arousing first."""
    benign = [
        s for s in samples
        if s.path.stem.rsplit(" ", 1)[0] in BENIGN_THEMES and s.valence >= 0.0
    ]  # fmt: skip
    scored = []
    for s in benign:
        with Image.open(s.path) as im:
            rgb = im.convert("RGB")
        scored.append((score(calmer.scorer, [_array(rgb)]).arousal, s.path.stem, rgb))
    scored.sort(key=lambda t: (-t[0], t[1]))
    picks, seen = [], set()
    for item in scored:  # one image per theme keeps the sheet varied
        theme = item[1].rsplit(" ", 1)[0]
        if theme not in seen:
            seen.add(theme)
            picks.append(item)
        if len(picks) == count:
            break
    cell_w, cell_h, label = 256, 205, 18
    sheet = Image.new("RGB", (2 * cell_w + 30, len(picks) * (cell_h + label + 8) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((10, 4), "before", fill="black")
    draw.text((cell_w + 20, 4), "after (calmed, default target: arousal <= -0.2)", fill="black")
    names = []
    for row, (_, name, rgb) in enumerate(picks):
        outcome = calmer.calm([rgb], TARGET)
        y = 24 + row * (cell_h + label + 8)
        for col, frame in enumerate((rgb, outcome.frames[0])):
            tile = frame.copy()
            tile.thumbnail((cell_w, cell_h))
            sheet.paste(tile, (10 + col * (cell_w + 10), y))
        ssim = ssim_luminance(rgb, outcome.frames[0])
        draw.text(
            (10, y + cell_h + 2),
            f"{name}: A {outcome.before.arousal:+.2f} -> {outcome.after.arousal:+.2f}, "
            f"V {outcome.before.valence:+.2f} -> {outcome.after.valence:+.2f}, "
            f"alpha {outcome.alpha:.2f}, SSIM {ssim:.2f}",
            fill="black",
        )
        names.append(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return names


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oasis", type=Path, default=REPO.parent / "shared" / "data" / "oasis")
    parser.add_argument("--scorer", default="heuristic", choices=("auto", "nested", "heuristic"))
    parser.add_argument("--model-dir", type=Path, default=None, help="for --scorer auto|nested")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (smoke)")
    parser.add_argument("--quick", action="store_true", help="3 images: a smoke run")
    parser.add_argument(
        "--limit-s", type=float, default=0.0, help="stop adding images after this many seconds"
    )
    parser.add_argument("--json", type=Path, help="write per-image rows and summaries here")
    parser.add_argument(
        "--strength", type=float, default=None, help="one shot at this α instead of the loop"
    )
    parser.add_argument("--target-arousal", type=float, default=TARGET.arousal_at_most)
    parser.add_argument("--target-valence", type=float, default=None)
    parser.add_argument("--sheet", type=Path, help="draw the before/after contact sheet here")
    args = parser.parse_args(argv)

    scorer = create_scorer(args.scorer, model_dir=args.model_dir)
    calmer = Calmer(scorer, StyleBank.default())
    samples = load_oasis(args.oasis)
    _, validation = split(samples)
    if args.sheet:
        names = contact_sheet(calmer, samples, args.sheet)
        print(f"contact sheet {args.sheet}: {', '.join(names)}")
        return 0
    chosen = top_arousal_third(validation)
    if args.limit or args.quick:
        chosen = chosen[: args.limit or 3]
    run_one(calmer, HeuristicScorer(), chosen[0])  # warm-up: imports, allocator, caches
    target = VATarget(args.target_arousal, args.target_valence)
    deadline = time.monotonic() + args.limit_s if args.limit_s > 0 else float("inf")
    rows = []
    for sample in chosen:
        rows.append(run_one(calmer, HeuristicScorer(), sample, args.strength, target))
        if time.monotonic() > deadline:
            print(f"stopped after {len(rows)} images (--limit-s {args.limit_s})")
            break
    driver, referee = summarise(rows, "driver", target), summarise(rows, "judge", target)
    mode = "closed loop" if args.strength is None else f"one shot at α = {args.strength}"
    print(f"scorer: {scorer.name} (width {scorer.width}, {scorer.precision}); {mode}\n")
    print(markdown(driver, f"Driver's view ({scorer.name} steers and scores)", target))
    print()
    title = "Judge's view (hand-crafted scorer re-scores the encoded output; same runs)"
    print(markdown(referee, title, target))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "scorer": scorer.name,
                    "driver": driver,
                    "judge": referee,
                    "rows": [asdict(r) for r in rows],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
