"""Engine latency: ``Runtime.bound_run`` times the engine's run call alone, its input bound
before timing (what litert-benchmark and benchmark_app time), beside the Python round trip;
files with a static batch of 1 run larger batches one call per image."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from _bench_models import BAND_INFO, band_faces, make_band_onnx

from edgefer.bench.measure import MeasureJob, MeasureOptions, measure
from edgefer.bench.runner import ModelSpec, outcome_rows
from edgefer.runtimes import RuntimeOptions, load_runtime

QUICK = MeasureOptions(warmup=1, min_runs=3, min_time_s=0)


class Spy:
    """An engine object whose method calls are counted (and their last results kept)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.calls: Counter = Counter()
        self.returned: dict = {}

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] += 1
            self.returned[name] = attr(*args, **kwargs)
            return self.returned[name]
        return counted


def band_inputs(count: int) -> np.ndarray:
    return BAND_INFO.preprocess(band_faces(1)[0][:count])


def openvino_ir(onnx_path, xml_path):
    ov = pytest.importorskip("openvino")
    from edgefer.artifacts import METADATA_KEY

    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(BAND_INFO.to_dict()), [METADATA_KEY, "info"])
    ov.save_model(model, str(xml_path))
    return xml_path


@pytest.fixture(scope="module")
def band(tmp_path_factory):
    folder = tmp_path_factory.mktemp("band")
    files = {"onnx": make_band_onnx(folder / "band.onnx"),
             "onnx-static": make_band_onnx(folder / "band1.onnx", batch=1)}
    files["openvino"] = openvino_ir(files["onnx"], folder / "band.xml")
    files["openvino-static"] = openvino_ir(files["onnx-static"], folder / "band1.xml")
    return files


# --- the engine's call alone -----------------------------------------------------------

def test_onnxruntime_times_run_with_iobinding_alone(band):
    runtime = load_runtime(band["onnx"], RuntimeOptions(threads=1))
    x = band_inputs(3)
    expected = runtime._run(x)
    runtime._session = spy = Spy(runtime._session)
    engine_call = runtime.bound_run(x)
    spy.calls.clear()
    for _ in range(4):
        engine_call()
    assert spy.calls == {"run_with_iobinding": 4}  # no session.run, no new binding
    bound_output = spy.returned["io_binding"].copy_outputs_to_cpu()[0]
    np.testing.assert_allclose(bound_output, expected, rtol=1e-6)


def test_openvino_times_infer_on_a_preset_tensor(band):
    runtime = load_runtime(band["openvino"], RuntimeOptions(threads=1))
    x = band_inputs(3)
    expected = runtime._run(x)
    compiled = Spy(runtime._compile(3))
    runtime._compiled[3] = compiled
    requests = []

    def new_request():
        requests.append(Spy(compiled._inner.create_infer_request()))
        return requests[-1]

    compiled.create_infer_request = new_request
    engine_call = runtime.bound_run(x)
    for request in requests:
        request.calls.clear()
    for _ in range(4):
        engine_call()
    assert [r.calls for r in requests] == [{"infer": 4}]  # the input is not set again
    np.testing.assert_allclose(requests[0].get_output_tensor().data, expected, rtol=1e-6)


@pytest.mark.tf
def test_litert_times_invoke_alone(tiny_tflite):
    runtime = load_runtime(tiny_tflite, RuntimeOptions(threads=1))
    x = band_inputs(2)
    expected = runtime._run(x)
    runtime._interp = spy = Spy(runtime._interp)
    engine_call = runtime.bound_run(x)
    spy.calls.clear()
    for _ in range(4):
        engine_call()
    assert spy.calls == {"invoke": 4}  # no set_tensor, no get_tensor
    output = runtime._interp.get_tensor(runtime._output["index"])
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.tf
def test_keras_times_its_traced_function_without_the_round_trip():
    from pathlib import Path

    from edgefer._tf import keras
    from edgefer.preprocess import ModelInfo
    from edgefer.runtimes.keras import KerasRuntime

    k = keras()
    model = k.Sequential([k.layers.Input((48, 48, 1)), k.layers.Flatten(),
                          k.layers.Dense(7, activation="softmax")])
    runtime = KerasRuntime(Path("keras"), ModelInfo(name="k"), RuntimeOptions(), model, "/CPU:0")
    x = band_inputs(2)
    expected = runtime.predict(x)
    engine_call = runtime.bound_run(x)

    def no_round_trip(batch):
        raise AssertionError("the engine call went through _run")

    runtime._run = no_round_trip
    assert engine_call() is None
    np.testing.assert_allclose(runtime._call(x).numpy(), expected, rtol=1e-5)


# --- the measurement keeps both ---------------------------------------------------------

def test_measure_times_the_engine_and_the_round_trip_apart(band, monkeypatch):
    from edgefer.runtimes.onnxrt import OnnxRuntime

    used = Counter()
    bound_run, predict = OnnxRuntime.bound_run, OnnxRuntime.predict

    def counting_bound_run(self, batch):
        used["bound_run", len(batch)] += 1
        return bound_run(self, batch)

    def counting_predict(self, batch):
        used["predict", len(batch)] += 1
        return predict(self, batch)

    monkeypatch.setattr(OnnxRuntime, "bound_run", counting_bound_run)
    monkeypatch.setattr(OnnxRuntime, "predict", counting_predict)
    outcome = measure(MeasureJob(path=str(band["onnx"]), threads=1, batches=(1, 4),
                                 options=QUICK))
    assert outcome.status == "ok", outcome.reason
    assert used["bound_run", 1] == used["bound_run", 4] == 1
    assert used["predict", 4] == 1 + 3  # warm-up and timed calls of the round trip
    for batch in (1, 4):
        assert len(outcome.samples_ms[batch]) == len(outcome.call_samples_ms[batch]) == 3
    spec = ModelSpec(band["onnx"])
    from edgefer.bench.results import BenchResult

    base = BenchResult(model=spec.name, target="onnx", precision="fp32", engine="onnxruntime",
                       device="cpu", threads=1, batch=1)
    rows = outcome_rows(base, outcome, (1, 4))
    for row in rows:
        assert row.latency_ms.runs == row.call_ms.runs == 3
        per_image = np.asarray(outcome.call_samples_ms[row.batch]) / row.batch
        assert row.call_ms.p50 == pytest.approx(float(np.median(per_image)))
        engine = np.asarray(outcome.samples_ms[row.batch]) / row.batch
        assert row.latency_ms.p50 == pytest.approx(float(np.median(engine)))


# --- static batch-1 files -----------------------------------------------------------------

@pytest.mark.parametrize("engine", ["onnx-static", "openvino-static"])
def test_a_static_batch_file_runs_a_batch_one_image_at_a_time(band, engine):
    runtime = load_runtime(band[engine], RuntimeOptions(threads=1))
    x = band_inputs(5)
    together = runtime.predict(x)
    alone = np.concatenate([runtime.predict(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-6)
    assert (together.argmax(1) == np.arange(5)).all()
    if engine.startswith("openvino"):
        assert set(runtime._compiled) == {1}  # never reshaped to the batch


def test_static_batch_engine_call_runs_once_per_image(band):
    runtime = load_runtime(band["onnx-static"], RuntimeOptions(threads=1))
    runtime._session = spy = Spy(runtime._session)
    engine_call = runtime.bound_run(band_inputs(5))
    spy.calls.clear()
    engine_call()
    assert spy.calls == {"run_with_iobinding": 5}


@pytest.mark.tf
def test_static_batch_tflite_runs_a_batch_one_image_at_a_time(tmp_path):
    from edgefer._tf import keras, tf
    from edgefer.artifacts import METADATA_KEY, tflite_with_metadata

    k, tf_ = keras(), tf()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input((48, 48, 1)), k.layers.Reshape((48 * 48,)),
                          k.layers.Dense(7, activation="softmax")])
    function = tf_.function(lambda x: model(x)).get_concrete_function(
        tf_.TensorSpec((1, 48, 48, 1), tf_.float32))
    converter = tf_.lite.TFLiteConverter.from_concrete_functions([function], model)
    path = tmp_path / "static.tflite"
    path.write_bytes(tflite_with_metadata(converter.convert(), {
        METADATA_KEY: json.dumps(BAND_INFO.to_dict()).encode()}))
    runtime = load_runtime(path, RuntimeOptions(threads=1))
    assert list(runtime._input["shape_signature"]) == [1, 48, 48, 1]
    x = band_inputs(5)
    alone = np.concatenate([runtime.predict(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(runtime.predict(x), alone, rtol=1e-6)
    runtime._interp = spy = Spy(runtime._interp)
    engine_call = runtime.bound_run(x)
    spy.calls.clear()
    engine_call()
    assert spy.calls == {"invoke": 5}
