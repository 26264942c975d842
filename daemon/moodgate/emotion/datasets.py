"""Rated-image datasets, the fixed train/validation split and the shared preprocessing.

Torch-free on purpose: training, `evaluate` and the runtime scorer all import this, so the
split and the resize/normalise rule can never drift between them.

A dataset is either an OASIS directory (``OASIS.csv`` + ``images/``) or a generic CSV manifest
with columns ``path, valence, arousal, scale_min, scale_max`` (optional ``category``); relative
paths resolve against the CSV's folder. Every rating is mapped linearly onto −1…+1.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# EfficientNet-Lite was trained in TF on (x − 127) / 128; the ONNX graphs expect that input.
NORM_MEAN = 127.0
NORM_STD = 128.0
DEFAULT_SEED = 20260
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Sample:
    path: Path
    valence: float  # −1…+1
    arousal: float  # −1…+1
    category: str = ""


def to_unit(x: float, lo: float, hi: float) -> float:
    """Map a rating on [lo, hi] linearly onto [−1, +1] (OASIS 1–7 gives (x − 4) / 3)."""
    return (2.0 * (float(x) - lo) / (hi - lo)) - 1.0


def load_oasis(root: Path) -> list[Sample]:
    """Read an OASIS directory, coping with the original CSV's quirks.

    OASIS.csv ends lines in a bare CR, is Latin-1, has an unnamed id column, and two Theme
    values carry a trailing space that their image file names do not.
    """
    root = Path(root)
    raw = (root / "OASIS.csv").read_bytes().decode("latin-1")
    # newline="" lets csv accept \r, \n and \r\n alike.
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    samples = []
    for row in reader:
        theme = (row.get("Theme") or "").strip()
        if not theme:
            continue
        path = root / "images" / f"{theme}.jpg"
        if not path.exists():
            continue
        samples.append(
            Sample(
                path=path,
                valence=to_unit(float(row["Valence_mean"]), 1.0, 7.0),
                arousal=to_unit(float(row["Arousal_mean"]), 1.0, 7.0),
                category=(row.get("Category") or "").strip(),
            )
        )
    return samples


def load_csv_manifest(path: Path) -> list[Sample]:
    """Read a generic manifest: path, valence, arousal, scale_min, scale_max[, category]."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    samples = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        img = Path(row["path"].strip())
        if not img.is_absolute():
            img = path.parent / img
        lo, hi = float(row["scale_min"]), float(row["scale_max"])
        samples.append(
            Sample(
                path=img,
                valence=to_unit(float(row["valence"]), lo, hi),
                arousal=to_unit(float(row["arousal"]), lo, hi),
                category=(row.get("category") or "").strip(),
            )
        )
    return samples


def load_dataset(spec: str | Path) -> list[Sample]:
    """One dataset: an OASIS-style directory or a CSV manifest."""
    p = Path(spec)
    if p.is_dir():
        if (p / "OASIS.csv").exists():
            return load_oasis(p)
        raise ValueError(f"{p}: a dataset directory must contain OASIS.csv")
    if p.suffix.lower() == ".csv":
        return load_csv_manifest(p)
    raise ValueError(f"{p}: expected an OASIS directory or a CSV manifest")


def load_all(specs: Iterable[str | Path]) -> list[Sample]:
    out: list[Sample] = []
    for spec in specs:
        out.extend(load_dataset(spec))
    if not out:
        raise ValueError("no samples found in the given datasets")
    return out


def split(
    samples: Sequence[Sample], seed: int = DEFAULT_SEED, val_fraction: float = VAL_FRACTION
) -> tuple[list[Sample], list[Sample]]:
    """Fixed, seeded train/validation split, stratified by category.

    Samples without a category are stratified by valence tercile so that a generic CSV still
    gets a balanced split. Order inside each stratum is by path first, so the split depends
    only on the data and the seed, not on file listing order.
    """
    strata: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        key = s.category or f"_v{int(np.clip((s.valence + 1) * 1.5, 0, 2))}"
        strata[key].append(s)
    rng = random.Random(seed)
    train, val = [], []
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda s: str(s.path))
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return train, val


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Plain (aspect-distorting) bilinear resize to size×size; keeps the whole frame."""
    img = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8), "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 3×size×size, normalised by (x − 127) / 128."""
    x = resize_rgb(rgb, size).astype(np.float32)
    return ((x - NORM_MEAN) / NORM_STD).transpose(2, 0, 1).copy()


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
