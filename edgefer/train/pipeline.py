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


def affine_augment(images, augment: Augment):
    """Flip, rotation, shift and zoom of each image in one resampling pass.

    Composing the four into one projective transform per image reads each image once
    instead of once per transform (Keras' Random* layers), and resamples it once, so
    the output is no blurrier than one bilinear step.
    """
    shape = _tf.shape(images)
    n = shape[0]
    h, w = _tf.cast(shape[1], _tf.float32), _tf.cast(shape[2], _tf.float32)
    angle = _tf.random.uniform([n], -1.0, 1.0) * (augment.rotation_deg * np.pi / 180.0)
    zoom = 1.0 + _tf.random.uniform([n], -augment.zoom, augment.zoom)
    flip = (_tf.where(_tf.random.uniform([n]) < 0.5, -1.0, 1.0) if augment.flip
            else _tf.ones([n]))
    tx = _tf.random.uniform([n], -augment.shift, augment.shift) * w
    ty = _tf.random.uniform([n], -augment.shift, augment.shift) * h
    cos, sin = _tf.cos(angle) * zoom, _tf.sin(angle) * zoom
    # output pixel (x, y) samples input pixel centre + A (x - cx, y - cy) + (tx, ty)
    a0, a1, b0, b1 = flip * cos, -sin, flip * sin, cos
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zeros = _tf.zeros([n])
    transforms = _tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return _tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def _has_geometry(augment: Augment) -> bool:
    return bool(augment.flip or augment.rotation_deg or augment.shift or augment.zoom)


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


def scaled_to(images, size):
    """``images`` scaled to ``size`` x ``size`` px (antialiased), or as they are where
    ``size`` is 0; ``size`` may be a variable read as each batch is made."""
    return _tf.cond(size > 0,
                    lambda: _tf.image.resize(images, _tf.stack([size, size]), antialias=True),
                    lambda: images)


def make_dataset(images: np.ndarray, labels: np.ndarray, preprocess: Preprocess,
                 batch_size: int, *, training: bool, augment: Augment = Augment(),
                 seed: int = 0, sample_weights: np.ndarray | None = None,
                 targets: np.ndarray | None = None, train_size=None):
    """Batches of (model input, one-hot labels[, sample weights]); ``targets``: (N, classes)
    rows to train towards instead of the one-hot labels (distillation's mixed targets);
    ``train_size``: an int32 variable, the size in px augmented batches are scaled to
    (0: unchanged; the batches' height and width are then unknown to the graph)."""
    x = preprocess(images)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels] if targets is None else targets
    tensors = (x, y) if sample_weights is None else (x, y, sample_weights.astype(np.float32))
    ds = _tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training and len(x) >= batch_size)
    if training:
        def apply(*batch):
            images_, labels_ = batch[0], batch[1]
            if _has_geometry(augment):
                images_ = affine_augment(images_, augment)
            if augment.erasing:
                images_ = random_erasing(images_, augment.erasing)
            if augment.mixup:
                images_, labels_ = _mixup(images_, labels_, augment.mixup)
            if train_size is not None:
                images_ = scaled_to(images_, train_size)
            return (images_, labels_, *batch[2:])

        ds = ds.map(apply, num_parallel_calls=_tf.data.AUTOTUNE)
    return _without_autotune_model(ds.prefetch(_tf.data.AUTOTUNE))


def _without_autotune_model(ds):
    """Turns off tf.data's model-based autotuning (AUTOTUNE still means the default
    parallelism and the prefetch buffer that grows when it runs dry). Its optimizer thread
    waits out an optimization period that grows to tens of seconds, and Keras's fit blocks
    on it when it drops an epoch's iterator: 45-50 s of an idle CPU between epochs here,
    a third of every 140 s epoch (docs/training.md, "The pause between epochs")."""
    options = _tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
