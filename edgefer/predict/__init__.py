"""Face detection, alignment and expression classification on images, videos, cameras."""

from edgefer.predict.detect import Box, Detection, FaceDetector, HaarDetector, YuNetDetector
from edgefer.predict.recognizer import (
    DetectMode,
    Face,
    ImageTooSmall,
    Recognizer,
    RecognizerOptions,
)

__all__ = ["Box", "DetectMode", "Detection", "Face", "FaceDetector", "HaarDetector",
           "ImageTooSmall", "Recognizer", "RecognizerOptions", "YuNetDetector"]
