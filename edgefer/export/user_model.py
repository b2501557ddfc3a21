"""Float models that edgefer did not train: a Keras file (``.keras``, ``.h5``), a
SavedModel folder written by Keras, or an ONNX file, with the preprocessing given on
the command line (edgefer's own models record theirs).

Input is NHWC, one image of ``size`` x ``size`` x ``channels`` (gray repeated for 3),
``pixel * scale + offset``; the outputs are class probabilities (or scores: the top-1
is what the parity gate and the benchmarks compare).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgefer.errors import ConfigError, ModelError
from edgefer.labels import CLASS_NAMES
from edgefer.preprocess import ModelInfo, Preprocess

KERAS_SUFFIXES = (".keras", ".h5")


@dataclass(frozen=True)
class InputSpec:
    """What the command line says about a user model's input and output."""

    scale: float | None = None
    offset: float | None = None
    labels: tuple[str, ...] | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.scale, self.offset, self.labels))


def is_user_model(path: str | os.PathLike) -> bool:
    path = Path(path)
    if path.is_dir():
        return (path / "saved_model.pb").is_file()
    return path.suffix.lower() in (*KERAS_SUFFIXES, ".onnx")


def file_sha256(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_info(path: Path, shape: tuple, spec: InputSpec) -> ModelInfo:
    """The ModelInfo of a user model whose input is ``shape`` (batch first)."""
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] not in (1, 3):
        raise ConfigError(f"{path}: the input is {list(shape)}; edgefer exports models "
                          "taking square NHWC images with 1 or 3 channels")
    if spec.scale is None or spec.offset is None:
        raise ConfigError(f"{path} does not record its preprocessing: give --input-scale and "
                          "--input-offset (input = pixel * scale + offset, e.g. 0.00784 and "
                          "-1 for [-1, 1], 1 and 0 for 0..255)")
    labels = spec.labels or CLASS_NAMES
    preprocess = Preprocess(size=int(shape[1]), channels=int(shape[3]),
                            scale=float(spec.scale), offset=float(spec.offset))
    return ModelInfo(classes=tuple(labels), preprocess=preprocess, name=path.stem)


def load_keras(path: Path):
    """A tf-keras model from a ``.keras``/``.h5`` file or a SavedModel folder, compiled
    for nothing and with Keras' safe mode (no stored Python runs)."""
    from edgefer._tf import keras
    from edgefer.model.layers import CUSTOM_OBJECTS

    k = keras()
    try:
        if path.is_dir():
            return k.models.load_model(str(path), compile=False)
        return k.models.load_model(str(path), compile=False, custom_objects=CUSTOM_OBJECTS,
                                   safe_mode=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: Keras cannot load it ({' '.join(str(exc).split())[:300]})"
                         ) from exc


def load_onnx(path: Path):
    from edgefer.engines import require

    onnx = require("onnx", "onnx")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and more
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise ModelError(f"{path}: edgefer exports models with one input and one output")
    return proto


def onnx_input_shape(proto) -> tuple:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value else None for d in dims)
