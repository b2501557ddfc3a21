"""Export options: targets, precisions and how INT8 is made, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edgefer.errors import ConfigError
from edgefer.formats import EXPORT_FORMATS, Format, format_named

# the formats export writes (edgefer.formats), as an enum: Target.TFLITE, Target.ONNX, ...
Target = Enum("Target", {fmt.name.upper(): fmt.name for fmt in EXPORT_FORMATS}, type=str,
              module=__name__)


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # int8 weights, float activations (TFLite dynamic range)
    INT8 = "int8"


class Int8Source(str, Enum):
    AUTO = "auto"  # the QAT model's own ranges when it has them, else calibrate
    QAT = "qat"
    CALIBRATE = "calibrate"


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    MSE = "mse"


# The calibration methods each format's converter has (Format.calib_methods)
CALIB_METHODS: dict[Target, tuple[CalibMethod, ...]] = {
    Target(fmt.name): tuple(CalibMethod(m) for m in fmt.calib_methods)
    for fmt in EXPORT_FORMATS}


class IntGraph(str, Enum):
    """Which ops of an INT8 TFLite model stay integer.

    CPU runs hard-swish and global average pooling (MEAN) in float between DEQUANTIZE and
    QUANTIZE. XNNPACK (the CPU engine of LiteRT on phones, Pis and PCs) has no int8
    HARD_SWISH: each one splits the graph, and the int8 reference kernel runs between
    partitions (2.1x slower at batch 1). TFLite's int8 MEAN kernel rounds up to half a
    step low, so the built-in kernels drift from ONNX Runtime and OpenVINO. PURE keeps
    an integer-only graph for NPUs, the Edge TPU and microcontrollers.
    """

    CPU = "cpu"
    PURE = "pure"


class IoType(str, Enum):
    INT8 = "int8"
    FLOAT = "float"


SUPPORTED: dict[Target, tuple[Precision, ...]] = {
    Target(fmt.name): tuple(Precision(p) for p in fmt.precisions) for fmt in EXPORT_FORMATS}

# Top-1 agreement with the reference below which an export fails. Measured on the
# shipped model (reports/export.md): fp32/fp16 agree on all 300 parity images, INT8 on 99%+.
DEFAULT_MIN_AGREEMENT: dict[Precision, float] = {
    Precision.FP32: 0.99,
    Precision.FP16: 0.98,
    Precision.DYNAMIC: 0.95,
    Precision.INT8: 0.95,
}


def _enum(cls: type[Enum], value: object, what: str) -> Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(e.value for e in cls)
        raise ConfigError(f"unknown {what} {value!r}; choose from {choices}") from None


@dataclass(frozen=True)
class ExportOptions:
    target: Target
    precision: Precision
    int8_source: Int8Source = Int8Source.AUTO
    io: IoType = IoType.INT8
    int8_graph: IntGraph = IntGraph.CPU
    calib_manifest: Path | None = None
    calib_method: CalibMethod = CalibMethod.MINMAX
    max_drop: float | None = None  # OpenVINO/NNCF accuracy control, in top-1 points (0.01 = 1%)
    # post-training INT8 fixes (docs/quantization.md): cross-layer equalization of the
    # Keras model, bias correction (the Keras model's for TFLite and ONNX, NNCF's for
    # OpenVINO; None: on for OpenVINO only, as measured), layers kept in float (Keras
    # layer names), and a per-layer error report
    equalize: bool = False
    bias_correction: bool | None = None
    keep_float: tuple[str, ...] = ()
    debug_int8: Path | None = None
    parity_images: int = 300
    min_agreement: float | None = None
    simplify: bool = True
    opset: int = 17
    # False: the input is a static batch of 1, what a device runs (benchmark_app and
    # deployment code take it as it is); True: any batch size, for batched throughput
    dynamic_batch: bool = False

    def __post_init__(self) -> None:
        target = _enum(Target, self.target, "target")
        precision = _enum(Precision, self.precision, "precision")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "int8_source", _enum(Int8Source, self.int8_source, "INT8 source"))
        object.__setattr__(self, "io", _enum(IoType, self.io, "io type"))
        object.__setattr__(self, "int8_graph", _enum(IntGraph, self.int8_graph, "INT8 graph"))
        object.__setattr__(self, "calib_method",
                           _enum(CalibMethod, self.calib_method, "calibration method"))
        if precision not in SUPPORTED[target]:
            can = ", ".join(p.value for p in SUPPORTED[target])
            why = format_named(target.value).int8_unsupported
            why = f", not supported: {why}" if precision is Precision.INT8 and why else ""
            raise ConfigError(f"{target.value} cannot export {precision.value}{why}; "
                              f"it can do {can}")
        method = self.calib_method
        if precision is Precision.INT8 and method not in CALIB_METHODS[target]:
            has = [t.value for t, methods in CALIB_METHODS.items() if method in methods]
            raise ConfigError(f"{target.value} has no {method.value} calibration (it has "
                              f"{', '.join(m.value for m in CALIB_METHODS[target])}); "
                              f"{method.value} is {' and '.join(has)}'s")
        keep = self.keep_float
        keep = tuple(p.strip() for p in keep.split(",")) if isinstance(keep, str) else keep
        object.__setattr__(self, "keep_float", tuple(p for p in keep if p))
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"min agreement must be 0..1, got {self.min_agreement}")
        if self.max_drop is not None and not 0.0 < self.max_drop < 1.0:
            raise ConfigError(f"max drop must be above 0 and below 1 (0.01 = 1 point of "
                              f"top-1), got {self.max_drop}")
        if self.parity_images < 1:
            raise ConfigError("parity needs at least one image")

    @property
    def corrects_bias(self) -> bool:
        """Bias correction on: as asked, else NNCF's for OpenVINO (measured on the shipped
        model: +0.9 points of top-1 agreement); the Keras-model correction for TFLite and
        ONNX moved agreement by noise only, so it is off unless asked for."""
        if self.bias_correction is not None:
            return self.bias_correction
        return self.target is Target.OPENVINO

    @property
    def threshold(self) -> float:
        if self.min_agreement is not None:
            return self.min_agreement
        return DEFAULT_MIN_AGREEMENT[self.precision]

    @property
    def batch(self) -> int | None:
        """The exported input's batch size; None: dynamic."""
        return None if self.dynamic_batch else 1

    @property
    def format(self) -> Format:
        return format_named(self.target.value)

    @property
    def suffix(self) -> str:
        return self.format.suffix
