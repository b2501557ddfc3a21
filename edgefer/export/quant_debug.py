"""Per-layer quantization error of a calibrated INT8 export against its float model.

For each quantized activation tensor, in graph order: the float range it took on the
images, the quantizer's scale and zero point, the share of float values the quantizer
clips, and two errors as SQNR (signal-to-quantization-noise ratio in dB; higher is better,
about 6 dB per bit):

- ``layer_sqnr_db``, the error this tensor's quantization adds by itself. TFLite
  (``QuantizationDebugger``): the INT8 op against the same op in float, both fed the
  INT8 model's inputs, so weight and output quantization together. ONNX Runtime and
  OpenVINO: the float model's tensor against its own quantize-dequantize with the
  export's scale (range clipping and rounding of that tensor alone).
- ``sqnr_db``, the INT8 model's tensor against the float model's: everything upstream.
  ONNX Runtime and OpenVINO measure it as the engine runs the INT8 model (the integer
  kernels of this CPU); TFLite with its debug interpreter (``enable_whole_model_verify``).

A layer whose ``layer_sqnr_db`` is low has a badly chosen range (outliers, a scale too
coarse); a drop in ``sqnr_db`` that the layer errors do not explain points at the engine
(an overflowing integer kernel), not at the ranges.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.errors import ExportError


@dataclass(frozen=True)
class LayerError:
    index: int  # position in graph order
    tensor: str
    op: str
    float_min: float
    float_max: float
    scale: float
    zero_point: int
    clipped: float  # share of float values outside the quantizer's range
    layer_sqnr_db: float
    sqnr_db: float | None = None


@dataclass(frozen=True)
class QuantReport:
    engine: str
    images: int
    layers: tuple[LayerError, ...]
    agreement: float | None = None  # top-1 agreement of the INT8 model with the float one

    def worst(self, count: int | None = None) -> list[LayerError]:
        """Layers by the error their quantization adds, worst first."""
        return sorted(self.layers, key=lambda layer: layer.layer_sqnr_db)[:count]


class _Energy:
    """Running sums for SQNR, range and clipping of one tensor over many images."""

    def __init__(self) -> None:
        self.signal = self.noise = self.clipped = self.count = 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, reference: np.ndarray, other: np.ndarray,
            bounds: tuple[float, float] | None = None) -> None:
        reference = np.asarray(reference, np.float64).ravel()
        other = np.asarray(other, np.float64).ravel()
        self.signal += float(np.dot(reference, reference))
        diff = reference - other
        self.noise += float(np.dot(diff, diff))
        self.count += reference.size
        if reference.size:
            self.low = min(self.low, float(reference.min()))
            self.high = max(self.high, float(reference.max()))
        if bounds is not None:
            self.clipped += float(np.count_nonzero((reference < bounds[0])
                                                   | (reference > bounds[1])))

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.noise)

    @property
    def clipped_share(self) -> float:
        return self.clipped / self.count if self.count else 0.0


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), capped at 100 dB for an exact match."""
    if noise <= signal * 1e-10:
        return 100.0
    if signal <= 0:
        return -100.0
    return 10.0 * math.log10(signal / noise)


def fake_quantize(x: np.ndarray, scale: float, zero_point: int, low: int = -128,
                  high: int = 127) -> np.ndarray:
    """Quantize and dequantize ``x`` on the grid of ``scale`` and ``zero_point``."""
    q = np.clip(np.round(x / scale) + zero_point, low, high)
    return ((q - zero_point) * scale).astype(np.float32)


def _quant_bounds(scale: float, zero_point: int, low: int = -128,
                  high: int = 127) -> tuple[float, float]:
    return (low - zero_point) * scale, (high - zero_point) * scale


def _agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    a = np.concatenate([r.reshape(len(r), -1) for r in reference]).argmax(1)
    b = np.concatenate([c.reshape(len(c), -1) for c in candidate]).argmax(1)
    return float(np.mean(a == b))


# --- TFLite: QuantizationDebugger ------------------------------------------------------

