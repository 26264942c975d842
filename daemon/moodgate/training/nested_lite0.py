"""Nested EfficientNet-Lite0 regressor (FN3-style): one set of weights, many cut-outs.

Nested dimensions (all ordered, so a narrower model is a prefix of a wider one):
  * expansion width of every MBConv, in M ordered channel blocks (expand conv outputs, the
    depthwise conv, the project conv inputs);
  * depth: residual MBConv blocks of a stage are dropped from the end;
  * bits: 8-bit per-output-channel weight codes, lower bit-widths = top bits of the code;
  * input resolution (96 … 224 in steps of 16).
The trunk (stem, stages 0–2 = blocks 0–4, ~31 % of MACs at 224) is frozen with its ImageNet BN
statistics and never cut in width, only in resolution: it is the high-resolution part where
fine-tuning costs the most CPU time, its outputs can be cached per resolution, and low-level
filters transfer as they are. Everything after it is fine-tuned and nested.
The residual stream (stem and project outputs) stays full width: it is shared by every block of
a stage, cheap in MACs, and cutting it would throw away most of the pretrained features.
`_fc` is dropped. The regressor reads mean+max pooled features of the last four stage outputs
plus the mean-pooled 1280-d `_conv_head` features (full width, ≈ 5 % of the MACs at 224): on the
validation split the head features add ≈ 0.05 valence r to the stage taps alone.
Each slice has its own linear read-out (2 × 2689 numbers), fitted in closed form on that slice's
recalibrated features, exactly like its BN statistics: the conv weights stay one set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

M_BLOCKS = 8
BN_EPS = 1e-3
# every 16 px: input resolution is the cheapest cut there is (224 → 128 costs 0.10 / 0.03 r).
# Below 96 only 80 and 64: with "same" padding the last stages' grid is ceil(r / 32), so
# 66…80 px all cost 52–56 MFLOPs and 64 px costs 31.
RESOLUTIONS = (64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224)
BITS = (4, 5, 6, 7, 8)


@dataclass(frozen=True)
class BlockArgs:
    cin: int
    cout: int
    expand: int
    kernel: int
    stride: int
    stage: int

    @property
    def hidden(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def _lite0_blocks() -> list[BlockArgs]:
    # (repeats, kernel, stride, expand, cin, cout) — EfficientNet-Lite0, no SE, ReLU6.
    table = [
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    ]
    out = []
    for stage, (reps, k, s, e, cin, cout) in enumerate(table):
        for i in range(reps):
            out.append(BlockArgs(cin if i == 0 else cout, cout, e, k, s if i == 0 else 1, stage))
    return out


BLOCKS = _lite0_blocks()
STAGES = sorted({b.stage for b in BLOCKS})
STAGE_BLOCKS = {s: [i for i, b in enumerate(BLOCKS) if b.stage == s] for s in STAGES}
STAGE_DEPTH = {s: len(v) for s, v in STAGE_BLOCKS.items()}
# Blocks [0, TRUNK) are frozen, full width, and use their pretrained BN statistics.
TRUNK = 5
# Features for the regressor: mean+max pooled outputs of these stages.
TAP_STAGES = (3, 4, 5, 6)
TRUNK_BN = {"bn0"} | {f"b{i}.bn{j}" for i in range(TRUNK) for j in range(3)}
HEAD_CONV = 1280
FEAT_DIM = 2 * sum(BLOCKS[STAGE_BLOCKS[s][-1]].cout for s in TAP_STAGES) + HEAD_CONV
# Layers that carry weights, in order; each gets its own bit-width in a slice.
# The 2-output read-out (5 k weights) stays float: quantising it saves nothing worth its risk.
LAYERS = ["stem"] + [f"b{i}" for i in range(len(BLOCKS))] + ["conv_head"]


@dataclass(frozen=True)
class SliceConfig:
    """One cut-out of the nested network."""

    resolution: int = 224
    # kept expansion blocks (1..M) per MBConv; block 0 has no expansion and ignores it
    expand: tuple[int, ...] = field(default_factory=lambda: (M_BLOCKS,) * len(BLOCKS))
    # kept MBConv blocks per stage (first ones kept)
    depth: tuple[int, ...] = field(default_factory=lambda: tuple(STAGE_DEPTH[s] for s in STAGES))
    # weight bits per layer (LAYERS order); 0 = float weights
    bits: tuple[int, ...] = field(default_factory=lambda: (0,) * len(LAYERS))

    def with_bits(self, b: int) -> SliceConfig:
        # the frozen trunk keeps float weights (≈ 12 k of them): its outputs are cached in fp32
        return replace(self, bits=tuple(0 if k <= TRUNK else b for k in range(len(LAYERS))))

    @property
    def uncut(self) -> bool:
        """Every channel block and every block kept: the whole network, at any size."""
        return self.expand == FULL.expand and self.depth == FULL.depth

    def active_blocks(self) -> list[int]:
        return [i for s in STAGES for i in STAGE_BLOCKS[s][: self.depth[s]]]

    def hidden(self, i: int) -> int:
        b = BLOCKS[i]
        if b.expand == 1:
            return b.hidden
        return b.hidden * self.expand[i] // M_BLOCKS

    def key(self) -> str:
        """Names the slice's BN statistics and read-out. fp32 and int8 share them (int8 is
        the same network within rounding); a lower bit-width gets its own (`-q…`)."""
        expand, depth = "".join(map(str, self.expand)), "".join(map(str, self.depth))
        key = f"r{self.resolution}-e{expand}-d{depth}"
        if any(0 < b < 8 for b in self.bits):
            key += "-q" + "".join(map(str, self.bits))
        return key

    def to_json(self) -> dict:
        return {
            "input_size": self.resolution,
            "expand_blocks": {f"b{i}": self.expand[i] for i in range(len(BLOCKS))},
            "stage_depth": list(self.depth),
            "active_blocks": self.active_blocks(),
            "bits": dict(zip(LAYERS, self.bits, strict=True)),
        }

    @classmethod
    def from_json(cls, d: dict) -> SliceConfig:
        """Inverse of `to_json` (the manifest's per-slice `layers` entry)."""
        return cls(
            int(d["input_size"]),
            tuple(int(d["expand_blocks"][f"b{i}"]) for i in range(len(BLOCKS))),
            tuple(int(v) for v in d["stage_depth"]),
            tuple(int(d["bits"][k]) for k in LAYERS),
        )


FULL = SliceConfig()


def _out_hw(h: int, stride: int) -> int:
    return math.ceil(h / stride)


def tf_same_pads(h: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after); asymmetric for stride 2 on even inputs."""
    total = max((_out_hw(h, s) - 1) * s + k - h, 0)
    return total // 2, total - total // 2


def mflops(cfg: SliceConfig) -> float:
    """Multiply-accumulates in millions (the EfficientNet 'FLOPs' convention; Lite0@224 ≈ 385)."""
    h = _out_hw(cfg.resolution, 2)
    macs = h * h * 3 * 9 * 32
    active = set(cfg.active_blocks())
    for i, b in enumerate(BLOCKS):
        if i not in active:
            continue
        c = cfg.hidden(i)
        if b.expand != 1:
            macs += h * h * b.cin * c
        h = _out_hw(h, b.stride)
        macs += h * h * c * b.kernel * b.kernel + h * h * c * b.cout
    macs += h * h * BLOCKS[-1].cout * HEAD_CONV + FEAT_DIM * 2
    return macs / 1e6


def params(cfg: SliceConfig) -> int:
    n = 3 * 9 * 32 + 32
    active = set(cfg.active_blocks())
    for i, b in enumerate(BLOCKS):
        if i not in active:
            continue
        c = cfg.hidden(i)
        if b.expand != 1:
            n += b.cin * c + c
        n += c * b.kernel * b.kernel + c + c * b.cout + b.cout
    return n + BLOCKS[-1].cout * HEAD_CONV + HEAD_CONV + FEAT_DIM * 2 + 2


def quantize_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 codes in [−127, 127] and their scales.

    Scales come from the full (unsliced) weight, so every slice shares the very same codes.
    """
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -127, 127)
    return q, scale


