"""Post-training INT8 from a calibration set, one function per engine.

What the defaults are and why (measured on the shipped model's float twin, see
docs/quantization.md):

- ONNX Runtime: weights as uint8 with zero point 128 (the symmetric int8 grid, shifted)
  and uint8 activations. ONNX Runtime runs int8 x int8 on x86 as uint8 x int8 with
  VPMADDUBSW, whose 16-bit pair sums saturate on CPUs without VNNI (most AVX2 ones):
  the first convolution's output came out at 7 dB SQNR instead of 31, and top-1
  agreement with the float model at 78% instead of 95%. uint8 x uint8 takes a kernel
  that widens first.
- OpenVINO (NNCF): ``OverflowFix.ENABLE`` (7-bit weights everywhere, the same 16-bit
  overflow on CPUs without VNNI; NNCF's default fixes the first layer only), min-max
  activation ranges (NNCF's default takes the mean over images of each image's min and
  max, which clipped the late 3x3 maps to 4-13 dB SQNR), asymmetric activations
  (``MIXED``: hard-swish outputs are [-0.375, 6]).
- TFLite: the converter's min-max calibration, per-channel weights everywhere (Dense too).

Any layer can be kept in float by name (``keep_float``: Keras layer names, matched as
substrings of each engine's node names, which carry them).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgefer.calibration import CalibrationSet
from edgefer.engines import require
from edgefer.errors import ExportError
from edgefer.export.options import CalibMethod, IoType


def matching(names: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The ``names`` that contain one of ``patterns``; ExportError for a pattern that
    matches nothing (a typo would otherwise quantize everything silently)."""
    names, patterns = list(names), [p for p in patterns if p]
    found = [n for n in names if any(p in n for p in patterns)]
    unmatched = [p for p in patterns if not any(p in n for n in names)]
    if unmatched:
        raise ExportError(f"--keep-float {','.join(unmatched)} names no layer of the model "
                          "(use the layer names of the per-layer report, --debug-int8)")
    return found


# --- TFLite --------------------------------------------------------------------------------

def tflite_int8(converter, keep_float: tuple[str, ...] = (), io: IoType = IoType.INT8) -> bytes:
    """Full-integer TFLite from ``converter`` (set up with its representative dataset),
    with the ops whose output tensors match ``keep_float`` left in float."""
    from edgefer._tf import tf

    tf_ = tf()
    if not keep_float:
        return bytes(converter.convert())
    from tensorflow.lite.python import convert

    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # the debugger's own route
    calibrated = bytes(converter.convert())
    denied = matching(_tflite_tensor_names(calibrated), keep_float)
    dtype = tf_.int8 if io is IoType.INT8 else tf_.float32
    return bytes(convert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=dtype,
                                       output_data_type=dtype, denylisted_nodes=denied))


def _tflite_tensor_names(data: bytes) -> list[str]:
    from edgefer.artifacts import tflite_schema

    schema = tflite_schema()
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        names += [graph.Tensors(op.Outputs(j)).Name().decode() for j in range(op.OutputsLength())]
    return names


# --- ONNX Runtime --------------------------------------------------------------------------

ORT_METHODS = {CalibMethod.MINMAX: "MinMax", CalibMethod.ENTROPY: "Entropy",
               CalibMethod.PERCENTILE: "Percentile"}


