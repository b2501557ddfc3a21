"""How a gray face becomes a model input: defined once, recorded with every model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgefer.errors import ConfigError
from edgefer.labels import CLASS_NAMES, IMAGE_SIZE


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``size`` x ``size``, then ``pixel * scale + offset``, ``channels`` deep.

    edgefer's own models take [-1, 1] (scale 1/127.5, offset -1); baselines given on
    the command line describe theirs with the same three numbers.
    """

    size: int = IMAGE_SIZE
    channels: int = 1
    scale: float = 1.0 / 127.5
    offset: float = -1.0

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 512:
            raise ConfigError(f"input size must be 16..512, got {self.size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        for name, value in (("scale", self.scale), ("offset", self.offset)):
            if not math.isfinite(value):
                raise ConfigError(f"input {name} must be a finite number, got {value}")
        if self.scale == 0:
            raise ConfigError("input scale must not be 0 (every face would be the same)")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        try:
            return cls(
                size=int(data["size"]),
                channels=int(data["channels"]),
                scale=float(data["scale"]),
                offset=float(data["offset"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid preprocessing record {data!r}: {exc}") from exc

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """uint8 gray faces (N, H, W) or (H, W) -> float32 NHWC model input."""
        faces = np.asarray(faces)
        if faces.ndim == 2:
            faces = faces[None]
        if faces.ndim != 3:
            raise ConfigError(f"expected gray faces shaped (N, H, W), got {faces.shape}")
        if faces.shape[1:] != (self.size, self.size):
            faces = resize_faces(faces, self.size)
        x = faces.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        x = x[..., None]
        if self.channels == 3:
            x = np.repeat(x, 3, axis=-1)
        return x


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of gray faces with area (down) or linear (up) interpolation."""
    import cv2

    interp = cv2.INTER_AREA if faces.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in faces])


@dataclass(frozen=True)
class ModelInfo:
    """What every edgefer artifact records about itself, so a file is all one needs."""

    classes: tuple[str, ...] = CLASS_NAMES
    preprocess: Preprocess = Preprocess()
    precision: str = "fp32"
    source_sha256: str = ""
    edgefer_version: str = ""
    name: str = "edgefer"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_dict(),
            "precision": self.precision,
            "source_sha256": self.source_sha256,
            "edgefer_version": self.edgefer_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        try:
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                preprocess=Preprocess.from_dict(data["preprocess"]),
                precision=str(data.get("precision", "fp32")),
                source_sha256=str(data.get("source_sha256", "")),
                edgefer_version=str(data.get("edgefer_version", "")),
                name=str(data.get("name", "edgefer")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"invalid edgefer metadata: missing {exc}") from exc
