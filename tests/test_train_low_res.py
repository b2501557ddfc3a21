"""Progressive resizing (``[low_res]``): the float stage's first epochs train on images
scaled down, the rest at the model's input size; the saved model is the fixed-size one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgefer.errors import ConfigError
from edgefer.train.config import LowRes, load_config


def test_low_res_section(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("epochs = 12\n[low_res]\nsize = 32\nepochs = 8\n")
    config = load_config(toml)
    assert config.low_res == LowRes(size=32, epochs=8)
    assert config.to_dict()["low_res"] == {"size": 32, "epochs": 8}
    assert load_config(None).low_res == LowRes()


@pytest.mark.parametrize("overrides, message", [
    ({"low_res.size": 32}, "needs both size and epochs"),
    ({"low_res.epochs": 3}, "needs both size and epochs"),
    ({"low_res.size": 8, "low_res.epochs": 2}, "at least 16 px"),
    ({"low_res.size": 48, "low_res.epochs": 2}, "below the model's input size"),
    ({"low_res.size": 32, "low_res.epochs": 30, "epochs": 30}, "must be fewer than"),
    ({"low_res.size": 32, "low_res.epochs": 2, "strategy": "multiworker"}, "does not run with"),
    ({"low_res.scale": 0.5}, r"unknown option\(s\) in \[low_res\]"),
])
def test_bad_low_res_options(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, **overrides)


def _fake_model(iterations: int):
    return SimpleNamespace(optimizer=SimpleNamespace(
        iterations=SimpleNamespace(numpy=lambda: iterations)))


class _Size:
    def __init__(self) -> None:
        self.value = -1

    def assign(self, value: int) -> None:
        self.value = value


@pytest.mark.tf
@pytest.mark.parametrize("done_steps, expected", [(0, 32), (2 * 10 + 5, 32), (3 * 10, 0)])
def test_size_at_the_start_follows_the_restored_step_count(done_steps, expected):
    from edgefer.train.run import LowResolutionEpochs

    size = _Size()
    callback = LowResolutionEpochs(size, 32, 3, steps_per_epoch=10, log=lambda *_: None)
    callback.set_model(_fake_model(done_steps))
    callback.on_train_begin()
    assert size.value == expected


@pytest.mark.tf
def test_size_switches_at_the_end_of_the_last_low_res_epoch():
    from edgefer.train.run import LowResolutionEpochs

    size, logs = _Size(), []
    callback = LowResolutionEpochs(size, 24, 2, steps_per_epoch=10, log=logs.append)
    seen = []
    for epoch in range(4):
        callback.on_epoch_end(epoch)
        seen.append(size.value)
    assert seen == [24, 0, 0, 0]  # set for the epoch after each one ends
    assert logs == ["from epoch 3: training images at full size"]


@pytest.mark.tf
def test_batches_follow_the_size_variable():
    from edgefer._tf import tf
    from edgefer.preprocess import Preprocess
    from edgefer.train.pipeline import make_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 48, 48), dtype=np.uint8)
    size = tf().Variable(32, dtype=tf().int32)
    ds = make_dataset(images, np.arange(20) % 7, Preprocess(), 8, training=True,
                      train_size=size)
    assert ds.element_spec[0].shape.as_list() == [8, None, None, 1]
    assert next(iter(ds))[0].shape == (8, 32, 32, 1)
    size.assign(0)
    assert next(iter(ds))[0].shape == (8, 48, 48, 1)


@pytest.mark.tf
def test_any_size_network_is_the_same_function_at_full_size():
    from edgefer.model.mobilenetv3 import ModelConfig, build_model
    from edgefer.model.store import with_any_input_size

    model = build_model(ModelConfig(width=0.25))
    any_size = with_any_input_size(model)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(any_size(x, training=False), model(x, training=False),
                               atol=1e-6)
    assert any_size.input_shape == (None, None, None, 1)
    assert any_size(x[:, :32, :32], training=False).shape == (3, 7)


@pytest.mark.tf
def test_a_run_trains_low_res_then_full_size(synthetic_fer, tmp_path):
    from edgefer.model.store import load_model
    from edgefer.train.run import Trainer

    logs: list[str] = []
    config = load_config(None, data=str(synthetic_fer), out=str(tmp_path), epochs=2,
                         qat_epochs=0, prune=False, batch_size=16, val_fraction=0.2,
                         **{"model.width": 0.25, "low_res.size": 24, "low_res.epochs": 1})
    summary = Trainer(config, log=logs.append).run()
    assert summary["stages"]["float"]["epochs_run"] == 2
    assert "epochs 1-1: training images at 24 px" in logs
    assert "from epoch 2: training images at full size" in logs
    model, _, _ = load_model(tmp_path / config.name / "float" / "model")
    assert model.input_shape == (None, 48, 48, 1)  # the saved model is the fixed-size one


def test_cli_options_reach_the_config_and_bad_ones_are_clear(tmp_path):
    from click.testing import CliRunner

    from edgefer.cli import main

    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path), "--low-res", "48",
                                       "--low-res-epochs", "2"])
    assert result.exit_code != 0 and "below the model's input size" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not any(tmp_path.iterdir())
