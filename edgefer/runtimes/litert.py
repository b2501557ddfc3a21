"""LiteRT (ai-edge-litert), falling back to tflite-runtime, then tensorflow.lite."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefer.engines import Device, require
from edgefer.errors import DeviceUnavailableError, EngineMissingError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions, resolve_info, run_in_chunks


def interpreter_module():
    """(module with Interpreter, its name)."""
    for module, flavour in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                            ("tflite_runtime.interpreter", "tflite-runtime")):
        with contextlib.suppress(EngineMissingError):
            return require(module, "tflite"), flavour
    try:
        from edgefer._tf import tf

        return tf().lite, "tensorflow.lite"
    except EngineMissingError as exc:
        raise EngineMissingError("LiteRT", "tflite", "nor tflite-runtime nor TensorFlow") from exc


class LiteRTRuntime(Runtime):
    engine = "litert"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions,
                 interpreter, flavour: str) -> None:
        super().__init__(path, info, options)
        self._interp = interpreter
        self._flavour = flavour
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        # a file exported with a static batch (shape signature without -1) runs one call
        # per image: its graph may hold the batch in constants (reshapes) that a resize breaks
        signature = self._input.get("shape_signature", self._input["shape"])
        self._fixed_batch = int(signature[0]) if len(signature) and signature[0] > 0 else None

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> LiteRTRuntime:
        path = Path(path)
        if options.device not in (Device.CPU, Device.AUTO):
            raise DeviceUnavailableError(
                f"LiteRT's Python interpreter runs on the CPU only; device {options.device.value}"
                " needs the GPU/NNAPI delegates of an Android build (edgefer bench --on adb)")
        module, flavour = interpreter_module()
        kwargs = {"model_path": str(path), "num_threads": options.threads}
        if not options.xnnpack and hasattr(module, "OpResolverType"):
            kwargs["experimental_op_resolver_type"] = (
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            interp = module.Interpreter(**kwargs)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: LiteRT cannot load it ({exc})") from exc
        return cls(path, resolve_info(path, info), options, interp, flavour)

    @property
    def ran_on(self) -> str:
        delegate = "XNNPACK" if self.options.xnnpack else "builtin kernels"
        threads = self.options.threads
        count = "default threads" if not threads else f"{threads} thread{'s' * (threads > 1)}"
        return f"{self._flavour} CPU ({delegate}, {count})"

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = list(self._input["shape"])
            shape[0] = batch
            self._interp.resize_tensor_input(self._input["index"], shape)
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._output = self._interp.get_output_details()[0]
            self._batch = batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch and len(batch) != self._fixed_batch:
            return run_in_chunks(self._run, batch, self._fixed_batch)
        self._resize(len(batch))
        self._interp.set_tensor(self._input["index"], quantize(batch, self._input))
        self._interp.invoke()
        return dequantize(self._interp.get_tensor(self._output["index"]), self._output)

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """``invoke`` with the (quantized) input set once, before timing."""
        calls = 1
        if self._fixed_batch and len(batch) != self._fixed_batch:
            calls = -(-len(batch) // self._fixed_batch)
            batch = np.resize(batch, (self._fixed_batch, *batch.shape[1:]))
        self._resize(len(batch))
        self._interp.set_tensor(self._input["index"],
                                quantize(np.asarray(batch, np.float32), self._input))
        invoke = self._interp.invoke

        def engine_call() -> None:
            for _ in range(calls):
                invoke()
        return engine_call


# a thousandth of a quantization level: enough to round exact halves up past float32 error
HALF_UP_NUDGE = 1e-3


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input to the tensor's dtype, with its scale and zero point for int types."""
    dtype = detail["dtype"]
    if dtype in (np.float32, np.float16):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    # Half up, as TensorFlow's FakeQuant rounded in training: x / 127.5 - 1 lands every
    # pixel exactly half-way between two levels of a QAT model's input quantizer. The
    # float32 error of x would round some of them down: a thousandth of a level decides
    # (the ONNX export adds the same, see onnx_round_input_half_up).
    levels = x.astype(np.float64) / scale + zero + 0.5 + HALF_UP_NUDGE
    return np.clip(np.floor(levels), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.float32, np.float16):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
