"""Knowledge distillation: a trained model's (or an ensemble's) predictions as part of the
training targets.

The teacher predicts each training image once, before training, on the clean image (and
its mirror image, averaged), and the dataset then carries the mixed target with the image
through augmentation. The geometric augmentation here (small shifts, turns, zooms and the
mirror) keeps a face's expression, so the clean image's prediction stands for its
augmented copies, and the teacher costs one pass over the data instead of a forward pass
on every training step.
"""

from __future__ import annotations

import numpy as np

from edgefer.labels import NUM_CLASSES
from edgefer.train.config import Distill


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits): ``p ** (1 / T)``, normalised."""
    if temperature == 1.0:
        return probabilities
    logs = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    powered = np.exp(logs)
    return powered / powered.sum(axis=1, keepdims=True)


def mixed_targets(labels: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * one-hot(labels) + weight * teacher``, one row per image."""
    hard = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    return ((1.0 - weight) * hard + weight * teacher).astype(np.float32)


def teacher_probabilities(model, inputs: np.ndarray, flip: bool, batch: int = 256
                          ) -> np.ndarray:
    """The teacher's class probabilities for preprocessed ``inputs`` (N, H, W, C)."""
    probabilities = model.predict(inputs, batch_size=batch, verbose=0)
    if flip:
        mirrored = model.predict(inputs[:, :, ::-1], batch_size=batch, verbose=0)
        probabilities = (probabilities + mirrored) / 2.0
    return np.asarray(probabilities, dtype=np.float32)


def teacher_predictions(distill: Distill, images: np.ndarray) -> np.ndarray:
    """The teachers' softened class probabilities for ``images`` (raw, as loaded), averaged
    over the teachers; each teacher preprocesses them its own way."""
    from edgefer.model.store import load_model

    total = np.zeros((len(images), NUM_CLASSES), dtype=np.float32)
    for folder in distill.teachers:
        model, _stage, info = load_model(folder)
        total += teacher_probabilities(model, info.preprocess(images), distill.flip)
    return soften(total / len(distill.teachers), distill.temperature)
