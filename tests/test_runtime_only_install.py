"""``pip install edgefer[tflite]`` alone (what a Raspberry Pi gets) benchmarks and predicts
without TensorFlow: a fresh virtual environment with the core and the ``tflite`` extra runs
``edgefer bench`` on a model exported earlier in this test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgefer.labels import CLASS_NAMES
from edgefer.shipped import SHIPPED_INT8, SHIPPED_NAME

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A venv with ``edgefer[tflite]`` installed from this checkout, nothing else."""
    root = tmp_path_factory.mktemp("runtime-only")
    # install from a copy so the build leaves nothing (build/, egg-info) in the checkout
    source = root / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    readme = ROOT / "README.md"
    (source / "README.md").write_text(readme.read_text() if readme.exists() else "edgefer\n")
    shutil.copytree(ROOT / "edgefer", source / "edgefer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "models", source / "models")  # packaged as the default model
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], 300)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          f"{source}[tflite]"], 1800)
    return venv


def test_runtime_only_install_benchmarks_without_tensorflow(runtime_venv, tiny_tflite, tmp_path):
    python = runtime_venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{runtime_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # the point of the extra: no TensorFlow, no Keras, no matplotlib (an extra of its own)
    for module in ("tensorflow", "tf_keras", "keras", "matplotlib"):
        found = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                               cwd=tmp_path, env=env)
        assert found.returncode != 0, f"{module} is importable in the runtime-only venv"
    # and edgefer comes from the venv, not from this checkout
    where = _run([str(python), "-c", "import edgefer; print(edgefer.__file__)"], 60,
                 cwd=tmp_path, env=env).stdout
    assert str(runtime_venv) in where
    out = tmp_path / "report" / "bench.json"
    done = _run([str(runtime_venv / "bin" / "edgefer"), "bench", str(tiny_tflite), "--threads",
                 "1", "--batch", "1", "--warmup", "2", "--min-runs", "10", "--min-time", "0.1",
                 "--out", str(out.parent)], 600, cwd=tmp_path, env=env)
    assert "plots not drawn: matplotlib is not installed" in done.stderr
    assert not (out.parent / "img").exists() and (out.parent / "bench.md").is_file()
    run = json.loads(out.read_text())
    ok = [r for r in run["results"] if r["status"] == "ok"]
    assert ok, run["results"]
    assert ok[0]["engine"] == "litert" and ok[0]["latency_ms"]["p50"] > 0
    assert "tensorflow" not in run["context"]["engine_versions"]
    # edgefer predict on a face crop, taken whole (no detection in a 48x48 crop)
    import cv2
    import numpy as np

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8))
    done = _run([str(runtime_venv / "bin" / "edgefer"), "predict", str(face), "--model",
                 str(tiny_tflite), "--no-detect", "--json"], 300, cwd=tmp_path, env=env)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and all(line.get("type") != "error" for line in lines), done.stdout
    # without --model: the shipped INT8 model that the install carries, found from any folder
    if (ROOT / "models" / SHIPPED_NAME / SHIPPED_INT8).exists():
        done = _run([str(runtime_venv / "bin" / "edgefer"), "predict", str(face), "--no-detect",
                     "--json"], 300, cwd=tmp_path, env={**env, "EDGEFER_MODEL": ""})
        (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        assert line["faces"][0]["label"] in CLASS_NAMES, line
