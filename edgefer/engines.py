"""The inference engines, looked up by name, and the one guard for importing them.

An engine is a ``Runtime`` class (``edgefer.runtimes``) named here by ``"module:Class"``:
nothing is imported until a model is loaded, so the table costs nothing and the engine
modules can import ``edgefer.runtimes.base`` without a circle. The formats each engine
runs are listed in ``edgefer.formats`` (``Format.engines``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from enum import Enum
from types import ModuleType

from edgefer.errors import ConfigError, EngineMissingError


def require(module: str, extra: str, engine: str | None = None,
            detail: str = "") -> ModuleType:
    """``import module``, or the EngineMissingError naming the pip extra that installs it
    (``engine``: the name people know it by, default the module's)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineMissingError(engine or module, extra, detail) from exc


class Device(str, Enum):
    """Where a model runs. ``ALL`` is a benchmark's choice (each of cpu, gpu and npu),
    never one runtime's."""

    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"
    AUTO = "auto"
    ALL = "all"

    def devices(self) -> tuple[str, ...]:
        """The names of the devices a benchmark measures on for this choice."""
        return ("cpu", "gpu", "npu") if self is Device.ALL else (self.value,)

    @property
    def accelerator(self) -> bool:
        """A GPU or NPU asked for by name: running on the CPU instead is a fallback."""
        return self in (Device.GPU, Device.NPU)


@dataclass(frozen=True)
class EngineSpec:
    name: str  # "litert": the ``engine`` of bench results
    label: str  # "LiteRT"
    runtime: str  # "module:Class" of its Runtime
    extra: str  # the pip extra that installs it
    # the Python modules that can run it, edgefer's preference first (checked on devices)
    modules: tuple[str, ...]
    packages: tuple[str, ...]  # the distributions whose versions a benchmark records
    device_install: str = ""  # how to install it on a device without the extra's build
    # "module:Class" of the frozen dataclass of its own options (RuntimeOptions.engine_options);
    # "" for an engine with none beyond the shared device, threads and xnnpack
    options: str = ""

    def runtime_class(self):
        return _load(self.runtime)

    def options_class(self) -> type | None:
        return _load(self.options) if self.options else None

    @property
    def install_hint(self) -> str:
        return self.device_install or f"pip install 'edgefer[{self.extra}]'"


ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("litert", "LiteRT", "edgefer.runtimes.litert:LiteRTRuntime", "tflite",
               ("ai_edge_litert", "tflite_runtime", "tensorflow"),
               ("ai-edge-litert", "tflite-runtime", "tensorflow"),
               "pip install 'edgefer[tflite]'  (LiteRT; on 32-bit boards: pip install "
               "edgefer tflite-runtime)"),
    EngineSpec("onnxruntime", "ONNX Runtime", "edgefer.runtimes.onnxrt:OnnxRuntime", "onnx",
               ("onnxruntime",), ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                                  "onnxruntime-directml", "onnxruntime-qnn"),
               "pip install edgefer onnxruntime",
               options="edgefer.runtimes.onnxrt:OnnxRuntimeOptions"),
    EngineSpec("openvino", "OpenVINO", "edgefer.runtimes.openvino:OpenVINORuntime",
               "openvino", ("openvino",), ("openvino",), "pip install edgefer openvino",
               options="edgefer.runtimes.openvino:OpenVINOOptions"),
    EngineSpec("ncnn", "ncnn", "edgefer.runtimes.ncnn:NcnnRuntime", "ncnn", ("ncnn",),
               ("ncnn",), "pip install edgefer ncnn",
               options="edgefer.runtimes.ncnn:NcnnOptions"),
    EngineSpec("mnn", "MNN", "edgefer.runtimes.mnn:MnnRuntime", "mnn", ("MNN",), ("MNN",),
               "pip install edgefer MNN"),
    EngineSpec("keras", "TensorFlow", "edgefer.runtimes.keras:KerasRuntime", "train",
               ("tensorflow",), ("tensorflow", "tf-keras")),
)


def _load(reference: str):
    """The class a ``"module:Class"`` name string refers to, imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def engine_with_options(options: object) -> EngineSpec:
    """The engine whose options class ``options`` is an instance of (found by the class's
    name, importing nothing); ConfigError for anything else."""
    kind = type(options)
    name = f"{kind.__module__}:{kind.__qualname__}"
    for spec in ENGINES:
        if spec.options and spec.options == name:
            return spec
    with_options = ", ".join(spec.options.partition(":")[2] for spec in ENGINES if spec.options)
    raise ConfigError(f"{kind.__name__} is no engine's options (engines' options: "
                      f"{with_options})")


def engine_installed(name: str) -> bool:
    """Whether one of the engine's Python modules is installed here (found, not imported)."""
    for module in engine_named(name).modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def engine_named(name: str) -> EngineSpec:
    for spec in ENGINES:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in ENGINES)
    raise ConfigError(f"unknown engine {name!r}; choose from {known}")
