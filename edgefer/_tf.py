"""The one place that imports TensorFlow.

tf-keras and tensorflow-model-optimization need ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow is first imported, so every module reaches TensorFlow through here.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from edgefer.errors import EngineMissingError
from edgefer.quiet import configure, native_quiet, verbose

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# before TensorFlow's first import: its C++ logging reads this once (3: errors hidden too,
# e.g. "failed call to cuInit" on a machine without a GPU); edgefer -v shows them
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")


def _import(module: str, engine: str) -> ModuleType:
    if module in sys.modules:
        return sys.modules[module]
    try:
        # absl prints "All log messages before absl::InitializeLog()" and "Could not find
        # cuda drivers" on fd 2 while TensorFlow loads, whatever TF_CPP_MIN_LOG_LEVEL says
        with native_quiet():
            loaded = importlib.import_module(module)
    except ImportError as exc:
        raise EngineMissingError(engine, "train", str(exc)) from exc
    configure()
    return loaded


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
