"""The Keras reference model (TensorFlow on CPU or GPU)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefer.engines import Device
from edgefer.errors import DeviceUnavailableError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions


class KerasRuntime(Runtime):
    engine = "keras"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions, model,
                 device: str) -> None:
        super().__init__(path, info, options)
        self.model = model
        self._device = device
        self._call = None

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> KerasRuntime:
        if options.device is Device.NPU:
            raise DeviceUnavailableError("TensorFlow cannot run on an NPU; export to TFLite, "
                                         "ONNX or OpenVINO for NPUs")
        from edgefer._tf import tf
        from edgefer.model.store import load_model

        tf_ = tf()
        if options.threads:
            try:
                tf_.config.threading.set_intra_op_parallelism_threads(options.threads)
                tf_.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # TensorFlow was initialised already; its thread pools are fixed
        device = "/CPU:0"
        if options.device in (Device.GPU, Device.AUTO):
            if tf_.config.list_physical_devices("GPU"):
                device = "/GPU:0"
            elif options.device is Device.GPU:
                raise DeviceUnavailableError("TensorFlow sees no GPU here")
        with tf_.device(device):
            model, _, stored = load_model(path)
        return cls(Path(path), info or stored, options, model, device)

    @property
    def ran_on(self) -> str:
        return f"TensorFlow {self._device.strip('/')}"

    def _function(self):
        from edgefer._tf import tf

        if self._call is None:
            self._call = tf().function(lambda x: self.model(x, training=False),
                                       reduce_retracing=True)
        return self._call

    def _run(self, batch: np.ndarray) -> np.ndarray:
        from edgefer._tf import tf

        tf_ = tf()
        with tf_.device(self._device):
            return self._function()(tf_.constant(batch)).numpy()

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """The traced function on a tensor made once; on a GPU the result is read back,
        since TensorFlow returns before the GPU has finished."""
        from edgefer._tf import tf

        tf_ = tf()
        call = self._function()
        gpu = "GPU" in self._device
        with tf_.device(self._device):
            x = tf_.constant(np.ascontiguousarray(batch, dtype=np.float32))

        def engine_call() -> None:
            with tf_.device(self._device):
                y = call(x)
            if gpu:
                y.numpy()
        return engine_call
