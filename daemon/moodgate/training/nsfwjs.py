"""Convert nsfwjs's MobileNetV2 (npm `nsfwjs@4.4.0`, MIT) into moodgate's explicit-content model.

nsfwjs ships a Keras model for TensorFlow.js as two UMD bundles: `model.min.js` exports the
topology and a `weightsManifest`, `group1-shard1of1.min.js` one base64 string of uint8 codes
(value = min + scale · code, one min/scale per tensor). This reads both without Node, checks
that the topology is the plain layer set it knows, and writes an ONNX graph that keeps the
uint8 codes and rebuilds each weight as `Cast → Mul → Add` (folded by onnxruntime at load).
The file is therefore the size of the original codes (2.6 MB) and its weights are exactly the
published ones: nothing is trained or re-quantised here, only re-laid out for NCHW.

Only `onnx` and numpy are needed (no torch), but it is an offline build step, so it lives
with the training code; the daemon reads the result through `moodgate.emotion.explicit`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "nsfwjs@4.4.0"
MODEL_SUBDIR = "dist/models/mobilenet_v2"
ONNX_FILE = "explicit_nsfwjs_mnv2.onnx"
MANIFEST_FILE = "explicit.json"
CLASSES = ("drawing", "hentai", "neutral", "porn", "sexy")
INPUT_STEPS = (192, 160, 128)
# What policies test as `explicit` (0…1): sexual content counts fully, suggestive half, so the
# presets' thresholds read as "how sure, how far": under-8 blocks a likely-suggestive picture
# (0.5 · sexy > 0.3), 8–12 and teens only pornographic or hentai ones.
EXPLICIT_WEIGHTS = {"porn": 1.0, "hentai": 1.0, "sexy": 0.5}
_KNOWN_LAYERS = {
    "InputLayer", "ZeroPadding2D", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU",
    "Add", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Dense", "Dropout",
}  # fmt: skip


class PackageError(ValueError):
    """The nsfwjs package is missing, not the expected version, or holds an unknown layer."""


# --- reading the UMD bundles: a small parser for the JavaScript object literals in them -------

_TOKEN = re.compile(
    r'\s*(?:(?P<punct>[{}\[\]:,])|(?P<string>"(?:[^"\\]|\\.)*")'
    r"|(?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<bang>![01])"
    r"|(?P<name>[A-Za-z_$][\w$]*))",
    re.DOTALL,
)


class _Literal:
    """Parses the minified object literal that starts at `text[pos]`."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def _next(self) -> tuple[str, str]:
        match = _TOKEN.match(self.text, self.pos)
        if not match:
            raise PackageError(f"unexpected JavaScript at offset {self.pos}")
        self.pos = match.end()
        kind = match.lastgroup or ""
        return kind, match.group(kind)

    def _peek(self) -> tuple[str, str]:
        saved = self.pos
        token = self._next()
        self.pos = saved
        return token

    def value(self) -> Any:
        kind, text = self._next()
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "bang":
            return text == "!0"  # minifiers write true as !0 and false as !1
        if kind == "name":
            constants = {"null": None, "true": True, "false": False}
            if text not in constants:
                raise PackageError(f"unexpected name {text!r} in a model literal")
            return constants[text]
        if text == "[":
            items: list[Any] = []
            if self._peek() == ("punct", "]"):
                self._next()
                return items
            while True:
                items.append(self.value())
                _, sep = self._next()
                if sep == "]":
                    return items
                if sep != ",":
                    raise PackageError(f"expected , or ] at offset {self.pos}")
        if text == "{":
            obj: dict[str, Any] = {}
            if self._peek() == ("punct", "}"):
                self._next()
                return obj
            while True:
                key_kind, key = self._next()
                if key_kind not in ("name", "string", "number"):
                    raise PackageError(f"expected a key at offset {self.pos}")
                if self._next() != ("punct", ":"):
                    raise PackageError(f"expected : at offset {self.pos}")
                obj[json.loads(key) if key_kind == "string" else key] = self.value()
                _, sep = self._next()
                if sep == "}":
                    return obj
                if sep != ",":
                    raise PackageError(f"expected , or }} at offset {self.pos}")
        raise PackageError(f"unexpected {text!r} at offset {self.pos}")


