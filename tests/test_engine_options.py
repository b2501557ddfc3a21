"""Each engine's own options: a frozen dataclass per engine, named in its EngineSpec,
held by RuntimeOptions beside the shared fields (issue 15)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from edgefer.engines import ENGINES, engine_named, engine_with_options
from edgefer.errors import ConfigError
from edgefer.runtimes import RuntimeOptions
from edgefer.runtimes.onnxrt import OnnxRuntimeOptions
from edgefer.runtimes.openvino import OpenVINOOptions


def test_each_engine_names_its_options_class():
    assert engine_named("onnxruntime").options_class() is OnnxRuntimeOptions
    assert engine_named("openvino").options_class() is OpenVINOOptions
    assert engine_named("litert").options_class() is None
    for spec in ENGINES:
        kind = spec.options_class()
        if kind is not None:
            assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen
            assert engine_with_options(kind()) is spec


def test_no_engine_fields_on_the_shared_options():
    names = {f.name for f in dataclasses.fields(RuntimeOptions)}
    assert names == {"device", "threads", "xnnpack", "engine_options"}


def test_defaults_without_options_given():
    options = RuntimeOptions(threads=2)
    assert options.for_engine("onnxruntime") == OnnxRuntimeOptions(optimization="all")
    assert options.for_engine("openvino") == OpenVINOOptions(hint="latency", streams=None)
    assert options.for_engine("litert") is None


def test_given_options_reach_their_engine_only():
    ov = OpenVINOOptions(hint="throughput", streams=2)
    options = RuntimeOptions(engine_options=(ov, OnnxRuntimeOptions("basic")))
    assert options.for_engine("openvino") is ov
    assert options.for_engine("onnxruntime").optimization == "basic"
    assert RuntimeOptions(engine_options=ov).engine_options == (ov,)  # one, not a tuple
    hash(options)  # frozen all the way down


@pytest.mark.parametrize("make, message", [
    (lambda: OnnxRuntimeOptions("fast"), "unknown ONNX Runtime optimisation level 'fast'"),
    (lambda: OpenVINOOptions(hint="speed"), "hint must be latency or throughput"),
    (lambda: OpenVINOOptions(streams=0), "streams must be at least 1"),
    (lambda: RuntimeOptions(engine_options=(OpenVINOOptions(), OpenVINOOptions())),
     "openvino twice"),
    (lambda: RuntimeOptions(engine_options=({"hint": "latency"},)), "dict is no engine's"),
])
def test_invalid_options_are_refused_once_when_made(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_the_engine_table_stays_light():
    code = ("import sys, edgefer.engines; "
            "print(any(m.startswith(('edgefer.runtimes', 'onnxruntime', 'openvino')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_the_options_reach_the_engines(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from _bench_models import make_band_onnx

    from edgefer.runtimes import load_runtime

    path = make_band_onnx(tmp_path / "band.onnx")
    options = RuntimeOptions(threads=1, engine_options=(
        OnnxRuntimeOptions("disable"), OpenVINOOptions(hint="throughput", streams=1)))
    ort = load_runtime(path, options)
    assert ort._session.get_session_options().graph_optimization_level.name == \
        "ORT_DISABLE_ALL"
    ov = load_runtime(path, options, engine="openvino")
    compiled = ov._compile(1)
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert int(compiled.get_property("NUM_STREAMS")) == 1
