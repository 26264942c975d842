"""Accuracy–MFLOPs and latency–MFLOPs plot (Pillow only) and the eval section of the card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"valence": (31, 119, 180), "arousal": (214, 39, 40), "latency": (44, 160, 44)}


def _panel(
    d: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    series: dict[str, list[tuple[float, float]]],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    title: str,
    ylabel: str,
) -> None:
    x0, y0, x1, y1 = box
    d.rectangle(box, outline=(0, 0, 0))
    d.text((x0, y0 - 28), title, fill=(0, 0, 0))
    d.text((x0 - 60, y0 - 14), ylabel, fill=(0, 0, 0))
    d.text(((x0 + x1) // 2 - 30, y1 + 22), "MFLOPs (MACs/1e6)", fill=(0, 0, 0))

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            x0 + (x - xlim[0]) / (xlim[1] - xlim[0]) * (x1 - x0),
            y1 - (y - ylim[0]) / (ylim[1] - ylim[0]) * (y1 - y0),
        )

    for k in range(6):
        yv = ylim[0] + k * (ylim[1] - ylim[0]) / 5
        _, yy = px(xlim[0], yv)
        d.line((x0, yy, x0 - 4, yy), fill=(0, 0, 0))
        d.text((x0 - 44, yy - 6), f"{yv:.2f}" if ylim[1] < 5 else f"{yv:.0f}", fill=(0, 0, 0))
        xv = xlim[0] + k * (xlim[1] - xlim[0]) / 5
        xx, _ = px(xv, ylim[0])
        d.line((xx, y1, xx, y1 + 4), fill=(0, 0, 0))
        d.text((xx - 10, y1 + 6), f"{xv:.0f}", fill=(0, 0, 0))
    ly = y0 + 8
    for name, pts in series.items():
        base = name.split()[0]
        colour = COLOURS.get(base, (0, 0, 0))
        dashed = "int8" in name
        pts = sorted(pts)
        xy = [px(x, y) for x, y in pts]
        for a, b in pairwise(xy):
            d.line((*a, *b), fill=colour, width=1 if dashed else 2)
        for x, y in xy:
            r = 3
            if dashed:
                d.rectangle((x - r, y - r, x + r, y + r), outline=colour)
            else:
                d.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        d.line((x1 - 130, ly + 6, x1 - 110, ly + 6), fill=colour, width=1 if dashed else 2)
        d.text((x1 - 105, ly), name, fill=colour)
        ly += 16


def render_curves(rows: Sequence[dict], torch_fp32: dict[float, dict], path: Path) -> None:
    """Left: val r vs MFLOPs (int8 measured by onnxruntime; fp32 from the manifest's torch
    evaluation where no fp32 file ships). Right: measured ms/image vs MFLOPs."""
    img = Image.new("RGB", (1100, 460), "white")
    d = ImageDraw.Draw(img)
    model_rows = [r for r in rows if r["width"] is not None]
    mf = [r["mflops"] for r in model_rows]
    xlim = (0.0, max(mf) * 1.05)
    series: dict[str, list[tuple[float, float]]] = {}
    for axis in ("valence", "arousal"):
        series[f"{axis} int8"] = [
            (r["mflops"], r[f"{axis}_r"]) for r in model_rows if r["precision"] == "int8"
        ]
        series[f"{axis} fp32"] = [(m, v[f"{axis}_r"]) for m, v in torch_fp32.items()]
    ys = [y for pts in series.values() for _, y in pts]
    ylim = (max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05))
    _panel(d, (80, 50, 520, 400), series, xlim, ylim, "validation Pearson r vs MFLOPs", "r")
    lat = {
        f"latency {p}": [
            (r["mflops"], r["ms_per_image"]) for r in model_rows if r["precision"] == p
        ]
        for p in ("int8", "fp32")
    }
    lat = {k: v for k, v in lat.items() if v}
    lys = [y for pts in lat.values() for _, y in pts]
    _panel(
        d,
        (640, 50, 1080, 400),
        lat,
        xlim,
        (0.0, max(lys) * 1.1),
        "median ms/image (1 thread, onnxruntime) vs MFLOPs",
        "ms",
    )
    img.save(path)


def build_eval_assets(data: list[str], model_dir: Path) -> tuple[list[dict], str]:
    """Run the torch-free evaluation, write eval.json + accuracy_mflops.png into model_dir."""
    from moodgate.emotion.evaluate import evaluate, format_table

    model_dir = Path(model_dir)
    rows = evaluate(data, model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    torch_fp32 = {
        s["mflops"]: s["val_fp32_torch"]
        for s in manifest["slices"]
        if s["precision"] == "int8" and s.get("val_fp32_torch")
    }
    render_curves(rows, torch_fp32, model_dir / "accuracy_mflops.png")
    (model_dir / "eval.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows, format_table(rows)


def _fmt(m: dict | None) -> str:
    if not m:
        return "–"
    return f"{m['valence_r']:.3f} / {m['arousal_r']:.3f}"


def ladder_table(manifest: dict) -> str:
    """Torch-side numbers from training: fp32 vs int8 vs lower bit-widths, per width."""
    lines = [
        "| width | input | MFLOPs | kept expansion blocks (b5…b15, of 8) | stage depth (s3…s6) "
        "| read-out: kind, train-CV r | fp32 r V/A | int8 r V/A | 6-bit | 5-bit "
        "| 4-bit |",
        "|" + "---|" * 11,
    ]
    for s in sorted(manifest["slices"], key=lambda s: -s["width"]):
        if s["precision"] != "int8":
            continue
        lay = s["layers"]
        exp = "".join(str(lay["expand_blocks"][f"b{i}"]) for i in range(5, 16))
        depth = "".join(str(d) for d in lay["stage_depth"][3:])
        lower = " | ".join(_lower_bits(s, b) for b in ("6", "5", "4"))
        readout = s.get("readout")
        cv = f"{readout_kind(readout)}, {readout['train_cv_r']:.3f}" if readout else "–"
        lines.append(
            f"| {s['width']:g} | {s['input_size']} | {s['mflops']:.1f} | {exp} | {depth} | {cv} "
            f"| {_fmt(s.get('val_fp32_torch'))} | {_fmt(s['val'])} | {lower} |"
        )
    return "\n".join(lines)


def readout_kind(readout: dict) -> str:
    """A manifest slice's `readout` record in words, e.g. "mean of 32 hidden units and
    ridge, 8 views per image"."""
    views = readout["views_per_image"]
    ridge = f"ridge, {views} views per image" if views else "ridge"
    if not readout.get("hidden_units"):
        return ridge
    hidden = f"{readout['hidden_units']} hidden units"
    return f"mean of {hidden} and {ridge}" if readout.get("ridge_beside_hidden") else hidden


def _lower_bits(slice_: dict, bits: str) -> str:
    """Own statistics and read-out, then (in brackets) with the int8 slice's, where known."""
    own = _fmt((slice_.get("val_lower_bits") or {}).get(bits))
    shared = (slice_.get("val_lower_bits_with_int8_statistics") or {}).get(bits)
    return f"{own} ({_fmt(shared)})" if shared else own
