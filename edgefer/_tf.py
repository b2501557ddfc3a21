"""The one place that imports TensorFlow.

tf-keras and tensorflow-model-optimization need ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow is first imported, so every module reaches TensorFlow through here.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from edgefer.errors import EngineMissingError

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import(module: str, engine: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineMissingError(engine, "train", str(exc)) from exc


def tf() -> ModuleType:
    """The ``tensorflow`` module, or a clear error naming the extra to install."""
    return _import("tensorflow", "TensorFlow")


def keras() -> ModuleType:
    """The tf-keras (Keras 2) module that tfmot works with."""
    tf()
    return _import("tf_keras", "tf-keras")


def tfmot() -> ModuleType:
    """tensorflow-model-optimization, for QAT and pruning."""
    keras()
    return _import("tensorflow_model_optimization", "tensorflow-model-optimization")
