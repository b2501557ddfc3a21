"""Knowledge distillation (``[distill]``, ``--distill-from``): the teacher's predictions,
averaged with the mirror image's and softened, mixed into every training target."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.errors import ConfigError, ModelError
from edgefer.train.config import Distill, load_config
from edgefer.train.distill import mixed_targets, soften


def test_soften_keeps_the_ranking_and_flattens():
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    assert soften(p, 1.0) is p
    soft = soften(p, 3.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert (soft.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (soft.max(axis=1) < p.max(axis=1)).all()
    # softmax(logits / T) from the probabilities alone
    logits = np.log(p)
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft, expected, rtol=1e-6)


def test_mixed_targets():
    teacher = np.full((2, 7), 1 / 7, np.float32)
    mixed = mixed_targets(np.array([0, 3]), teacher, 0.25)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    assert mixed[0, 0] == pytest.approx(0.75 + 0.25 / 7)
    assert mixed[1, 0] == pytest.approx(0.25 / 7)
    np.testing.assert_allclose(mixed_targets(np.array([0, 3]), teacher, 1.0), teacher)


def test_distill_section_and_options(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[distill]\nteacher = "models/x"\nweight = 0.3\ntemperature = 2.0\n')
    config = load_config(toml)
    assert config.distill == Distill(teacher="models/x", weight=0.3, temperature=2.0)
    assert config.to_dict()["distill"]["weight"] == 0.3
    assert load_config(None, **{"distill.teacher": "m"}).distill.weight == 0.5
    assert load_config(None).distill.teacher == ""


def test_several_teachers_are_an_ensemble(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[distill]\nteacher = ["models/a", "models/b"]\n')
    config = load_config(toml)
    assert config.distill.teachers == ("models/a", "models/b")
    assert config.to_dict()["distill"]["teacher"] == ("models/a", "models/b")
    # one teacher in a list (or from a repeated --distill-from given once) stays a string
    assert load_config(None, **{"distill.teacher": ("models/a",)}).distill.teacher == "models/a"
    assert Distill(teacher="models/a").teachers == ("models/a",)
    assert Distill().teachers == () and Distill(teacher=[]).teacher == ""


@pytest.mark.parametrize("overrides, message", [
    ({"distill.teacher": ["m", ""]}, "an empty folder name"),
    ({"distill.teacher": 3}, "a model folder or a list of them"),
    ({"distill.weight": 0.0}, "distill weight must be in"),
    ({"distill.weight": 1.5}, "distill weight must be in"),
    ({"distill.temperature": 0.0}, "temperature must be above 0"),
    ({"distill.teacher_path": "m"}, r"unknown option\(s\) in \[distill\]"),
    ({"distill.teacher": "m", "strategy": "multiworker"}, "does not run with"),
])
def test_bad_distill_options(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, **overrides)


@pytest.mark.tf
def test_teacher_prediction_is_averaged_with_the_mirror_image():
    from edgefer._tf import keras
    from edgefer.train.distill import teacher_probabilities

    k = keras()
    # a "teacher" that sees only the left half of the image: mirroring changes its answer
    inputs = k.Input((4, 4, 1))
    left = k.layers.Lambda(lambda x: x[:, :, :2])(inputs)
    model = k.Model(inputs, k.layers.Dense(7, activation="softmax")(k.layers.Flatten()(left)))
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype("float32")
    plain = teacher_probabilities(model, x, flip=False)
    mirrored = teacher_probabilities(model, x[:, :, ::-1], flip=False)
    assert not np.allclose(plain, mirrored)
    np.testing.assert_allclose(teacher_probabilities(model, x, flip=True),
                               (plain + mirrored) / 2, rtol=1e-5)


@pytest.mark.tf
def test_a_run_trains_towards_the_teachers_targets(synthetic_fer, tiny_model_dirs, tmp_path):
    from edgefer.model.store import load_model
    from edgefer.train.run import Trainer

    teacher = tiny_model_dirs["float"]
    logs: list[str] = []
    config = load_config(None, data=str(synthetic_fer), out=str(tmp_path), epochs=1,
                         qat_epochs=0, prune=False, batch_size=16, val_fraction=0.2,
                         **{"model.width": 0.25, "distill.teacher": str(teacher),
                            "distill.weight": 0.4})
    trainer = Trainer(config, log=logs.append)
    targets = trainer.distill_targets()
    model, _, info = load_model(teacher)
    x = info.preprocess(trainer.train.images)
    expected = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    hard = np.eye(7)[trainer.train.labels]
    np.testing.assert_allclose(targets, 0.6 * hard + 0.4 * expected, atol=1e-5)
    batch = next(iter(trainer._train_ds()))
    assert not np.isin(batch[1].numpy(), (0.0, 1.0)).all()  # soft rows, not one-hot
    summary = trainer.run()
    assert summary["stages"]["float"]["epochs_run"] == 1
    assert any(line.startswith("distillation:") for line in logs)


@pytest.mark.tf
def test_an_ensembles_prediction_is_its_teachers_average(synthetic_fer, tiny_model_dirs):
    from edgefer.data import load_split
    from edgefer.train.distill import teacher_predictions

    images = load_split(synthetic_fer, "train").images[:12]
    one, other = (str(tiny_model_dirs[stage]) for stage in ("float", "qat"))
    each = [teacher_predictions(Distill(teacher=folder), images) for folder in (one, other)]
    assert not np.allclose(each[0], each[1])
    np.testing.assert_allclose(teacher_predictions(Distill(teacher=[one, other]), images),
                               (each[0] + each[1]) / 2, atol=1e-6)


def test_a_missing_teacher_fails_before_training(synthetic_fer, tmp_path):
    from edgefer.train.run import Trainer

    config = load_config(None, data=str(synthetic_fer), out=str(tmp_path),
                         **{"distill.teacher": str(tmp_path / "nothing")})
    with pytest.raises(ModelError):
        Trainer(config, log=lambda *_: None)


@pytest.mark.tf
def test_cli_takes_several_teachers(synthetic_fer, tiny_model_dirs, tmp_path):
    from click.testing import CliRunner

    from edgefer.cli import main

    missing = tmp_path / "no-such-teacher"
    result = CliRunner().invoke(main, [
        "train", "--data", str(synthetic_fer), "--out", str(tmp_path / "runs"),
        "--distill-from", str(tiny_model_dirs["float"]), "--distill-from", str(missing)])
    assert result.exit_code != 0
    assert str(missing) in result.output and "Traceback" not in result.output
