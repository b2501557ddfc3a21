"""``edgefer inspect``: what is inside a model file, read without running it."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer.engines import require
from edgefer.errors import ModelError
from edgefer.formats import companion_of, file_format_of, load, suffixes_in_words


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    quantization: tuple[float, int] | None = None  # (scale, zero point) for int tensors


@dataclass(frozen=True)
class Inspection:
    path: str
    format: str
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    ops: dict[str, int]
    float_ops: dict[str, int]  # ops computing in float (meaningful for INT8 models)
    weight_sparsity: float  # share of exactly-zero weights in conv/dense kernels
    size_bytes: int
    size_gzip_bytes: int
    metadata: dict = field(default_factory=dict)


def _inspector_of(path: Path) -> str:
    """The ``"module:function"`` inspecting ``path``'s format; "" for none."""
    fmt = file_format_of(path)
    return fmt.inspector if fmt else ""


_READS = f"inspect reads one exported model file ({suffixes_in_words()})"


def _not_a_file_hint(path: Path) -> str:
    """Why ``path`` (a folder or another file) is not inspected, and what to give instead:
    one message whatever was given."""
    from edgefer.model.store import is_model_dir

    if path.is_dir():
        models = sorted(p for p in path.iterdir() if _inspector_of(p))
        if models:
            return f" is a folder: {_READS}, e.g. {models[0]}"
        if is_model_dir(path):
            return (f" is an edgefer model folder: {_READS}; make them with: "
                    f"edgefer export --model {path} --target all")
        return f" is a folder: {_READS}"
    companion = companion_of(path)
    if companion is not None:
        fmt, part = companion
        return (f" holds an {fmt.label} model's {part.what}: {_READS}; give its "
                f"{fmt.model_beside(path, part)}")
    return f": not a model format inspect knows; {_READS}"


def inspect_model(path: str | os.PathLike) -> Inspection:
    path = Path(path)
    if path.is_dir() or (path.is_file() and not _inspector_of(path)):
        raise ModelError(f"{path}{_not_a_file_hint(path)}")
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty (0 bytes): not a model")
    from edgefer.artifacts import read_info

    info = read_info(path)
    reader = load(_inspector_of(path))
    fmt, inputs, outputs, ops, float_ops, sparsity = reader(path)
    from edgefer.bench.measure import model_size

    raw, packed = model_size(path)
    precision = info.precision if info else _guess_precision(inputs, ops, float_ops)
    return Inspection(str(path), fmt, precision, inputs, outputs, ops, float_ops, sparsity,
                      raw, packed, info.to_dict() if info else {})


def _guess_precision(inputs, ops, float_ops) -> str:
    if any(op in ops for op in ("QuantizeLinear", "FakeQuantize")) or not float_ops:
        return "int8"
    return "fp32"


def _sparsity(kernels: list[np.ndarray]) -> float:
    total = sum(k.size for k in kernels)
    return float(sum(int(np.count_nonzero(k == 0)) for k in kernels) / total) if total else 0.0


def inspect_tflite(path: Path):
    from edgefer.runtimes.litert import interpreter_module

    module, _ = interpreter_module()
    try:
        interp = module.Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: LiteRT cannot read it ({exc})") from exc
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the only op listing LiteRT's Python API offers

    names = _tflite_signature_names(interp)

    def describe(t) -> TensorInfo:
        scale, zero = t["quantization"]
        return TensorInfo(names.get(t["index"], t["name"]), np.dtype(t["dtype"]).name,
                          tuple(int(s) for s in t["shape"]),
                          (float(scale), int(zero)) if scale else None)

    histogram = Counter(o["op_name"] for o in ops)
    floating = Counter(o["op_name"] for o in ops if o["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
                       and any(tensors[i]["dtype"] == np.float32 for i in o["outputs"]))
    # fp16 models keep float16 kernels and DEQUANTIZE them when the model is prepared
    dequantized = {o["outputs"][0]: o["inputs"][0] for o in ops if o["op_name"] == "DEQUANTIZE"}
    kernels = []
    for o in ops:
        if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            kernel = o["inputs"][1]
            with contextlib.suppress(ValueError):  # a kernel computed at run time
                kernels.append(interp.get_tensor(dequantized.get(kernel, kernel)))
    return ("tflite", tuple(describe(t) for t in interp.get_input_details()),
            tuple(describe(t) for t in interp.get_output_details()), dict(histogram),
            dict(floating), _sparsity(kernels))


def _tflite_signature_names(interp) -> dict[int, str]:
    """{tensor index: name} from the first signature (``face``, not the converter's
    ``model/quantize_layer/...;...`` names); empty for a model without signatures."""
    if not interp.get_signature_list():
        return {}
    runner = interp.get_signature_runner()
    details = {**runner.get_input_details(), **runner.get_output_details()}
    return {detail["index"]: name for name, detail in details.items()}


def inspect_onnx(path: Path):
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: corrupt ONNX model ({exc})") from exc
    if not model.graph.node:  # protobuf reads many non-ONNX bytes as an empty model
        raise ModelError(f"{path}: not an ONNX model (it holds no graph)")
    inits = {i.name: i for i in model.graph.initializer}
    nodes = model.graph.node
    histogram = Counter(n.op_type for n in nodes)
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    floating = Counter(n.op_type for n in nodes if n.op_type in ("Conv", "MatMul", "Gemm")
                       and not any(i in dequantized for i in n.input[:2]))
    kernels = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes
               if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[1] in inits]
    kernels += _onnx_quantized_kernels(nodes, inits)

    def describe(v) -> TensorInfo:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.dim_value else -1 for d in t.shape.dim)
        return TensorInfo(v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims)

    return ("onnx", tuple(describe(v) for v in model.graph.input if v.name not in inits),
            tuple(describe(v) for v in model.graph.output), dict(histogram), dict(floating),
            _sparsity(kernels))


