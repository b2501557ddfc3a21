"""A numpy reading of the ncnn layers edgefer's converter writes, for tests without ncnn.

It runs a .param/.bin pair as ncnn's docs define the layers (blobs (c, h, w) or (w)), so
that the converter's files can be checked against ONNX Runtime where the ncnn module is
not installed. It reads the .bin in layer order, which also checks the weights' layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefer.export.ncnn import ParamLayer, read_param, read_weight

_TAGGED_WEIGHT_LAYERS = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


def _i(layer: ParamLayer, key: int, default: int) -> int:
    return int(layer.params.get(key, default))


def _f(layer: ParamLayer, key: int, default: float) -> float:
    return float(layer.params.get(key, default))


def _floats(layer: ParamLayer, key: int) -> list[float]:
    value = layer.params.get(key)
    return [float(v) for v in value.split(",")[1:]] if value else []


class NumpyNcnn:
    def __init__(self, param: Path, weights: Path) -> None:
        self.layers = read_param(param)
        buffer = weights.read_bytes()
        self.weights: dict[str, list[np.ndarray]] = {}
        offset = 0
        for layer in self.layers:
            if layer.type not in _TAGGED_WEIGHT_LAYERS:
                continue
            size = _i(layer, 6 if layer.type != "InnerProduct" else 2, 0)
            weight, offset = read_weight(buffer, offset, size, tagged=True)
            arrays = [weight]
            if _i(layer, 5 if layer.type != "InnerProduct" else 1, 0):
                bias, offset = read_weight(buffer, offset, _i(layer, 0, 0), tagged=False)
                arrays.append(bias)
            self.weights[layer.name] = arrays
        if offset != len(buffer):
            raise AssertionError(f"{len(buffer) - offset} bytes of the .bin were not read")

    def run(self, image_chw: np.ndarray, output: str = "out0") -> np.ndarray:
        blobs: dict[str, np.ndarray] = {}
        for layer in self.layers:
            inputs = [blobs[b] for b in layer.inputs]
            outs = self._layer(layer, inputs, image_chw)
            for name, value in zip(layer.outputs, outs, strict=True):
                blobs[name] = value
        return blobs[output]

    def _layer(self, layer: ParamLayer, inputs: list[np.ndarray], image) -> list[np.ndarray]:
        kind = layer.type
        if kind == "Input":
            return [np.asarray(image, np.float32)]
        if kind == "Split":
            return [inputs[0]] * len(layer.outputs)
        x = inputs[0]
        if kind in ("Convolution", "ConvolutionDepthWise"):
            y = self._conv(layer, x)
        elif kind == "InnerProduct":
            weight, *bias = self.weights[layer.name]
            y = weight.reshape(_i(layer, 0, 0), -1) @ x.reshape(-1)
            y = y + bias[0] if bias else y
            y = _activation(layer, y)
        elif kind == "Pooling":
            assert _i(layer, 4, 0) == 1, "only global pooling is read here"
            y = x.mean(axis=(1, 2)) if _i(layer, 0, 0) == 1 else x.max(axis=(1, 2))
        elif kind == "Clip":
            y = np.clip(x, _f(layer, 0, -3.4e38), _f(layer, 1, 3.4e38))
        elif kind == "ReLU":
            slope = _f(layer, 0, 0.0)
            y = np.where(x > 0, x, x * slope)
        elif kind == "HardSwish":
            y = x * np.clip(x * _f(layer, 0, 0.2) + _f(layer, 1, 0.5), 0, 1)
        elif kind == "Sigmoid":
            y = 1 / (1 + np.exp(-x))
        elif kind == "BinaryOp":
            y = _binary(layer, inputs)
        elif kind == "Reshape":
            w, h, c = _i(layer, 0, -233), _i(layer, 1, -233), _i(layer, 2, -233)
            y = x.reshape(c, h, w)
        elif kind == "Flatten":
            y = x.reshape(-1)
        elif kind == "Softmax":
            e = np.exp(x - x.max())
            y = e / e.sum()
        else:
            raise NotImplementedError(kind)
        return [np.asarray(y, np.float32)]

    def _conv(self, layer: ParamLayer, x: np.ndarray) -> np.ndarray:
        weight, *bias = self.weights[layer.name]
        out_c = _i(layer, 0, 0)
        kw, kh = _i(layer, 1, 0), _i(layer, 11, _i(layer, 1, 0))
        sw, sh = _i(layer, 3, 1), _i(layer, 13, _i(layer, 3, 1))
        group = _i(layer, 7, 1) if layer.type == "ConvolutionDepthWise" else 1
        flat = x.ndim == 1
        if flat:
            x = x.reshape(-1, 1, 1)
        left, right = _i(layer, 4, 0), _i(layer, 15, _i(layer, 4, 0))
        top, bottom = _i(layer, 14, _i(layer, 4, 0)), _i(layer, 16, _i(layer, 14, 0))
        x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
        in_c = x.shape[0]
        weight = weight.reshape(out_c, in_c // group, kh, kw)
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        y = np.zeros((out_c, out_h, out_w), np.float64)
        per_in, per_out = in_c // group, out_c // group
        for g in range(group):
            xs = x[g * per_in:(g + 1) * per_in]
            ws = weight[g * per_out:(g + 1) * per_out]
            for i in range(kh):
                for j in range(kw):
                    patch = xs[:, i:i + sh * out_h:sh, j:j + sw * out_w:sw]
                    y[g * per_out:(g + 1) * per_out] += np.einsum("oc,chw->ohw", ws[:, :, i, j],
                                                                  patch)
        if bias:
            y += bias[0].reshape(-1, 1, 1)
        y = _activation(layer, y)
        return y.reshape(-1) if flat else y


def _activation(layer: ParamLayer, y: np.ndarray) -> np.ndarray:
    kind, params = _i(layer, 9, 0), _floats(layer, 10)
    if kind == 1:
        return np.maximum(y, 0)
    if kind == 2:
        return np.where(y > 0, y, y * params[0])
    if kind == 3:
        return np.clip(y, params[0], params[1])
    if kind == 6:
        return y * np.clip(y * params[0] + params[1], 0, 1)
    assert kind == 0, f"activation_type {kind}"
    return y


def _binary(layer: ParamLayer, inputs: list[np.ndarray]) -> np.ndarray:
    op = _i(layer, 0, 0)
    a = inputs[0]
    b = np.float32(_f(layer, 2, 0.0)) if _i(layer, 1, 0) else inputs[1]
    if not _i(layer, 1, 0):
        assert a.ndim == b.ndim or min(a.size, b.size) == 1, \
            f"{layer.name}: implicit broadcasting of {a.shape} and {b.shape}"
    ops = {0: np.add, 1: np.subtract, 2: np.multiply, 3: np.divide, 4: np.maximum,
           5: np.minimum, 7: lambda x, y: y - x, 8: lambda x, y: y / x}
    return ops[op](a, b)