def tflite_report(converter, calibration, images: np.ndarray) -> QuantReport:
    """Per-layer errors of the full-integer TFLite model ``converter`` makes.

    ``converter`` is set up for INT8 with a representative dataset (the export's). The
    report covers the integer-only graph (``--int8-graph pure``): ``cpu`` runs
    hard-swish and average pooling in float, which adds no error of its own.
    """
    from edgefer._tf import tf

    tflite = tf().lite
    debug = tflite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration.tflite_representative_dataset())
    layer = _verify_outputs(debug.get_debug_quantized_model(), images)
    whole = _verify_outputs(_whole_model_debug(debug), images)
    if len(whole) != len(layer):  # the same graph twice: NumericVerify ops in the same order
        whole = [None] * len(layer)
    rows = []
    for index, (entry, accumulated) in enumerate(zip(layer, whole, strict=True)):
        energy = entry["energy"]
        rows.append(LayerError(index, entry["name"], entry["op"], energy.low, energy.high,
                               entry["scale"], entry["zero_point"], energy.clipped_share,
                               energy.sqnr_db,
                               accumulated["energy"].sqnr_db if accumulated else None))
    return QuantReport("tflite", len(images), tuple(rows))


def _whole_model_debug(debug) -> bytes:
    """The debug model whose float ops run on the float path, not on the INT8 model's
    values: its NumericVerify ops then compare float and INT8 models tensor by tensor."""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(debug.calibrated_model, fully_quantize=True,
                                 enable_numeric_verify=True, enable_whole_model_verify=True)


