"""One pure function per conversion, named source_to_target, and the table of targets.

Each target's exporter composes these for a precision and returns the artifact's bytes
(or, for OpenVINO, an ``ov.Model``); writing, metadata and the parity gate live in
``edgefer.export.pipeline``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgefer.calibration import CalibrationSet
from edgefer.engines import require
from edgefer.errors import ExportError
from edgefer.export.options import (
    ExportOptions,
    IntGraph,
    IoType,
    Precision,
)
from edgefer.export.ptq import onnx_int8, openvino_int8, tflite_int8
from edgefer.runtimes.litert import HALF_UP_NUDGE

INPUT_NAME = "face"


@dataclass(frozen=True, eq=False)
class Source:
    """The model being exported: the Keras model as trained and its float twin."""

    model: object  # tf-keras model (QAT-wrapped when ``quantized``)
    float_model: object
    quantized: bool
    input_shape: tuple[int, int, int]
    calibration: Callable[[], CalibrationSet] | None = None  # loaded only when INT8 needs it
    validation: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None  # inputs, labels
    converted: dict = field(default_factory=dict)  # tf2onnx results, reused across targets
    float_onnx: object | None = None  # a user's ONNX model (then no Keras model)

    def calibration_set(self) -> CalibrationSet:
        if self.calibration is None:
            raise ExportError("INT8 from a float model needs calibration data: pass --calib "
                              "MANIFEST and --data PATH (or set EDGEFER_FER2013)")
        return self.calibration()


def int8_from_qat(source: Source, options: ExportOptions) -> bool:
    from edgefer.export.options import Int8Source

    if options.int8_source is Int8Source.QAT and not source.quantized:
        raise ExportError("--int8-source qat needs a QAT model; this one is float")
    return source.quantized and options.int8_source is not Int8Source.CALIBRATE


# --- Keras -> TFLite -----------------------------------------------------------------

def keras_to_tflite(model, precision: Precision, io: IoType = IoType.INT8,
                    calibration: CalibrationSet | None = None, batch: int | None = 1,
                    keep_float: tuple[str, ...] = ()) -> bytes:
    """Convert a tf-keras model; INT8 uses fake-quant ranges (QAT) or ``calibration``.
    ``batch``: the input's static batch size, None for any; ``keep_float``: layers a
    calibrated INT8 model keeps in float."""
    from edgefer._tf import tf

    tf_ = tf()
    converter = tf_.lite.TFLiteConverter.from_concrete_functions(
        [_serving_function(model, batch)], model)
    # from_keras_model first writes a SavedModel, tracing every layer of a QAT model
    # again: 90% of the conversion time. Freezing the one concrete function is the same
    # graph (the outputs are bit-identical).
    converter.experimental_lower_to_saved_model = False
    if precision is not Precision.FP32:
        converter.optimizations = [tf_.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf_.float16]
    if precision is Precision.INT8:
        if calibration is not None:  # a QAT model carries its own ranges
            converter.representative_dataset = calibration.tflite_representative_dataset()
            converter.target_spec.supported_ops = [tf_.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io is IoType.INT8:
            converter.inference_input_type = tf_.int8
            converter.inference_output_type = tf_.int8
    try:
        if precision is Precision.INT8 and calibration is not None:
            data = tflite_int8(converter, keep_float, io)
        else:
            data = bytes(converter.convert())
    except ExportError:
        raise
    except Exception as exc:  # the converter raises ConverterError and plain exceptions
        raise ExportError(f"TFLite conversion failed: {exc}") from exc
    return tflite_with_signature(data, model.input_names[0], model.output_names[0])


def _serving_function(model, batch: int | None = 1):
    """``model``'s inference function, with its input and output names and a static batch
    size (None: any)."""
    from edgefer._tf import tf

    tf_ = tf()
    spec = tf_.TensorSpec((batch, *model.input_shape[1:]), tf_.float32,
                          name=model.input_names[0])
    output = model.output_names[0]
    return tf_.function(lambda x: {output: model(x, training=False)}).get_concrete_function(spec)


def tflite_with_signature(data: bytes, input_name: str, output_name: str) -> bytes:
    """Add the ``serving_default`` signature (for signature runners on Android and Python),
    which the converter leaves out when it is given a concrete function."""
    from edgefer.artifacts import tflite_pack, tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
    graph = model.subgraphs[0]
    signature.inputs = [_tensor_map(schema, input_name, graph.inputs[0])]
    signature.outputs = [_tensor_map(schema, output_name, graph.outputs[0])]
    model.signatureDefs = [signature]
    return tflite_pack(model, len(data))


def _tensor_map(schema, name: str, index: int):
    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name.encode(), index
    return entry


# the int8 ops that ``IntGraph.CPU`` runs in float between DEQUANTIZE and QUANTIZE
CPU_FLOAT_OPS = ("HARD_SWISH", "MEAN")


def tflite_ops_to_float(data: bytes, ops: tuple[str, ...] = CPU_FLOAT_OPS) -> bytes:
    """Run each int8 op named in ``ops`` in float: DEQUANTIZE -> op (float) -> QUANTIZE.

    HARD_SWISH: XNNPACK delegates no int8 HARD_SWISH, so each one cuts the graph into
    partitions with the slow int8 reference kernel between them. MEAN (global average
    pooling): TFLite's int8 kernel is biased by up to half an output step (measured:
    a quarter to 43% of the squeeze-excite pools one step off the exact mean), which
    ONNX Runtime and OpenVINO are not; in float every engine gets the exact mean. The
    op keeps its other inputs (MEAN's axes) and options.
    """
    from edgefer.artifacts import tflite_pack, tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    code = {op: _tflite_opcode(model, schema, op) for op in (*ops, "DEQUANTIZE", "QUANTIZE")}
    targets = {code[op] for op in ops}
    for graph in model.subgraphs:
        operators = []
        for op in graph.operators:
            if (op.opcodeIndex not in targets
                    or graph.tensors[op.inputs[0]].type != schema.TensorType.INT8):
                operators.append(op)
                continue
            x, y = op.inputs[0], op.outputs[0]
            x_float, y_float = (_tflite_float_tensor(model, graph, schema, t) for t in (x, y))
            op.inputs, op.outputs = [x_float, *op.inputs[1:]], [y_float, *op.outputs[1:]]
            operators += [_tflite_operator(schema, code["DEQUANTIZE"], x, x_float), op,
                          _tflite_operator(schema, code["QUANTIZE"], y_float, y)]
        graph.operators = operators
    return tflite_pack(model, len(data))


def _tflite_operator(schema, opcode: int, source: int, target: int):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, [source], [target]
    return op


def _tflite_opcode(model, schema, name: str) -> int:
    builtin = getattr(schema.BuiltinOperator, name)
    for index, opcode in enumerate(model.operatorCodes):
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == builtin:
            return index
    opcode = schema.OperatorCodeT()
    opcode.builtinCode, opcode.version = builtin, 1
    opcode.deprecatedBuiltinCode = min(builtin, 127)  # 127: "look at builtinCode"
    model.operatorCodes.append(opcode)
    return len(model.operatorCodes) - 1


def _tflite_float_tensor(model, graph, schema, like: int) -> int:
    """A new float32 tensor shaped like tensor ``like``, with an empty buffer."""
    source = graph.tensors[like]
    tensor = schema.TensorT()
    tensor.shape, tensor.shapeSignature = source.shape, source.shapeSignature
    tensor.type, tensor.name = schema.TensorType.FLOAT32, (source.name or b"") + b"/float"
    model.buffers.append(schema.BufferT())
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def export_tflite(source: Source, options: ExportOptions) -> bytes:
    if source.float_model is None:
        raise ExportError("TFLite export needs a Keras model; this one is ONNX (export it to "
                          "onnx or openvino)")
    if options.precision is not Precision.INT8:
        return keras_to_tflite(source.float_model, options.precision, batch=options.batch)
    if int8_from_qat(source, options):
        data = keras_to_tflite(source.model, Precision.INT8, options.io, batch=options.batch)
    else:
        data = keras_to_tflite(prepared_float_model(source, options), Precision.INT8,
                               options.io, source.calibration_set(), options.batch,
                               options.keep_float)
    return tflite_ops_to_float(data) if options.int8_graph is IntGraph.CPU else data


def prepared_float_model(source: Source, options: ExportOptions):
    """The float model calibrated INT8 starts from: as it is, or with cross-layer
    equalization and bias correction (``edgefer.export.equalize``), made once."""
    from edgefer.export import equalize

    if not (options.equalize or options.corrects_bias):
        return source.float_model
    key = ("prepared", options.equalize, options.corrects_bias)
    if key not in source.converted:
        model, _ = equalize.fold_batchnorm(source.float_model)
        if options.equalize:
            model, _ = equalize.equalize(model)
        if options.corrects_bias:
            model = equalize.copy_model(model)
            model, _ = equalize.correct_bias(model, source.calibration_set().images())
        source.converted[key] = model
    return source.converted[key]


# --- Keras -> ONNX -------------------------------------------------------------------

def _onnx():
    return require("onnx", "onnx")


def keras_to_onnx(model, input_shape: tuple[int, int, int], opset: int = 17,
                  batch: int | None = 1):
    """tf2onnx conversion; a QAT model's fake-quant nodes become QuantizeLinear/DequantizeLinear.
    ``batch``: the input's static batch size, None for any."""
    from edgefer._tf import tf

    tf_ = tf()
    tf2onnx = require("tf2onnx", "train")
    spec = (tf_.TensorSpec((batch, *input_shape), tf_.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ExportError(f"ONNX conversion (tf2onnx) failed: {exc}") from exc
    return proto


def onnx_simplify(proto):
    """Fold constants and fuse what onnxslim can; the input is returned if it is missing."""
    try:
        import onnxslim
    except ImportError:
        return proto
    return onnxslim.slim(proto)


def onnx_to_fp16(proto):
    """float16 weights and activations, float32 input and output."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True)


# Ops that only move data: an input scale can be read through them.
_PASS_THROUGH = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten")


def _grid_levels(weight: np.ndarray, axis: int, tol: float = 1e-3) -> np.ndarray:
    """Per channel along ``axis``, the largest m <= 127 with weight * m / max|weight| integral.

    tfmot fake-quantizes a kernel symmetric on 255 levels (per channel for Conv2D, per
    tensor for DepthwiseConv2D and Dense), and TensorFlow then multiplies in the batch
    norm's per-channel factor: each channel is q * S with integer |q| <= 127 but
    max |q| often well below 127 (per-tensor grids). Re-rounding to max|w| / 127 moves
    the weights off the grid the model was trained on and that TFLite keeps; finding
    the grid keeps them exact. Channels on no such grid (kernels QAT left float, the
    squeeze-excite convolutions) get 127, plain max-abs quantization.
    """
    moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1).astype(np.float64)
    peak = np.abs(moved).max(axis=1)
    unit = moved / np.where(peak > 0, peak, 1.0)[:, None]
    levels = np.full(len(peak), 127, dtype=np.int64)
    found = peak == 0
    for m in range(127, 0, -1):
        on_grid = np.abs(unit * m - np.round(unit * m)).max(axis=1) <= tol
        levels[on_grid & ~found] = m
        found |= on_grid
    return levels


def onnx_quantize_qat_weights(proto):
    """Store a QAT graph's Conv/MatMul/Gemm weights as 8-bit per-channel DequantizeLinear
    and their Conv/Gemm biases as int32 (scale = input scale x weight scale), the QDQ form
    ONNX Runtime and OpenVINO run as integer convolutions.

    Weights are stored as uint8 with zero point 128 (the same symmetric grid, -127..127
    shifted), on the exact grid QAT trained (``_grid_levels``). tf2onnx writes uint8
    activations, and ONNX Runtime's x86 kernel for uint8 activations x int8 weights (AVX2
    VPMADDUBSW) saturates 16-bit pair sums: that broke this model (79 % top-1 agreement).
    uint8 x uint8 takes a kernel that widens first.
    """
    onnx = _onnx()
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    added, nodes = [], []
    for node in proto.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            axis = _output_axis(node)
            reduce = tuple(i for i in range(weight.ndim) if i != axis)
            peak = np.abs(weight).max(axis=reduce)
            scale = (np.where(peak > 0, peak, 1.0) / _grid_levels(weight, axis)).astype(np.float32)
            shape = [1] * weight.ndim
            shape[axis] = -1
            q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127)
            nodes.append(_dequantize(node, 1, (q + 128).astype(np.uint8), scale,
                                     np.full(scale.shape, 128, np.uint8), axis, added))
            input_scale = _input_scale(node.input[0], producers, inits)
            if (node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in inits
                    and input_scale is not None):
                bias_scale = (scale * input_scale).astype(np.float32)
                bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                qb = np.round(bias / bias_scale)
                if np.abs(qb).max() < 2 ** 31 - 1:
                    nodes.append(_dequantize(node, 2, qb.astype(np.int32), bias_scale,
                                             np.zeros(scale.shape, np.int32), 0, added))
        nodes.append(node)
    used = {name for n in nodes for name in n.input}
    for name, init in inits.items():
        if name not in used:
            proto.graph.initializer.remove(init)
    proto.graph.initializer.extend(added)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


def _output_axis(node) -> int:
    """The output-channel axis of a Conv, MatMul or Gemm weight. tf2onnx writes a Dense
    layer as MatMul and Add with a dynamic batch, as Gemm with a static one."""
    if node.op_type == "Conv":
        return 0
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if node.op_type == "Gemm" and trans_b else 1


def _input_scale(name: str, producers: dict, inits: dict) -> float | None:
    """The per-tensor scale of the DequantizeLinear that ``name`` comes from (through
    reshapes, which tf2onnx puts before convolutions on NHWC tensors)."""
    from onnx import numpy_helper

    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[node.input[1]])
    return float(scale) if scale.size == 1 else None


def _dequantize(node, index: int, quantized: np.ndarray, scale: np.ndarray, zero: np.ndarray,
                axis: int, added: list):
    """Feed ``node.input[index]`` from a DequantizeLinear of ``quantized`` instead."""
    from onnx import helper, numpy_helper

    name = node.input[index]
    added += [numpy_helper.from_array(quantized, name + "_quantized"),
              numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
              numpy_helper.from_array(zero, name + "_zero")]
    node.input[index] = name + "_dequantized"
    return helper.make_node("DequantizeLinear", [name + "_quantized", name + "_scale",
                                                 name + "_zero"], [name + "_dequantized"],
                            axis=axis)


def onnx_round_input_half_up(proto, fraction: float = HALF_UP_NUDGE):
    """TensorFlow's FakeQuant rounds half up; ONNX QuantizeLinear rounds half to even.

    The input quantizer of an edgefer QAT model has scale 2/255 and zero point 128, and
    preprocessing puts every pixel (p / 127.5 - 1) exactly half-way between two of its
    levels: TensorFlow takes the upper one, ONNX the even one, so half the pixels enter
    the network one level off from training. Adding ``fraction`` of a level before each
    QuantizeLinear of the graph input makes ONNX round those ties up as well.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    graph_inputs = {i.name for i in proto.graph.input}
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in graph_inputs:
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            name = node.input[0] + "_half_up"
            proto.graph.initializer.append(
                numpy_helper.from_array(np.asarray(scale * fraction, np.float32), name + "_eps"))
            nodes.append(helper.make_node("Add", [node.input[0], name + "_eps"], [name]))
            node.input[0] = name
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


def _converted_once(source: Source, key: tuple, convert: Callable[[], object]):
    """tf2onnx takes most of an export's time: convert once per source, hand out copies."""
    if key not in source.converted:
        source.converted[key] = convert()
    copy = type(source.converted[key])()
    copy.CopyFrom(source.converted[key])
    return copy


def _onnx_float(source: Source, options: ExportOptions, prepared: bool = False):
    """The float ONNX model; ``prepared``: of ``prepared_float_model`` (calibrated INT8)."""
    if source.float_onnx is not None:  # a user's ONNX model: the Keras rewrites cannot run
        if prepared and options.equalize:
            raise ExportError("--equalize rewrites a Keras model; this one is ONNX")
        return _converted_once(source, ("user-onnx",), lambda: source.float_onnx)
    model = prepared_float_model(source, options) if prepared else source.float_model

    def convert():
        proto = keras_to_onnx(model, source.input_shape, options.opset, options.batch)
        return onnx_simplify(proto) if options.simplify else proto

    key = ("float", id(model), options.opset, options.simplify, options.batch)
    return _converted_once(source, key, convert)


def _onnx_int8(source: Source, options: ExportOptions):
    if int8_from_qat(source, options):
        return _converted_once(
            source, ("qat", options.opset, options.batch),
            lambda: onnx_round_input_half_up(onnx_quantize_qat_weights(keras_to_onnx(
                source.model, source.input_shape, options.opset, options.batch))))
    return onnx_int8(_onnx_float(source, options, prepared=True), source.calibration_set(),
                     options.calib_method, options.keep_float)


def export_onnx(source: Source, options: ExportOptions) -> bytes:
    if options.precision is Precision.INT8:
        proto = _onnx_int8(source, options)
    elif options.precision is Precision.FP16:
        proto = onnx_to_fp16(_onnx_float(source, options))
    else:
        proto = _onnx_float(source, options)
    return proto.SerializeToString()


# --- ONNX -> OpenVINO ----------------------------------------------------------------

def _ov():
    return require("openvino", "openvino", "OpenVINO")


def onnx_to_openvino(proto):
    """An ``ov.Model`` from an ONNX model (QDQ nodes become OpenVINO FakeQuantize)."""
    ov = _ov()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        return ov.convert_model(str(path))


def export_openvino(source: Source, options: ExportOptions):
    if options.precision is not Precision.INT8:
        return onnx_to_openvino(_onnx_float(source, options))
    if int8_from_qat(source, options):
        return onnx_to_openvino(_onnx_int8(source, options))
    validation = source.validation() if source.validation and options.max_drop else None
    # bias correction is NNCF's here (it sees activation errors too), equalization ours
    prepared = replace(options, bias_correction=False)
    model = onnx_to_openvino(_onnx_float(source, prepared, prepared=True))
    return openvino_int8(model, source.calibration_set(), options.calib_method,
                         options.corrects_bias, options.keep_float, options.max_drop,
                         validation)

