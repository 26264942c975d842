"""Cut one slice out of the nested weights and write it as a plain ONNX graph.

The graph is built with `onnx.helper` rather than torch's exporter: it is a straight chain of
Conv/Clip/Add/pool nodes with BN folded in, TF-'same' padding (`auto_pad=SAME_UPPER`, so one
graph takes any input size), and either float weights (fp32) or int8 codes + per-channel
scales feeding DequantizeLinear (int8: weight-only, so the file is ~4× smaller and the codes
are literally the nested ones).

Slices that differ only in input resolution and share their BN statistics (uncut slices of the
pretrained backbone) are one graph: `export_group` writes it once with every slice's read-out
side by side in the output, (N, 2 × slices), which keeps the full-width fp32 file within the
size budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from moodgate.training.nested_lite0 import (
    BN_EPS,
    FEAT_DIM,
    HEAD_CONV,
    LAYERS,
    STAGE_BLOCKS,
    TAP_STAGES,
    NestedBN,
    NestedLite0,
    Readout,
    SliceConfig,
    quantize_codes,
    truncate_codes,
)

OPSET = 17


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}_{self.n}"

    def const(self, arr: np.ndarray, p: str) -> str:
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def op(self, op: str, inputs: list[str], p: str, **attrs: object) -> str:
        out = self.name(p)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_op", **attrs))
        return out


def _fold(
    w: torch.Tensor, bn: NestedBN, stats: tuple[torch.Tensor, torch.Tensor] | None, c: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # the frozen trunk has no per-slice statistics: it keeps its pretrained ones
    mean, var = stats if stats is not None else (bn.running_mean[:c], bn.running_var[:c])
    factor = bn.weight[:c] / torch.sqrt(var + BN_EPS)
    return factor, bn.bias[:c] - mean * factor


def _weight(
    g: _Graph, full: torch.Tensor, sl: tuple[slice, ...], factor: torch.Tensor, bits: int, p: str
) -> str:
    """Folded weight for the slice `sl` of `full`; int8 codes when bits > 0."""
    shape = (-1,) + (1,) * (full.dim() - 1)
    if bits <= 0:
        w = full[sl] * factor.view(shape)
        return g.const(w.detach().numpy().astype(np.float32), p + "_w")
    q, scale = quantize_codes(full)
    q = truncate_codes(q, bits)[sl]
    scale = scale[sl[0]] * factor.abs()
    q = q * torch.sign(factor).view(shape)
    qn = g.const(q.detach().numpy().astype(np.int8), p + "_q")
    sn = g.const(scale.detach().numpy().astype(np.float32), p + "_s")
    zn = g.const(np.zeros(scale.shape[0], np.int8), p + "_z")
    return g.op("DequantizeLinear", [qn, sn, zn], p + "_w", axis=0)


def same_graph(model: NestedLite0, a: SliceConfig, b: SliceConfig) -> bool:
    """True when `a` and `b` fold into the same weights: one graph can run both."""
    if (a.expand, a.depth, a.bits) != (b.expand, b.depth, b.bits):
        return False
    sa, sb = model.stats[a.key()], model.stats[b.key()]
    return sa.keys() == sb.keys() and all(
        torch.equal(x, y) for k in sa for x, y in zip(sa[k], sb[k], strict=True)
    )


def build_onnx(
    model: NestedLite0, cfgs: SliceConfig | list[SliceConfig], precision: str
) -> onnx.ModelProto:
    """The slice(s) `cfgs` with BN folded (stats from `model.stats[cfg.key()]`).

    Several configs must pass `same_graph`; output column pair k is `cfgs[k]`'s read-out.
    """
    if precision not in ("fp32", "int8"):
        raise ValueError(precision)
    group = [cfgs] if isinstance(cfgs, SliceConfig) else list(cfgs)
    cfg = group[0]
    if not all(same_graph(model, cfg, c) for c in group[1:]):
        raise ValueError("slices in one graph must share cuts, bits and BN statistics")
    stats = model.stats[cfg.key()]
    bits = dict(zip(LAYERS, cfg.bits, strict=True))
    if precision == "fp32":
        bits = dict.fromkeys(bits, 0)
    elif not any(bits.values()):
        raise ValueError("int8 export needs a config with bits, e.g. cfg.with_bits(8)")
    g = _Graph()
    lo = g.const(np.array(0.0, np.float32), "zero")
    hi = g.const(np.array(6.0, np.float32), "six")

    def conv(x: str, w: str, b: torch.Tensor, k: int, s: int, groups: int, p: str) -> str:
        bn = g.const(b.detach().numpy().astype(np.float32), p + "_b")
        # SAME_UPPER = TF 'same': total padding from the input size, the odd pixel at the end
        pad: dict[str, object] = {"auto_pad": "SAME_UPPER"} if k > 1 else {"pads": [0, 0, 0, 0]}
        return g.op("Conv", [x, w, bn], p, kernel_shape=[k, k], strides=[s, s], group=groups, **pad)

    def relu6(x: str) -> str:
        return g.op("Clip", [x, lo, hi], "relu6")

    with torch.no_grad():
        f, b = _fold(model._conv_stem, model._bn0, stats.get("bn0"), 32)
        w = _weight(g, model._conv_stem, (slice(None),), f, bits["stem"], "stem")
        x = relu6(conv("input", w, b, 3, 2, 1, "stem"))
        active = set(cfg.active_blocks())
        pooled: list[str] = []
        for i, blk in enumerate(model._blocks):
            a = blk.args
            if i in active:
                c, nb, p = cfg.hidden(i), bits[f"b{i}"], f"b{i}"
                inp = x
                if a.expand != 1:
                    f, b = _fold(blk._expand_conv, blk._bn0, stats.get(f"{p}.bn0"), c)
                    w = _weight(g, blk._expand_conv, (slice(0, c),), f, nb, p + "_exp")
                    x = relu6(conv(x, w, b, 1, 1, 1, p + "_exp"))
                f, b = _fold(blk._depthwise_conv, blk._bn1, stats.get(f"{p}.bn1"), c)
                w = _weight(g, blk._depthwise_conv, (slice(0, c),), f, nb, p + "_dw")
                x = relu6(conv(x, w, b, a.kernel, a.stride, c, p + "_dw"))
                f, b = _fold(blk._project_conv, blk._bn2, stats.get(f"{p}.bn2"), a.cout)
                w = _weight(g, blk._project_conv, (slice(None), slice(0, c)), f, nb, p + "_proj")
                x = conv(x, w, b, 1, 1, 1, p + "_proj")
                if a.residual:
                    x = g.op("Add", [x, inp], p + "_add")
            if i == STAGE_BLOCKS[a.stage][-1] and a.stage in TAP_STAGES:
                pooled.append(g.op("Flatten", [g.op("GlobalAveragePool", [x], "gap")], "mean"))
                pooled.append(g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "max"))
        f, b = _fold(model._conv_head, model._bn1, stats.get("bn1"), HEAD_CONV)
        w = _weight(g, model._conv_head, (slice(None),), f, bits["conv_head"], "head_conv")
        x = relu6(conv(x, w, b, 1, 1, 1, "head_conv"))
        pooled.append(g.op("Flatten", [g.op("GlobalAveragePool", [x], "gap")], "mean"))
        feats = g.op("Concat", pooled, "feats", axis=1)
        # every slice's read-out (or the shared head), feature standardisation folded in;
        # column pair k is slice k's
        out = _readouts(g, feats, [_readout_of(model, c) for c in group], "heads")
        g.nodes[-1].output[0] = "valence_arousal"
    graph = helper.make_graph(
        g.nodes,
        f"moodgate_nested_lite0_{'+'.join(c.key() for c in group)}_{precision}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info(
                "valence_arousal", TensorProto.FLOAT, ["N", 2 * len(group)]
            )
        ],
        g.inits,
    )
    del out
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="moodgate"
    )
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _readout_of(model: NestedLite0, cfg: SliceConfig) -> Readout:
    r = model.readouts.get(cfg.key())
    return (
        r
        if r is not None
        else Readout(model.feat_mean, model.feat_std, model.head.weight, model.head.bias)
    )


def _readouts(g: _Graph, feats: str, readouts: list[Readout], p: str) -> str:
    """The read-outs of a file's slices side by side, (N, 2 × slices), in at most five nodes
    whatever their number: every slice's hidden layer stacked into one Gemm (its 8-bit codes,
    as `Readout.first_layer` rounds them, in every file) and one block-diagonal MatMul after
    the Relu; every linear map (a ridge read-out, or the map beside a hidden layer) stacked
    into one float Gemm; the two added. A file computes every slice's read-out on each call,
    and small nodes cost more in overhead than in arithmetic."""
    n = len(readouts)
    with torch.no_grad():
        linear_w = torch.zeros(2 * n, FEAT_DIM)
        linear_b = torch.zeros(2 * n)
        codes, scales, first_b, hidden_of = [], [], [], []
        for k, r in enumerate(readouts):
            rows = slice(2 * k, 2 * k + 2)
            if r.hidden:
                w, b = r.folded()
                q, scale = quantize_codes(w)
                codes.append(q)
                scales.append(scale)
                first_b.append(b)
                hidden_of.append(k)
                skip = r.folded_skip()
                if skip is None:
                    linear_b[rows] = r.bias
                else:
                    linear_w[rows], linear_b[rows] = skip[0], skip[1] + r.bias
            else:
                linear_w[rows], linear_b[rows] = r.folded()
        has_linear = any(not r.hidden or r.skip_weight is not None for r in readouts)
        parts = []
        if codes:
            stacked = torch.cat(codes)
            h = stacked.shape[0]
            w1 = g.op(
                "DequantizeLinear",
                [
                    g.const(stacked.numpy().astype(np.int8), p + "_q"),
                    g.const(torch.cat(scales).numpy().astype(np.float32), p + "_s"),
                    g.const(np.zeros(h, np.int8), p + "_z"),
                ],
                p + "_w",
                axis=0,
            )
            b1 = g.const(torch.cat(first_b).numpy().astype(np.float32), p + "_b")
            x = g.op("Relu", [g.op("Gemm", [feats, w1, b1], p + "_hidden", transB=1)], p + "_relu")
            w2 = torch.zeros(2 * n, h)
            at = 0
            for k in hidden_of:
                r = readouts[k]
                w2[2 * k : 2 * k + 2, at : at + r.hidden] = r.weight
                at += r.hidden
            w2_const = g.const(w2.T.contiguous().numpy().astype(np.float32), p + "_out_w")
            parts.append(g.op("MatMul", [x, w2_const], p + "_out"))
        if has_linear:
            parts.append(
                g.op(
                    "Gemm",
                    [
                        feats,
                        g.const(linear_w.numpy().astype(np.float32), p + "_lin_w"),
                        g.const(linear_b.numpy().astype(np.float32), p + "_lin_b"),
                    ],
                    p + "_lin",
                    transB=1,
                )
            )
        else:  # hidden layers only: their output biases still need adding
            parts.append(g.const(linear_b.numpy().astype(np.float32), p + "_out_b"))
        return parts[0] if len(parts) == 1 else g.op("Add", parts, p + "_sum")


def export_slice(
    model: NestedLite0, cfgs: SliceConfig | list[SliceConfig], precision: str, path: Path
) -> Path:
    """Write one slice, or a `same_graph` group of slices, as one ONNX file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_onnx(model, cfgs, precision), str(path))
    return path
