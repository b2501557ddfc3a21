"""FER2013's canonical class order (its label ids 0..6)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48


def class_index(name: str) -> int:
    """Index of a class name (case-insensitive) in FER2013's order."""
    try:
        return CLASS_NAMES.index(name.strip().lower())
    except ValueError:
        raise KeyError(name) from None
