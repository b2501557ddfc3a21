"""ONNX Runtime, with its execution providers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.engines import Device, require
from edgefer.errors import ConfigError, DeviceUnavailableError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions, resolve_info, run_in_chunks

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                  "DmlExecutionProvider", "CoreMLExecutionProvider")
_NPU_PROVIDERS = ("QNNExecutionProvider", "OpenVINOExecutionProvider", "VitisAIExecutionProvider")


_INSTALL_HINT = {
    Device.GPU: "install onnxruntime-gpu for CUDA/TensorRT",
    Device.NPU: "install an onnxruntime build with QNN, OpenVINO or Vitis AI",
}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """ONNX Runtime's own options (``RuntimeOptions.engine_options``)."""

    optimization: str = "all"  # graph optimisation: disable | basic | extended | all

    def __post_init__(self) -> None:
        if self.optimization not in ("disable", "basic", "extended", "all"):
            raise ConfigError(f"unknown ONNX Runtime optimisation level {self.optimization!r}")


def ort():
    return require("onnxruntime", "onnx", "ONNX Runtime")


def providers_for(options: RuntimeOptions, available: list[str]) -> list[str]:
    """The execution providers to ask for, best first; CPU always last."""
    if options.device is Device.CPU:
        wanted = ["XnnpackExecutionProvider"] if options.xnnpack else []
        return [p for p in wanted if p in available] + ["CPUExecutionProvider"]
    pool = _GPU_PROVIDERS if options.device is Device.GPU else _NPU_PROVIDERS
    if options.device is Device.AUTO:
        pool = _GPU_PROVIDERS + _NPU_PROVIDERS
    found = [p for p in pool if p in available]
    if not found and options.device is not Device.AUTO:
        raise DeviceUnavailableError(
            f"ONNX Runtime has no {options.device.value.upper()} execution provider here "
            f"(available: {', '.join(available)}); {_INSTALL_HINT[options.device]}")
    return [*found, "CPUExecutionProvider"]


class OnnxRuntime(Runtime):
    engine = "onnxruntime"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions, session) -> None:
        super().__init__(path, info, options)
        self._session = session
        self._input = session.get_inputs()[0]
        self._dtype = np.float16 if "float16" in self._input.type else np.float32
        shape = self._input.shape
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> OnnxRuntime:
        path = Path(path)
        rt = ort()
        own = options.for_engine(cls.engine)
        so = rt.SessionOptions()
        so.graph_optimization_level = {
            "disable": rt.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": rt.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": rt.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": rt.GraphOptimizationLevel.ORT_ENABLE_ALL}[own.optimization]
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = providers_for(options, rt.get_available_providers())
        if options.device is not Device.CPU and hasattr(rt, "preload_dlls"):
            # onnxruntime-gpu finds CUDA/cuDNN from the nvidia-* wheels only when asked to
            with contextlib.suppress(Exception):
                rt.preload_dlls()
        try:
            session = rt.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        return cls(path, resolve_info(path, info), options, session)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def fell_back(self) -> bool:
        """True when a GPU, NPU or AUTO was asked for but only the CPU provider is active."""
        return self.options.device is not Device.CPU and self.providers == ["CPUExecutionProvider"]

    @property
    def ran_on(self) -> str:
        return "ONNX Runtime " + ", ".join(self.providers)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(self._dtype)
        if self._fixed_batch and len(batch) != self._fixed_batch:
            return run_in_chunks(self._run, batch, self._fixed_batch)
        return self._session.run(None, {self._input.name: batch})[0].astype(np.float32)

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """``run_with_iobinding`` on an input and output bound once, before timing."""
        calls = 1
        x = np.ascontiguousarray(batch, dtype=self._dtype)
        if self._fixed_batch and len(x) != self._fixed_batch:
            calls = -(-len(x) // self._fixed_batch)
            x = np.ascontiguousarray(np.resize(x, (self._fixed_batch, *x.shape[1:])))
        outputs = self._session.run(None, {self._input.name: x})  # the outputs' shapes
        value = ort().OrtValue.ortvalue_from_numpy
        # the bound values point into these arrays: the closure keeps them alive
        bound = [value(x), *(value(np.empty_like(out)) for out in outputs)]
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self._input.name, bound[0])
        for meta, out in zip(self._session.get_outputs(), bound[1:], strict=True):
            binding.bind_ortvalue_output(meta.name, out)
        run = self._session.run_with_iobinding

        def engine_call(bound=bound) -> None:
            for _ in range(calls):
                run(binding)
        return engine_call
