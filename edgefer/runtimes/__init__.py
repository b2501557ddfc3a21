"""One Runtime class per engine, all with ``load`` and ``predict(batch) -> probabilities``."""

from edgefer.runtimes.base import Device, Engine, Runtime, RuntimeOptions, engine_for, load_runtime

__all__ = ["Device", "Engine", "Runtime", "RuntimeOptions", "engine_for", "load_runtime"]
