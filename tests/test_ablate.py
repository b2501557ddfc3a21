"""benchmarks/ablate.py: candidates parsed and refused, runs read back, the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ablate():
    return load_benchmark("ablate")


def test_candidates_parse_into_typed_overrides(ablate):
    assert ablate.parse_candidate("baseline") == {}
    assert ablate.parse_candidate("label_smoothing=0,augment.erasing=0.1,class_weights=none,"
                                  "augment.flip=false") == {
        "label_smoothing": 0, "augment.erasing": 0.1, "class_weights": "none",
        "augment.flip": False}
    assert ablate.run_name("model.width=1.25,epochs=1") == "ablate-model.width-1.25-epochs-1"
    with pytest.raises(SystemExit, match="key=value"):
        ablate.parse_candidate("label_smoothing")


def test_overrides_reach_the_training_config(ablate):
    from edgefer.train.config import load_config

    config = load_config(REPO / "models" / "edgefer-mnv3s-v5.toml",
                         **ablate.parse_candidate("augment.erasing=0,model.width=1.25,epochs=1"))
    assert (config.augment.erasing, config.model.width, config.epochs) == (0, 1.25, 1)


def test_a_run_folder_is_reused_only_by_the_same_settings(ablate):
    """A finished candidate of one ablation must not stand in for the same candidate of
    another base config, budget or warm start (it once did: a from-scratch baseline was
    read back as a warm-started one)."""
    base = str(REPO / "models" / "edgefer-mnv3s-v5.toml")
    other = str(REPO / "models" / "edgefer-mnv3s-v10.toml")
    folder = ablate.candidate_config(base, "baseline", 6, "", "").run_dir
    assert folder == ablate.candidate_config(base, "baseline", 6, "", "/elsewhere").run_dir
    assert folder.parent == ablate.OUT and folder.name.startswith("ablate-baseline-")
    assert len({folder,
                ablate.candidate_config(other, "baseline", 6, "", "").run_dir,
                ablate.candidate_config(base, "baseline", 9, "", "").run_dir,
                ablate.candidate_config(base, "baseline", 6, "models/x", "").run_dir}) == 4


def test_finished_runs_are_read_not_trained(ablate, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    def config(base, candidate, *_):
        return SimpleNamespace(run_dir=ablate.OUT / ablate.run_name(candidate))

    for candidate, curve in (("baseline", (0.60, 0.61)), ("label_smoothing=0", (0.62, 0.615))):
        folder = config("x.toml", candidate).run_dir / "float"
        folder.mkdir(parents=True)
        (folder / "done.json").write_text("{}")
        rows = ["epoch,accuracy,images_per_s,loss,val_accuracy,val_loss"]
        rows += [f"{i},0.7,100,1.0,{v},1.2" for i, v in enumerate(curve)]
        (folder / "log.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(ablate.subprocess, "call", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(ablate, "candidate_config", config)
    monkeypatch.setattr(ablate, "validation_scores", lambda config: {"val_macro_f1": 0.5512})
    monkeypatch.setattr(sys, "argv", ["ablate.py", "--base", "x.toml", "--json", "a.json",
                                      "baseline", "label_smoothing=0"])
    ablate.main()
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["candidates"]["label_smoothing=0"]["best_val"] == 0.62
    assert "| label_smoothing=0 | 2 | 62.0, 61.5 | 62.00% | 61.50% | +1.00 | 55.12% |" \
        in record["table"]
    assert "never PublicTest" in record["selection"]


@pytest.mark.tf
def test_validation_scores_use_the_runs_own_validation_slice(ablate, tmp_path, monkeypatch,
                                                              synthetic_fer, tiny_model_dirs):
    import shutil

    from edgefer.bench.accuracy import score
    from edgefer.runtimes import load_runtime
    from edgefer.train.run import train_val_split

    monkeypatch.chdir(tmp_path)
    config = ablate.candidate_config(str(REPO / "models" / "edgefer-mnv3s-v5.toml"),
                                     "class_weights=none", 2, "", str(synthetic_fer))
    shutil.copytree(tiny_model_dirs["float"], config.run_dir / "float" / "model")
    scores = ablate.validation_scores(config)
    train, val = train_val_split(config)
    assert 0 < len(val) < len(train)
    predicted = load_runtime(tiny_model_dirs["float"]).predict_faces(val.images).argmax(1)
    expected = score(val.labels, predicted)
    assert (scores["val_top1"], scores["val_macro_f1"]) == (expected.top1, expected.macro_f1)
    assert set(scores["val_recall"]) == set(expected.per_class)
