"""Accuracy of predictions against FER2013 labels: numpy only, no scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefer.bench.results import Accuracy, ClassScore
from edgefer.errors import ConfigError
from edgefer.labels import CLASS_NAMES


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): rows the true class, columns the predicted one."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    if labels.shape != predicted.shape:
        raise ConfigError(f"{len(labels)} labels but {len(predicted)} predictions")
    for name, values in (("label", labels), ("prediction", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ConfigError(f"{name} outside 0..{num_classes - 1}")
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1, support) per class; 0 where a ratio is undefined."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return precision, recall, f1, support.astype(np.int64)


def score(labels: np.ndarray, predicted: np.ndarray,
          classes: Sequence[str] = CLASS_NAMES, split: str = "test") -> Accuracy:
    """Top-1, macro-F1 (over classes present in the labels), per-class scores, confusion."""
    classes = tuple(classes)
    confusion = confusion_matrix(labels, predicted, len(classes))
    precision, recall, f1, support = class_scores(confusion)
    total = int(confusion.sum())
    top1 = float(np.trace(confusion) / total) if total else 0.0
    present = support > 0
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    per_class = {name: ClassScore(precision=float(p), recall=float(r), f1=float(f),
                                  support=int(s))
                 for name, p, r, f, s in zip(classes, precision, recall, f1, support,
                                                 strict=True)}
    return Accuracy(top1=top1, macro_f1=macro_f1, per_class=per_class,
                    confusion=confusion.tolist(), classes=classes, images=total, split=split)


def agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share of images where two models pick the same top-1 class."""
    predicted = np.asarray(predicted).ravel()
    reference = np.asarray(reference).ravel()
    if predicted.shape != reference.shape:
        raise ConfigError(f"cannot compare {len(predicted)} predictions with "
                          f"{len(reference)} reference predictions")
    if not predicted.size:
        return 0.0
    return float(np.mean(predicted == reference))


def class_order(model_classes: Sequence[str], target: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Column indices that put a model's outputs in ``target`` order.

    ``probs[:, class_order(model_classes)]`` reorders a baseline given with its own
    label order (``--baseline-labels``) into FER2013's.
    """
    model = [c.strip().lower() for c in model_classes]
    wanted = [c.strip().lower() for c in target]
    if sorted(model) != sorted(wanted) or len(set(model)) != len(model):
        raise ConfigError(f"labels {', '.join(model_classes)} are not a reordering of "
                          f"{', '.join(target)}")
    return np.asarray([model.index(c) for c in wanted], dtype=np.int64)


def top1_in_order(probs: np.ndarray, model_classes: Sequence[str],
                  target: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Top-1 class ids in ``target`` order for probabilities in ``model_classes`` order."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(model_classes):
        raise ConfigError(f"model gives {probs.shape[-1]} outputs for "
                          f"{len(model_classes)} labels")
    return np.argmax(probs[:, class_order(model_classes, target)], axis=1)
