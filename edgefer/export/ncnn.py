"""ONNX -> ncnn (.param text + .bin weights), in Python, for edgefer's CNN exports.

ncnn's own converters are pnnx (needs PyTorch) and the retired onnx2ncnn (needs protobuf's
C++ library); this one reads the ONNX graph with the ``onnx`` package and writes the two
files as ncnn's docs describe them (docs/developer-guide/param-and-model-file-structure.md,
operation-param-weight-table.md). It covers the operators image classifiers such as
MobileNetV3 use and names any other in an ExportError.

ncnn has no batch axis: a blob is (c, h, w), or (w) once global pooling has flattened it.
The converter keeps track of which blobs are flat, so that a flat per-channel gate that
multiplies a (c, h, w) map is reshaped to (c, 1, 1) first (ncnn's implicit 1-D broadcast
would pick the width axis when w == c). Then it folds what ncnn runs as one layer:
min-then-max by constants into Clip, x * relu6(x + 3) / 6 into HardSwish, a ReLU or Clip
followed by a Clip into one Clip, and a ReLU, Clip or HardSwish into the convolution or
inner product before it.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer.engines import require
from edgefer.errors import ExportError

MAGIC = 7767517
FP16_FLAG = 0x01306B47  # a weight buffer's tag: float16 data follows
FP32_FLAG = 0
INPUT_BLOB = "in0"
OUTPUT_BLOB = "out0"

# BinaryOp op_type
ADD, SUB, MUL, DIV, MAX, MIN, RSUB, RDIV = 0, 1, 2, 3, 4, 5, 7, 8
_BINARY = {"Add": ADD, "Sub": SUB, "Mul": MUL, "Div": DIV, "Max": MAX, "Min": MIN}
_REVERSED = {SUB: RSUB, DIV: RDIV}  # the constant is the first operand
# Convolution / InnerProduct activation_type
_ACT_RELU, _ACT_LEAKY, _ACT_CLIP, _ACT_HARDSWISH = 1, 2, 3, 6
FLOAT_MAX = 3.40282347e38


@dataclass
class Weight:
    """One weight buffer of a layer: ``tagged`` ones start with the storage flag (and may
    be stored as float16); untagged ones (biases) are always raw float32."""

    data: np.ndarray
    tagged: bool = True


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list[float]] = field(default_factory=dict)
    weights: list[Weight] = field(default_factory=list)


@dataclass(frozen=True)
class NcnnModel:
    """What was written: the layers, and the input shape (c, h, w)."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int]
    fp16: bool

    @property
    def op_counts(self) -> Counter:
        return Counter(layer.type for layer in self.layers)


# --- writing -------------------------------------------------------------------------

def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join([str(len(value)), *(_format_value(float(v)) for v in value)])
    if isinstance(value, (bool, int, np.integer)):
        return str(int(value))
    # ncnn reads a value of at most 15 characters and takes one with '.' or 'e' as a float:
    # "%.8e" is 9 significant digits, enough for every float32, in 15 characters
    return f"{min(max(float(value), -FLOAT_MAX), FLOAT_MAX):.8e}"


def _array_key(key: int, value) -> int:
    # array-valued params are written under -23300 - key
    return -23300 - key if isinstance(value, (list, tuple)) else key


def param_text(layers: list[Layer] | tuple[Layer, ...]) -> str:
    blobs = {b for layer in layers for b in (*layer.inputs, *layer.outputs)}
    lines = [str(MAGIC), f"{len(layers)} {len(blobs)}"]
    for layer in layers:
        params = " ".join(f"{_array_key(k, v)}={_format_value(v)}"
                          for k, v in sorted(layer.params.items()))
        lines.append(" ".join([f"{layer.type:<24}", f"{layer.name:<24}",
                               str(len(layer.inputs)), str(len(layer.outputs)),
                               *layer.inputs, *layer.outputs, params]).rstrip())
    return "\n".join(lines) + "\n"


