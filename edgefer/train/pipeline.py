"""tf.data input pipeline with face-appropriate augmentation, done on whole batches.

Augmenting a batch at a time (one vectorised op per transform) keeps the two CPU
cores on the model instead of on per-image Python work.
"""

from __future__ import annotations

import numpy as np

from edgefer._tf import keras, tf
from edgefer.labels import NUM_CLASSES
from edgefer.preprocess import Preprocess
from edgefer.train.config import Augment

_tf = tf()
_keras = keras()


def _augmenter(augment: Augment, seed: int):
    layers = _keras.layers
    steps = []
    if augment.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation_deg:
        steps.append(layers.RandomRotation(augment.rotation_deg / 360.0, fill_mode="reflect",
                                           seed=seed + 1))
    if augment.shift:
        steps.append(layers.RandomTranslation(augment.shift, augment.shift,
                                              fill_mode="reflect", seed=seed + 2))
    if augment.zoom:
        steps.append(layers.RandomZoom(augment.zoom, fill_mode="reflect", seed=seed + 3))
    return _keras.Sequential(steps, name="augment") if steps else None


def random_erasing(images, probability: float, max_fraction: float = 0.3):
    """Blank one random rectangle (up to ``max_fraction`` of each side) per chosen image."""
    shape = _tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    hf, wf = _tf.cast(h, _tf.float32), _tf.cast(w, _tf.float32)
    eh = _tf.cast(_tf.random.uniform([n], 0.1, max_fraction) * hf, _tf.int32)
    ew = _tf.cast(_tf.random.uniform([n], 0.1, max_fraction) * wf, _tf.int32)
    y0 = _tf.cast(_tf.random.uniform([n]) * _tf.cast(h - eh, _tf.float32), _tf.int32)
    x0 = _tf.cast(_tf.random.uniform([n]) * _tf.cast(w - ew, _tf.float32), _tf.int32)
    rows = _tf.range(h)[None, :, None]
    cols = _tf.range(w)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]))
    chosen = _tf.random.uniform([n]) < probability
    mask = inside & chosen[:, None, None]
    return _tf.where(mask[..., None], _tf.zeros_like(images), images)


def _mixup(images, labels, alpha: float):
    n = _tf.shape(images)[0]
    g1 = _tf.random.gamma([n], alpha)
    g2 = _tf.random.gamma([n], alpha)
    lam = g1 / (g1 + g2)
    order = _tf.random.shuffle(_tf.range(n))
    lam_x = lam[:, None, None, None]
    mixed = lam_x * images + (1 - lam_x) * _tf.gather(images, order)
    return mixed, lam[:, None] * labels + (1 - lam[:, None]) * _tf.gather(labels, order)


def make_dataset(images: np.ndarray, labels: np.ndarray, preprocess: Preprocess,
                 batch_size: int, *, training: bool, augment: Augment = Augment(),
                 seed: int = 0, sample_weights: np.ndarray | None = None):
    """Batches of (model input, one-hot labels[, sample weights])."""
    x = preprocess(images)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    tensors = (x, y) if sample_weights is None else (x, y, sample_weights.astype(np.float32))
    ds = _tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training and len(x) >= batch_size)
    if training:
        augmenter = _augmenter(augment, seed)

        def apply(*batch):
            images_, labels_ = batch[0], batch[1]
            if augmenter is not None:
                images_ = augmenter(images_, training=True)
            if augment.erasing:
                images_ = random_erasing(images_, augment.erasing)
            if augment.mixup:
                images_, labels_ = _mixup(images_, labels_, augment.mixup)
            return (images_, labels_, *batch[2:])

        ds = ds.map(apply, num_parallel_calls=_tf.data.AUTOTUNE)
    return ds.prefetch(_tf.data.AUTOTUNE)