def _verify_outputs(model: bytes, images: np.ndarray) -> list[dict]:
    """For each NumericVerify op of a debug model, in graph order: its INT8 tensor's name,
    the op making it, its quantization, and the float/INT8 energies over ``images``. The
    built-in kernels run (no XNNPACK, which would hide the ops)."""
    from edgefer._tf import tf

    lite = tf().lite
    interp = lite.Interpreter(
        model_content=model, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=(
            lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    ops = interp._get_ops_details()  # the debugger's own way to find its ops
    maker = {t: op["op_name"] for op in ops for t in op["outputs"]}
    verify = [op for op in ops if op["op_name"] == "NumericVerify"]
    found = []
    for op in verify:
        q_index = op["inputs"][0]
        detail = interp._get_tensor_details(q_index, subgraph_index=0)
        params = detail["quantization_parameters"]
        name = detail["name"]  # the quantizer appends a digit, as the debugger says
        found.append({"name": name[:-1] if name[-1:].isdigit() else name,
                      "op": maker.get(q_index, "?"), "q": q_index, "f": op["inputs"][1],
                      "scale": float(params["scales"][0]),
                      "zero_point": int(params["zero_points"][0]), "energy": _Energy(),
                      "clip": _clip_after(interp, ops, q_index)})
    source = interp.get_input_details()[0]
    for image in images:
        x = image[None]
        if source["dtype"] == np.int8:
            scale, zero = source["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(source["index"], x)
        interp.invoke()
        for entry in found:
            q = interp.get_tensor(entry["q"]).astype(np.float32)
            dequantized = (q - entry["zero_point"]) * entry["scale"]
            reference = interp.get_tensor(entry["f"])
            if entry["clip"] is not None:  # the model clips it next, in float too
                reference = np.clip(reference, *entry["clip"])
            entry["energy"].add(reference, dequantized,
                                _quant_bounds(entry["scale"], entry["zero_point"]))
    return found


def _clip_after(interp, ops: list[dict], index: int) -> tuple[float, float] | None:
    """(low, high) when tensor ``index`` is read only by a clip written as MINIMUM and
    MAXIMUM with constants (the float twin's QAT ranges). TFLite then quantizes the
    tensor with the clip's range; the values it cuts, the float model cuts as well."""
    low, high = -np.inf, np.inf
    while True:
        readers = [op for op in ops if index in op["inputs"]
                   and op["op_name"] not in ("NumericVerify", "DEQUANTIZE")]
        if len(readers) != 1 or readers[0]["op_name"] not in ("MINIMUM", "MAXIMUM"):
            break
        op = readers[0]
        other = [i for i in op["inputs"] if i != index]
        detail = interp._get_tensor_details(other[0], subgraph_index=0) if other else None
        if detail is None or np.prod(detail["shape"]) != 1:
            break
        value = interp.get_tensor(other[0]).astype(np.float64).ravel()[0]
        scale, zero = detail["quantization"]
        value = (value - zero) * scale if scale else value
        if op["op_name"] == "MINIMUM":
            high = min(high, value)
        else:
            low = max(low, value)
        index = op["outputs"][0]
    return None if (low, high) == (-np.inf, np.inf) else (low, high)


# --- ONNX Runtime: QDQ models -----------------------------------------------------------

def onnx_report(float_proto, int8_proto, images: np.ndarray) -> QuantReport:
    """Per-layer errors of a QDQ ONNX model against the float ONNX model it came from.

    Every activation QuantizeLinear's float input is a tensor of the float model under
    the same name (ONNX Runtime's quantizer keeps names, and names its scale
    ``NAME_scale``). The INT8 side is read from the graph ONNX Runtime runs: the model as
    its optimizer fuses it into integer kernels (QLinearConv, ...), saved, with the
    integer tensors that carry a ``NAME_scale`` as extra outputs. (Asking the unfused
    model for those tensors would stop the fusions, and measure a float simulation.)
    """
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in int8_proto.graph.initializer}
    float_names = {o for n in float_proto.graph.node for o in n.output}
    float_names |= {i.name for i in float_proto.graph.input}
    producer = {o: n.op_type for n in float_proto.graph.node for o in n.output}
    points = []
    for node in int8_proto.graph.node:
        if (node.op_type == "QuantizeLinear" and node.input[0] in float_names
                and node.input[0] not in inits and np.size(inits.get(node.input[1], 0)) == 1):
            zero = inits.get(node.input[2]) if len(node.input) > 2 else None
            dtype = zero.dtype if zero is not None else np.dtype(np.uint8)
            points.append((node.input[0], float(inits[node.input[1]]),
                           int(zero) if zero is not None else 0, dtype))
    if not points:
        raise ExportError("the INT8 ONNX model has no activation QuantizeLinear to compare")
    fused = _ort_fused(int8_proto)
    engine = _integer_tensors(fused, {p[0] for p in points})
    f_model = _copy(float_proto)
    _add_outputs(f_model, [(p[0], np.dtype(np.float32)) for p in points], helper)
    _add_outputs(fused, [(engine[p[0]][0], engine[p[0]][3]) for p in points if p[0] in engine],
                 helper)
    f_session, q_session = _ort_session(f_model, 99), _ort_session(fused, 0)
    f_outputs = [o.name for o in f_session.get_outputs()]
    q_outputs = [o.name for o in q_session.get_outputs()]
    layer = [_Energy() for _ in points]
    whole = [_Energy() for _ in points]
    outs: tuple[list, list] = ([], [])
    batch_dim = f_session.get_inputs()[0].shape[0]  # 1 for a static batch-1 export
    for batch in _batches(images, batch_dim if isinstance(batch_dim, int) else 50):
        f_run = _run(f_session, f_outputs, batch)
        q_run = _run(q_session, q_outputs, batch)
        outs[0].append(f_run[f_outputs[0]])
        outs[1].append(q_run[q_outputs[0]])
        for k, (name, scale, zero, dtype) in enumerate(points):
            info = np.iinfo(dtype)
            f = f_run[name]
            bounds = _quant_bounds(scale, zero, info.min, info.max)
            layer[k].add(f, fake_quantize(f, scale, zero, info.min, info.max), bounds)
            if name in engine and q_run[engine[name][0]].size == f.size:
                tensor, q_scale, q_zero, _ = engine[name]
                whole[k].add(f, (q_run[tensor].astype(np.float32) - q_zero) * q_scale)
    rows = tuple(LayerError(k, name, producer.get(name, "input"), layer[k].low, layer[k].high,
                            scale, zero, layer[k].clipped_share, layer[k].sqnr_db,
                            whole[k].sqnr_db if whole[k].count else None)
                 for k, (name, scale, zero, _) in enumerate(points))
    return QuantReport("onnx", len(images), rows, _agreement(*outs))


def _run(session, names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    values = session.run(None, {session.get_inputs()[0].name: batch})
    return dict(zip(names, values, strict=True))


def _ort_session(proto, level: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel(level)
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _ort_fused(proto):
    """``proto`` with ONNX Runtime's fusions into integer kernels (level 2, extended; level
    3 only adds NCHWc layouts, which reshape the tensors)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "fused.onnx")
        ort.InferenceSession(proto.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def _integer_tensors(fused, names: set[str]) -> dict[str, tuple[str, float, int, np.dtype]]:
    """Float tensor name -> (integer tensor, scale, zero point, dtype) in the fused graph.

    ONNX Runtime names the scale of tensor T ``T_scale``; integer ops take (value, scale,
    zero point) in a row. A ``T_scale`` right after a value input says that input holds
    T (or a moved copy: a transpose shares its input's scale); one after a constant (or
    first) is the scale of the op's output, which then holds T. Outputs win; the
    optimizer may have moved int8 to uint8, so zero point and dtype come from the graph.
    """
    from onnx import numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in fused.graph.initializer}
    made: dict[str, tuple[str, float, int, np.dtype]] = {}
    read: dict[str, tuple[str, float, int, np.dtype]] = {}
    for node in fused.graph.node:
        inputs = list(node.input)
        for i, scale in enumerate(inputs[:-1]):
            name, zero = scale[:-len("_scale")], inputs[i + 1]
            if (not scale.endswith("_scale") or name not in names or scale not in constants
                    or zero not in constants or np.size(constants[scale]) != 1):
                continue
            entry = (float(constants[scale]), int(constants[zero]), constants[zero].dtype)
            before = inputs[i - 1] if i else ""
            if node.op_type == "QuantizeLinear" or not before or before in constants:
                made.setdefault(name, (node.output[0], *entry))
            else:
                read.setdefault(name, (before, *entry))
    return {**read, **made}


def _copy(proto):
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


def _add_outputs(proto, tensors: Iterable[tuple[str, np.dtype]], helper) -> None:
    known = {o.name for o in proto.graph.output}
    for name, dtype in tensors:
        if name not in known:
            proto.graph.output.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None))


def _batches(images: np.ndarray, size: int = 50) -> Iterable[np.ndarray]:
    for start in range(0, len(images), size):
        yield np.ascontiguousarray(images[start:start + size], np.float32)


# --- OpenVINO: FakeQuantize ---------------------------------------------------------------

def openvino_report(float_model, int8_model, images: np.ndarray) -> QuantReport:
    """Per-layer errors of an NNCF-quantized OpenVINO model against its float model.

    Each activation FakeQuantize reads the output of a node that the float model has
    under the same friendly name; the INT8 side is the FakeQuantize's output as the CPU
    plugin computes it in the INT8 model.
    """
    import openvino as ov

    core = ov.Core()
    f_model, q_model = float_model.clone(), int8_model.clone()
    by_name = {n.get_friendly_name(): n for n in f_model.get_ops()}
    points = []
    for node in q_model.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize":
            continue
        source = node.input_value(0)
        name = source.get_node().get_friendly_name()
        if source.get_node().get_type_name() == "Constant" or name not in by_name:
            continue
        low, high = (node.input_value(i).get_node().get_data() for i in (1, 2))
        if np.size(low) != 1:
            continue
        points.append((name, source.get_index(), node, float(np.ravel(low)[0]),
                       float(np.ravel(high)[0]), int(node.get_attributes()["levels"]),
                       source.get_node().get_type_name()))
    if not points:
        raise ExportError("the INT8 OpenVINO model has no activation FakeQuantize to compare")
    f_model.add_outputs([by_name[p[0]].output(p[1]) for p in points])
    q_model.add_outputs([p[2].output(0) for p in points])
    config = {"INFERENCE_NUM_THREADS": 2}
    compiled = [core.compile_model(m, "CPU", config) for m in (f_model, q_model)]
    layer = [_Energy() for _ in points]
    whole = [_Energy() for _ in points]
    outs: tuple[list, list] = ([], [])
    for batch in _batches(images, 1):
        f_run, q_run = (list(c(batch).values()) for c in compiled)
        outs[0].append(f_run[0])
        outs[1].append(q_run[0])
        for k, (_, _, _, low, high, levels, _) in enumerate(points):
            f = f_run[1 + k]
            scale = (high - low) / (levels - 1)
            local = np.clip(np.round((f - low) / scale), 0, levels - 1) * scale + low
            layer[k].add(f, local, (low, high))
            whole[k].add(f, q_run[1 + k])
    rows = []
    for k, (name, _, _, low, high, levels, op) in enumerate(points):
        scale = (high - low) / (levels - 1)
        zero = round(-low / scale) - levels // 2
        rows.append(LayerError(k, name, op, layer[k].low, layer[k].high, scale, zero,
                               layer[k].clipped_share, layer[k].sqnr_db, whole[k].sqnr_db))
    return QuantReport("openvino", len(images), tuple(rows), _agreement(*outs))


# --- writing -------------------------------------------------------------------------------

def write_report(report: QuantReport, folder: str | Path, stem: str,
                 render: Callable[[QuantReport], str]) -> list[Path]:
    """``stem``.json, ``stem``.md (``render``'s table) and ``stem``.png into ``folder``."""
    import json
    from dataclasses import asdict

    from edgefer.outputs import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_text_atomic(folder / f"{stem}.json",
                               json.dumps(asdict(report), indent=1) + "\n")]
    plot = folder / f"{stem}.png"
    if plot_report(report, plot):
        paths.append(plot)
    paths.append(write_text_atomic(folder / f"{stem}.md", render(report)))
    return paths


def plot_report(report: QuantReport, path: Path) -> bool:
    """Layer and accumulated SQNR along the graph; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    x = [layer.index for layer in report.layers]
    fig, ax = plt.subplots(figsize=(max(6.0, len(x) * 0.12), 4.0))
    ax.plot(x, [layer.layer_sqnr_db for layer in report.layers], "o-", ms=3,
            label="this tensor's quantization")
    if all(layer.sqnr_db is not None for layer in report.layers):
        ax.plot(x, [layer.sqnr_db for layer in report.layers], "s-", ms=3,
                label="INT8 model vs float model (accumulated)")
    for layer in report.worst(5):
        ax.annotate(layer.tensor[-28:], (layer.index, layer.layer_sqnr_db), fontsize=6,
                    rotation=30)
    ax.set_xlabel("quantized tensor, in graph order")
    ax.set_ylabel("SQNR (dB), higher is better")
    ax.set_title(f"{report.engine}: per-layer quantization error on {report.images} images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as tmp:
        fig.savefig(tmp.name, dpi=110)
    plt.close(fig)
    Path(tmp.name).replace(path)
    return True


# --- for an export ----------------------------------------------------------------------------

REPORT_IMAGES = 200


def export_report(source, options, artifact) -> QuantReport:
    """The per-layer report of a calibrated INT8 ``artifact`` (what an exporter returned)
    against the float model it was quantized from, on up to ``REPORT_IMAGES`` evenly
    spaced calibration images."""
    from dataclasses import replace

    from edgefer.export import convert
    from edgefer.export.options import Target

    calibration = source.calibration_set()
    images = calibration.images()
    images = images[::max(1, len(images) // REPORT_IMAGES)][:REPORT_IMAGES]
    if options.target is Target.TFLITE:
        from edgefer._tf import tf

        model = convert.prepared_float_model(source, options)
        tflite = tf().lite
        converter = tflite.TFLiteConverter.from_concrete_functions(
            [convert._serving_function(model, options.batch)], model)
        converter.experimental_lower_to_saved_model = False
        converter.optimizations = [tflite.Optimize.DEFAULT]
        converter.representative_dataset = calibration.tflite_representative_dataset()
        converter.target_spec.supported_ops = [tflite.OpsSet.TFLITE_BUILTINS_INT8]
        return tflite_report(converter, calibration, images)
    if options.target is Target.ONNX:
        import onnx

        return onnx_report(convert._onnx_float(source, options, prepared=True),
                           onnx.load_from_string(artifact), images)
    plain = replace(options, bias_correction=False)
    float_model = convert.onnx_to_openvino(convert._onnx_float(source, plain, prepared=True))
    return openvino_report(float_model, artifact, images)