def _onnx_quantized_kernels(nodes, inits) -> list[np.ndarray]:
    """The integer kernels of DequantizeLinear nodes, less their zero points (a pruned
    weight stored as uint8 is its zero point, 128, not 0)."""
    from onnx import numpy_helper

    kernels = []
    for node in nodes:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64)
        if q.ndim < 2:
            continue
        zero = np.zeros(1, np.int64)
        if len(node.input) > 2 and node.input[2] in inits:
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.int64)
        shape = [1] * q.ndim
        if zero.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape[axis] = -1
        kernels.append(q - zero.reshape(shape))
    return kernels


def inspect_openvino(path: Path):
    from edgefer.runtimes.openvino import openvino

    ov = openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: corrupt OpenVINO IR ({exc})") from exc
    ops = model.get_ordered_ops()
    histogram = Counter(op.get_type_name() for op in ops)
    floating = Counter(op.get_type_name() for op in ops
                       if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
                       and not any(_openvino_fake_quantized(i) for i in op.inputs()))
    kernels = _openvino_kernels(ops)

    def describe(port) -> TensorInfo:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        # a tensor may have no name (get_any_name raises): its node's name stands in
        name = port.get_any_name() if port.get_names() else port.get_node().get_friendly_name()
        return TensorInfo(name, np.dtype(port.get_element_type().to_dtype()).name, shape)

    return ("openvino", tuple(describe(p) for p in model.inputs),
            tuple(describe(p) for p in model.outputs), dict(histogram), dict(floating),
            _sparsity(kernels))


def _openvino_fake_quantized(port) -> bool:
    """Whether an input comes from a FakeQuantize, through ops that only move data."""
    source = _openvino_upstream(port.get_source_output().get_node(),
                                ("Reshape", "Transpose", "Squeeze", "Unsqueeze"))
    return source.get_type_name() == "FakeQuantize"


def _openvino_upstream(node, through: tuple[str, ...]):
    """The first node at or above ``node`` (along first inputs) not of a type in ``through``."""
    while node.get_type_name() in through:
        node = node.input_value(0).get_node()
    return node


def _openvino_kernels(ops) -> list[np.ndarray]:
    """Weight constants; in a quantized IR the integer ones less their zero points (the
    float constants there are scales)."""
    constants = [op for op in ops if op.get_type_name() == "Constant"
                 and len(op.get_output_shape(0)) >= 2 and op.get_output_shape(0)[0] > 1]
    integer = [op for op in constants if op.get_output_element_type(0).is_integral()]
    if not integer:
        return [op.get_data() for op in constants]
    kernels = []
    for op in integer:
        subtract, index = _openvino_subtract(op)
        if subtract is None:
            kernels.append(op.get_data())
        elif index == 0:  # index 1: this constant is a zero point
            kernels.append(op.get_data().astype(np.int64) - _openvino_constant(subtract, 1))
    return kernels


def _openvino_subtract(constant):
    """(the Subtract an integer constant feeds through Converts, its input index) or None."""
    node = constant
    while True:
        targets = list(node.output(0).get_target_inputs())
        if len(targets) != 1:
            return None, None
        node = targets[0].get_node()
        if node.get_type_name() == "Subtract":
            return node, targets[0].get_index()
        if node.get_type_name() != "Convert":
            return None, None


def _openvino_constant(node, index: int) -> np.ndarray:
    source = _openvino_upstream(node.input_value(index).get_node(), ("Convert",))
    if source.get_type_name() != "Constant":
        return np.zeros(1, np.int64)
    return source.get_data().astype(np.int64)
