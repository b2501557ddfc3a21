"""Boxes and labels drawn on images, and files written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edgefer.errors import DataError
from edgefer.outputs import write_bytes
from edgefer.predict.detect import to_bgr
from edgefer.predict.recognizer import Face

# BGR, one per FER2013 class; other class names take the fallback palette in order.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (0, 200, 255),
    "sad": (200, 120, 40),
    "surprise": (255, 200, 0),
    "neutral": (180, 180, 180),
}
_FALLBACK = ((0, 128, 255), (255, 0, 128), (128, 255, 0), (255, 128, 128), (128, 128, 255))
MIN_CANVAS = 240  # smaller images (face crops) are enlarged so labels stay legible


def class_color(name: str, classes: Sequence[str] = ()) -> tuple[int, int, int]:
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    index = list(classes).index(name) if name in classes else abs(hash(name))
    return _FALLBACK[index % len(_FALLBACK)]


def draw_faces(image: np.ndarray, faces: Sequence[Face],
               tracks: Sequence[int] | None = None) -> np.ndarray:
    """A BGR copy of ``image`` with each face's box and "label 0.93" (and "#track")."""
    canvas = to_bgr(image).copy()
    zoom = 1.0
    if min(canvas.shape[:2]) < MIN_CANVAS:
        zoom = MIN_CANVAS / min(canvas.shape[:2])
        canvas = cv2.resize(canvas, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    font_scale = max(0.4, min(canvas.shape[:2]) / 800)
    for i, face in enumerate(faces):
        color = class_color(face.label, face.classes)
        x, y = round(face.box.x * zoom), round(face.box.y * zoom)
        w, h = round(face.box.w * zoom), round(face.box.h * zoom)
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), color, thickness + 1)
        text = f"{face.label} {face.confidence:.2f}"
        if tracks is not None:
            text = f"#{tracks[i]} {text}"
        _label(canvas, text, x, y, color, font_scale, thickness)
    return canvas


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int],
           font_scale: float, thickness: int) -> None:
    """Text on a filled box above (x, y), or just inside the top when there is no room."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, font_scale, thickness)
    pad = max(2, thickness * 2)
    top = y - th - base - 2 * pad
    if top < 0:
        top = max(0, y)
    x = min(max(0, x), max(0, canvas.shape[1] - tw - 2 * pad))
    cv2.rectangle(canvas, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(canvas, text, (x + pad, top + pad + th), font, font_scale, ink, thickness,
                cv2.LINE_AA)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode ``image`` by ``path``'s suffix and write it atomically (temp, then rename)."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise DataError(f"OpenCV cannot encode an image as {path.suffix!r} for {path}")
    write_bytes(path, data.tobytes())
    return path