def onnx_min_max_to_clip(proto):
    """Each Min(x, high) -> Max(., low) with scalar constants (tf2onnx's form of
    ``clip_by_value``) as one Clip(x, low, high), in place.

    ONNX Runtime's quantizer quantizes the Min's input and output and the Max's output,
    each with its own range; a Clip it removes, and the tensor before it takes the
    clipped range. On the shipped model's float twin (96 such clips, the QAT ranges) this
    took top-1 agreement from 95.3% to 97.0%, parity from 96.7% to 97.7%.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    made = {o: n for n in proto.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    def scalar(name: str) -> bool:
        return name in inits and inits[name].size == 1

    nodes, merged = [], set()
    for node in proto.graph.node:
        low = made.get(node.input[0]) if node.op_type == "Max" and len(node.input) == 2 else None
        if (low is not None and low.op_type == "Min" and len(low.input) == 2
                and scalar(node.input[1]) and scalar(low.input[1])
                and readers.get(low.output[0]) == 1):
            bounds = [f"{node.name}_low", f"{node.name}_high"]
            for bound, value in zip(bounds, (inits[node.input[1]], inits[low.input[1]]),
                                    strict=True):
                proto.graph.initializer.append(numpy_helper.from_array(
                    np.asarray(value.ravel()[0], np.float32), bound))
            nodes.append(helper.make_node("Clip", [low.input[0], *bounds], list(node.output),
                                          name=node.name))
            merged.add(id(low))
        else:
            nodes.append(node)
    nodes = [n for n in nodes if id(n) not in merged]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    for init in [i for i in proto.graph.initializer if i.name not in used]:
        proto.graph.initializer.remove(init)
    return proto


def onnx_int8(proto, calibration: CalibrationSet, method: CalibMethod,
              keep_float: tuple[str, ...] = ()):
    """Static QDQ INT8 with ONNX Runtime: per-channel symmetric weights stored as uint8
    (zero point 128), uint8 activations, clips merged (``onnx_min_max_to_clip``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = onnx_min_max_to_clip(proto)
    exclude = matching([n.name for n in proto.graph.node], keep_float) if keep_float else []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, src)
        quantize_static(str(src), str(dst), calibration.onnx_reader(proto.graph.input[0].name),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                        nodes_to_exclude=exclude,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        return onnx.load(str(dst))


# --- OpenVINO (NNCF) ---------------------------------------------------------------------------

def _nncf():
    return require("nncf", "openvino", "NNCF")


def nncf_parameters(method: CalibMethod, bias_correction: bool = True,
                    keep_float: tuple[str, ...] = (), names: Iterable[str] = ()) -> dict:
    """Keyword arguments for ``nncf.quantize``: preset, range estimator, overflow fix,
    bias correction and the layers kept in float."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Ranges

    ranges = {CalibMethod.MINMAX: Ranges.MINMAX, CalibMethod.PERCENTILE: Ranges.MEAN_QUANTILE,
              CalibMethod.MSE: Ranges.HISTOGRAM}[method]
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE, activations_range_estimator_params=ranges,
        disable_bias_correction=not bias_correction)
    kwargs = {"preset": nncf.QuantizationPreset.MIXED, "advanced_parameters": advanced}
    if keep_float:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=matching(names, keep_float),
                                                    validate=False)
    return kwargs


def openvino_int8(model, calibration: CalibrationSet, method: CalibMethod,
                  bias_correction: bool = True, keep_float: tuple[str, ...] = (),
                  max_drop: float | None = None,
                  validation: tuple[np.ndarray, np.ndarray] | None = None):
    """NNCF post-training INT8; with ``max_drop``, NNCF's accuracy control on
    ``validation`` (which may then keep more layers in float)."""
    nncf = _nncf()
    names = [op.get_friendly_name() for op in model.get_ops()
             if op.get_type_name() not in ("Constant", "Parameter", "Result")]
    kwargs = nncf_parameters(method, bias_correction, keep_float, names)
    dataset = calibration.nncf_dataset()
    if max_drop is None:
        return nncf.quantize(model, dataset, subset_size=len(calibration), **kwargs)
    if validation is None:
        raise ExportError("accuracy control (--max-drop) needs FER2013 to validate on")
    images, labels = validation
    items = [(images[i:i + 1], int(labels[i])) for i in range(len(labels))]

    def top1(compiled, data) -> float:
        hits = [int(np.argmax(compiled(x)[0])) == y for x, y in data]
        return float(np.mean(hits))

    kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
    return nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items, lambda item: item[0]), validation_fn=top1,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        **kwargs)
