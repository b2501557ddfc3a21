"""Face detectors and the eye-aligned crop that turns a detection into a model input.

The default detector is OpenCV's Haar frontal-face cascade (shipped inside
opencv-python-headless 4.x under ``cv2.data.haarcascades``: nothing to download). It runs
on a downscaled copy of the image: a Haar window is 24 px, so an image shrunk by
``24 / min_face`` still finds every face of ``min_face`` pixels, at a fraction of the cost.
YuNet (``cv2.FaceDetectorYN``) is used where the user gives its ONNX model file; it also
returns eye landmarks, so no eye cascade runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edgefer.errors import ConfigError, ModelError

HAAR_WINDOW = 24  # the frontal-face cascades' training window, pixels
FACE_CASCADE = "haarcascade_frontalface_alt2.xml"  # faster than _default, as accurate
EYE_CASCADE = "haarcascade_eye.xml"
MAX_ALIGN_DEG = 30.0  # eye pairs tilted more than this are taken as false detections

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in image pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> Point:
        return (self.x + self.w / 2, self.y + self.h / 2)

    @property
    def area(self) -> int:
        return max(self.w, 0) * max(self.h, 0)

    def iou(self, other: Box) -> float:
        """Intersection over union, 0 for disjoint boxes."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def grown(self, fraction: float, width: int, height: int) -> Box:
        """This box with ``fraction`` of its size added on every side, clipped to the image."""
        dx, dy = round(self.w * fraction), round(self.h * fraction)
        x0, y0 = max(0, self.x - dx), max(0, self.y - dy)
        x1, y1 = min(width, self.x + self.w + dx), min(height, self.y + self.h + dy)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Detection:
    """One face found: its box, the detector's confidence, and the eye centres if found
    (left and right as they appear in the image)."""

    box: Box
    score: float = 1.0
    eyes: tuple[Point, Point] | None = None

    @property
    def eye_angle(self) -> float | None:
        """Tilt of the line through the eyes in degrees (positive: clockwise in the image)."""
        if self.eyes is None:
            return None
        (lx, ly), (rx, ry) = self.eyes
        return math.degrees(math.atan2(ry - ly, rx - lx))


