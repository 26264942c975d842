"""Dataset loaders and the fixed split (torch-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moodgate.emotion.datasets import (
    load_all,
    load_csv_manifest,
    load_oasis,
    preprocess,
    split,
    to_unit,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _jpg(path: Path, colour: tuple[int, int, int] = (120, 30, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path)


def test_oasis_quirks(tmp_path: Path) -> None:
    """Bare-CR line ends, Latin-1 bytes, unnamed id column, trailing-space themes."""
    header = (
        ",Theme,Category,Source,Valence_mean,Valence_SD,Valence_N,Arousal_mean,Arousal_SD,Arousal_N"
    )
    rows = [
        "I1,Crosswalk 1 ,Scene,Pixabay,4,1,100,1,1,100",
        "I2,War 2 ,Scene,Flickr,1,1,100,7,1,100",
        "I3,Caf\xe9 1,Object,Wikim\xe9dia,7,1,100,4,1,100",
        "I4,Missing 1,Object,Pixabay,4,1,100,4,1,100",  # no image: skipped
    ]
    (tmp_path / "OASIS.csv").write_bytes("\r".join([header, *rows]).encode("latin-1") + b"\r")
    for name in ("Crosswalk 1", "War 2", "Caf\xe9 1"):
        _jpg(tmp_path / "images" / f"{name}.jpg")
    samples = load_oasis(tmp_path)
    assert [s.path.name for s in samples] == ["Crosswalk 1.jpg", "War 2.jpg", "Caf\xe9 1.jpg"]
    assert samples[0].valence == pytest.approx(0.0) and samples[0].arousal == pytest.approx(-1.0)
    assert samples[1].valence == pytest.approx(-1.0) and samples[1].arousal == pytest.approx(1.0)
    assert samples[2].valence == pytest.approx(1.0) and samples[2].category == "Object"


def test_generic_csv_scales(tmp_path: Path) -> None:
    _jpg(tmp_path / "a.jpg")
    _jpg(tmp_path / "sub" / "b.jpg")
    (tmp_path / "m.csv").write_text(
        "path,valence,arousal,scale_min,scale_max\na.jpg,9,1,1,9\nsub/b.jpg,0.5,0.25,0,1\n"
    )
    a, b = load_csv_manifest(tmp_path / "m.csv")
    assert a.path == tmp_path / "a.jpg" and (a.valence, a.arousal) == (1.0, -1.0)
    assert (b.valence, b.arousal) == (0.0, -0.5)
    assert to_unit(4, 1, 7) == pytest.approx(0.0)
    assert len(load_all([str(tmp_path / "m.csv")])) == 2


def test_split_is_fixed_and_stratified() -> None:
    oasis = SHARED / "oasis"
    if not (oasis / "OASIS.csv").exists():
        pytest.skip(f"OASIS data not found at {oasis} (CI keeps shared/ beside the clone)")
    samples = load_oasis(oasis)
    assert len(samples) == 720
    tr, va = split(samples, seed=7)
    _, va2 = split(list(reversed(samples)), seed=7)
    assert [s.path for s in va] == [s.path for s in va2]
    assert not {s.path for s in tr} & {s.path for s in va}
    assert len(va) == pytest.approx(144, abs=4)
    cats = {s.category for s in samples}
    for c in cats:
        n_all = sum(s.category == c for s in samples)
        n_val = sum(s.category == c for s in va)
        assert abs(n_val - 0.2 * n_all) <= 1


def test_preprocess_rule() -> None:
    x = preprocess(np.full((10, 30, 3), 255, np.uint8), 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, (255 - 127) / 128)