def exported_literal(bundle: str) -> Any:
    """The value a UMD bundle assigns to `module.exports` inside its one module."""
    match = re.search(r"\b[A-Za-z_$]\.exports=(?=[{\[\"])", bundle)
    if not match:
        raise PackageError("no `exports=` literal in the bundle")
    return _Literal(bundle, match.end()).value()


# --- the package -------------------------------------------------------------------------------


@dataclass
class Codes:
    """One weight tensor as published: uint8 codes, value = minimum + scale · code."""

    codes: np.ndarray
    minimum: float
    scale: float

    def values(self) -> np.ndarray:
        return (self.minimum + self.scale * self.codes.astype(np.float64)).astype(np.float32)


@dataclass
class KerasModel:
    layers: list[dict[str, Any]]
    weights: dict[str, Codes] = field(default_factory=dict)
    input_size: int = 224


def _read_files(package: Path) -> dict[str, str]:
    """model.min.js and the shard(s), from an `npm pack` .tgz or an unpacked directory."""
    wanted: dict[str, str] = {}
    if package.is_file():
        with tarfile.open(package) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) == 2 and parts[1].startswith(MODEL_SUBDIR + "/"):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        wanted[Path(member.name).name] = handle.read().decode("utf-8")
    else:
        for base in (package / MODEL_SUBDIR, package / "package" / MODEL_SUBDIR, package):
            if (base / "model.min.js").exists():
                for path in base.glob("*.min.js"):
                    wanted[path.name] = path.read_text(encoding="utf-8")
                break
    if "model.min.js" not in wanted:
        raise PackageError(
            f"{package}: no {MODEL_SUBDIR}/model.min.js; get it with `npm pack {PACKAGE}`"
        )
    return wanted


def read_package(package: Path) -> KerasModel:
    files = _read_files(Path(package))
    bundle = exported_literal(files["model.min.js"])
    topology = bundle["modelTopology"]["model_config"]["config"]
    layers = topology["layers"]
    unknown = {layer["class_name"] for layer in layers} - _KNOWN_LAYERS
    if unknown:
        raise PackageError(f"layers this converter does not know: {', '.join(sorted(unknown))}")
    model = KerasModel(layers, input_size=int(layers[0]["config"]["batch_input_shape"][1]))
    for group in bundle["weightsManifest"]:
        data = b"".join(
            base64.b64decode(exported_literal(files[f"{path}.min.js"])) for path in group["paths"]
        )
        offset = 0
        for spec in group["weights"]:
            quant = spec.get("quantization") or {}
            if quant.get("dtype") != "uint8":
                raise PackageError(f"{spec['name']}: expected uint8 codes, got {quant}")
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            if offset + count > len(data):
                raise PackageError(f"the weights end before {spec['name']}: shard too short")
            codes = np.frombuffer(data, np.uint8, count, offset).reshape(spec["shape"])
            model.weights[spec["name"]] = Codes(codes, float(quant["min"]), float(quant["scale"]))
            offset += count
        if offset != len(data):
            raise PackageError(f"weights use {offset} bytes of {len(data)}")
    return model


# --- the ONNX graph ----------------------------------------------------------------------------


