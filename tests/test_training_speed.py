"""Issue 19's training-speed work: the one-pass augmentation, the throughput benchmark, and
the GPU training script (run on the CPU with tiny settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.tf


def _augment(images: np.ndarray, **fields) -> np.ndarray:
    from edgefer.train.config import Augment
    from edgefer.train.pipeline import affine_augment

    settings = {"flip": False, "shift": 0.0, "rotation_deg": 0.0, "zoom": 0.0, **fields}
    return affine_augment(images, Augment(**settings)).numpy()


def _faces(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).random((n, 48, 48, 1), dtype=np.float32)


def test_no_geometry_is_the_identity():
    faces = _faces(8)
    np.testing.assert_array_equal(_augment(faces), faces)


def test_flip_mirrors_about_half_the_faces_exactly():
    faces = _faces()
    out = _augment(faces, flip=True)
    same = [np.array_equal(o, f) for o, f in zip(out, faces, strict=True)]
    mirrored = [np.array_equal(o, f[:, ::-1]) for o, f in zip(out, faces, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 <= sum(mirrored) <= 54  # 64 fair coin flips


def test_shift_moves_content_by_at_most_the_fraction():
    faces = np.zeros((32, 48, 48, 1), np.float32)
    faces[:, 24, 24] = 1.0  # one bright pixel in the middle
    out = _augment(faces, shift=0.1)
    for image in out[..., 0]:
        y, x = np.unravel_index(np.argmax(image), image.shape)
        assert abs(y - 24) <= 5 and abs(x - 24) <= 5
    moved = [np.argmax(image) != 24 * 48 + 24 for image in out[..., 0]]
    assert sum(moved) >= 16


def test_rotation_and_zoom_keep_the_centre_and_the_range():
    faces = _faces(16)
    out = _augment(faces, rotation_deg=10.0, zoom=0.1)
    assert out.shape == faces.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0  # bilinear, reflect fill: no new values
    assert not np.array_equal(out, faces)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fused-aug b128", "fused-aug b128 32px"])
def test_throughput_benchmark_child_measures_a_configuration(synthetic_fer, config):
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--child",
         config, "--data", str(synthetic_fer), "--images", "64", "--steps", "1"],
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["images"] == 128 and result["images_per_s"] > 0 and result["cpu_s"] > 0


@pytest.mark.parametrize("training", [True, False])
def test_datasets_run_without_the_autotune_model(training):
    """tf.data's model-based autotuning made fit wait 45-50 s between epochs here (its
    optimizer thread is joined when an epoch's iterator is dropped): it stays off."""
    from edgefer.preprocess import Preprocess
    from edgefer.train.pipeline import make_dataset

    images = np.random.default_rng(0).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    ds = make_dataset(images, np.arange(20) % 7, Preprocess(), 8, training=training)
    assert ds.options().autotune.enabled is False
    assert [len(batch[0]) for batch in ds] == ([8, 8] if training else [8, 8, 4])


@pytest.mark.slow
def test_epoch_throughput_benchmark_times_both_arms_end_to_end(tmp_path, synthetic_fer):
    out = tmp_path / "epochs.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "epoch_throughput.py"), "--epochs", "2",
         "--base", str(REPO / "models" / "edgefer-mnv3s-v10.toml"),
         "--data", str(synthetic_fer), "--json", str(out)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"autotune-model", "today"}
    for row in summary.values():
        assert row["median_epoch_s"] > 0 and len(row["val_accuracy_per_epoch"][0]) == 2
    assert summary["autotune-model"]["ratio"] == 1.0


def _gpu_train(tmp_path: Path, data: Path, env: dict, *extra: str):
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_train.sh"), str(data), *extra],
        capture_output=True, text=True, timeout=1200, check=False,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out"), **env})


@pytest.mark.slow
def test_gpu_train_script_refuses_to_fall_back_to_the_cpu(tmp_path, synthetic_fer):
    run = _gpu_train(tmp_path, synthetic_fer, {})
    assert run.returncode == 3 and "no CUDA GPU" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gpu_train_script_trains_every_stage_on_the_cpu_with_tiny_settings(tmp_path,
                                                                           synthetic_fer):
    """Also the test that every stage runs and that a finished run resumes (formerly
    tests/test_train.py's own run of every stage, in-process: the same stages twice)."""
    from edgefer.train.config import load_config
    from edgefer.train.run import Trainer

    run = _gpu_train(tmp_path, synthetic_fer, {"EDGEFER_GPU_OPTIONAL": "1"},
                     "--epochs", "1", "--qat-epochs", "1", "--prune-epochs", "1",
                     "--batch-size", "16", "--width", "0.25", "--limit", "300")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    run_dir = tmp_path / "out" / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["stages"]) == {"float", "qat", "prune", "pqat"}
    assert (run_dir / summary["final_stage"] / "model" / "model.json").is_file()
    assert "wall seconds:" in (tmp_path / "out" / "train.log").read_text()
    for stage in ("float", "qat", "prune", "pqat"):
        assert (run_dir / stage / "done.json").is_file()
        assert (run_dir / stage / "log.csv").read_text().count("\n") >= 2
        done = json.loads((run_dir / stage / "done.json").read_text())
        assert done["val_accuracy"] == max(done["val_accuracy_trained_bn"],
                                           done["val_accuracy_recomputed_bn"])
    assert summary["final_stage"] in ("qat", "pqat")
    # the same settings in-process: the Trainer finds every stage done and only reports
    config = load_config(REPO / "models" / "edgefer-mnv3s-gpu.toml", data=str(synthetic_fer),
                         out=str(tmp_path / "out"), name="run", epochs=1, qat_epochs=1,
                         prune_epochs=1, batch_size=16, limit=300, **{"model.width": 0.25})
    logs: list[str] = []
    again = Trainer(config, log=logs.append).run()
    assert again["stages"] == summary["stages"]
    assert sum("already done, skipped" in line for line in logs) == 4, logs


@pytest.mark.parametrize("prebuilt", [False, True])
def test_a_stage_traces_its_training_step_once(prebuilt):
    """Variables made inside the first step make TensorFlow trace the step twice; the
    Trainer makes them first (``build_for_fit``), so a stage traces once."""
    from edgefer._tf import keras
    from edgefer.train.run import build_for_fit

    k = keras()
    model = k.Sequential([k.layers.Input((8, 8, 1)), k.layers.Conv2D(4, 3),
                          k.layers.BatchNormalization(), k.layers.GlobalAveragePooling2D(),
                          k.layers.Dense(7, activation="softmax")])
    model.compile(k.optimizers.AdamW(1e-3), k.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=["accuracy"])
    if prebuilt:
        build_for_fit(model)
    x = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)
    y = np.eye(7, dtype=np.float32)[np.arange(32) % 7]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, sample_weight=np.ones(32))
    assert model.train_function.experimental_get_tracing_count() == (1 if prebuilt else 2)
    assert 0.0 <= model.evaluate(x, y, verbose=0)[1] <= 1.0
