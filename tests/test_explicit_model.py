"""The explicit classifier: the converter (a synthetic nsfwjs-style package against a numpy
reference), the shipped file (against numbers TensorFlow.js itself computed), and the
runtime loader's refusals."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from moodgate.emotion.base import Emotion
from moodgate.emotion.explicit import load_explicit, with_explicit
from moodgate.emotion.nested import ModelIntegrityError
from moodgate.emotion.registry import default_model_dir

onnx = pytest.importorskip("onnx")
nsfwjs = pytest.importorskip("moodgate.training.nsfwjs")

MODELS = default_model_dir()


def _layer(name: str, kind: str, inbound: list[str], **config: object) -> dict:
    return {
        "name": name,
        "class_name": kind,
        "config": {"name": name, **config},
        "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else [],
    }


def tiny_package(directory: Path, size: int = 16, seed: int = 3) -> Path:
    """An npm-pack-shaped .tgz with every layer kind nsfwjs's MobileNetV2 uses, written in the
    same minified UMD style (unquoted keys, !0/!1, leading-dot numbers)."""
    rng = np.random.default_rng(seed)
    layers = [
        _layer("input_1", "InputLayer", [], batch_input_shape=[None, size, size, 3]),
        _layer("pad", "ZeroPadding2D", ["input_1"], padding=[[0, 1], [0, 1]]),
        _layer("conv", "Conv2D", ["pad"], filters=4, kernel_size=[3, 3], strides=[2, 2],
               padding="valid", activation="linear", use_bias=False),
        _layer("conv_bn", "BatchNormalization", ["conv"], epsilon=0.001),
        _layer("conv_relu", "ReLU", ["conv_bn"], max_value=6, negative_slope=0, threshold=0),
        _layer("dw", "DepthwiseConv2D", ["conv_relu"], kernel_size=[3, 3], strides=[1, 1],
               padding="same", depth_multiplier=1, activation="linear", use_bias=False),
        _layer("dw_bn", "BatchNormalization", ["dw"], epsilon=0.001),
        _layer("add", "Add", ["dw_bn", "conv_relu"]),
        _layer("project", "Conv2D", ["add"], filters=6, kernel_size=[1, 1], strides=[1, 1],
               padding="same", activation="linear", use_bias=True),
        _layer("pool", "AveragePooling2D", ["project"], pool_size=[size // 2] * 2,
               strides=[size // 2] * 2, padding="valid"),
        _layer("flat", "Flatten", ["pool"]),
        _layer("dense_1", "Dense", ["flat"], units=8, activation="relu", use_bias=True),
        _layer("drop", "Dropout", ["dense_1"], rate=0.5),
        _layer("dense_2", "Dense", ["drop"], units=5, activation="softmax", use_bias=True),
    ]  # fmt: skip
    shapes = {
        "conv/kernel": [3, 3, 3, 4],
        "conv_bn/gamma": [4], "conv_bn/beta": [4],
        "conv_bn/moving_mean": [4], "conv_bn/moving_variance": [4],
        "dw/depthwise_kernel": [3, 3, 4, 1],
        "dw_bn/gamma": [4], "dw_bn/beta": [4], "dw_bn/moving_mean": [4],
        "dw_bn/moving_variance": [4],
        "project/kernel": [1, 1, 4, 6], "project/bias": [6],
        "dense_1/kernel": [6, 8], "dense_1/bias": [8],
        "dense_2/kernel": [8, 5], "dense_2/bias": [5],
    }  # fmt: skip
    specs, blobs = [], []
    for name, shape in shapes.items():
        low = 0.2 if "variance" in name or "gamma" in name else -0.6
        specs.append({"name": name, "shape": shape, "dtype": "float32",
                      "quantization": {"min": low, "scale": 1.2 / 255, "dtype": "uint8"}})
        blobs.append(rng.integers(0, 256, int(np.prod(shape)), dtype=np.uint8).tobytes())
    literal = json.dumps(
        {"modelTopology": {"model_config": {"class_name": "Model", "config": {"layers": layers}}},
         "weightsManifest": [{"paths": ["group1-shard1of1"], "weights": specs}]}
    )  # fmt: skip
    # Minify like the published bundle: bare keys, !0/!1 for booleans, ".5" for 0.5.
    literal = literal.replace('"use_bias": true', "use_bias:!0").replace("false", "!1")
    literal = literal.replace('"min": -0.6', "min:-.6").replace('"modelTopology"', "modelTopology")
    umd = (
        "!function(e){module.exports=e()}"
        "(function(){return{1:[function(e,a,n){a.exports=%s},{}]}});"
    )
    shard = base64.b64encode(b"".join(blobs)).decode()
    files = {
        "model.min.js": umd % literal,
        "group1-shard1of1.min.js": (umd % json.dumps(shard)).replace("a.exports", "h.exports"),
    }
    package = directory / "nsfwjs-0.0.0.tgz"
    with tarfile.open(package, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{nsfwjs.MODEL_SUBDIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return package


def test_literal_parser_reads_minified_javascript() -> None:
    bundle = 'x;a.exports={k:[1,-.5,2e-3,"s\\"q",!0,!1,null],"q":{}}});'
    assert nsfwjs.exported_literal(bundle) == {"k": [1, -0.5, 0.002, 's"q', True, False, None],
                                               "q": {}}  # fmt: skip
    with pytest.raises(nsfwjs.PackageError):
        nsfwjs.exported_literal("a.exports={k:window}")
    with pytest.raises(nsfwjs.PackageError):
        nsfwjs.exported_literal("module.exports = e()")


def test_converted_graph_matches_the_keras_reference(tmp_path: Path) -> None:
    import onnxruntime as ort

    package = tiny_package(tmp_path)
    manifest = nsfwjs.convert(package, tmp_path / "out")
    assert manifest["parameters"] == sum(
        c.codes.size for c in nsfwjs.read_package(package).weights.values()
    )
    session = ort.InferenceSession(str(tmp_path / "out" / manifest["file"]),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    expected = nsfwjs.reference_forward(nsfwjs.read_package(package), x)
    got = session.run(None, {"image": x.transpose(0, 3, 1, 2)})[0]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert not np.allclose(got[0], got[1])  # the inputs differ, so must the outputs
    # The uint8 codes are stored as they were published, not expanded to float.
    model = onnx.load(str(tmp_path / "out" / manifest["file"]))
    kinds = {init.data_type for init in model.graph.initializer if init.name.endswith("_codes")}
    assert kinds == {onnx.TensorProto.UINT8}


def test_unknown_layers_and_short_shards_are_refused(tmp_path: Path) -> None:
    package = tiny_package(tmp_path)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(package) as tar:
        tar.extractall(unpacked, filter="data")
    model_js = unpacked / "package" / nsfwjs.MODEL_SUBDIR / "model.min.js"
    original = model_js.read_text()
    model_js.write_text(original.replace('"Flatten"', '"LSTM"'))
    with pytest.raises(nsfwjs.PackageError, match="LSTM"):
        nsfwjs.read_package(unpacked)
    model_js.write_text(original)
    assert nsfwjs.read_package(unpacked).input_size == 16  # an unpacked directory works too
    shard = unpacked / "package" / nsfwjs.MODEL_SUBDIR / "group1-shard1of1.min.js"
    text = shard.read_text()
    start = text.index('h.exports="') + len('h.exports="')
    shard.write_text(text[:start] + text[start + 40 :])  # 30 bytes of weights gone
    with pytest.raises(nsfwjs.PackageError):
        nsfwjs.read_package(unpacked)
    with pytest.raises(nsfwjs.PackageError, match="npm pack"):
        nsfwjs.read_package(tmp_path / "nowhere")


# Probabilities (drawing, hentai, neutral, porn, sexy) that nsfwjs@4.4.0 itself gave for these
# two inputs, computed with TensorFlow.js 4.22 (pure-JS CPU backend) from the npm package.
TFJS_REFERENCE = [
    [0.13386839628219604, 0.010226454585790634, 0.8427895307540894, 0.011316436342895031,
     0.0017992124194279313],
    [0.7442761659622192, 0.036109164357185364, 0.1950608640909195, 0.021250739693641663,
     0.003303045639768243],
]  # fmt: skip


def reference_inputs() -> list[np.ndarray]:
    y, x = np.mgrid[0:224, 0:224]
    noise = np.random.default_rng(20261124).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    smooth = np.stack(
        [200 + 40 * np.sin(x / 20), 150 + 50 * np.cos(y / 30), 120 + 0 * x + (x + y) // 8], -1
    )
    return [noise, smooth.clip(0, 255).astype(np.uint8)]


def test_shipped_classifier_agrees_with_tensorflow_js() -> None:
    scorer = load_explicit(MODELS)
    probabilities = scorer.probabilities(reference_inputs())
    np.testing.assert_allclose(probabilities, TFJS_REFERENCE, atol=1e-4)
    assert scorer.classes == nsfwjs.CLASSES
    weights = json.loads((MODELS / "explicit.json").read_text())["explicit_weights"]
    expected = [sum(p[scorer.classes.index(c)] * w for c, w in weights.items())
                for p in TFJS_REFERENCE]  # fmt: skip
    assert scorer.rate(reference_inputs()) == pytest.approx(expected, abs=1e-4)


def test_rating_attaches_to_an_emotion_and_takes_the_most_explicit_frame() -> None:
    scorer = load_explicit(MODELS)
    frames = reference_inputs()
    rated = with_explicit(Emotion(0.2, -0.1), scorer, frames)
    assert (rated.valence, rated.arousal) == (0.2, -0.1)
    assert rated.explicit == pytest.approx(max(scorer.rate(frames)))
    assert with_explicit(Emotion(0.2, -0.1), None, frames).explicit is None
    # Any frame size and grey frames are accepted (resized to the model's square input).
    grey = np.full((40, 90), 128, np.uint8)
    assert 0.0 <= scorer.rate([grey])[0] <= 1.0


def test_a_tampered_or_missing_classifier_is_refused(tmp_path: Path) -> None:
    for name in ("explicit.json", json.loads((MODELS / "explicit.json").read_text())["file"]):
        shutil.copy(MODELS / name, tmp_path / name)
    load_explicit(tmp_path)
    onnx_file = next(tmp_path.glob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_explicit(tmp_path)
    onnx_file.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_explicit(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_explicit(tmp_path / "empty")


def test_import_and_eval_commands(tmp_path: Path, media: dict[str, bytes]) -> None:
    from click.testing import CliRunner

    from moodgate.cli import main

    package = tiny_package(tmp_path)
    result = CliRunner().invoke(main, ["explicit", "import", str(package), "--out",
                                       str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and (tmp_path / "out" / "explicit.json").exists()
    bad = CliRunner().invoke(main, ["explicit", "import", str(tmp_path), "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "npm pack" in bad.output

    # OASIS-style names: the theme is the file name without its number.
    images = tmp_path / "images"
    images.mkdir()
    rows = ["path,valence,arousal,scale_min,scale_max,category"]
    for name, body in (("Nude test 1", "calm.jpg"), ("Wall 1", "vivid.jpg"),
                       ("Cat 2", "calm.jpg")):  # fmt: skip
        (images / f"{name}.jpg").write_bytes(media[body])
        rows.append(f"images/{name}.jpg,4,4,1,7,{'Person' if 'Nude' in name else 'Object'}")
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(main, ["explicit", "eval", "--data", str(tmp_path / "set.csv"),
                                       "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images"], report["positives"]) == (3, 1)
    assert [row["input_size"] for row in report["sizes"]] == [224, 192, 160, 128]
    for row in report["sizes"]:
        for threshold in row["thresholds"]:
            assert threshold["hits"] <= 1 and threshold["false_blocks"] <= 2
            assert threshold["negatives"] == 2
    text = CliRunner().invoke(main, ["explicit", "eval", "--data", str(tmp_path / "set.csv")])
    assert "| 224 |" in text.output and "explicit >" in text.output
