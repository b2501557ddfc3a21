"""The pipeline an app runs: detect faces, align and crop them, classify them.

    from edgefer.predict import Recognizer

    recognizer = Recognizer.from_file("edgefer-mnv3s-int8.tflite")
    for face in recognizer.recognize(bgr_frame):
        print(face.box, face.label, face.confidence)

Works with every engine edgefer loads (LiteRT alone is enough: no TensorFlow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from edgefer.errors import ConfigError, DataError
from edgefer.predict.detect import (
    Box,
    Detection,
    FaceDetector,
    face_crop,
    make_detector,
    to_gray,
)
from edgefer.preprocess import ModelInfo
from edgefer.runtimes import Runtime, RuntimeOptions, load_runtime
from edgefer.runtimes.base import check_matches_info


class ImageTooSmall(DataError):
    """An image whose shorter side is below Recognizer.min_side: no face fits in it."""


class DetectMode(str, Enum):
    AUTO = "auto"  # detect, except in images small enough to be face crops already
    ALWAYS = "always"  # detect in every image
    NEVER = "never"  # every image is one face crop


@dataclass(frozen=True)
class RecognizerOptions:
    """How images become faces. ``min_face`` None: 64 px, or 1/20 of a large photo's
    shorter side. ``margin``: fraction of the face box added on each side of the crop."""

    detect: DetectMode = DetectMode.AUTO
    min_face: int | None = None
    margin: float = 0.1
    align: bool = True
    crop_max_side: int = 100  # AUTO: squarish images up to this size are face crops
    detector_model: Path | None = None  # a YuNet .onnx; None: Haar cascades

    def __post_init__(self) -> None:
        object.__setattr__(self, "detect", DetectMode(self.detect))
        if self.detector_model is not None:
            object.__setattr__(self, "detector_model", Path(self.detector_model))
        if self.min_face is not None and self.min_face < 8:
            raise ConfigError(f"min_face must be at least 8 px, got {self.min_face}")
        if not 0.0 <= self.margin <= 1.0:
            raise ConfigError(f"margin must be 0..1, got {self.margin}")
        if self.crop_max_side < 1:
            raise ConfigError(f"crop_max_side must be positive, got {self.crop_max_side}")


@dataclass(frozen=True)
class Face:
    """One face: its box in image pixels, the most likely class, every class's
    probability (in ``classes`` order), and the detector's confidence (1.0 from the Haar
    cascade, which gives none, and for images taken whole as a face crop)."""

    box: Box
    label: str
    probabilities: tuple[float, ...]
    score: float
    classes: tuple[str, ...]
    aligned: bool = False

    @property
    def confidence(self) -> float:
        """The probability of ``label``."""
        return max(self.probabilities)

    def probability(self, name: str) -> float:
        return self.probabilities[self.classes.index(name)]

    def to_dict(self) -> dict:
        return {
            "box": self.box.to_list(),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": {c: round(p, 4)
                              for c, p in zip(self.classes, self.probabilities, strict=True)},
            "score": round(self.score, 4),
            "aligned": self.aligned,
        }


def is_face_crop(shape: tuple[int, ...], max_side: int) -> bool:
    """Small, about square images (FER2013's 48x48, RAF-DB's 100x100) are faces already."""
    h, w = shape[:2]
    return max(h, w) <= max_side and 0.75 <= w / h <= 1.34


class Recognizer:
    """A model plus a face detector: ``recognize(image)`` gives the faces in a BGR or gray
    uint8 image. ``detect``, ``crops`` and ``classify`` are its steps, for callers that
    track faces between detections or time each step."""

    def __init__(self, runtime: Runtime, options: RecognizerOptions = RecognizerOptions(),
                 detector: FaceDetector | None = None) -> None:
        self.runtime = runtime
        self.options = options
        self._detector = detector

    @classmethod
    def from_file(cls, model: str | os.PathLike, threads: int | None = 1,
                  options: RecognizerOptions = RecognizerOptions(),
                  detector: FaceDetector | None = None,
                  engine: str | None = None) -> Recognizer:
        """Load any model edgefer runs (.tflite, .onnx, .xml, .ncnn.param, .mnn, Keras folder);
        ``threads`` is the model's thread count (None: the engine's default); ``engine``
        one its format lists (None: the format's default). A model that does not match
        its metadata (input size, channels, outputs) is a ModelError here."""
        runtime = load_runtime(model, RuntimeOptions(threads=threads), engine=engine)
        check_matches_info(runtime)
        return cls(runtime, options, detector)

    @property
    def info(self) -> ModelInfo:
        return self.runtime.info

    @property
    def classes(self) -> tuple[str, ...]:
        return self.runtime.info.classes

    @property
    def detector(self) -> FaceDetector:
        """The face detector, made on first use (crop-only runs never load one)."""
        if self._detector is None:
            self._detector = make_detector(self.options.detector_model, self.options.min_face)
        return self._detector

    @property
    def min_side(self) -> int:
        """The shortest image side that can hold a face: half the model's input size (24 px
        for FER2013's 48). A face crop smaller than that is blown up more than 2x per side
        into the model, so any answer it gives is made up (and the Haar cascade finds
        no face below its 24 px window, whatever ``min_face`` says)."""
        return max(1, self.info.preprocess.size // 2)

    def check_size(self, image: np.ndarray, name: str = "image") -> None:
        """Raise ImageTooSmall (a DataError naming ``name``) if ``image``'s shorter side is
        below ``min_side``, whichever detect mode is set."""
        h, w = image.shape[:2]
        if min(h, w) < self.min_side:
            raise ImageTooSmall(f"{name}: too small for a face ({w}x{h} px; need at least "
                                f"{self.min_side} px)")

    def load_detector(self) -> None:
        """Load the face detector now unless the detect mode never uses one, so a broken
        ``detector_model`` is one ModelError before any image is run."""
        if self.options.detect is not DetectMode.NEVER:
            _ = self.detector

    def takes_whole(self, image: np.ndarray) -> bool:
        """Whether ``image`` is classified whole, as one face crop, without detection."""
        mode = self.options.detect
        if mode is DetectMode.AUTO:
            return is_face_crop(image.shape, self.options.crop_max_side)
        return mode is DetectMode.NEVER

    def detect(self, image: np.ndarray, near: Box | None = None) -> tuple[Detection, ...]:
        """Faces found in ``image`` (the whole image for a face crop), largest first;
        ImageTooSmall for an image too small to hold a face (see ``min_side``)."""
        self.check_size(image)
        if self.takes_whole(image):
            return (Detection(Box(0, 0, image.shape[1], image.shape[0])),)
        return self.detector.detect(image, near)

    def crops(self, image: np.ndarray, detections: tuple[Detection, ...]) -> np.ndarray:
        """uint8 gray model-size crops (N, S, S) of ``detections``."""
        gray = to_gray(image)
        size = self.info.preprocess.size
        if self.takes_whole(image):
            return np.stack([face_crop(gray, d, size, margin=0.0, align=False)
                             for d in detections])
        return np.stack([face_crop(gray, d, size, self.options.margin, self.options.align)
                         for d in detections])

    def classify(self, image: np.ndarray, detections: tuple[Detection, ...]
                 ) -> tuple[Face, ...]:
        """Faces for given detections, in the same order (one batch through the model)."""
        if not detections:
            return ()
        probabilities = self.runtime.predict_faces(self.crops(image, detections))
        return tuple(self._face(d, p) for d, p in zip(detections, probabilities, strict=True))

    def recognize(self, image: np.ndarray) -> tuple[Face, ...]:
        """Every face in a BGR or gray uint8 image, largest first; () when none is found."""
        return self.classify(image, self.detect(image))

    def _face(self, detection: Detection, probabilities: np.ndarray) -> Face:
        classes = self.classes
        aligned = (self.options.align and detection.eyes is not None
                   and (detection.eye_angle or 0.0) != 0.0)
        return Face(box=detection.box, label=classes[int(np.argmax(probabilities))],
                    probabilities=tuple(float(p) for p in probabilities),
                    score=detection.score, classes=classes, aligned=aligned)
