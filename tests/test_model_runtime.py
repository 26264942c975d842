"""The shipped models/: manifest integrity and the torch-free runtime scorer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moodgate.emotion.base import Emotion, Scorer
from moodgate.emotion.nested import (
    ModelIntegrityError,
    SessionPool,
    load_manifest,
    load_scorer,
    sha256_file,
)

MODELS = Path(__file__).resolve().parents[1] / "models"
OASIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oasis"

if not (MODELS / "manifest.json").exists():
    pytest.skip("models/manifest.json not built yet", allow_module_level=True)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest(MODELS)


def test_manifest_hashes_and_size(manifest: dict) -> None:
    for s in manifest["slices"]:
        path = MODELS / s["file"]
        assert path.exists(), s["file"]
        assert sha256_file(path) == s["sha256"], s["file"]
        for key in ("width", "precision", "input_size", "mflops", "params", "val", "layers"):
            assert key in s
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 20_000_000, f"models/ holds {total} bytes"


def test_ladder_is_monotone_in_cost(manifest: dict) -> None:
    int8 = sorted(
        (s for s in manifest["slices"] if s["precision"] == "int8"), key=lambda s: s["width"]
    )
    assert len(int8) >= 4
    mf = [s["mflops"] for s in int8]
    assert mf == sorted(mf)
    for s in int8:
        assert s["mflops"] <= s["width"] * manifest["full_mflops"] * 1.001


def test_load_scorer_picks_and_errors(manifest: dict) -> None:
    widest = load_scorer(MODELS, None, "int8")
    assert widest.width == max(s["width"] for s in manifest["slices"] if s["precision"] == "int8")
    narrow = sorted({s["width"] for s in manifest["slices"] if s["precision"] == "int8"})
    sc = load_scorer(MODELS, narrow[1] + 0.01, "int8")
    assert sc.width == narrow[1]
    assert isinstance(sc, Scorer)
    with pytest.raises(ValueError, match="available"):
        load_scorer(MODELS, 0.001, "int8")
    with pytest.raises(ValueError, match="available"):
        load_scorer(MODELS, None, "fp16")


def test_sha_mismatch_and_missing(tmp_path: Path, manifest: dict) -> None:
    spec = min((s for s in manifest["slices"]), key=lambda s: s["bytes"])
    shutil.copy(MODELS / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_scorer(tmp_path, spec["width"], spec["precision"])
    data = bytearray((MODELS / spec["file"]).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / spec["file"]).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_scorer(tmp_path, spec["width"], spec["precision"])


def test_score_frames_any_size() -> None:
    sc = load_scorer(MODELS, None, "int8")
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (37, 91, 3), dtype=np.uint8),
        rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        np.zeros((8, 8, 3), np.uint8),
        rng.integers(0, 256, (50, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (64, 48, 3), dtype=np.uint8),
    ]
    out = sc.score_frames(frames)
    assert len(out) == 5 and all(isinstance(e, Emotion) for e in out)
    assert all(-1 <= e.valence <= 1 and -1 <= e.arousal <= 1 for e in out)


def test_slices_of_one_file_share_one_session(
    manifest: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shipped slice loaded through one pool: one session per file (an `.onnx.xz` file
    is unpacked once, and hashed once), and each slice predicts what it predicts when loaded
    alone."""
    import moodgate.emotion.nested as nested

    hashed: list[Path] = []
    monkeypatch.setattr(nested, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    pool = SessionPool()
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]
    for s in manifest["slices"]:
        shared = load_scorer(MODELS, s["width"], s["precision"], pool=pool)
        alone = load_scorer(MODELS, s["width"], s["precision"])
        assert (shared.width, shared.precision) == (s["width"], s["precision"])
        assert np.array_equal(shared.predict(frames), alone.predict(frames))
    files = {s["file"] for s in manifest["slices"]}
    assert pool.open_sessions == len(files)
    assert len(hashed) == len(files) + len(manifest["slices"])  # pool once per file; alone each


def test_a_pool_still_rejects_a_file_that_does_not_match(tmp_path: Path) -> None:
    """Remembering a verified file is per digest: a spec with another digest is checked."""
    (tmp_path / "m.onnx").write_bytes(b"not the model")
    pool = SessionPool()
    good = {"file": "m.onnx", "sha256": sha256_file(tmp_path / "m.onnx")}
    assert pool.verified_file(tmp_path, good, "test") == tmp_path / "m.onnx"
    with pytest.raises(ModelIntegrityError):
        pool.verified_file(tmp_path, {**good, "sha256": "0" * 64}, "test")


def test_int8_close_to_fp32(manifest: dict) -> None:
    """Same width, int8 vs fp32 files: predictions agree closely."""
    widths = {s["width"] for s in manifest["slices"] if s["precision"] == "fp32"}
    widths &= {s["width"] for s in manifest["slices"] if s["precision"] == "int8"}
    if not widths:
        pytest.skip("no width ships in both precisions")
    if (OASIS / "images").exists():
        from moodgate.emotion.datasets import read_rgb

        frames = [read_rgb(p) for p in sorted((OASIS / "images").glob("*.jpg"))[:24]]
    else:
        rng = np.random.default_rng(1)
        frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(24)]
    for w in widths:
        a = load_scorer(MODELS, w, "fp32").predict(frames)
        b = load_scorer(MODELS, w, "int8").predict(frames)
        assert np.abs(a - b).max() < 0.08
        for k in range(2):
            assert np.corrcoef(a[:, k], b[:, k])[0, 1] > 0.98


def test_manifest_is_json_roundtrip() -> None:
    text = (MODELS / "manifest.json").read_text()
    assert json.loads(text)["slices"]
