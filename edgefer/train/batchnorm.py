"""Batch-norm statistics recomputed for the weights a stage ends with.

During training each batch-norm layer keeps an exponential moving average of its batch
statistics: of augmented images, and of weights that kept changing. With a weight average
(``ema``) it is worse: the averaged statistics are not the statistics of the averaged
weights. One pass over the clean training images in training mode, with each layer's
momentum set so that the moving statistics become the plain mean over the batches, gives
the statistics the final weights actually produce (SWA's ``bn_update``). Nothing else
changes: weights, QAT quantizer ranges and pruning masks are restored after the pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgefer._tf import keras


def batchnorm_layers(model) -> list:
    """Every batch-norm layer of ``model``, also inside QAT and pruning wrappers."""
    kind = keras().layers.BatchNormalization
    return [layer for layer in model.submodules if isinstance(layer, kind)]


def recompute_batchnorm(model, inputs: np.ndarray, batch_size: int = 256,
                        seed: int = 0) -> int:
    """Set every batch-norm layer's moving mean and variance to their mean over the
    batches of ``inputs`` (preprocessed, in a fixed shuffled order; a last partial batch is
    left out). Returns the number of batch-norm layers recomputed (0: nothing done)."""
    layers = batchnorm_layers(model)
    if not layers or len(inputs) < batch_size:
        return 0
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    kept = [w for w in model.weights if id(w) not in statistics]
    saved = [w.numpy() for w in kept]
    momenta = [layer.momentum for layer in layers]
    order = np.random.default_rng(seed).permutation(len(inputs))
    try:
        for k, start in enumerate(range(0, len(order) - batch_size + 1, batch_size), start=1):
            for layer in layers:
                # new = momentum * old + (1 - momentum) * batch: the running mean of k batches
                layer.momentum = (k - 1) / k
            model(inputs[order[start:start + batch_size]], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for weight, value in zip(kept, saved, strict=True):
            weight.assign(value)
    return len(layers)


def statistics_of(model) -> list[np.ndarray]:
    return [v.numpy() for layer in batchnorm_layers(model)
            for v in (layer.moving_mean, layer.moving_variance)]


def restore_statistics(model, values: list[np.ndarray]) -> None:
    variables = [v for layer in batchnorm_layers(model)
                 for v in (layer.moving_mean, layer.moving_variance)]
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def recompute_if_better(model, inputs: np.ndarray, accuracy: Callable[[], float],
                        before: float) -> tuple[float, bool]:
    """Recompute the statistics and keep them when ``accuracy()`` (validation) is at least
    ``before``, else put the trained ones back. Returns (the recomputed statistics'
    accuracy, whether they were kept); (``before``, False) when there was nothing to do."""
    old = statistics_of(model)
    if not recompute_batchnorm(model, inputs):
        return before, False
    after = accuracy()
    if after < before:
        restore_statistics(model, old)
    return after, after >= before
