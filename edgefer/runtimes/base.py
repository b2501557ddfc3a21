"""The shared Runtime interface every engine implements (``edgefer.engines`` names them)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgefer.engines import Device, engine_named, engine_with_options
from edgefer.errors import ConfigError, ModelError
from edgefer.preprocess import ModelInfo


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model: what every engine reads, and each engine's own options.

    ``engine_options``: instances of the engines' options classes (``EngineSpec.options``,
    e.g. ``OnnxRuntimeOptions(optimization="basic")``, ``OpenVINOOptions(hint="throughput")``),
    at most one per engine; an engine given none runs with its options' defaults.
    """

    device: Device = Device.CPU
    threads: int | None = None  # None: the engine's default
    xnnpack: bool = True  # LiteRT: XNNPACK delegate; ONNX Runtime: XNNPACK EP where built in
    engine_options: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", Device(self.device))
        if self.device is Device.ALL:
            raise ConfigError("a model runs on one device: cpu, gpu, npu or auto "
                              "(all is for bench)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        given = self.engine_options
        given = tuple(given) if isinstance(given, (tuple, list)) else (given,)
        object.__setattr__(self, "engine_options", given)
        engines = [engine_with_options(item).name for item in given]
        twice = sorted({name for name in engines if engines.count(name) > 1})
        if twice:
            raise ConfigError(f"give each engine's options once ({', '.join(twice)} twice)")

    def for_engine(self, engine: str):
        """Engine ``engine``'s options: the ones given, else its defaults (None: it has no
        options class)."""
        kind = engine_named(engine).options_class()
        if kind is None:
            return None
        return next((item for item in self.engine_options if isinstance(item, kind)), kind())


class Runtime(ABC):
    """A loaded model on one engine. Subclasses hide int8 (de)quantization."""

    engine: ClassVar[str]  # its name in edgefer.engines

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions) -> None:
        self.path = path
        self.info = info
        self.options = options

    @classmethod
    @abstractmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> Runtime:
        """Load ``path``; ``info`` overrides the file's own edgefer record (baselines)."""

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Raw float outputs (N, classes) for a float32 NHWC batch."""

    @property
    @abstractmethod
    def ran_on(self) -> str:
        """What really runs the model: provider, delegate or device name."""

    @property
    def fell_back(self) -> bool:
        """True when a GPU or NPU was asked for and the CPU runs the model instead. Engines
        that refuse a device they cannot use (DeviceUnavailableError) never fall back."""
        return False

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for a preprocessed float32 NHWC batch."""
        out = np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)), np.float32)
        return to_probabilities(out)

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """The engine's own run call with ``batch`` already bound as its input.

        Calling the result runs the model once on ``batch`` and does nothing else: no input
        conversion or copy, no output fetched. That is what the engines' benchmark tools
        time (``litert-benchmark``, ``benchmark_app``, ``benchmark_model``), edgefer's
        ``latency_ms``; ``predict`` is the round trip an application makes (``call_ms``).
        It stays valid until the next ``predict`` with another batch size. A file with a
        static batch of 1 runs a larger batch as one call per image, as ``predict`` does.
        Engines without a lower-level call time ``predict``.
        """
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return lambda: self._run(x)

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 gray faces, with the model's own preprocessing."""
        return self.predict(self.info.preprocess(faces))


def run_in_chunks(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                  size: int) -> np.ndarray:
    """``run`` over ``batch`` in chunks of a file's static batch ``size``, the last padded."""
    out = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        count = len(chunk)
        if count < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, axis=0)])
        out.append(run(chunk)[:count])
    return np.concatenate(out)


def to_probabilities(out: np.ndarray) -> np.ndarray:
    """Softmax outputs pass through; logits (rows not summing to 1) get a softmax."""
    out = out.reshape(len(out), -1)
    sums = out.sum(axis=1)
    if np.all(out >= -1e-3) and np.allclose(sums, 1.0, atol=0.02):
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def resolve_info(path: Path, info: ModelInfo | None) -> ModelInfo:
    """The given info, else the file's own record, else an error saying what to pass."""
    if info is not None:
        return info
    from edgefer.artifacts import read_info

    found = read_info(path)
    if found is None:
        raise ModelError(f"{path} carries no edgefer metadata: give its preprocessing and "
                         "labels (--input-size, --channels, --scale, --offset, --labels)")
    return found


def checked_predict(runtime: Runtime, batch: np.ndarray) -> np.ndarray:
    """``runtime.predict(batch)`` for a model's first call: a model that does not take the
    input its edgefer metadata describes, or gives another number of outputs than it names
    classes, is one ModelError saying so instead of an engine's traceback."""
    from edgefer.errors import EdgeferError

    pre, classes = runtime.info.preprocess, runtime.info.classes
    described = (f"its metadata says {pre.size}x{pre.size}x{pre.channels} input, "
                 f"{len(classes)} classes")
    try:
        out = runtime.predict(batch)
    except EdgeferError:
        raise
    except Exception as exc:  # each engine has its own error types for a wrong input
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelError(f"{runtime.path} does not match its metadata ({described}): "
                         f"{reason}") from exc
    if out.shape[-1] != len(classes):
        raise ModelError(f"{runtime.path} does not match its metadata ({described}): it "
                         f"gives {out.shape[-1]} outputs")
    return out


def check_matches_info(runtime: Runtime) -> None:
    """Run one blank face through ``runtime``: see ``checked_predict``."""
    size = runtime.info.preprocess.size
    checked_predict(runtime, runtime.info.preprocess(np.zeros((1, size, size), np.uint8)))
