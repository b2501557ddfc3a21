"""A run folder records the settings it was made with: the same settings resume (finished
stages are skipped), other settings stop before any training."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import write_image_folder

from edgefer.errors import ConfigError
from edgefer.labels import CLASS_NAMES
from edgefer.train.config import load_config

# one float epoch on 64 images of a width-0.25 model: seconds
BASE = {"epochs": 1, "qat_epochs": 0, "prune_epochs": 0, "limit": 64, "batch_size": 16,
        "model.width": 0.25}
CLI_BASE = ["--epochs", "1", "--qat-epochs", "0", "--prune-epochs", "0", "--limit", "64",
            "--batch-size", "16", "--width", "0.25"]


def _config(data: Path, out: Path | str, **overrides):
    return load_config(None, data=str(data), out=str(out), **{**BASE, **overrides})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_fer) -> Path:
    """The folder (--out) of a finished one-stage run; tests work on copies of it."""
    from edgefer.train.run import Trainer

    out = tmp_path_factory.mktemp("runs")
    Trainer(_config(synthetic_fer, out), log=lambda *_: None).run()
    return out


@pytest.fixture
def out(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "runs"))


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "summary.json"}


@pytest.mark.tf
def test_settings_are_recorded(out):
    run_dir = out / "edgefer-mnv3s"
    record = json.loads((run_dir / "settings.json").read_text())
    assert record["config"]["epochs"] == 1 and record["config"]["limit"] == 64
    assert record["config"]["model"]["width"] == 0.25
    assert record["config"]["loss"] == "crossentropy"
    assert len(record["data"]["train_sha256"]) == 64
    assert not [p for p in run_dir.iterdir() if p.name.endswith((".tmp", ".partial"))]


@pytest.mark.tf
def test_same_settings_resume_and_skip_done_stages(out, synthetic_fer, monkeypatch):
    from edgefer.train.run import Trainer

    run_dir = out / "edgefer-mnv3s"
    before = _snapshot(run_dir)
    # the output folder may be spelled differently: it is where the run is, not how
    monkeypatch.chdir(out)
    logs: list[str] = []
    summary = Trainer(_config(synthetic_fer, "."), log=logs.append).run()
    assert "stage float: already done, skipped" in logs
    assert summary["final_stage"] == "float"
    assert _snapshot(run_dir) == before


@pytest.mark.tf
@pytest.mark.parametrize(("overrides", "change"), [
    ({"epochs": 2}, "epochs 1 -> 2"),
    ({"batch_size": 8}, "batch_size 16 -> 8"),
    ({"limit": None}, "limit 64 -> None"),
    ({"lr": 0.01}, "lr 0.003 -> 0.01"),
    ({"seed": 1}, "seed 0 -> 1"),
    ({"model.width": 0.5}, "model.width 0.25 -> 0.5"),
    ({"augment.mixup": 0.2}, "augment.mixup 0.0 -> 0.2"),
    ({"qat_epochs": 1}, "qat_epochs 0 -> 1"),
])
def test_other_settings_stop_before_training(out, synthetic_fer, overrides, change):
    from edgefer.train.run import Trainer

    run_dir = out / "edgefer-mnv3s"
    before = _snapshot(run_dir)
    trainer = Trainer(_config(synthetic_fer, out, **overrides), log=lambda *_: None)
    with pytest.raises(ConfigError) as caught:
        trainer.run()
    message = str(caught.value)
    assert "\n" not in message
    assert f"({change});" in message  # only the setting that changed
    assert "--name NEW" in message and f"delete {run_dir}" in message
    assert _snapshot(run_dir) == before


@pytest.mark.tf
def test_other_data_stops_before_training(out, synthetic_fer, tmp_path):
    from edgefer.train.run import Trainer

    counts = {name: (12 + 3 * i, 4) for i, name in enumerate(CLASS_NAMES)}
    other = write_image_folder(tmp_path / "other", counts, seed=1)
    run_dir = out / "edgefer-mnv3s"
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError, match=re.escape(f"data {synthetic_fer} -> {other}")):
        Trainer(_config(other, out), log=lambda *_: None).run()
    assert _snapshot(run_dir) == before


@pytest.mark.tf
def test_moved_copy_of_the_same_data_resumes(out, synthetic_fer, tmp_path):
    from edgefer.train.run import Trainer

    moved = Path(shutil.copytree(synthetic_fer, tmp_path / "moved"))
    logs: list[str] = []
    Trainer(_config(moved, out), log=logs.append).run()
    assert "stage float: already done, skipped" in logs


@pytest.mark.tf
def test_folder_without_recorded_settings_resumes_and_records_them(out, synthetic_fer):
    from edgefer.train.run import Trainer

    run_dir = out / "edgefer-mnv3s"
    (run_dir / "settings.json").unlink()  # as an older edgefer left it
    logs: list[str] = []
    Trainer(_config(synthetic_fer, out), log=logs.append).run()
    assert "stage float: already done, skipped" in logs
    assert any("records no settings" in line for line in logs)
    assert json.loads((run_dir / "settings.json").read_text())["config"]["epochs"] == 1


@pytest.mark.tf
def test_cli_refuses_other_settings_and_resumes_the_same(out, synthetic_fer):
    from click.testing import CliRunner

    from edgefer.cli import main

    args = ["train", "--data", str(synthetic_fer), "--out", str(out), *CLI_BASE]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "stage float: already done, skipped" in again.output
    changed = CliRunner().invoke(main, [*args, "--epochs", "2", "--batch-size", "8"])
    assert changed.exit_code == 1
    assert "(epochs 1 -> 2, batch_size 16 -> 8); pass --name NEW" in changed.output
    assert "already done" not in changed.output


@pytest.mark.tf
def test_unreadable_settings_record_is_an_error(out, synthetic_fer):
    from edgefer.train.run import Trainer

    (out / "edgefer-mnv3s" / "settings.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match=r"cannot read .*settings\.json.*--name NEW"):
        Trainer(_config(synthetic_fer, out), log=lambda *_: None).run()


@pytest.mark.tf
def test_setting_changes_ignore_the_location_and_unknown_options():
    from edgefer.train.run import setting_changes

    old = {"config": {"epochs": 1, "out": "runs", "data": "/a", "new_option": 1},
           "data": {"path": "/a", "train_sha256": "x"}}
    new = {"config": {"epochs": 1, "out": "elsewhere", "data": "/b"},
           "data": {"path": "/b", "train_sha256": "x"}}
    assert setting_changes(old, new) == []  # moved data, other --out, an unknown option
    assert setting_changes({}, new) == []
    new["data"]["train_sha256"] = "y"
    assert setting_changes(old, new) == ["data /a -> /b"]
