"""ncnn (Tencent), through its Python module ``ncnn`` (pip install ncnn, or
benchmarks/build_ncnn.sh from source). CPU; Vulkan GPUs where the module was built with it.

An ncnn model is a ``.ncnn.param`` graph, its ``.ncnn.bin`` weights and, for edgefer's
exports, a ``.ncnn.json`` sidecar with the edgefer record (edgefer.export.ncnn).
ncnn has no batch axis: a batch runs one extractor call per image, which is also what an
application embedding ncnn does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.engines import Device, require
from edgefer.errors import DeviceUnavailableError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions, resolve_info


@dataclass(frozen=True)
class NcnnOptions:
    """ncnn's own options (``RuntimeOptions.engine_options``).

    ``fp16``: ncnn's default, what an application embedding ncnn gets: float16 storage on
    x86 CPUs with F16C and float16 arithmetic on ARMv8.2 cores (a Pi 5's Cortex-A76), also
    for an fp32 model. False: float32 throughout on every CPU (the emulated Pi's
    arm64-vs-x86 parity check)."""

    fp16: bool = True


def ncnn_module():
    return require("ncnn", "ncnn", "ncnn")


def weights_path(param: Path) -> Path:
    """``m.ncnn.param`` -> ``m.ncnn.bin``."""
    return param.with_suffix(".bin")


class NcnnRuntime(Runtime):
    engine = "ncnn"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions, net,
                 gpu: bool) -> None:
        super().__init__(path, info, options)
        self._net = net
        self._gpu = gpu
        self._input = net.input_names()[0]
        self._output = net.output_names()[0]

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> NcnnRuntime:
        path = Path(path)
        ncnn = ncnn_module()
        gpu = _use_gpu(ncnn, options.device)
        weights = weights_path(path)
        if not weights.is_file():
            raise ModelError(f"{path}: its weights {weights.name} are missing")
        net = ncnn.Net()
        net.opt.use_vulkan_compute = gpu
        if not options.for_engine(cls.engine).fp16:
            for name in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                         "use_bf16_storage"):
                setattr(net.opt, name, False)
        if options.threads:
            net.opt.num_threads = options.threads
        if net.load_param(str(path)) != 0:
            raise ModelError(f"{path}: ncnn cannot read it as an ncnn .param file")
        if net.load_model(str(weights)) != 0:
            raise ModelError(f"{weights}: ncnn cannot read its weights (truncated, or not "
                             f"the weights of {path.name})")
        return cls(path, resolve_info(path, info), options, net, gpu)

    @property
    def ran_on(self) -> str:
        return "ncnn Vulkan" if self._gpu else "ncnn CPU"

    def _mats(self, batch: np.ndarray) -> list:
        ncnn = ncnn_module()
        # NHWC image -> ncnn's (c, h, w) Mat; the Mat copies the array
        return [ncnn.Mat(np.ascontiguousarray(image.transpose(2, 0, 1))) for image in batch]

    def _extract(self, mat) -> np.ndarray:
        with self._net.create_extractor() as extractor:
            extractor.input(self._input, mat)
            status, out = extractor.extract(self._output)
        if status != 0:
            raise ModelError(f"{self.path}: ncnn failed to run it (status {status})")
        return np.array(out).reshape(-1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._extract(mat) for mat in self._mats(batch)])

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """One extractor per image on Mats made before timing: ncnn's own run call."""
        mats = self._mats(np.ascontiguousarray(batch, dtype=np.float32))
        net, name_in, name_out = self._net, self._input, self._output

        def engine_call() -> None:
            for mat in mats:
                with net.create_extractor() as extractor:
                    extractor.input(name_in, mat)
                    extractor.extract(name_out)
        return engine_call


def _use_gpu(ncnn, device: Device) -> bool:
    """Vulkan for GPU (and AUTO when there is one); NPU is never ncnn's."""
    gpus = ncnn.get_gpu_count() if hasattr(ncnn, "get_gpu_count") else 0
    if device is Device.NPU:
        raise DeviceUnavailableError("ncnn runs on the CPU or a Vulkan GPU, not an NPU")
    if device is Device.GPU and not gpus:
        raise DeviceUnavailableError(
            "ncnn has no Vulkan GPU here (its module was built without Vulkan, or no GPU "
            "driver is installed); run it with --device cpu")
    return device in (Device.GPU, Device.AUTO) and gpus > 0