def truncate_codes(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top `bits` bits of an 8-bit code; reconstruct at the bucket midpoint."""
    if bits >= 8:
        return q
    step = float(2 ** (8 - bits))
    return torch.floor(q / step) * step + step / 2


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Weight as seen by a `bits`-bit deployment, with a straight-through gradient."""
    if bits <= 0:
        return w
    q, scale = quantize_codes(w)
    wq = truncate_codes(q, bits) * scale.view((-1,) + (1,) * (w.dim() - 1))
    return w + (wq - w).detach()


class NestedBN(nn.Module):
    """BatchNorm whose leading channels are used by a slice; per-slice stats live outside."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))


class MBConv(nn.Module):
    def __init__(self, a: BlockArgs) -> None:
        super().__init__()
        self.args = a
        h = a.hidden
        if a.expand != 1:
            self._expand_conv = nn.Parameter(torch.zeros(h, a.cin, 1, 1))
            self._bn0 = NestedBN(h)
        self._depthwise_conv = nn.Parameter(torch.zeros(h, 1, a.kernel, a.kernel))
        self._bn1 = NestedBN(h)
        self._project_conv = nn.Parameter(torch.zeros(a.cout, h, 1, 1))
        self._bn2 = NestedBN(a.cout)


@dataclass
class Readout:
    """A slice's read-out: standardise the pooled features, then one linear map, or, where
    `hidden_weight` is set, a one-hidden-layer ReLU network (`weight` then reads the hidden
    units). Where `skip_weight` is set too, a linear map of the same standardised features is
    added to the network's output: the mean of a ridge read-out and a hidden-layer one is
    such a network."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (2, FEAT_DIM), or (2, hidden units)
    bias: torch.Tensor  # (2,)
    hidden_weight: torch.Tensor | None = None  # (hidden units, FEAT_DIM)
    hidden_bias: torch.Tensor | None = None
    skip_weight: torch.Tensor | None = None  # (2, FEAT_DIM), beside a hidden layer only

    @property
    def hidden(self) -> int:
        return 0 if self.hidden_weight is None else int(self.hidden_weight.shape[0])

    def _fold(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        folded = w / self.std
        return folded, b - (folded * self.mean).sum(1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer that meets the features, standardisation folded in, as float weights."""
        if self.hidden_weight is None:
            return self._fold(self.weight, self.bias)
        assert self.hidden_bias is not None
        return self._fold(self.hidden_weight, self.hidden_bias)

    def folded_skip(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The linear map beside the hidden layer, folded likewise (its bias is in `bias`)."""
        if self.skip_weight is None:
            return None
        return self._fold(self.skip_weight, torch.zeros(2, dtype=self.skip_weight.dtype))

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`folded()` as it runs (and is exported).

        A hidden layer ships as 8-bit codes at every precision: as floats, 32 units for four
        slices would take 1.4 MB per file, which the 20 MB budget lacks; its rounding is
        part of the read-out. The small linear maps stay float."""
        w, b = self.folded()
        return (w if self.hidden_weight is None else fake_quant(w, 8)), b

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        w, b = self.first_layer()
        x = F.linear(f, w, b)
        if self.hidden_weight is None:
            return x
        out = F.linear(F.relu(x), self.weight, self.bias)
        skip = self.folded_skip()
        return out if skip is None else out + F.linear(f, *skip)

    def extra_size(self) -> tuple[int, int]:
        """(parameters, multiply-accumulates) beyond the linear read-out that `params` and
        `mflops` count."""
        if self.hidden_weight is None:
            return 0, 0
        beside = 0 if self.skip_weight is None else 2 * FEAT_DIM
        n = self.hidden * (FEAT_DIM + 1) + 2 * self.hidden - 2 * FEAT_DIM + beside
        return n, self.hidden * FEAT_DIM + 2 * self.hidden - 2 * FEAT_DIM + beside


class NestedLite0(nn.Module):
    """The one set of weights. `forward(x, cfg)` runs the cut-out `cfg`.

    BN behaviour is set by `bn_mode`: "batch" (training: batch statistics), "calib" (batch
    statistics, accumulating exact per-slice means/variances into `self.calib`), or "eval"
    (normalise with `self.stats[cfg.key()]`, the recalibrated statistics of that slice).
    In "eval" mode a slice with a fitted read-out in `self.readouts` uses it; otherwise (and
    always in training) the shared `head` does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Parameter(torch.zeros(32, 3, 3, 3))
        self._bn0 = NestedBN(32)
        self._blocks = nn.ModuleList(MBConv(a) for a in BLOCKS)
        self._conv_head = nn.Parameter(torch.zeros(HEAD_CONV, BLOCKS[-1].cout, 1, 1))
        self._bn1 = NestedBN(HEAD_CONV)
        self.head = nn.Linear(FEAT_DIM, 2)
        self.readouts: dict[str, Readout] = {}
        # False until a gradient step changes the backbone: the pretrained BN stats then fit
        self.backbone_tuned = False
        # feature standardisation (fixed after init) so the head starts as a ridge solution
        self.register_buffer("feat_mean", torch.zeros(FEAT_DIM))
        self.register_buffer("feat_std", torch.ones(FEAT_DIM))
        self.dropout = 0.0
        self.bn_mode = "batch"
        self.stats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.calib: dict[str, list[torch.Tensor]] = {}

    # -- building blocks -------------------------------------------------------------------
    def _bn(
        self, x: torch.Tensor, bn: NestedBN, name: str, c: int, cfg: SliceConfig
    ) -> torch.Tensor:
        w, b = bn.weight[:c], bn.bias[:c]
        if name in TRUNK_BN:
            return F.batch_norm(x, bn.running_mean, bn.running_var, w, b, False, 0.0, BN_EPS)
        if self.bn_mode == "eval":
            mean, var = self.stats[cfg.key()][name]
            return F.batch_norm(x, mean[:c], var[:c], w, b, False, 0.0, BN_EPS)
        if self.bn_mode == "calib":
            with torch.no_grad():
                m = x.mean((0, 2, 3))
                v = x.var((0, 2, 3), unbiased=False)
                acc = self.calib.setdefault(name, [torch.zeros(c), torch.zeros(c), torch.zeros(1)])
                n = x.shape[0]
                acc[0] += m * n
                acc[1] += (v + m * m) * n
                acc[2] += n
        return F.batch_norm(x, None, None, w, b, True, 0.0, BN_EPS)

    @staticmethod
    def _conv(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
        k = w.shape[-1]
        if k > 1:
            pt, pb = tf_same_pads(x.shape[-2], k, stride)
            pl, pr = tf_same_pads(x.shape[-1], k, stride)
            x = F.pad(x, (pl, pr, pt, pb))
        return F.conv2d(x, w, None, stride, 0, 1, groups)

    def trunk(self, x: torch.Tensor, cfg: SliceConfig = FULL) -> torch.Tensor:
        """Frozen stem + blocks [0, TRUNK); the output is what training caches."""
        return self._run(x, cfg, 0, TRUNK, [])

    def features(self, x: torch.Tensor, cfg: SliceConfig, from_trunk: bool = False) -> torch.Tensor:
        pooled: list[torch.Tensor] = []
        if not from_trunk:
            x = self.trunk(x, cfg)
        x = self._run(x, cfg, TRUNK, len(BLOCKS), pooled)
        w = fake_quant(self._conv_head, dict(zip(LAYERS, cfg.bits, strict=True))["conv_head"])
        x = F.relu6(self._bn(self._conv(x, w, 1), self._bn1, "bn1", HEAD_CONV, cfg))
        pooled.append(x.mean((2, 3)))
        return torch.cat(pooled, 1)

    def _run(
        self, x: torch.Tensor, cfg: SliceConfig, start: int, stop: int, pooled: list[torch.Tensor]
    ) -> torch.Tensor:
        # NHWC runs the depthwise convolutions ≈ 1.8× faster on CPU (forward and backward),
        # which is what keeps `moodgate train` inside its time on two cores
        x = x.contiguous(memory_format=torch.channels_last)
        bits = dict(zip(LAYERS, cfg.bits, strict=True))
        if start == 0:
            x = self._conv(x, fake_quant(self._conv_stem, bits["stem"]), 2)
            x = F.relu6(self._bn(x, self._bn0, "bn0", 32, cfg))
        active = set(cfg.active_blocks())
        for i in range(start, stop):
            blk = self._blocks[i]
            a = blk.args
            if i in active:
                c, nb = cfg.hidden(i), bits[f"b{i}"]
                inp = x
                if a.expand != 1:
                    w = fake_quant(blk._expand_conv, nb)[:c]
                    x = F.relu6(self._bn(self._conv(x, w, 1), blk._bn0, f"b{i}.bn0", c, cfg))
                w = fake_quant(blk._depthwise_conv, nb)[:c]
                x = F.relu6(self._bn(self._conv(x, w, a.stride, c), blk._bn1, f"b{i}.bn1", c, cfg))
                w = fake_quant(blk._project_conv, nb)[:, :c]
                x = self._bn(self._conv(x, w, 1), blk._bn2, f"b{i}.bn2", a.cout, cfg)
                if a.residual:
                    x = x + inp
            last_of_stage = i == STAGE_BLOCKS[a.stage][-1]
            if last_of_stage and a.stage in TAP_STAGES:
                pooled += [x.mean((2, 3)), x.amax((2, 3))]
        return x

    def forward(
        self, x: torch.Tensor, cfg: SliceConfig = FULL, from_trunk: bool = False
    ) -> torch.Tensor:
        f = self.features(x, cfg, from_trunk)
        readout = self.readouts.get(cfg.key()) if self.bn_mode == "eval" else None
        if readout is not None:
            return readout(f)
        f = (f - self.feat_mean) / self.feat_std
        if self.training and self.dropout > 0:
            f = F.dropout(f, self.dropout)
        return self.head(f)

    # -- per-slice BN statistics -----------------------------------------------------------
    def finish_calibration(self, cfg: SliceConfig) -> None:
        stats = {}
        for name, (s1, s2, n) in self.calib.items():
            mean = s1 / n
            stats[name] = (mean, (s2 / n - mean * mean).clamp_min(0.0))
        self.stats[cfg.key()] = stats
        self.calib = {}

    def bn_layers(self) -> dict[str, tuple[NestedBN, int]]:
        """Every BN outside the trunk by its statistics name, with its channel count."""
        out: dict[str, tuple[NestedBN, int]] = {"bn1": (self._bn1, HEAD_CONV)}
        for i in range(TRUNK, len(BLOCKS)):
            blk = self._blocks[i]
            if blk.args.expand != 1:
                out[f"b{i}.bn0"] = (blk._bn0, blk.args.hidden)
            out[f"b{i}.bn1"] = (blk._bn1, blk.args.hidden)
            out[f"b{i}.bn2"] = (blk._bn2, blk.args.cout)
        return out

    def use_pretrained_stats(self, cfg: SliceConfig) -> None:
        """Give an uncut slice (any resolution) the running statistics that came with the
        weights: while the backbone is untouched they are the ones it was trained with, and
        300-odd OASIS images estimate them worse than ImageNet did (≈ −0.03 r)."""
        self.stats[cfg.key()] = {
            name: (bn.running_mean.clone(), bn.running_var.clone())
            for name, (bn, _) in self.bn_layers().items()
        }


def trunk_parameters(model: NestedLite0) -> list[nn.Parameter]:
    ps = [model._conv_stem, *model._bn0.parameters()]
    for i in range(TRUNK):
        ps += list(model._blocks[i].parameters())
    return ps


def load_pretrained(model: NestedLite0, state: dict[str, torch.Tensor]) -> None:
    """Copy an efficientnet_pytorch-style Lite0 state_dict into the nested model."""
    own = model.state_dict()
    for k, v in state.items():
        tgt = (
            k.replace(".weight", "")
            if k.endswith("conv.weight") or k in ("_conv_stem.weight", "_conv_head.weight")
            else k
        )
        if tgt in own:
            own[tgt].copy_(v)
    model.load_state_dict(own)


@torch.no_grad()
def order_channels(model: NestedLite0) -> None:
    """Permute each MBConv's hidden channels by importance (function unchanged).

    Ordered dropout then starts from a sensible order: the first blocks carry the channels
    with the largest BN-scaled contribution to the block output.
    """
    for blk in model._blocks:
        if blk.args.expand == 1:
            continue
        g = (blk._bn1.weight / torch.sqrt(blk._bn1.running_var + BN_EPS)).abs()
        imp = g * blk._project_conv.flatten(1).norm(dim=0)
        perm = torch.argsort(imp, descending=True)
        blk._expand_conv.copy_(blk._expand_conv[perm])
        blk._depthwise_conv.copy_(blk._depthwise_conv[perm])
        blk._project_conv.copy_(blk._project_conv[:, perm])
        for bn in (blk._bn0, blk._bn1):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[perm])


def imagenet_logits(
    model: NestedLite0, state: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Port check: run the pretrained backbone + `_conv_head` + `_fc` with running BN stats."""
    conv = NestedLite0._conv

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            x,
            state[p + ".running_mean"],
            state[p + ".running_var"],
            state[p + ".weight"],
            state[p + ".bias"],
            False,
            0.0,
            BN_EPS,
        )

    x = F.relu6(bn(conv(x, state["_conv_stem.weight"], 2), "_bn0"))
    for i, a in enumerate(BLOCKS):
        p = f"_blocks.{i}."
        inp = x
        if a.expand != 1:
            x = F.relu6(bn(conv(x, state[p + "_expand_conv.weight"], 1), p + "_bn0"))
        x = F.relu6(
            bn(conv(x, state[p + "_depthwise_conv.weight"], a.stride, x.shape[1]), p + "_bn1")
        )
        x = bn(conv(x, state[p + "_project_conv.weight"], 1), p + "_bn2")
        if a.residual:
            x = x + inp
    x = F.relu6(bn(conv(x, state["_conv_head.weight"], 1), "_bn1"))
    return F.linear(x.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
