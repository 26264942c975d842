"""A stand-in model directory for timing while the trained model does not exist yet.

    .venv/bin/python bench/standin_model.py /tmp/mg-standin/models     # needs the train extra

The real network (training/nested_lite0.py) and the real export (training/export.py): the same
graphs, operators, int8 weight-only quantisation and MFLOPs per width as the shipped slices will
have, so every speed measured on it holds for the trained model. Random weights and a zero head:
every image scores (0, 0) and passes, and the manifest carries no accuracy. Never ship it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from moodgate.training.export import export_slice
from moodgate.training.nested_lite0 import (
    BLOCKS,
    FULL,
    M_BLOCKS,
    STAGE_BLOCKS,
    STAGE_DEPTH,
    STAGES,
    TRUNK,
    NestedLite0,
    SliceConfig,
    mflops,
    params,
)


def cut(resolution: int, expand: int, shallower: bool) -> SliceConfig:
    """Nested blocks narrowed to `expand` of M and, if asked, one block fewer per stage."""
    widths = tuple(M_BLOCKS if i < TRUNK else expand for i in range(len(BLOCKS)))
    depth = tuple(
        STAGE_DEPTH[s]
        if STAGE_BLOCKS[s][0] < TRUNK or not shallower
        else max(1, STAGE_DEPTH[s] - 1)
        for s in STAGES
    )
    return SliceConfig(resolution, widths, depth)


# ≈ 1.0, 0.51, 0.24 and 0.14 of the full MFLOPs, like the widths the trainer ships.
PICKS = {1.0: FULL, 0.5: cut(160, 8, False), 0.25: cut(128, 5, False), 0.12: cut(128, 2, True)}


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = NestedLite0()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                torch.nn.init.kaiming_normal_(p)
                p.mul_(0.5)
        model.head.weight.zero_()
        model.head.bias.zero_()
    images = torch.randn(8, 3, 224, 224)
    slices = []
    for width, cfg in PICKS.items():
        model.eval()
        model.bn_mode = "calib"  # the export folds per-slice BN statistics: make some
        model.calib = {}
        with torch.no_grad():
            model(torch.nn.functional.interpolate(images, size=cfg.resolution), cfg)
        model.finish_calibration(cfg)
        model.bn_mode = "eval"
        for precision in ("fp32", "int8"):
            path = out / f"emotion_w{width:g}_{precision}.onnx"
            export_slice(model, cfg.with_bits(8 if precision == "int8" else 0), precision, path)
            slices.append({
                "width": width, "precision": precision, "file": path.name,
                "input_size": cfg.resolution, "mflops": round(mflops(cfg), 2),
                "params": params(cfg), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            })  # fmt: skip
    manifest = {"model": "STAND-IN: random weights, zero head; for timing only", "slices": slices}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: standin_model.py OUT_DIR")
    build(Path(sys.argv[1]))
