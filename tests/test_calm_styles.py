"""Style bank, style selection, Gaussian transport, Lab conversion and SSIM."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moodgate.calm import NEUTRAL_CALM, ColourStats, Style, StyleBank, StyleSelector
from moodgate.calm.colour import lab_to_srgb, measure, srgb_to_lab
from moodgate.calm.gaussian import barycenter, transport_map, wasserstein2
from moodgate.calm.quality import ssim_luminance
from moodgate.emotion.base import Emotion, VATarget
from moodgate.emotion.heuristic import HeuristicScorer


def _image_file(path: Path, colour: tuple[int, int, int], fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(np.array(colour) + rng.normal(0, 12, (48, 64, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def test_add_dir_reports_corrupt_file_and_uses_the_rest(tmp_path: Path) -> None:
    styles_dir = tmp_path / "calm looks"
    styles_dir.mkdir()
    _image_file(styles_dir / "sky.png", (150, 190, 230))
    _image_file(styles_dir / "meadow.jpg", (120, 170, 90), "JPEG")
    (styles_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (styles_dir / ".hidden.png").write_bytes(b"ignored")
    bank = StyleBank()
    added, problems = bank.add_dir(styles_dir, HeuristicScorer())
    assert sorted(s.name for s in added) == ["calm looks/meadow", "calm looks/sky"]
    assert len(problems) == 1 and "broken.png" in problems[0]
    assert bank.scorer == "heuristic"

    path = tmp_path / "state" / "styles.json"
    bank.save(path)
    loaded = StyleBank.load(path)
    assert [s.name for s in loaded.styles] == [s.name for s in bank.styles]
    assert loaded.styles[0].stats.lab_mean == pytest.approx(bank.styles[0].stats.lab_mean, abs=1e-3)

    # Adding the same folder again replaces, not duplicates.
    bank.add_dir(styles_dir, HeuristicScorer())
    assert len(bank) == 2


def test_add_dir_on_missing_or_empty_folder(tmp_path: Path) -> None:
    assert StyleBank().add_dir(tmp_path / "nope", HeuristicScorer()) == (
        [],
        [f"{tmp_path / 'nope'}: not a directory"],
    )
    added, problems = StyleBank().add_dir(tmp_path, HeuristicScorer())
    assert not added and problems


def test_default_bank_falls_back_to_builtin(tmp_path: Path) -> None:
    assert StyleBank.default(tmp_path / "missing.json").styles == [NEUTRAL_CALM]
    (tmp_path / "bad.json").write_text("{not json")
    assert StyleBank.default(tmp_path / "bad.json").styles == [NEUTRAL_CALM]


def test_shipped_bank_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "models" / "styles.json"
    bank = StyleBank.load(path)
    assert len(bank) >= 8
    data = json.loads(path.read_text())
    assert "derived_from" in data
    assert all(s.rated is not None and s.rated.arousal < 0 for s in bank.styles)


def test_malformed_bank_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"styles": [{"name": "x"}]}))
    with pytest.raises(ValueError, match="malformed"):
        StyleBank.load(path)


def _style(name: str, arousal: float, mean: tuple[float, float, float]) -> Style:
    stats = ColourStats.from_arrays(np.array(mean), np.diag([100.0, 25.0, 25.0]), 0.1, 0.2, 0.1)
    return Style(name, Emotion(0.5, arousal), stats)


def test_selection_prefers_styles_in_the_target_region_and_compatible_colours() -> None:
    image = ColourStats.from_arrays(np.array([50.0, 0, 0]), np.diag([100.0, 25, 25]), 0.1, 0.2, 0.1)
    calm_near = _style("calm-near", -0.6, (55, 0, 0))
    calm_far = _style("calm-far", -0.6, (30, 40, -40))
    wild = _style("wild", 0.8, (50, 0, 0))
    blend = StyleSelector().blend(
        image, VATarget(arousal_at_most=-0.2), [wild, calm_far, calm_near]
    )
    weights = dict(blend.weights)
    assert weights["calm-near"] > weights["calm-far"] > weights["wild"]
    assert blend.weights[0][0] == "calm-near"


def test_transport_map_and_barycenter() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    source, target = a @ a.T + np.eye(3), b @ b.T + np.eye(3)
    t = transport_map(source, target)
    np.testing.assert_allclose(t @ source @ t.T, target, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t, t.T, atol=1e-9)  # the optimal map is symmetric
    _mean, cov = barycenter([np.zeros(3), np.zeros(3)], [source, source], [0.3, 0.7])
    np.testing.assert_allclose(cov, source, rtol=1e-6)
    assert wasserstein2(np.zeros(3), source, np.zeros(3), source) == pytest.approx(0, abs=1e-5)
    assert wasserstein2(np.zeros(3), source, np.ones(3), source) == pytest.approx(np.sqrt(3))


def test_lab_round_trip_and_known_values() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 1, (1000, 3))
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-6)
    np.testing.assert_allclose(srgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(
        srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05
    )


def test_measure_ignores_transparent_pixels() -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., :3] = (255, 0, 0)
    rgba[:5, :, :3] = (0, 0, 255)
    rgba[:5, :, 3] = 255  # only the blue half is visible
    stats = measure([rgba])
    assert stats.lab_mean[2] < -50  # blue, not a red/blue average


def test_ssim() -> None:
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert ssim_luminance(image, image) == pytest.approx(1.0)
    noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.normal(0, 40, (300, 400, 3)), 0, 255)
    assert ssim_luminance(image, Image.fromarray(noisy.astype(np.uint8))) < 0.9
    tiny = Image.new("RGB", (5, 5), (10, 20, 30))
    assert ssim_luminance(tiny, tiny) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim_luminance(image, tiny)


def test_summarise_animated_input(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 30, 200))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    (tmp_path / "anim.gif").write_bytes(out.getvalue())
    added, problems = StyleBank().add_dir(tmp_path, HeuristicScorer())
    assert not problems and len(added) == 1
    # both frames counted: the mean sits between red and blue
    assert -40 < added[0].stats.lab_mean[2] < 40
