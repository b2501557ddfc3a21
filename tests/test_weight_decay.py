"""AdamW's decoupled weight decay shrinks kernels by weight_decay x lr per step and leaves
batch-norm scales and offsets and biases alone."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.train.config import Schedule, load_config


@pytest.mark.tf
def test_decay_shrinks_kernels_and_spares_batchnorm_and_biases():
    import tensorflow as tf

    from edgefer.model.mobilenetv3 import ModelConfig
    from edgefer.model.registry import build_model
    from edgefer.train.run import _optimizer

    model = build_model(ModelConfig())
    config = load_config(None, weight_decay=0.05, schedule=Schedule.PLATEAU.value)
    optimizer = _optimizer(config, 0.01, epochs=1, steps_per_epoch=1)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # zero gradients: Adam's own update is zero, so what changes is the decay alone
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])

    by_kind: dict[str, list[float]] = {}
    for variable, old in zip(variables, before, strict=True):
        kind = variable.name.split("/")[-1].split(":")[0]
        nonzero = np.abs(old) > 1e-6
        if nonzero.any():
            ratio = variable.numpy()[nonzero] / old[nonzero]
            by_kind.setdefault(kind, []).extend([ratio.min(), ratio.max()])
    np.testing.assert_allclose(by_kind["kernel"], 1 - 0.05 * 0.01, rtol=1e-6)
    np.testing.assert_allclose(by_kind["depthwise_kernel"], 1 - 0.05 * 0.01, rtol=1e-6)
    for kind in ("gamma", "beta", "bias"):
        if kind in by_kind:
            np.testing.assert_array_equal(by_kind[kind], 1.0)
    assert "gamma" in by_kind
