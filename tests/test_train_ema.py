"""The moving average of the weights (``--ema``): validation and the epoch's end see the
average of the steps so far, and training goes on from the raw weights."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.errors import ConfigError
from edgefer.train.config import load_config


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_ema_out_of_range_is_refused(momentum):
    with pytest.raises(ConfigError, match="ema must be in"):
        load_config(None, ema=momentum)


@pytest.mark.tf
def test_validation_sees_the_average_and_training_the_raw_weights():
    from edgefer._tf import keras, tf
    from edgefer.train.run import WeightAverage

    k = keras()
    momentum = 0.9

    class Spy(k.callbacks.Callback):
        """Runs after WeightAverage: records what the model holds at each point."""

        def __init__(self) -> None:
            super().__init__()
            self.start, self.steps, self.epoch_ends, self.epoch_begins = None, [], [], []
            self.raw_scores = []

        def _now(self):
            return [w.numpy().copy() for w in self.model.weights]

        def on_train_begin(self, logs=None):
            self.start = self._now()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_begins.append(self._now())

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(self._now())

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_ends.append(self._now())
            self.raw_scores.append(logs["raw_val_accuracy"])

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 3, 64)
    model = k.Sequential([k.layers.Input((5,)), k.layers.Dense(8, activation="relu"),
                          k.layers.BatchNormalization(), k.layers.Dense(3)])
    model.compile(k.optimizers.SGD(0.5), k.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"])
    spy = Spy()
    validation = tf().data.Dataset.from_tensor_slices((x, y)).batch(16)
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[WeightAverage(momentum, raw_validation=validation), spy])

    average = [w.copy() for w in spy.start]
    for step, raw in enumerate(spy.steps, start=1):
        m = min(momentum, (1 + step) / (10 + step))
        average = [m * a + (1 - m) * r for a, r in zip(average, raw, strict=True)]
        if step == 4:  # the end of epoch 1: 64 images in batches of 16
            for held, expected in zip(spy.epoch_ends[0], average, strict=True):
                np.testing.assert_allclose(held, expected, rtol=1e-5, atol=1e-6)
    for held, expected in zip(spy.epoch_ends[1], average, strict=True):
        np.testing.assert_allclose(held, expected, rtol=1e-5, atol=1e-6)
    # epoch 2 trains on from the raw weights of epoch 1's last step, not from the average
    for held, raw in zip(spy.epoch_begins[1], spy.steps[3], strict=True):
        np.testing.assert_array_equal(held, raw)
    last_step = zip(spy.epoch_ends[1], spy.steps[-1], strict=True)
    assert not all(np.allclose(held, raw) for held, raw in last_step)
    # the raw weights' accuracy, measured with the raw weights
    model.set_weights(spy.steps[-1])
    raw_accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))
    assert spy.raw_scores[1] == pytest.approx(raw_accuracy)


@pytest.mark.tf
def test_qat_average_leaves_the_quantizer_ranges_alone():
    """QAT and PQAT average the weights too, but not the fake-quant ranges (their own
    moving averages) nor step counters."""
    from edgefer._tf import keras
    from edgefer.model import qat
    from edgefer.train.run import WeightAverage

    k = keras()
    inputs = k.layers.Input((8, 8, 1))
    x = k.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.ReLU()(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = qat.quantize(k.Model(inputs, k.layers.Dense(3)(x)))
    average = WeightAverage(0.9)
    average.set_model(model)
    names = [w.name.split("/")[-1] for w in average._weights()]
    assert any(n.startswith("kernel") for n in names)
    assert any(n.startswith("moving_mean") for n in names)
    assert not [n for n in names if n.split(":")[0].endswith(("_min", "_max", "optimizer_step"))]
    floating = [w for w in model.weights if w.dtype.is_floating]
    assert len(names) < len(floating)  # the ranges exist, and are left out
