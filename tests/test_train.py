"""Training: config parsing, the stages on tiny synthetic data, resume, and tf.distribute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefer.errors import ConfigError
from edgefer.train.config import Loss, load_config

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_parses_and_overrides():
    config = load_config(REPO / "models" / "edgefer-mnv3s.toml", epochs=3, **{"model.width": 0.5})
    assert config.epochs == 3 and config.model.width == 0.5
    assert config.model.variant.value == "small"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"loss": "hinge"}, "loss must be one of"),
    ({"bogus": 1}, "unknown training option"),
    ({"target_sparsity": 1.5}, "target_sparsity"),
    ({"model.width": 9.0}, "width must be"),
    ({"limit": 0}, "limit must be at least 1, got 0"),
    ({"limit": -5}, "limit must be at least 1, got -5"),
    ({"epochs": 0}, "epochs = 0 needs init_from"),
    ({"epochs": -1}, "epochs must be at least 0"),
])
def test_bad_options(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, **overrides)


def test_continue_config_starts_from_phase_one():
    config = load_config(REPO / "models" / "edgefer-mnv3s-continue.toml")
    assert config.init_from == "runs/edgefer-mnv3s/float/model" and config.epochs == 24


@pytest.mark.tf
def test_init_from_starts_the_float_stage_from_a_trained_model(synthetic_fer, tiny_model_dirs,
                                                              tmp_path):
    import numpy as np

    from edgefer.model.store import Stage, float_twin, load_model
    from edgefer.train.run import Trainer

    config = load_config(None, data=str(synthetic_fer), out=str(tmp_path),
                         init_from=str(tiny_model_dirs["qat"]), **{"model.width": 0.25})
    start = Trainer(config, log=lambda *_: None)._initial_model(Stage.FLOAT, None, 10)
    qat_model, _, _ = load_model(tiny_model_dirs["qat"])
    expected = float_twin(qat_model, config.model)
    for ours, theirs in zip(start.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.tf
def test_zero_float_epochs_takes_init_from_as_the_float_stage(synthetic_fer, tiny_model_dirs,
                                                              tmp_path):
    import numpy as np

    from edgefer.model.store import load_model
    from edgefer.train.run import Trainer

    # QAT and pruning start from the float stage's model as in any run (their own tests):
    # here the float stage alone, which trains nothing
    config = load_config(None, data=str(synthetic_fer), out=str(tmp_path), epochs=0,
                         qat_epochs=0, prune=False, batch_size=16, val_fraction=0.2,
                         init_from=str(tiny_model_dirs["float"]), **{"model.width": 0.25})
    summary = Trainer(config, log=lambda *_: None).run()
    assert summary["stages"]["float"]["epochs_run"] == 0
    assert (tmp_path / config.name / "float" / "done.json").is_file()
    ours = load_model(tmp_path / config.name / "float" / "model")[0]
    given = load_model(tiny_model_dirs["float"])[0]
    for a, b in zip(ours.weights, given.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_limit_of_one_or_more_is_accepted():
    assert load_config(None, limit=1).limit == 1 and load_config(None).limit is None


def test_focal_loss_option():
    assert load_config(None, loss="focal").loss is Loss.FOCAL


@pytest.mark.tf
def test_val_seed_keeps_the_validation_slice_when_the_seed_changes(synthetic_fer):
    from edgefer.train.run import train_val_split

    def val_ids(**overrides) -> list[str]:
        return list(train_val_split(load_config(None, data=str(synthetic_fer),
                                                val_fraction=0.3, **overrides))[1].ids)

    reference = val_ids(seed=0)
    assert val_ids(seed=1, val_seed=0) == reference
    assert val_ids(seed=1) != reference


# Every stage on tiny synthetic data, then a resume that only reports: tested with
# tests/test_training_speed.py's run of benchmarks/gpu_train.sh, which trains the same
# stages (once for both tests).


@pytest.mark.slow
def test_cli_smoke_on_real_data(real_fer2013, tmp_path):
    """The CI smoke test the issue asks for: one epoch on 256 images, end to end."""
    run = subprocess.run(
        [sys.executable, "-m", "edgefer", "train", "--config",
         str(REPO / "models" / "edgefer-mnv3s.toml"), "--epochs", "1", "--limit", "256",
         "--qat-epochs", "1", "--prune-epochs", "1", "--data", str(real_fer2013),
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((tmp_path / "edgefer-mnv3s" / "summary.json").read_text())
    assert 0.0 <= summary["publictest_accuracy_keras"]["float"] <= 1.0


@pytest.mark.tf
@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(synthetic_fer, tmp_path):
    code = f"""
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from edgefer._tf import tf
cpu = tf().config.list_physical_devices("CPU")[0]
tf().config.set_logical_device_configuration(
    cpu, [tf().config.LogicalDeviceConfiguration()] * 2)
from edgefer.train.config import load_config
from edgefer.train.run import Trainer
config = load_config(None, data={str(synthetic_fer)!r}, out={str(tmp_path)!r}, epochs=1,
                     qat_epochs=0, prune_epochs=0, batch_size=16, strategy="mirrored",
                     **{{"model.width": 0.25}})
trainer = Trainer(config, log=print)
print("replicas", trainer.strategy.num_replicas_in_sync)
trainer.run()
"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "replicas 2" in run.stdout