class FaceDetector(Protocol):
    """Anything that finds faces in a BGR or gray uint8 image.

    With ``near``, only faces of about that box's size close to it are wanted (the cheap
    re-detection video tracking uses between full detections).
    """

    def detect(self, image: np.ndarray, near: Box | None = None) -> tuple[Detection, ...]: ...


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 image (H, W), (H, W, 1), BGR or BGRA as one gray channel."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ConfigError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ConfigError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A uint8 image as 3-channel BGR (gray is repeated, alpha dropped)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(to_gray(image), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def auto_min_face(height: int, width: int) -> int:
    """The smallest face looked for when none is given: 64 px (the model sees 48 px; smaller
    faces carry little expression), or 1/20 of the shorter side of large photos (a 12 MP
    photo would otherwise take seconds to scan)."""
    return max(64, min(height, width) // 20)


def _cascade(name: str) -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise ModelError("this OpenCV has no Haar cascades (OpenCV 5 removed them): install "
                         "opencv-python-headless<5, or give a YuNet model (--detector-model)")
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ModelError(f"cannot load OpenCV's Haar cascade {path}")
    return cascade


class HaarDetector:
    """OpenCV Haar cascades: frontal faces, then eyes inside each face for alignment."""

    def __init__(self, min_face: int | None = None, scale_factor: float = 1.15,
                 min_neighbors: int = 4, find_eyes: bool = True) -> None:
        if min_face is not None and min_face < 8:
            raise ConfigError(f"min_face must be at least 8 px, got {min_face}")
        if scale_factor <= 1.0:
            raise ConfigError(f"scale_factor must be above 1, got {scale_factor}")
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self._faces = _cascade(FACE_CASCADE)
        self._eyes = _cascade(EYE_CASCADE) if find_eyes else None

    def detect(self, image: np.ndarray, near: Box | None = None) -> tuple[Detection, ...]:
        gray = to_gray(image)
        boxes = self._faces_near(gray, near) if near is not None else self._faces_in(gray)
        boxes = sorted(boxes, key=lambda b: b.area, reverse=True)
        return tuple(Detection(b, 1.0, self._find_eyes(gray, b)) for b in boxes)

    def _faces_in(self, gray: np.ndarray) -> list[Box]:
        min_face = self.min_face or auto_min_face(*gray.shape)
        return self._scan(gray, min(1.0, HAAR_WINDOW / min_face), 0, 0, None)

    def _faces_near(self, gray: np.ndarray, near: Box) -> list[Box]:
        """Faces of 0.7..1.4 times ``near``'s size within half a box of it."""
        roi = near.grown(0.5, gray.shape[1], gray.shape[0])
        if roi.area == 0:
            return []
        side = max(near.w, near.h)
        scale = min(1.0, HAAR_WINDOW * 1.3 / (0.7 * side))  # smallest wanted face -> ~31 px
        sub = gray[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
        found = self._scan(sub, scale, roi.x, roi.y, round(1.4 * side * scale))
        return [b for b in found if b.w >= 0.7 * side]

    def _scan(self, gray: np.ndarray, scale: float, dx: int, dy: int,
              max_size: int | None) -> list[Box]:
        small = gray if scale >= 1.0 else cv2.resize(
            gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(small.shape) < HAAR_WINDOW:
            return []
        kwargs = {"maxSize": (max_size, max_size)} if max_size else {}
        rects = self._faces.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(HAAR_WINDOW, HAAR_WINDOW), **kwargs)
        return [Box(round(x / scale) + dx, round(y / scale) + dy, round(w / scale),
                    round(h / scale)) for (x, y, w, h) in np.asarray(rects).reshape(-1, 4)]

    def _find_eyes(self, gray: np.ndarray, box: Box) -> tuple[Point, Point] | None:
        """Eye centres from the eye cascade on the face's upper half, resized so the face is
        72 px wide (eyes ~22 px against the cascade's 20 px window: a few scales only)."""
        if self._eyes is None or box.w < 40:
            return None
        top, bottom = box.y + round(0.15 * box.h), box.y + round(0.6 * box.h)
        region = gray[max(0, top):max(0, bottom), max(0, box.x):box.x + box.w]
        if region.size == 0:
            return None
        scale = min(2.0, 72.0 / box.w)
        small = cv2.resize(region, None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rects = self._eyes.detectMultiScale(small, scaleFactor=1.15, minNeighbors=3,
                                            minSize=(20, 20), maxSize=(32, 32))
        centres = [(max(0, box.x) + (x + w / 2) / scale, max(0, top) + (y + h / 2) / scale, w)
                   for (x, y, w, h) in np.asarray(rects).reshape(-1, 4)]
        return pick_eye_pair(centres, box)


def pick_eye_pair(centres: list[tuple[float, float, float]], box: Box
                  ) -> tuple[Point, Point] | None:
    """The largest eye candidate (x, y, size) in each half of the face, if the pair is
    plausible: apart by 25..70% of the face width and tilted less than MAX_ALIGN_DEG."""
    mid = box.x + box.w / 2
    left = [c for c in centres if c[0] < mid]
    right = [c for c in centres if c[0] >= mid]
    if not left or not right:
        return None
    (lx, ly, _), (rx, ry, _) = max(left, key=lambda c: c[2]), max(right, key=lambda c: c[2])
    distance = math.hypot(rx - lx, ry - ly)
    angle = abs(math.degrees(math.atan2(ry - ly, rx - lx)))
    if not 0.25 * box.w <= distance <= 0.7 * box.w or angle > MAX_ALIGN_DEG:
        return None
    return (lx, ly), (rx, ry)


class YuNetDetector:
    """OpenCV's YuNet CNN detector (cv2.FaceDetectorYN) from a user-given ONNX file
    (e.g. face_detection_yunet_2023mar.onnx from the OpenCV model zoo)."""

    def __init__(self, model: str | os.PathLike, score_threshold: float = 0.7,
                 min_face: int | None = None) -> None:
        model = Path(model)
        if not model.is_file():
            raise ModelError(f"YuNet model not found: {model}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ModelError("this OpenCV has no cv2.FaceDetectorYN (needs OpenCV >= 4.8)")
        try:
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold,
                                                  0.3, 50)
        except cv2.error as exc:
            raise ModelError(f"{model}: OpenCV cannot load it as a YuNet model ({exc})") from exc
        self.model = model
        self.min_face = min_face or 0
        self._size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray, near: Box | None = None) -> tuple[Detection, ...]:
        bgr = to_bgr(image)
        dx = dy = 0
        if near is not None:
            roi = near.grown(0.5, bgr.shape[1], bgr.shape[0])
            bgr, dx, dy = bgr[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w], roi.x, roi.y
            if bgr.size == 0:
                return ()
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(np.ascontiguousarray(bgr))
        found = parse_yunet(rows, dx, dy)
        found = [d for d in found if max(d.box.w, d.box.h) >= self.min_face]
        if near is not None:
            side = max(near.w, near.h)
            found = [d for d in found if 0.7 * side <= max(d.box.w, d.box.h) <= 1.4 * side]
        return tuple(sorted(found, key=lambda d: d.box.area, reverse=True))


def parse_yunet(rows: np.ndarray | None, dx: int = 0, dy: int = 0) -> list[Detection]:
    """YuNet's output rows (x, y, w, h, right eye x, y, left eye x, y, nose, mouth
    corners, score; "right eye" is the subject's, on the image's left) as Detections."""
    if rows is None:
        return []
    found = []
    for row in np.asarray(rows, np.float32).reshape(-1, 15):
        x, y, w, h = (float(v) for v in row[:4])
        eyes = ((float(row[4]) + dx, float(row[5]) + dy), (float(row[6]) + dx, float(row[7]) + dy))
        if eyes[0][0] > eyes[1][0]:
            eyes = (eyes[1], eyes[0])
        box = Box(round(x) + dx, round(y) + dy, round(w), round(h))
        found.append(Detection(box, float(row[14]), eyes))
    return found


def make_detector(model: str | os.PathLike | None = None,
                  min_face: int | None = None) -> FaceDetector:
    """YuNet when a model file is given, else the Haar cascades."""
    if model is not None:
        return YuNetDetector(model, min_face=min_face)
    return HaarDetector(min_face=min_face)


def face_crop(gray: np.ndarray, detection: Detection, size: int, margin: float = 0.1,
              align: bool = True) -> np.ndarray:
    """The face as a ``size`` x ``size`` uint8 crop: a square around the box with ``margin``
    of its side added on each side, rotated so the eyes are level when they were found.
    Pixels outside the image repeat the border."""
    box = detection.box
    cx, cy = box.center
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    angle = detection.eye_angle if align else None
    out = max(size, round(side))  # warp at native resolution, then shrink with area averaging
    matrix = cv2.getRotationMatrix2D((cx, cy), angle or 0.0, out / side)
    matrix[0, 2] += out / 2 - cx
    matrix[1, 2] += out / 2 - cy
    crop = cv2.warpAffine(gray, matrix, (out, out), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if out != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop
