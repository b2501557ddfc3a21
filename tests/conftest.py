"""Shared fixtures: synthetic FER2013 in both forms, and a tiny trained model with exports.

Nothing here reads the real data set; tests that do use ``real_fer2013``, which skips
with a reason when FER2013 is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgefer.labels import CLASS_NAMES

REPO = Path(__file__).resolve().parent.parent


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` (not a package) as a module, for its tests."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 gray image whose pattern depends on the label, plus noise."""
    y, x = np.mgrid[0:48, 0:48]
    base = 128 + 60 * np.sin((x * (label + 1) + y * (7 - label)) / 9.0)
    return np.clip(base + rng.normal(0, 20, (48, 48)), 0, 255).astype(np.uint8)


def write_image_folder(root: Path, per_class: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """FER2013 image-folder layout with ``per_class[name] = (train, test)`` images."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, column in (("train", 0), ("test", 1)):
        prefix = "Training" if split == "train" else "PublicTest"
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class[name][column]):
                image = synthetic_face(label, rng)
                cv2.imwrite(str(folder / f"{prefix}_{label}{i:05d}.png"), image)
    return root


def write_csv_from_folder(folder: Path, csv_path: Path) -> Path:
    """The original fer2013.csv form of an image folder."""
    import cv2

    usage = {"train": "Training", "test": "PublicTest"}
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for split in ("train", "test"):
            for label, name in enumerate(CLASS_NAMES):
                for file in sorted((folder / split / name).iterdir()):
                    pixels = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE).ravel()
                    writer.writerow([label, " ".join(map(str, pixels)), usage[split]])
    return csv_path


# the session fixtures that take minutes: their tests share one xdist worker
_SHARED_MODELS = frozenset({"tiny_model_dirs", "tiny_exports"})


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup`` (pyproject's addopts) a test file runs on one worker, so
    its module fixtures are made once and its tests keep their order; the tests of the
    tiny trained model and its exports run on one worker, which makes them once."""
    for item in items:
        shared = _SHARED_MODELS & set(getattr(item, "fixturenames", ()))
        group = "tiny-models" if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def synthetic_fer(tmp_path_factory) -> Path:
    counts = {name: (12 + 3 * i, 4) for i, name in enumerate(CLASS_NAMES)}
    return write_image_folder(tmp_path_factory.mktemp("fer") / "fer2013", counts)


@pytest.fixture(scope="session")
def real_fer2013() -> Path:
    path = Path(os.environ.get("EDGEFER_FER2013", REPO.parent / "shared" / "fer2013"))
    if not (path / "train").is_dir():
        pytest.skip(f"FER2013 not found at {path} (set EDGEFER_FER2013)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, synthetic_fer) -> dict[str, Path]:
    """A width-0.25 MobileNetV3 trained a few steps on synthetic faces: float and QAT."""
    from edgefer.data import load_split
    from edgefer.model import qat
    from edgefer.model.mobilenetv3 import ModelConfig, build_model
    from edgefer.model.store import Stage, save_model
    from edgefer.preprocess import ModelInfo, Preprocess

    config = ModelConfig(width=0.25)
    info = ModelInfo(preprocess=Preprocess(), name="tiny")
    train = load_split(synthetic_fer, "train")
    x, y = info.preprocess(train.images), train.labels
    model = build_model(config)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("models")
    float_dir = save_model(model, root / "float", config, Stage.FLOAT, info)
    quantized = qat.quantize(model)
    quantized.compile("adam", "sparse_categorical_crossentropy")
    quantized.fit(x, y, epochs=1, batch_size=32, verbose=0)
    qat_dir = save_model(quantized, root / "qat", config, Stage.QAT, info)
    return {"float": float_dir, "qat": qat_dir}


@pytest.fixture(scope="session")
def tiny_calibration(tmp_path_factory, synthetic_fer) -> Path:
    from edgefer.calibration import build_manifest

    return build_manifest(synthetic_fer, size=28, seed=0).write(
        tmp_path_factory.mktemp("calib") / "calib.json")


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_model_dirs, synthetic_fer, tiny_calibration) -> dict:
    """Every (target, precision) export of the tiny QAT model: {(target, precision): path}."""
    from edgefer.export import export_all, plan

    pairs = plan("all", "all")  # the targets whose engine is installed here
    out = tmp_path_factory.mktemp("exports")
    results = export_all(tiny_model_dirs["qat"], pairs, out, synthetic_fer, tiny_calibration,
                         parity_images=40, min_agreement=0.0)
    return {(r.options.target.value, r.options.precision.value): r.path for r in results}


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """A small float TFLite classifier (48x48x1 -> 7) carrying edgefer metadata; fast to make."""
    import json

    from _bench_models import keras_to_tflite

    from edgefer._tf import keras
    from edgefer.artifacts import METADATA_KEY, tflite_with_metadata
    from edgefer.preprocess import ModelInfo

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.layers.Input((48, 48, 1)),
        k.layers.Conv2D(8, 3, strides=2, activation="relu"),
        k.layers.GlobalAveragePooling2D(),
        k.layers.Dense(7, activation="softmax"),
    ])
    data = keras_to_tflite(model)
    record = json.dumps(ModelInfo(name="tiny").to_dict()).encode()
    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    path.write_bytes(tflite_with_metadata(data, {METADATA_KEY: record}))
    return path
