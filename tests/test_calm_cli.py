"""The `calm` and `styles` click commands, through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moodgate.calm.commands import calm_command, styles_group


def _busy(path: Path, seed: int, fmt: str, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    blocks = rng.choice([0, 255], size=(15, 20, 3)).astype(np.uint8)
    pixels = np.repeat(np.repeat(blocks, 12, axis=0), 12, axis=1)
    Image.fromarray(pixels).convert(mode).save(path, fmt)
    return path


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOODGATE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_calm_batch_json_with_a_bad_file(tmp_path: Path, state: Path) -> None:
    good_jpeg = _busy(tmp_path / "a.jpg", 1, "JPEG")
    good_png = _busy(tmp_path / "b.png", 2, "PNG", "RGBA")
    bad = tmp_path / "c.gif"
    bad.write_bytes(b"GIF89a" + b"\x00" * 10)
    missing = tmp_path / "nope.png"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        calm_command,
        [str(good_jpeg), str(bad), str(good_png), str(missing), "--out", str(out),
         "--scorer", "heuristic", "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).name for r in records] == ["a.jpg", "b.png"]
    for record in records:
        assert set(record) >= {
            "input",
            "output",
            "before",
            "after",
            "alpha",
            "reached",
            "ssim",
            "ms",
        }
        assert Path(record["output"]).exists()
        assert record["after"]["arousal"] <= record["before"]["arousal"]
        assert 0 < record["ssim"] <= 1
    with Image.open(out / "b.png") as calmed, Image.open(good_png) as original:
        assert calmed.size == original.size and calmed.mode == "RGBA"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "c.gif" in errors[0] and "nope.png" in errors[1]


def test_calm_with_style_dirs_strength_and_text_output(tmp_path: Path, state: Path) -> None:
    style_dir = tmp_path / "styles"
    style_dir.mkdir()
    Image.new("RGB", (32, 32), (170, 200, 220)).save(style_dir / "pale.png")
    (style_dir / "junk.jpg").write_bytes(b"\xff\xd8\xff garbage")
    source = _busy(tmp_path / "in.webp", 3, "WEBP")
    result = CliRunner().invoke(
        calm_command,
        [str(source), "--out", str(tmp_path / "o"), "--style", str(style_dir),
         "--strength", "0.5", "--target-valence", "0.0", "--scorer", "heuristic"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "α=0.50" in result.stdout
    assert "junk.jpg" in result.stderr
    assert (tmp_path / "o" / "in.webp").exists()


def test_styles_add_and_list(tmp_path: Path, state: Path) -> None:
    style_dir = tmp_path / "mine"
    style_dir.mkdir()
    Image.new("RGB", (32, 32), (120, 180, 120)).save(style_dir / "green.png")
    Image.new("RGB", (32, 32), (200, 200, 240)).save(style_dir / "lilac.jpg")
    runner = CliRunner()
    added = runner.invoke(styles_group, ["add", str(style_dir), "--scorer", "heuristic"])
    assert added.exit_code == 0, added.output
    assert (state / "styles.json").exists()
    listed = runner.invoke(styles_group, ["list", "--json"])
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert names == ["mine/green", "mine/lilac"]
    text = runner.invoke(styles_group, ["list"])
    assert "mine/green" in text.stdout and "arousal" in text.stdout
    other = tmp_path / "other.json"
    runner.invoke(
        styles_group, ["add", str(style_dir), "--bank", str(other), "--scorer", "heuristic"]
    )
    assert len(json.loads(other.read_text())["styles"]) == 2
    shipped = runner.invoke(styles_group, ["list", "--default", "--json"])
    assert shipped.exit_code == 0 and shipped.stdout.strip()


def test_build_default_from_an_oasis_like_folder(tmp_path: Path) -> None:
    root = tmp_path / "oasis"
    (root / "images").mkdir(parents=True)
    rows = [
        ",Theme,Category,Source,Valence_mean,Valence_SD,Valence_N,Arousal_mean,Arousal_SD,Arousal_N"
    ]
    for i in range(12):
        calm = i % 2 == 0
        theme = f"Lake {i}" if calm else f"Fire {i}"
        colour = (140, 180, 210) if calm else (220, 60, 20)
        Image.new("RGB", (50, 40), colour).save(root / "images" / f"{theme}.jpg")
        valence, arousal = (6.0, 2.0) if calm else (3.0, 6.0)
        # trailing space in Theme, as in the real file; bare-CR line endings
        rows.append(f"I{i},{theme} ,Scenery,x,{valence},1,100,{arousal},1,100")
    (root / "OASIS.csv").write_bytes("\r".join(rows).encode("latin-1"))
    out = tmp_path / "styles.json"
    result = CliRunner().invoke(
        styles_group,
        ["build-default", "--oasis", str(root), "--out", str(out), "--scorer", "heuristic"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["styles"] and all(s["name"].startswith("oasis:Lake") for s in data["styles"])
    assert data["derived_from"]["chosen"] == len(data["styles"])
