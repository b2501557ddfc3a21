"""OpenVINO on CPU, GPU, NPU or AUTO, with performance hints, streams and threads."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.engines import Device, require
from edgefer.errors import ConfigError, DeviceUnavailableError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions, resolve_info, run_in_chunks


@dataclass(frozen=True)
class OpenVINOOptions:
    """OpenVINO's own options (``RuntimeOptions.engine_options``)."""

    hint: str = "latency"  # performance hint: latency | throughput
    streams: int | None = None  # NUM_STREAMS; None: what the hint picks

    def __post_init__(self) -> None:
        if self.hint not in ("latency", "throughput"):
            raise ConfigError(f"OpenVINO hint must be latency or throughput, got {self.hint!r}")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"OpenVINO streams must be at least 1, got {self.streams}")


def openvino():
    return require("openvino", "openvino", "OpenVINO")


def device_name(device: Device, available: list[str]) -> str:
    name = device.value.upper()
    if device is not Device.AUTO and not any(d.split(".")[0] == name for d in available):
        raise DeviceUnavailableError(
            f"OpenVINO has no {name} device here (available: {', '.join(available) or 'none'})")
    return name


class OpenVINORuntime(Runtime):
    engine = "openvino"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions, core, model,
                 device: str) -> None:
        super().__init__(path, info, options)
        self._core = core
        self._model = model
        self._device = device
        self._compiled: dict[int, object] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> OpenVINORuntime:
        path = Path(path)
        ov = openvino()
        core = ov.Core()
        device = device_name(options.device, core.available_devices)
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelError(f"{path}: OpenVINO cannot read it ({exc})") from exc
        runtime = cls(path, resolve_info(path, info), options, core, model, device)
        runtime._compile(runtime._fixed_batch or 1)
        return runtime

    @property
    def _fixed_batch(self) -> int | None:
        """The batch of a file exported with a static one; larger batches run in chunks
        of it (the graph may hold it in constants that a reshape would break)."""
        dim = self._model.inputs[0].partial_shape[0]
        return int(dim.get_length()) if dim.is_static else None

    def _config(self) -> dict:
        import openvino.properties.hint as hints

        own = self.options.for_engine(self.engine)
        config = {hints.performance_mode: hints.PerformanceMode.LATENCY
                  if own.hint == "latency" else hints.PerformanceMode.THROUGHPUT}
        if self.options.threads and self._device in ("CPU", "AUTO"):
            config["INFERENCE_NUM_THREADS"] = self.options.threads
        if own.streams:
            config["NUM_STREAMS"] = own.streams
        return config

    def _compile(self, batch: int):
        if batch not in self._compiled:
            model = self._model.clone()
            shape = model.inputs[0].partial_shape
            shape[0] = batch
            model.reshape({model.inputs[0]: shape})
            try:
                self._compiled[batch] = self._core.compile_model(model, self._device,
                                                                 self._config())
            except Exception as exc:
                raise DeviceUnavailableError(
                    f"OpenVINO could not compile for {self._device}: {exc}") from exc
        return self._compiled[batch]

    @property
    def _execution_devices(self) -> list[str]:
        compiled = next(iter(self._compiled.values()))
        try:
            return list(compiled.get_property("EXECUTION_DEVICES"))
        except Exception:
            return [self._device]

    @property
    def ran_on(self) -> str:
        return "OpenVINO " + ", ".join(self._execution_devices)

    @property
    def fell_back(self) -> bool:
        """True when a GPU or NPU was asked for and OpenVINO executes on neither."""
        return self.options.device.accelerator and not any(
            kind in device.upper() for device in self._execution_devices
            for kind in ("GPU", "NPU"))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        fixed = self._fixed_batch
        if fixed and len(batch) != fixed:
            return run_in_chunks(self._run, batch, fixed)
        compiled = self._compile(len(batch))
        return np.asarray(compiled([batch])[compiled.outputs[0]], dtype=np.float32)

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """``InferRequest.infer`` on an input tensor set once, before timing."""
        calls, fixed = 1, self._fixed_batch
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if fixed and len(x) != fixed:
            calls = -(-len(x) // fixed)
            x = np.ascontiguousarray(np.resize(x, (fixed, *x.shape[1:])))
        request = self._compile(len(x)).create_infer_request()
        request.set_input_tensor(openvino().Tensor(x))
        infer = request.infer

        def engine_call() -> None:
            for _ in range(calls):
                infer(share_outputs=True)
        return engine_call