def weight_bytes(weight: Weight, fp16: bool) -> bytes:
    data = np.ascontiguousarray(weight.data, dtype=np.float32).ravel()
    if not weight.tagged:
        raw = data.astype("<f4").tobytes()
    elif fp16:
        raw = struct.pack("<I", FP16_FLAG) + data.astype("<f2").tobytes()
    else:
        raw = struct.pack("<I", FP32_FLAG) + data.astype("<f4").tobytes()
    return raw + b"\0" * (-len(raw) % 4)  # each buffer is 32-bit aligned


def write_ncnn(model: NcnnModel, param_path: str | os.PathLike,
               bin_path: str | os.PathLike) -> None:
    Path(param_path).write_text(param_text(model.layers))
    with open(bin_path, "wb") as f:
        for layer in model.layers:
            for weight in layer.weights:
                f.write(weight_bytes(weight, model.fp16))


# --- reading back (tests, inspect) ---------------------------------------------------

@dataclass(frozen=True)
class ParamLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str]  # raw values as written; arrays under their plain key


def read_param(path: str | os.PathLike) -> list[ParamLayer]:
    """The layers of a .param file; ModelError-free: a malformed file is an ExportError."""
    lines = Path(path).read_text().split("\n")
    if not lines or lines[0].strip() != str(MAGIC):
        raise ExportError(f"{path}: not an ncnn .param file (magic {MAGIC} missing)")
    layer_count, _blob_count = (int(v) for v in lines[1].split())
    layers = []
    for line in lines[2:2 + layer_count]:
        parts = line.split()
        n_in, n_out = int(parts[2]), int(parts[3])
        blobs = parts[4:4 + n_in + n_out]
        params = {}
        for item in parts[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            k = int(key)
            params[-23300 - k if k <= -23300 else k] = value
        layers.append(ParamLayer(parts[0], parts[1], tuple(blobs[:n_in]),
                                 tuple(blobs[n_in:]), params))
    if len(layers) != layer_count:
        raise ExportError(f"{path}: {layer_count} layers announced, {len(layers)} found")
    return layers


def read_weight(buffer: bytes, offset: int, count: int, tagged: bool) -> tuple[np.ndarray, int]:
    """``count`` weights at ``offset`` of a .bin file and the offset after them."""
    if not tagged:
        end = offset + 4 * count
        return np.frombuffer(buffer[offset:end], "<f4"), end
    (flag,) = struct.unpack_from("<I", buffer, offset)
    offset += 4
    if flag == FP16_FLAG:
        data = np.frombuffer(buffer[offset:offset + 2 * count], "<f2").astype(np.float32)
        end = offset + 2 * count
    elif flag == FP32_FLAG:
        data = np.frombuffer(buffer[offset:offset + 4 * count], "<f4")
        end = offset + 4 * count
    else:
        raise ExportError(f"weight buffer at byte {offset - 4}: storage flag {flag:#x} is "
                          "neither float32 nor float16 (quantized weights are not read here)")
    return data, end + (-end % 4)


def storage_of(bin_path: str | os.PathLike) -> str:
    """"fp16" or "fp32": the storage of the first tagged weight buffer (edgefer writes
    every tagged buffer the same way)."""
    with open(bin_path, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        return "fp32"
    return "fp16" if struct.unpack("<I", head)[0] == FP16_FLAG else "fp32"


# --- converting ----------------------------------------------------------------------

def onnx_to_ncnn(onnx_path: str | os.PathLike, param_path: str | os.PathLike,
                 bin_path: str | os.PathLike, fp16: bool = False) -> NcnnModel:
    """Convert an ONNX image classifier (batch 1, NHWC or NCHW input) to ncnn files."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path))
    converted = onnx_model_to_ncnn(model, fp16)
    write_ncnn(converted, param_path, bin_path)
    return converted


def onnx_model_to_ncnn(model, fp16: bool = False) -> NcnnModel:
    """The ncnn layers of a loaded ``onnx.ModelProto``."""
    converter = _Converter(model)
    layers = converter.convert()
    for fold in (_fold_clips, _fold_hardswish, _fold_clip_chains, _fold_activations):
        layers = fold(layers)
    layers = _insert_splits(layers)
    return NcnnModel(tuple(layers), converter.input_chw, fp16)


class _Converter:
    def __init__(self, model) -> None:
        from onnx import numpy_helper, shape_inference

        # shapes are a help here; a graph whose shapes ONNX cannot infer may still convert
        with contextlib.suppress(Exception):
            model = shape_inference.infer_shapes(model)
        self.graph = model.graph
        self.constants = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else -1
                                for d in v.type.tensor_type.shape.dim]
                       for v in (*self.graph.input, *self.graph.value_info, *self.graph.output)}
        self.blob: dict[str, str] = {}  # ONNX tensor -> ncnn blob
        self.flat: set[str] = set()  # ncnn blobs of one dimension (w)
        self.layers: list[Layer] = []
        self.nhwc_input: str | None = None
        self.input_chw = self._input()

    # -- bookkeeping ----------------------------------------------------------------

    def _input(self) -> tuple[int, int, int]:
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ExportError(f"ncnn export needs a model with one input, this one has "
                              f"{len(inputs)}")
        name = inputs[0].name
        shape = self.shapes.get(name, [])
        if len(shape) != 4 or any(d <= 0 for d in shape[1:]):
            raise ExportError(f"ncnn export needs a 4-D image input with a fixed size, "
                              f"{name} is {shape}")
        consumers = [n for n in self.graph.node if name in n.input]
        nhwc = bool(consumers) and all(n.op_type in ("Reshape", "Transpose") for n in consumers)
        c, h, w = (shape[3], shape[1], shape[2]) if nhwc else shape[1:]
        if nhwc:
            self.nhwc_input = name
        self.blob[name] = INPUT_BLOB
        self.layers.append(Layer("Input", "input", [], [INPUT_BLOB],
                                 {0: w, 1: h, 2: c}))
        return c, h, w

    def _new_blob(self, tensor: str) -> str:
        outputs = [o.name for o in self.graph.output]
        name = (OUTPUT_BLOB if outputs.index(tensor) == 0 else f"out{outputs.index(tensor)}") \
            if tensor in outputs else f"b{len(self.blob)}"
        self.blob[tensor] = name
        return name

    def _in(self, tensor: str) -> str:
        if tensor not in self.blob:
            raise ExportError(f"ncnn export: tensor {tensor!r} is used before it is made "
                              "(or is a constant where ncnn needs a computed input)")
        return self.blob[tensor]

    def _add(self, node, type_: str, inputs: list[str], params: dict | None = None,
             weights: list[Weight] | None = None, flat: bool | None = None) -> str:
        out = self._new_blob(node.output[0])
        self.layers.append(Layer(type_, _layer_name(node, len(self.layers)), inputs, [out],
                                 params or {}, weights or []))
        if flat if flat is not None else any(b in self.flat for b in inputs):
            self.flat.add(out)
        return out

    def _alias(self, node) -> None:
        self.blob[node.output[0]] = self._in(node.input[0])

    def _scalar(self, tensor: str) -> float | None:
        value = self.constants.get(tensor)
        if value is None:
            return None
        if value.size != 1:
            raise ExportError(f"ncnn export: constant {tensor!r} of shape {value.shape} "
                              "in an elementwise operation is not supported (scalars only)")
        return float(value.reshape(-1)[0])

    # -- nodes ------------------------------------------------------------------------

    def convert(self) -> list[Layer]:
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise ExportError(f"ncnn export does not support the ONNX operator "
                                  f"{node.op_type} (node {node.name or node.output[0]!r})")
            handler(node)
        for index, output in enumerate(self.graph.output):
            if output.name not in self.blob:
                raise ExportError(f"ncnn export: the model output {output.name} was not made")
            if self.blob[output.name] == INPUT_BLOB:
                raise ExportError("ncnn export: the model output is its input")
            self._rename(self.blob[output.name], OUTPUT_BLOB if index == 0 else f"out{index}")
        return self.layers

    def _rename(self, blob: str, name: str) -> None:
        """An output made by an aliasing node (Identity, Reshape) still gets its out name."""
        if blob == name:
            return
        for layer in self.layers:
            layer.inputs = [name if b == blob else b for b in layer.inputs]
            layer.outputs = [name if b == blob else b for b in layer.outputs]
        self.flat = {name if b == blob else b for b in self.flat}

    def _op_Identity(self, node) -> None:
        self._alias(node)

    _op_Dropout = _op_Identity

    def _op_Reshape(self, node) -> None:
        self._reshape_like(node, [int(v) for v in self.constants.get(node.input[1], [])])

    def _op_Squeeze(self, node) -> None:
        self._reshape_like(node, self.shapes.get(node.output[0], []))

    def _op_Flatten(self, node) -> None:
        if self._in(node.input[0]) in self.flat:
            self._alias(node)
        else:
            self._add(node, "Flatten", [self._in(node.input[0])], flat=True)

    def _reshape_like(self, node, target: list[int]) -> None:
        source = node.input[0]
        if source == self.nhwc_input and self.input_chw[0] == 1 and \
                target[1:] in ([1, *self.input_chw[1:]], [*self.input_chw]):
            self._alias(node)  # NHWC -> NCHW of a one-channel image moves no value
            return
        if self._in(source) in self.flat and len(target) <= 2:
            self._alias(node)  # (1, C, 1, 1) -> (1, C): ncnn's blob is (C) already
            return
        raise ExportError(f"ncnn export: Reshape/Squeeze of {source!r} to {target} is not "
                          "supported (only NHWC->NCHW of the input and flattening a pooled "
                          "vector)")

    def _op_Transpose(self, node) -> None:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
        if node.input[0] == self.nhwc_input and perm == [0, 3, 1, 2]:
            self._alias(node)  # the runtime hands ncnn a (c, h, w) image
            return
        raise ExportError(f"ncnn export: Transpose {perm} of {node.input[0]!r} is not "
                          "supported (only NHWC->NCHW of the input)")

    def _op_Conv(self, node) -> None:
        attrs = _attributes(node)
        weight = self.constants.get(node.input[1])
        if weight is None or weight.ndim != 4:
            raise ExportError(f"ncnn export: Conv {node.name!r} needs constant 2-D weights")
        out_c, _, kh, kw = weight.shape
        group = int(attrs.get("group", 1))
        bias = self.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] \
            else None
        source = self._in(node.input[0])
        if source in self.flat:
            # a 1x1 conv of a pooled vector (squeeze-excite) is an inner product; ncnn's
            # Convolution still takes one but logs a deprecation on every run
            if (kh, kw) != (1, 1) or group != 1:
                raise ExportError(f"ncnn export: Conv {node.name!r} ({kh}x{kw}, group {group}) "
                                  "of a pooled vector is not supported (1x1 only)")
            self._inner_product(node, weight.reshape(out_c, -1), bias)
            return
        dil_h, dil_w = attrs.get("dilations", [1, 1])
        stride_h, stride_w = attrs.get("strides", [1, 1])
        params = {0: out_c, 1: kw, 11: kh, 2: dil_w, 12: dil_h, 3: stride_w, 13: stride_h,
                  5: int(bias is not None), 6: int(weight.size)}
        params.update(_conv_pads(node, attrs))
        if group != 1:
            params[7] = group
        weights = [Weight(weight)]
        if bias is not None:
            weights.append(Weight(bias.reshape(-1), tagged=False))
        self._add(node, "Convolution" if group == 1 else "ConvolutionDepthWise", [source],
                  params, weights)

    def _op_Gemm(self, node) -> None:
        attrs = _attributes(node)
        weight = self.constants.get(node.input[1])
        if weight is None or attrs.get("transA", 0):
            raise ExportError(f"ncnn export: Gemm {node.name!r} needs constant weights and "
                              "no transA")
        # InnerProduct keeps (out, in) rows
        weight = (weight if attrs.get("transB", 0) else weight.T) * attrs.get("alpha", 1.0)
        self._inner_product(node, weight, self._bias(node, attrs.get("beta", 1.0)))

    def _op_MatMul(self, node) -> None:
        weight = self.constants.get(node.input[1])
        if weight is None or weight.ndim != 2:
            raise ExportError(f"ncnn export: MatMul {node.name!r} needs constant 2-D weights")
        self._inner_product(node, weight.T, None)

    def _bias(self, node, beta: float) -> np.ndarray | None:
        if len(node.input) < 3 or not node.input[2]:
            return None
        bias = self.constants.get(node.input[2])
        if bias is None:
            raise ExportError(f"ncnn export: Gemm {node.name!r} needs a constant bias")
        return bias.reshape(-1) * beta

    def _inner_product(self, node, weight: np.ndarray, bias: np.ndarray | None) -> None:
        source = self._in(node.input[0])
        if source not in self.flat:
            raise ExportError(f"ncnn export: {node.op_type} {node.name!r} on a (c, h, w) map "
                              "is not supported (flatten or pool it first)")
        params = {0: weight.shape[0], 1: int(bias is not None), 2: int(weight.size)}
        weights = [Weight(np.ascontiguousarray(weight))]
        if bias is not None:
            weights.append(Weight(np.broadcast_to(bias.reshape(-1), (weight.shape[0],)),
                                  tagged=False))
        self._add(node, "InnerProduct", [source], params, weights, flat=True)

    def _op_Relu(self, node) -> None:
        self._add(node, "ReLU", [self._in(node.input[0])])

    def _op_LeakyRelu(self, node) -> None:
        self._add(node, "ReLU", [self._in(node.input[0])],
                  {0: _attributes(node).get("alpha", 0.01)})

    def _op_Sigmoid(self, node) -> None:
        self._add(node, "Sigmoid", [self._in(node.input[0])])

    def _op_HardSigmoid(self, node) -> None:
        attrs = _attributes(node)
        self._add(node, "HardSigmoid", [self._in(node.input[0])],
                  {0: attrs.get("alpha", 0.2), 1: attrs.get("beta", 0.5)})

    def _op_HardSwish(self, node) -> None:
        self._add(node, "HardSwish", [self._in(node.input[0])], {0: 1 / 6, 1: 0.5})

    def _op_Clip(self, node) -> None:
        attrs = _attributes(node)
        low = self._scalar(node.input[1]) if len(node.input) > 1 and node.input[1] else \
            attrs.get("min", -FLOAT_MAX)
        high = self._scalar(node.input[2]) if len(node.input) > 2 and node.input[2] else \
            attrs.get("max", FLOAT_MAX)
        self._add(node, "Clip", [self._in(node.input[0])], {0: low, 1: high})

    def _op_GlobalAveragePool(self, node) -> None:
        self._add(node, "Pooling", [self._in(node.input[0])], {0: 1, 4: 1}, flat=True)

    def _op_GlobalMaxPool(self, node) -> None:
        self._add(node, "Pooling", [self._in(node.input[0])], {0: 0, 4: 1}, flat=True)

    def _op_ReduceMean(self, node) -> None:
        axes = _attributes(node).get("axes")
        if axes is None and len(node.input) > 1:
            axes = [int(a) for a in self.constants.get(node.input[1], [])]
        if sorted(int(a) % 4 for a in axes or []) != [2, 3]:
            raise ExportError(f"ncnn export: ReduceMean over axes {axes} is not supported "
                              "(only the spatial axes 2, 3)")
        self._op_GlobalAveragePool(node)

    def _op_Softmax(self, node) -> None:
        source = self._in(node.input[0])
        axis = _attributes(node).get("axis", -1)
        if source not in self.flat or axis not in (-1, 1):
            raise ExportError(f"ncnn export: Softmax over axis {axis} of a (c, h, w) map "
                              "is not supported (only over a vector)")
        self._add(node, "Softmax", [source], {0: 0, 1: 1})  # 1=1: ncnn's fixed softmax

    def _binary(self, node) -> None:
        op = _BINARY[node.op_type]
        first, second = (self._scalar(t) for t in node.input[:2])
        if first is not None and second is not None:
            raise ExportError(f"ncnn export: {node.op_type} {node.name!r} of two constants "
                              "(fold constants before exporting)")
        if second is not None or first is not None:
            tensor = node.input[0] if second is not None else node.input[1]
            if first is not None:
                op = _REVERSED.get(op, op)
            value = second if second is not None else first
            self._add(node, "BinaryOp", [self._in(tensor)], {0: op, 1: 1, 2: value})
            return
        a, b = self._in(node.input[0]), self._in(node.input[1])
        a, b = self._broadcastable(node, a), self._broadcastable(node, b)
        self._add(node, "BinaryOp", [a, b], {0: op}, flat=a in self.flat and b in self.flat)

    def _broadcastable(self, node, blob: str) -> str:
        """A flat operand of a map's operation, reshaped to (c, 1, 1)."""
        others = [self._in(t) for t in node.input[:2]]
        if blob not in self.flat or all(o in self.flat for o in others):
            return blob
        shape = self.shapes.get(next(t for t in node.input[:2] if self.blob[t] == blob), [])
        channels = shape[1] if len(shape) >= 2 and shape[1] > 0 else -1
        out = f"{blob}_c11"
        if not any(out in layer.outputs for layer in self.layers):
            self.layers.append(Layer("Reshape", f"{blob}_to_c11", [blob], [out],
                                     {0: 1, 1: 1, 2: channels}))
        return out

    _op_Add = _op_Sub = _op_Mul = _op_Div = _op_Min = _op_Max = _binary


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer_name(node, index: int) -> str:
    name = (node.name or node.output[0]).replace(" ", "_")
    return f"{node.op_type.lower()}_{index}" if len(name) > 200 or not name else name


def _conv_pads(node, attrs: dict) -> dict[int, int]:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "SAME_UPPER":
        return {4: -233}
    if auto_pad == "SAME_LOWER":
        return {4: -234}
    if auto_pad not in ("NOTSET", "VALID"):
        raise ExportError(f"ncnn export: Conv {node.name!r} auto_pad {auto_pad} is not "
                          "supported")
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    return {4: left, 15: right, 14: top, 16: bottom}


# --- folding -------------------------------------------------------------------------

def _consumers(layers: list[Layer]) -> dict[str, list[Layer]]:
    found: dict[str, list[Layer]] = {}
    for layer in layers:
        for blob in layer.inputs:
            found.setdefault(blob, []).append(layer)
    return found


def _scalar_op(layer: Layer, op: int) -> bool:
    return layer.type == "BinaryOp" and layer.params.get(1) == 1 and layer.params.get(0) == op


def _only_consumer(layer: Layer, consumers: dict[str, list[Layer]]) -> Layer | None:
    """The one layer reading ``layer``'s output (not a model output), else None."""
    blob = layer.outputs[0]
    users = consumers.get(blob, [])
    return users[0] if len(users) == 1 and not blob.startswith("out") else None


def _merge(layers: list[Layer], first: Layer, last: Layer, replacement: Layer) -> list[Layer]:
    """``layers`` with ``first`` replaced by ``replacement`` (reading ``first``'s inputs,
    writing ``last``'s outputs) and ``last`` and the layers between them on the chain
    dropped (the caller names them in ``replacement``)."""
    replacement.inputs, replacement.outputs = list(first.inputs), list(last.outputs)
    return [replacement if layer is first else layer for layer in layers]


def _fold_clips(layers: list[Layer]) -> list[Layer]:
    """min(x, hi) then max(., lo) (either order), lo <= hi, by constants: one Clip."""
    consumers = _consumers(layers)
    dropped: set[int] = set()
    out = list(layers)
    for layer in layers:
        if id(layer) in dropped or not (_scalar_op(layer, MIN) or _scalar_op(layer, MAX)):
            continue
        nxt = _only_consumer(layer, consumers)
        want = MAX if layer.params[0] == MIN else MIN
        if nxt is None or not _scalar_op(nxt, want):
            continue
        high, low = (layer.params[2], nxt.params[2]) if want == MAX else \
            (nxt.params[2], layer.params[2])
        if low > high:
            continue
        clip = Layer("Clip", layer.name, [], [], {0: low, 1: high})
        out = _merge(out, layer, nxt, clip)
        dropped.add(id(nxt))
    return [layer for layer in out if id(layer) not in dropped]


def _fold_hardswish(layers: list[Layer]) -> list[Layer]:
    """x * (clip(x + 3, 0, 6) * (1/6)), in any operand order: one HardSwish."""
    consumers = _consumers(layers)
    dropped: set[int] = set()
    out = list(layers)
    for add in layers:
        if not (_scalar_op(add, ADD) and abs(add.params[2] - 3.0) < 1e-6):
            continue
        clip = _only_consumer(add, consumers)
        scale = clip and _only_consumer(clip, consumers)
        mul = scale and _only_consumer(scale, consumers)
        if not (clip and clip.type == "Clip" and clip.params.get(0) == 0.0
                and abs(clip.params.get(1, 0) - 6.0) < 1e-6
                and _scalar_op(scale, MUL) and abs(scale.params[2] - 1 / 6) < 1e-6
                and mul.type == "BinaryOp" and mul.params.get(0) == MUL
                and mul.params.get(1, 0) == 0
                and sorted(mul.inputs) == sorted([add.inputs[0], scale.outputs[0]])):
            continue
        out = _merge(out, add, mul, Layer("HardSwish", add.name, [], [], {0: 1 / 6, 1: 0.5}))
        dropped.update(id(layer) for layer in (clip, scale, mul))
    return [layer for layer in out if id(layer) not in dropped]


def _clip_bounds(layer: Layer) -> tuple[float, float] | None:
    if layer.type == "Clip":
        return layer.params.get(0, -FLOAT_MAX), layer.params.get(1, FLOAT_MAX)
    if layer.type == "ReLU" and not layer.params.get(0, 0.0):
        return 0.0, FLOAT_MAX
    return None


def _fold_clip_chains(layers: list[Layer]) -> list[Layer]:
    """A ReLU or Clip whose only reader is a Clip: one Clip of the bounds' intersection
    (the quantization ranges a QAT model clips each activation to follow its ReLUs)."""
    while True:
        consumers = _consumers(layers)
        for layer in layers:
            bounds = _clip_bounds(layer)
            nxt = _only_consumer(layer, consumers) if bounds else None
            if nxt is None or nxt.type != "Clip":
                continue
            low = max(bounds[0], nxt.params.get(0, -FLOAT_MAX))
            high = min(bounds[1], nxt.params.get(1, FLOAT_MAX))
            if low > high:
                continue
            clip = Layer("Clip", layer.name, [], [], {0: low, 1: high})
            layers = [layer_ for layer_ in _merge(layers, layer, nxt, clip) if layer_ is not nxt]
            break
        else:
            return layers


def _fold_activations(layers: list[Layer]) -> list[Layer]:
    """A ReLU, Clip or HardSwish right after a convolution or inner product runs in it."""
    consumers = _consumers(layers)
    dropped: set[int] = set()
    for layer in layers:
        if layer.type not in ("Convolution", "ConvolutionDepthWise", "InnerProduct") or \
                9 in layer.params:
            continue
        act = _only_consumer(layer, consumers)
        fused = _activation_params(act) if act is not None else None
        if fused is None:
            continue
        layer.params.update(fused)
        layer.outputs = list(act.outputs)
        dropped.add(id(act))
    return [layer for layer in layers if id(layer) not in dropped]


def _activation_params(act: Layer) -> dict | None:
    if act.type == "ReLU":
        slope = act.params.get(0, 0.0)
        return {9: _ACT_LEAKY, 10: [slope]} if slope else {9: _ACT_RELU}
    if act.type == "Clip":
        return {9: _ACT_CLIP, 10: [act.params.get(0, -FLOAT_MAX), act.params.get(1, FLOAT_MAX)]}
    if act.type == "HardSwish":
        return {9: _ACT_HARDSWISH, 10: [act.params.get(0, 0.2), act.params.get(1, 0.5)]}
    return None


def _insert_splits(layers: list[Layer]) -> list[Layer]:
    """ncnn reads each blob once: a blob with several readers goes through a Split."""
    consumers = _consumers(layers)
    out: list[Layer] = []
    for layer in layers:
        out.append(layer)
        for blob in layer.outputs:
            readers = consumers.get(blob, [])
            if len(readers) < 2:
                continue
            copies = [f"{blob}_s{i}" for i in range(len(readers))]
            out.append(Layer("Split", f"split_{blob}", [blob], copies))
            for reader, copy in zip(readers, copies, strict=True):
                reader.inputs = [copy if b == blob else b for b in reader.inputs]
    return out


# --- edgefer's ncnn format (edgefer.formats): export, files, record, inspect ----------

def export_ncnn(source, options) -> NcnnModel:
    """The ncnn model of the export's float ONNX model; fp16 stores the weights as
    float16 (ncnn computes in float32 on x86, in fp16 where the CPU has it)."""
    from edgefer.export.convert import _onnx_float
    from edgefer.export.options import Precision

    return onnx_model_to_ncnn(_onnx_float(source, options),
                              fp16=options.precision is Precision.FP16)


def record_path(param: Path) -> Path:
    """``m.ncnn.param`` -> ``m.ncnn.json``, the edgefer record beside it."""
    return param.with_suffix(".json")


def write_artifact(artifact: NcnnModel, record: str, info, path: Path) -> None:
    """``path`` (.ncnn.param), its .ncnn.bin weights and its .ncnn.json record."""
    write_ncnn(artifact, path, path.with_suffix(".bin"))
    record_path(path).write_text(record)


def ncnn_record(path: Path) -> str | None:
    sidecar = record_path(Path(path))
    return sidecar.read_text() if sidecar.is_file() else None


def inspect_ncnn(path: Path):
    """What ``edgefer inspect`` shows of an ncnn model, read from its two files."""
    from edgefer.errors import ModelError
    from edgefer.export.inspect import TensorInfo, _sparsity

    try:
        layers = read_param(path)
    except (ExportError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: not a readable ncnn .param file ({exc})") from exc
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise ModelError(f"{path}: its weights {weights.name} are missing")
    kernels = _kernels(layers, weights.read_bytes())
    first = layers[0]
    inputs = tuple(TensorInfo(b, "float32", (1, int(first.params.get(1, -1)),
                                             int(first.params.get(0, -1)),
                                             int(first.params.get(2, -1))))
                   for b in first.outputs) if first.type == "Input" else ()
    ops = dict(Counter(layer.type for layer in layers))
    computing = {k: v for k, v in ops.items()
                 if k in ("Convolution", "ConvolutionDepthWise", "InnerProduct")}
    outputs = (TensorInfo(OUTPUT_BLOB, "float32", (1, _output_width(layers))),)
    return "ncnn", inputs, outputs, ops, computing, _sparsity(kernels)


def _kernels(layers: list[ParamLayer], buffer: bytes) -> list[np.ndarray]:
    """The convolution and inner-product kernels, read in layer order."""
    kernels, offset = [], 0
    for layer in layers:
        if layer.type not in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
            continue
        sizes = (2, 1) if layer.type == "InnerProduct" else (6, 5)
        kernel, offset = read_weight(buffer, offset, int(layer.params.get(sizes[0], 0)), True)
        kernels.append(kernel)
        if int(layer.params.get(sizes[1], 0)):
            _, offset = read_weight(buffer, offset, int(layer.params.get(0, 0)), False)
    return kernels


def _output_width(layers: list[ParamLayer]) -> int:
    """The output's size: the num_output of the last layer that sets one."""
    for layer in reversed(layers):
        if layer.type in ("InnerProduct", "Convolution"):
            return int(layer.params.get(0, -1))
    return -1
