"""How well the explicit classifier separates nudity from everything else, on rated images.

OASIS has no explicitness rating, but its themes name what each picture shows: the "Nude
couple/man/woman" themes are the positives, every other picture (including war, injury,
babies, beaches and weddings) a negative. That gives a hit rate and a false-block rate at each
preset's threshold, which is what a parent choosing a preset needs to know.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moodgate.emotion.datasets import load_all, read_rgb
from moodgate.emotion.explicit import ExplicitScorer

DEFAULT_POSITIVE = ("Nude",)
# The presets' explicit thresholds (policy/presets.py): under-8, 8-12, teen.
THRESHOLDS = (0.3, 0.5, 0.7)


def theme(path: Path) -> str:
    """OASIS names files after their theme and a number: `Nude woman 4.jpg` → `Nude woman`."""
    return re.sub(r"\s*\d+$", "", path.stem)


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    if not len(positives) or not len(negatives):
        return float("nan")
    above = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(above + 0.5 * ties)


def evaluate_explicit(
    data: Sequence[str | Path],
    scorer: ExplicitScorer,
    positive: Sequence[str] = DEFAULT_POSITIVE,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """One row per input size the classifier offers (full size first)."""
    samples = load_all(data)
    images = [read_rgb(sample.path) for sample in samples]
    is_positive = np.asarray([theme(s.path).startswith(tuple(positive)) for s in samples], bool)
    cats = np.asarray([s.category or "-" for s in samples])
    names = [s.path.stem for s in samples]
    result: dict[str, Any] = {
        "model": scorer.name,
        "images": len(samples),
        "positives": int(is_positive.sum()),
        "positive_themes": list(positive),
        "sizes": [],
    }
    for size in sorted(scorer.input_sizes, reverse=True):
        values, times = [], []
        for rgb in images:
            start = time.perf_counter()
            values.append(scorer.rate([rgb], size)[0])
            times.append((time.perf_counter() - start) * 1000)
        rated = np.asarray(values)
        row: dict[str, Any] = {
            "input_size": size,
            "auc": round(auc(rated[is_positive], rated[~is_positive]), 3),
            "median_ms": round(float(np.median(times)), 2) if times else None,
            "thresholds": [],
        }
        for threshold in thresholds:
            over = rated > threshold
            by_category = {
                cat: f"{int((over & ~is_positive & (cats == cat)).sum())}/"
                f"{int((~is_positive & (cats == cat)).sum())}"
                for cat in sorted(set(cats[~is_positive]))
            }
            row["thresholds"].append(
                {
                    "explicit_over": threshold,
                    "hits": int((over & is_positive).sum()),
                    "false_blocks": int((over & ~is_positive).sum()),
                    "negatives": int((~is_positive).sum()),
                    "false_blocks_by_category": by_category,
                }
            )
        worst = np.argsort(-np.where(is_positive, -1.0, rated))[:10]
        row["most_explicit_negatives"] = [
            {"image": names[i], "explicit": round(float(rated[i]), 3)} for i in worst
        ]
        result["sizes"].append(row)
    return result


def format_explicit(result: dict[str, Any]) -> str:
    themes = ", ".join(result["positive_themes"])
    lines = [
        f"{result['model']} on {result['images']} images "
        f"({result['positives']} positives: themes starting {themes})",
        "",
        "| input | AUC | ms/img | explicit > | hits | false blocks | false blocks by category |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        for i, t in enumerate(row["thresholds"]):
            share = t["false_blocks"] / max(1, t["negatives"])
            cats = ", ".join(f"{k} {v}" for k, v in t["false_blocks_by_category"].items())
            head = (
                f"| {row['input_size']} | {row['auc']:.3f} | {row['median_ms']} "
                if i == 0
                else "| | | "
            )
            lines.append(
                f"{head}| {t['explicit_over']:g} | {t['hits']}/{result['positives']} | "
                f"{t['false_blocks']}/{t['negatives']} ({share:.1%}) | {cats} |"
            )
    top = result["sizes"][0]["most_explicit_negatives"] if result["sizes"] else []
    worst = ", ".join(f"{w['image']} {w['explicit']:.2f}" for w in top)
    lines += ["", f"most explicit negatives at full size: {worst}"]
    return "\n".join(lines)
