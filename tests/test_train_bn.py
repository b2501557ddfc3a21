"""edgefer.train.batchnorm: statistics recomputed for the final weights, nothing else."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _model():
    from edgefer._tf import keras

    k = keras()
    model = k.Sequential([k.layers.Input((4,)), k.layers.Dense(3, name="dense"),
                          k.layers.BatchNormalization(momentum=0.9, name="bn"),
                          k.layers.Dense(2, name="out")])
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(3, 50.0, np.float32))  # stale statistics
    bn.moving_variance.assign(np.full(3, 9.0, np.float32))
    return model, bn


def test_statistics_become_the_mean_over_the_batches_and_nothing_else_changes():
    from edgefer.train.batchnorm import recompute_batchnorm

    model, bn = _model()
    inputs = np.random.default_rng(1).normal(2.0, 3.0, (100, 4)).astype(np.float32)
    others = [w.numpy() for w in model.weights if "moving" not in w.name]
    assert recompute_batchnorm(model, inputs, batch_size=32, seed=0) == 1
    order = np.random.default_rng(0).permutation(100)
    hidden = model.get_layer("dense")(inputs).numpy()
    batches = [hidden[order[i:i + 32]] for i in (0, 32, 64)]  # the last 4 images left out
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([b.var(axis=0) for b in batches], axis=0), rtol=1e-3)
    assert bn.momentum == 0.9
    for before, weight in zip(others, [w for w in model.weights if "moving" not in w.name],
                              strict=True):
        np.testing.assert_array_equal(before, weight.numpy())


def test_too_few_images_or_no_batch_norm_does_nothing():
    from edgefer._tf import keras
    from edgefer.train.batchnorm import recompute_batchnorm

    model, bn = _model()
    assert recompute_batchnorm(model, np.zeros((10, 4), np.float32), batch_size=32) == 0
    assert bn.moving_mean.numpy()[0] == 50.0
    k = keras()
    plain = k.Sequential([k.layers.Input((4,)), k.layers.Dense(2)])
    assert recompute_batchnorm(plain, np.zeros((64, 4), np.float32), batch_size=32) == 0


@pytest.mark.parametrize(("after", "kept"), [(0.7, True), (0.5, True), (0.4, False)])
def test_kept_only_when_validation_is_no_worse(after, kept):
    from edgefer.train.batchnorm import recompute_if_better

    model, bn = _model()
    inputs = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    measured, recomputed = recompute_if_better(model, inputs, lambda: after, before=0.5)
    assert (measured, recomputed) == (after, kept)
    assert (bn.moving_mean.numpy()[0] == 50.0) is not kept


def test_recompute_bn_needs_the_default_strategy():
    from edgefer.errors import ConfigError
    from edgefer.train.config import load_config

    assert load_config(None, recompute_bn=True).recompute_bn
    with pytest.raises(ConfigError, match="recompute_bn runs with the default strategy"):
        load_config(None, recompute_bn=True, strategy="mirrored")
