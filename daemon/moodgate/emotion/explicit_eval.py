"""How well the explicit classifier separates nudity from everything else, on rated images.

OASIS has no explicitness rating, but its themes name what each picture shows: the "Nude
couple/man/woman" themes are the positives, every other picture (including war, injury,
babies, beaches and weddings) a negative. That gives a hit rate and a false-block rate at each
preset's threshold, which is what a parent choosing a preset needs to know.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
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
    samples = load_all(data)
    values, labels, categories, names, times = [], [], [], [], []
    for sample in samples:
        rgb = read_rgb(sample.path)
        start = time.perf_counter()
        values.append(scorer.rate([rgb])[0])
        times.append((time.perf_counter() - start) * 1000)
        labels.append(theme(sample.path).startswith(tuple(positive)))
        categories.append(sample.category or "-")
        names.append(sample.path.stem)
    rated = np.asarray(values)
    is_positive = np.asarray(labels, bool)
    cats = np.asarray(categories)
    result: dict[str, Any] = {
        "model": scorer.name,
        "input_size": scorer.input_size,
        "images": len(samples),
        "positives": int(is_positive.sum()),
        "positive_themes": list(positive),
        "auc": round(auc(rated[is_positive], rated[~is_positive]), 3),
        "median_ms": round(float(np.median(times)), 2) if times else None,
        "thresholds": [],
    }
    for threshold in thresholds:
        over = rated > threshold
        by_category: dict[str, str] = defaultdict(str)
        for cat in sorted(set(cats[~is_positive])):
            negatives = ~is_positive & (cats == cat)
            by_category[cat] = f"{int((over & negatives).sum())}/{int(negatives.sum())}"
        result["thresholds"].append(
            {
                "explicit_over": threshold,
                "hits": int((over & is_positive).sum()),
                "false_blocks": int((over & ~is_positive).sum()),
                "negatives": int((~is_positive).sum()),
                "false_blocks_by_category": dict(by_category),
            }
        )
    worst = np.argsort(-np.where(is_positive, -1.0, rated))[:10]
    result["most_explicit_negatives"] = [
        {"image": names[i], "explicit": round(float(rated[i]), 3)} for i in worst
    ]
    return result


def format_explicit(result: dict[str, Any]) -> str:
    themes = ", ".join(result["positive_themes"])
    lines = [
        f"{result['model']} at {result['input_size']} px on {result['images']} images "
        f"({result['positives']} positives: themes starting {themes})",
        f"AUC {result['auc']:.3f}; median {result['median_ms']} ms per image",
        "",
        "| explicit > | hits | false blocks | false blocks by category |",
        "|---|---|---|---|",
    ]
    for row in result["thresholds"]:
        share = row["false_blocks"] / max(1, row["negatives"])
        cats = ", ".join(f"{k} {v}" for k, v in row["false_blocks_by_category"].items())
        lines.append(
            f"| {row['explicit_over']:g} | {row['hits']}/{result['positives']} | "
            f"{row['false_blocks']}/{row['negatives']} ({share:.1%}) | {cats} |"
        )
    top = result["most_explicit_negatives"]
    worst = ", ".join(f"{w['image']} {w['explicit']:.2f}" for w in top)
    lines += ["", f"most explicit negatives: {worst}"]
    return "\n".join(lines)