class _Graph:
    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def weight(
        self,
        name: str,
        codes: Codes,
        layout: tuple[int, ...] | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> str:
        """`Cast(codes) · scale + min`, with the codes re-laid out first (exact: affine per
        tensor commutes with any permutation)."""
        array = codes.codes if layout is None else codes.codes.transpose(layout)
        if shape is not None:
            array = array.reshape(shape)
        raw = self.const(f"{name}_codes", array)
        as_float = self.op("Cast", [raw], f"{name}_float", to=1)
        scale = self.const(f"{name}_scale", np.asarray(codes.scale, np.float32))
        minimum = self.const(f"{name}_min", np.asarray(codes.minimum, np.float32))
        scaled = self.op("Mul", [as_float, scale], f"{name}_scaled")
        return self.op("Add", [scaled, minimum], name)


def _same_pads(kernel: tuple[int, int], strides: tuple[int, int]) -> list[int]:
    if strides != (1, 1):
        raise PackageError("'same' padding with stride > 1 is not used by this model")
    kh, kw = kernel
    return [(kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2]


def build_onnx(model: KerasModel) -> Any:
    """An ONNX graph: `image` (N, 3, H, W) RGB in 0…1 → `probabilities` (N, 5)."""
    from onnx import TensorProto, checker, helper

    g = _Graph()
    outputs: dict[str, str] = {}
    pending_pad: dict[str, list[int]] = {}
    for layer in model.layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        inputs = [outputs[i] for i in inbound]
        pads = pending_pad.get(inbound[0], [0, 0, 0, 0]) if inbound else [0, 0, 0, 0]
        if kind == "InputLayer":
            outputs[name] = "image"
        elif kind == "ZeroPadding2D":
            (top, bottom), (left, right) = cfg["padding"]
            # Folded into the next conv's own pads: one op fewer, same numbers.
            pending_pad[name] = [top, left, bottom, right]
            outputs[name] = inputs[0]
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            kernel = tuple(cfg["kernel_size"])
            strides = tuple(cfg["strides"])
            if cfg["padding"] == "same":
                pads = _same_pads(kernel, strides)
            if kind == "Conv2D":
                codes = model.weights[f"{name}/kernel"]
                w = g.weight(f"{name}_w", codes, layout=(3, 2, 0, 1))
                group = 1
            else:
                codes = model.weights[f"{name}/depthwise_kernel"]
                kh, kw, channels, mult = codes.codes.shape
                w = g.weight(
                    f"{name}_w", codes, layout=(2, 3, 0, 1), shape=(channels * mult, 1, kh, kw)
                )
                group = channels
            conv_in = [inputs[0], w]
            if cfg.get("use_bias"):
                conv_in.append(g.weight(f"{name}_b", model.weights[f"{name}/bias"]))
            outputs[name] = g.op(
                "Conv",
                conv_in,
                name,
                kernel_shape=list(kernel),
                strides=list(strides),
                pads=pads,
                group=group,
            )
            if cfg.get("activation", "linear") != "linear":
                raise PackageError(f"{name}: fused activation {cfg['activation']!r}")
        elif kind == "BatchNormalization":
            args = [
                g.weight(f"{name}_{p}", model.weights[f"{name}/{p}"])
                for p in ("gamma", "beta", "moving_mean", "moving_variance")
            ]
            outputs[name] = g.op(
                "BatchNormalization", [inputs[0], *args], name, epsilon=float(cfg["epsilon"])
            )
        elif kind == "ReLU":
            if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                raise PackageError(f"{name}: only plain ReLU / ReLU6 is supported")
            high = cfg.get("max_value")
            if high is None:
                outputs[name] = g.op("Relu", inputs, name)
            else:
                low_c = g.const(f"{name}_low", np.asarray(0.0, np.float32))
                high_c = g.const(f"{name}_high", np.asarray(float(high), np.float32))
                outputs[name] = g.op("Clip", [inputs[0], low_c, high_c], name)
        elif kind == "Add":
            outputs[name] = g.op("Add", inputs, name)
        elif kind in ("AveragePooling2D", "GlobalAveragePooling2D"):
            # The published head pools the 7×7 map at 224 px with a 7×7 window: the same as a
            # global mean, which also lets the model run at other input sizes.
            outputs[name] = g.op("GlobalAveragePool", inputs, name)
        elif kind == "Flatten":
            outputs[name] = g.op("Flatten", inputs, name, axis=1)
        elif kind == "Dense":
            kernel = g.weight(f"{name}_w", model.weights[f"{name}/kernel"])
            bias = g.weight(f"{name}_b", model.weights[f"{name}/bias"])
            out = g.op("Gemm", [inputs[0], kernel, bias], f"{name}_linear")
            activation = cfg.get("activation", "linear")
            if activation == "relu":
                out = g.op("Relu", [out], name)
            elif activation == "softmax":
                out = g.op("Softmax", [out], name, axis=1)
            elif activation != "linear":
                raise PackageError(f"{name}: activation {activation!r}")
            outputs[name] = out
        elif kind == "Dropout":
            outputs[name] = inputs[0]
    last = outputs[model.layers[-1]["name"]]
    g.nodes.append(helper.make_node("Identity", [last], ["probabilities"], name="probabilities"))
    graph = helper.make_graph(
        g.nodes, "moodgate-explicit-nsfwjs-mobilenetv2",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)])],
        g.initializers,
    )  # fmt: skip
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="moodgate"
    )
    onnx_model.ir_version = 8
    checker.check_model(onnx_model)
    return onnx_model


