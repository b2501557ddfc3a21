"""The one place that imports TensorFlow.

tf-keras and tensorflow-model-optimization need ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow is first imported, so every module reaches TensorFlow through here.
"""

from __future__ import annotations

import os
from types import ModuleType

from edgefer.errors import EngineMissingError

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tf() -> ModuleType:
    """The ``tensorflow`` module, or a clear error naming the extra to install."""
    try:
        import tensorflow
    except ImportError as exc:
        raise EngineMissingError("TensorFlow", "train", str(exc)) from exc
    return tensorflow


def keras() -> ModuleType:
    """The tf-keras (Keras 2) module that tfmot works with."""
    tf()
    try:
        import tf_keras
    except ImportError as exc:
        raise EngineMissingError("tf-keras", "train", str(exc)) from exc
    return tf_keras


def tfmot() -> ModuleType:
    """tensorflow-model-optimization, for QAT and pruning."""
    keras()
    try:
        import tensorflow_model_optimization
    except ImportError as exc:
        raise EngineMissingError("tensorflow-model-optimization", "train", str(exc)) from exc
    return tensorflow_model_optimization
