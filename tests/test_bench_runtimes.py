"""Each engine runs a tiny exported model and matches the Keras reference; GPU and NPU
code paths give ``unavailable`` rows (``--device all``) or DeviceUnavailableError (asked
for by name) on a machine without them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from _bench_models import band_faces, faces, make_band_onnx, make_tiny_models

from edgefer.bench.measure import MeasureOptions
from edgefer.bench.results import Status
from edgefer.bench.runner import BenchPlan, ModelSpec, run_plan
from edgefer.errors import DeviceUnavailableError
from edgefer.runtimes import Device, RuntimeOptions, load_runtime

QUICK = MeasureOptions(warmup=1, min_runs=3, min_time_s=0)


def has_gpu_or_npu() -> bool:
    try:
        import onnxruntime

        if set(onnxruntime.get_available_providers()) - {"CPUExecutionProvider",
                                                          "AzureExecutionProvider"}:
            return True
    except ImportError:
        pass
    try:
        import openvino

        return any(d.split(".")[0] in ("GPU", "NPU") for d in openvino.Core().available_devices)
    except ImportError:
        return False


cpu_only = pytest.mark.skipif(has_gpu_or_npu(), reason="this machine has a GPU or NPU")


@pytest.fixture(scope="module")
def band_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("band")
    onnx_path = make_band_onnx(folder / "band.onnx")
    files = {"onnx": onnx_path}
    try:
        import openvino as ov

        from edgefer.artifacts import METADATA_KEY, read_info

        model = ov.convert_model(str(onnx_path))
        model.set_rt_info(__import__("json").dumps(read_info(onnx_path).to_dict()),
                          [METADATA_KEY, "info"])
        ov.save_model(model, str(folder / "band.xml"))
        files["openvino"] = folder / "band.xml"
    except ImportError:
        pass
    return files


# --- unavailable devices (fast, no TensorFlow) ----------------------------------------

@cpu_only
@pytest.mark.parametrize("device", [Device.GPU, Device.NPU])
@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_missing_device_asked_for_by_name_raises(band_files, engine, device):
    if engine not in band_files:
        pytest.skip(f"{engine} not installed")
    with pytest.raises(DeviceUnavailableError, match=device.value.upper()):
        load_runtime(band_files[engine], RuntimeOptions(device=device))


@pytest.mark.parametrize("device", [Device.GPU, Device.NPU])
def test_litert_gpu_npu_raise(tmp_path, device):
    path = tmp_path / "any.tflite"
    path.write_bytes(b"not read: the device check comes first")
    with pytest.raises(DeviceUnavailableError):
        load_runtime(path, RuntimeOptions(device=device))


def test_keras_npu_raises(tmp_path):
    folder = tmp_path / "keras"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    (folder / "weights.h5").write_bytes(b"")
    with pytest.raises(DeviceUnavailableError, match="NPU"):
        load_runtime(folder, RuntimeOptions(device=Device.NPU))


@cpu_only
def test_device_all_rows(band_files, tmp_path):
    tflite = tmp_path / "any.tflite"
    tflite.write_bytes(b"x")
    models = [ModelSpec(p) for p in band_files.values()] + [ModelSpec(tflite)]
    plan = BenchPlan(models=tuple(models), device="all", threads=(1,), batches=(1,),
                     measure=QUICK, isolate=False)
    results = run_plan(plan).results
    for row in results:
        if row.device == "cpu":
            continue
        assert row.status is Status.UNAVAILABLE, row
        assert row.reason and row.latency_ms is None and row.accuracy is None
    # every model has exactly one gpu and one npu row
    for spec in models:
        assert sorted(r.device for r in results if r.model == spec.name
                      and r.target == spec.target and r.device != "cpu") == ["gpu", "npu"]


def test_band_model_on_each_engine_is_exact(band_files):
    images, labels = band_faces(3)
    for engine, path in band_files.items():
        runtime = load_runtime(path, RuntimeOptions(threads=1))
        assert (runtime.predict_faces(images).argmax(1) == labels).all(), engine


# --- tiny MobileNetV3 exports against the Keras reference (slow: TensorFlow) -----------

@pytest.fixture(scope="module")
def tiny(request):
    """Exports of one float model with an exact Keras reference, made here once and kept
    in pytest's cache (the lead's ``tiny_exports`` come from a QAT model: see below)."""
    return make_tiny_models_cached(request.config.cache.mkdir("edgefer-bench-tiny"))


_TINY_FILES = {("keras", "fp32"): "keras", ("tflite", "fp32"): "tiny-fp32.tflite",
               ("tflite", "int8"): "tiny-int8.tflite", ("onnx", "fp32"): "tiny-fp32.onnx",
               ("openvino", "fp32"): "tiny-fp32.xml"}


def _tiny_files(folder: Path) -> dict[tuple[str, str], Path] | None:
    """The models in ``folder``, None unless all are there."""
    paths = {k: folder / n for k, n in _TINY_FILES.items()}
    whole = all(p.exists() for p in paths.values()) and (folder / "keras" / "weights.h5").exists()
    return paths if whole else None


def make_tiny_models_cached(folder: Path) -> dict[tuple[str, str], Path]:
    """The models in ``folder``, made first when it lacks them: in a folder beside it,
    renamed into place whole, so that a run killed halfway or another pytest process
    making them at the same time never leaves a part for the next run to take."""
    cached = _tiny_files(folder)
    if cached:
        return cached
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}-"))
    made = make_tiny_models(fresh)
    cached = _tiny_files(folder)
    if cached:  # another process made them meanwhile
        shutil.rmtree(fresh, ignore_errors=True)
        return cached
    shutil.rmtree(folder, ignore_errors=True)  # empty, or a part a killed run left
    try:
        fresh.rename(folder)
    except OSError:  # another process's rename came first: use ours where it is
        return made
    return _tiny_files(folder) or made


TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.06}


@pytest.mark.slow
@pytest.mark.tf
def test_each_engine_matches_keras(tiny):
    x = faces(24)
    reference = load_runtime(tiny["keras", "fp32"]).predict_faces(x)
    checked = []
    for (target, precision), path in tiny.items():
        if target == "keras":
            continue
        runtime = load_runtime(path, RuntimeOptions(threads=1))
        probs = runtime.predict_faces(x)
        assert probs.shape == reference.shape
        tol = TOLERANCE.get(precision.split("-")[0], 0.06)
        assert abs(probs - reference).max() < tol, (target, precision)
        if precision == "fp32":
            assert (probs.argmax(1) == reference.argmax(1)).all(), target
        checked.append(runtime.engine)
    assert {"litert", "onnxruntime", "openvino"} <= set(checked)


@pytest.mark.slow
@pytest.mark.tf
def test_bench_tiny_models_in_workers(tiny):
    specs = [ModelSpec(p, name=f"{t}-{p_}") for (t, p_), p in tiny.items()]
    plan = BenchPlan(models=tuple(specs), threads=(1,), batches=(1, 8), measure=QUICK,
                     isolate=True)
    results = run_plan(plan).results
    assert len(results) == 2 * len(specs)
    for row in results:
        assert row.status is Status.OK, row.reason
        assert row.latency_ms.p50 > 0 and row.throughput_ips > 0
        assert row.peak_rss_mb and row.engine_rss_mb is not None
        assert row.size_bytes > 0


@pytest.mark.slow
@pytest.mark.tf
def test_every_shipped_export_kind_runs_and_tracks_its_qat_source(tiny_exports,
                                                                  tiny_model_dirs):
    """conftest's exports (every target x precision of a tiny QAT model) on their engines:
    probabilities close to the QAT Keras model's (fake-quant vs real int8, so loosely)."""
    x = faces(24)
    reference = load_runtime(tiny_model_dirs["qat"]).predict_faces(x)
    for (target, precision), path in tiny_exports.items():
        runtime = load_runtime(path, RuntimeOptions(threads=1))
        probs = runtime.predict_faces(x)
        assert probs.shape == reference.shape
        assert abs(probs.sum(axis=1) - 1).max() < 0.02, (target, precision)
        assert abs(probs - reference).max() < 0.25, (target, precision)
