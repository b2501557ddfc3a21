"""One Runtime class per engine, all with ``load`` and ``predict(batch) -> probabilities``.

``load_runtime`` picks the engine: the one asked for by name, else the default of the
file's format (``edgefer.formats``); the engine table is ``edgefer.engines``.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgefer.engines import Device, engine_named
from edgefer.errors import ConfigError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.runtimes.base import Runtime, RuntimeOptions

__all__ = ["Device", "Runtime", "RuntimeOptions", "engine_for", "load_runtime"]


def engine_for(path: str | os.PathLike, engine: str | None = None) -> str:
    """The name of the engine that runs a model file: ``engine`` if its format lists it,
    else the format's default."""
    from edgefer.formats import format_of

    fmt = format_of(path)
    if engine is None:
        return fmt.default_engine
    if engine not in fmt.engines:
        raise ConfigError(f"{Path(path).name}: {engine_named(engine).label} does not run "
                          f"{fmt.label} models; the engines that do: {', '.join(fmt.engines)}")
    return engine


def load_runtime(path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
                 info: ModelInfo | None = None, engine: str | None = None) -> Runtime:
    """Load any model file edgefer knows with the engine for its format (or ``engine``)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    runtime_class = engine_named(engine_for(path, engine)).runtime_class()
    from edgefer.quiet import native_quiet

    with native_quiet():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate", ORT's notes
        return runtime_class.load(path, options, info)