def reference_forward(model: KerasModel, image_nhwc: np.ndarray) -> np.ndarray:
    """The Keras graph evaluated in plain numpy (NHWC, float64): the converter's check."""
    values: dict[str, np.ndarray] = {}
    pending_pad: dict[str, list[int]] = {}
    for layer in model.layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        x = values[inbound[0]] if inbound else image_nhwc.astype(np.float64)
        if kind == "ZeroPadding2D":
            (top, bottom), (left, right) = cfg["padding"]
            values[name] = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
            pending_pad[name] = [top, left, bottom, right]
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            kernel = tuple(cfg["kernel_size"])
            strides = tuple(cfg["strides"])
            if cfg["padding"] == "same":
                t, left, b, r = _same_pads(kernel, strides)
                x = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
            key = "kernel" if kind == "Conv2D" else "depthwise_kernel"
            w = model.weights[f"{name}/{key}"].values().astype(np.float64)
            values[name] = _conv_nhwc(x, w, strides, depthwise=kind == "DepthwiseConv2D")
            if cfg.get("use_bias"):
                values[name] = values[name] + model.weights[f"{name}/bias"].values()
        elif kind == "BatchNormalization":
            p = {
                k: model.weights[f"{name}/{k}"].values().astype(np.float64)
                for k in ("gamma", "beta", "moving_mean", "moving_variance")
            }
            values[name] = (x - p["moving_mean"]) / np.sqrt(
                p["moving_variance"] + cfg["epsilon"]
            ) * p["gamma"] + p["beta"]
        elif kind == "ReLU":
            high = cfg.get("max_value")
            values[name] = np.clip(x, 0, high if high is not None else np.inf)
        elif kind == "Add":
            values[name] = sum(values[i] for i in inbound)
        elif kind in ("AveragePooling2D", "GlobalAveragePooling2D"):
            values[name] = x.mean(axis=(1, 2), keepdims=True)
        elif kind == "Flatten":
            values[name] = x.reshape(len(x), -1)
        elif kind == "Dense":
            kernel, bias = (model.weights[f"{name}/{k}"].values() for k in ("kernel", "bias"))
            y = x @ kernel + bias
            if cfg["activation"] == "relu":
                y = np.maximum(y, 0)
            elif cfg["activation"] == "softmax":
                y = np.exp(y - y.max(axis=1, keepdims=True))
                y = y / y.sum(axis=1, keepdims=True)
            values[name] = y
        else:  # InputLayer, Dropout
            values[name] = x
    return values[model.layers[-1]["name"]]


def _conv_nhwc(
    x: np.ndarray, w: np.ndarray, strides: tuple[int, int], depthwise: bool
) -> np.ndarray:
    kh, kw = w.shape[:2]
    sh, sw = strides
    n, h, wid, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (wid - kw) // sw + 1
    out = np.zeros((n, oh, ow, w.shape[2] if depthwise else w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            out += patch * w[i, j, :, 0] if depthwise else patch @ w[i, j]
    return out


def convert(package: Path, out_dir: Path) -> dict[str, Any]:
    """Write the ONNX file and `explicit.json` (its sha256, classes and input) into `out_dir`."""
    import onnx

    model = read_package(Path(package))
    onnx_model = build_onnx(model)
    buffer = io.BytesIO()
    onnx.save(onnx_model, buffer)
    data = buffer.getvalue()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ONNX_FILE).write_bytes(data)
    manifest = {
        "model": "nsfwjs MobileNetV2 (5 classes), converted from the npm package's own weights",
        "source": f"npm {PACKAGE} ({MODEL_SUBDIR}), MIT licence",
        "file": ONNX_FILE,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "classes": list(CLASSES),
        "explicit_weights": EXPLICIT_WEIGHTS,
        "input_size": model.input_size,
        # The graph pools globally, so it also runs smaller: the cheaper sizes a narrow emotion
        # slice is paired with (moodgate.emotion.explicit.ExplicitScorer.size_for).
        "input_sizes": [model.input_size, *INPUT_STEPS],
        "input": "RGB, N×3×H×W float32, pixel / 255 (as nsfwjs); square resize, no crop",
        "parameters": int(sum(c.codes.size for c in model.weights.values())),
        "converted_by": "moodgate explicit import (moodgate.training.nsfwjs.convert)",
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
