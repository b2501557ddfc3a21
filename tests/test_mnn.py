"""The MNN target (edgefer.export.mnn) and engine (edgefer.runtimes.mnn).

A small convolutional classifier made here with the ``onnx`` package (no TensorFlow) goes
through MNN's converter the way export writes it, and MNN runs it against ONNX Runtime;
one test exports a tiny trained Keras model with ``export_all``. The record, the registry
and the missing-engine message are checked without MNN; the rest skips with the reason
when MNN is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgefer.cli import main
from edgefer.errors import EngineMissingError, ExportError, ModelError
from edgefer.labels import CLASS_NAMES
from edgefer.preprocess import ModelInfo

onnx = pytest.importorskip("onnx")
from _onnx_faces import face_model, onnx_reference, random_faces  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

HAVE_MNN = all(importlib.util.find_spec(m) is not None for m in ("MNN", "_tools"))
needs_mnn = pytest.mark.skipif(not HAVE_MNN, reason="MNN is not installed "
                                                    "(pip install 'edgefer[mnn]')")

SIZE, CHANNELS, CLASSES = 48, 8, len(CLASS_NAMES)
ZEROED = 8  # stem weights set to zero: the sparsity inspect reports
KERNELS = CHANNELS * 9 + CHANNELS * 9 + CHANNELS * CLASSES  # stem, depthwise, Gemm


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def small_classifier(seed: int = 0) -> onnx.ModelProto:
    """What tf2onnx makes of a small MobileNet-style net: NHWC input transposed, a strided
    conv with TF's asymmetric padding, ReLU6, hard-swish as add/clip/mul/mul, a depthwise
    conv with ReLU, global pooling, flatten, Gemm and softmax."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    stem = w(CHANNELS, 1, 3, 3)
    stem[:, 0, 0, 0] = 0.0
    inits = [_const("stem_w", stem), _const("stem_b", w(CHANNELS)), _const("zero", 0.0),
             _const("six", 6.0), _const("three", 3.0), _const("sixth", 1 / 6),
             _const("dw_w", w(CHANNELS, 1, 3, 3)), _const("dw_b", w(CHANNELS)),
             _const("fc_w", w(CHANNELS, CLASSES) * 4), _const("fc_b", w(CLASSES))]
    n = helper.make_node
    nodes = [
        n("Transpose", ["face"], ["x0"], perm=[0, 3, 1, 2]),
        n("Conv", ["x0", "stem_w", "stem_b"], ["x1"], kernel_shape=[3, 3], strides=[2, 2],
          pads=[0, 0, 1, 1]),
        n("Clip", ["x1", "zero", "six"], ["x2"]),
        n("Add", ["x2", "three"], ["h1"]), n("Clip", ["h1", "zero", "six"], ["h2"]),
        n("Mul", ["h2", "sixth"], ["h3"]), n("Mul", ["x2", "h3"], ["x3"]),
        n("Conv", ["x3", "dw_w", "dw_b"], ["x4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
          group=CHANNELS),
        n("Relu", ["x4"], ["x5"]),
        n("GlobalAveragePool", ["x5"], ["p1"]), n("Flatten", ["p1"], ["p2"]),
        n("Gemm", ["p2", "fc_w", "fc_b"], ["logits"]),
        n("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    return face_model(nodes, inits, "small", SIZE, CLASSES)


def faces(count: int, seed: int = 1) -> np.ndarray:
    return random_faces(count, SIZE, seed)


def info_for(precision: str) -> ModelInfo:
    return ModelInfo(name="small", precision=precision)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The small model as export writes it, fp32 and fp16: precision -> .mnn path."""
    if not HAVE_MNN:
        pytest.skip("MNN is not installed (pip install 'edgefer[mnn]')")
    from edgefer.export.mnn import MnnExport, write_artifact

    folder = tmp_path_factory.mktemp("mnn")
    data = small_classifier().SerializeToString()
    paths = {}
    for precision in ("fp32", "fp16"):
        info = info_for(precision)
        path = folder / f"small-{precision}.mnn"
        write_artifact(MnnExport(data, fp16=precision == "fp16"),
                       json.dumps(info.to_dict(), sort_keys=True), info, path)
        paths[precision] = path
    return paths


@needs_mnn
def test_mnn_runs_the_conversion_like_onnx_runtime(exported) -> None:
    from edgefer.runtimes import RuntimeOptions, load_runtime

    runtime = load_runtime(exported["fp32"], RuntimeOptions(threads=1))
    assert runtime.engine == "mnn" and runtime.ran_on == "MNN CPU"
    batch = faces(8)
    got, expected = runtime.predict(batch), onnx_reference(small_classifier(), batch)
    assert got.shape == (8, CLASSES)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    runtime.bound_run(batch[:3])()  # the timed call runs


@needs_mnn
def test_fp16_stores_half_the_weights_and_stays_close(exported) -> None:
    from edgefer.export.mnn import conv_kernels
    from edgefer.runtimes import load_runtime

    fp32, fp16 = exported["fp32"], exported["fp16"]
    k32, k16 = conv_kernels(fp32), conv_kernels(fp16)
    assert sum(k.size for k in k32) == sum(k.size for k in k16) == KERNELS
    assert not all(np.array_equal(a, b) for a, b in zip(k32, k16, strict=True))
    # float16 values (MNN rounds toward zero): within one float16 step of float32's
    assert all(np.array_equal(b.astype(np.float16), b) and np.allclose(a, b, rtol=2**-10)
               for a, b in zip(k32, k16, strict=True))
    batch = faces(16, seed=2)
    expected = onnx_reference(small_classifier(), batch)
    got = load_runtime(fp16).predict(batch)
    assert np.abs(got - expected).max() < 0.02
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9
    assert fp16.stat().st_size < fp32.stat().st_size


@needs_mnn
def test_the_record_is_the_bizcode_and_reads_without_mnn(exported, monkeypatch) -> None:
    import MNN

    from edgefer.artifacts import read_info

    path = exported["fp16"]
    module = MNN.nn.load_module_from_file(str(path), [], [])
    assert json.loads(module.get_info()["bizCode"]) == info_for("fp16").to_dict()
    monkeypatch.setitem(sys.modules, "MNN", None)  # import MNN fails from here on
    assert read_info(path) == info_for("fp16")


def test_a_foreign_bizcode_is_no_record(tmp_path) -> None:
    """A model edgefer did not make ("MNN" as its bizCode) carries no edgefer record."""
    import flatbuffers

    from edgefer.export.mnn import mnn_record

    builder = flatbuffers.Builder(64)
    code = builder.CreateString("MNN")
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, code, 0)
    builder.Finish(builder.EndObject())
    path = tmp_path / "theirs.mnn"
    path.write_bytes(builder.Output())
    assert mnn_record(path) is None


@needs_mnn
def test_inspect_reads_ops_tensors_and_sparsity(exported) -> None:
    from edgefer.export.inspect import inspect_model

    seen = inspect_model(exported["fp16"])
    assert (seen.format, seen.precision) == ("mnn", "fp16")
    assert seen.inputs[0].shape == (1, SIZE, SIZE, 1)
    assert seen.outputs[0].shape == (1, CLASSES)
    assert seen.ops["Convolution"] >= 1 and seen.ops["ConvolutionDepthwise"] == 1
    assert "Const" not in seen.ops and seen.float_ops["ConvolutionDepthwise"] == 1
    assert seen.weight_sparsity == pytest.approx(ZEROED / KERNELS)
    assert seen.metadata["precision"] == "fp16"
    result = CliRunner().invoke(main, ["inspect", str(exported["fp32"])])
    assert result.exit_code == 0, result.output
    assert "mnn" in result.output and "device supports" not in result.output


def test_the_format_registry_knows_mnn_files(tmp_path) -> None:
    from edgefer.bench.runner import default_name
    from edgefer.formats import companion_of, format_of, model_files

    path = tmp_path / "m-fp16.mnn"
    path.write_bytes(b"x")
    fmt = format_of(path)
    assert (fmt.name, fmt.default_engine, fmt.extra) == ("mnn", "mnn", "mnn")
    assert model_files(path, strict=True) == [path] and companion_of(path) is None
    assert default_name(path) == "m-fp16"


def test_export_plan_gives_mnn_float_precisions_only() -> None:
    from edgefer.errors import ConfigError
    from edgefer.export import Precision, Target, plan

    assert (Target.MNN, Precision.FP16) in plan("mnn", "fp32,fp16")
    assert Target.MNN not in {t for t, _ in plan("all", "int8")}
    with pytest.raises(ConfigError, match="mnn cannot export int8"):
        plan("mnn", "int8")


@needs_mnn
def test_a_truncated_model_is_a_clear_error(exported, tmp_path) -> None:
    from edgefer.runtimes import load_runtime

    whole = exported["fp32"].read_bytes()
    cut = tmp_path / "cut.mnn"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ModelError, match="not a whole MNN model"):
        load_runtime(cut)
    for command in (["inspect", str(cut)], ["bench", str(cut), "--in-process"]):
        result = CliRunner().invoke(main, command)
        assert "not a whole MNN model" in result.output, result.output
        assert "Traceback" not in result.output
    garbage = tmp_path / "garbage.mnn"
    garbage.write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match="MNN"):
        load_runtime(garbage)


@needs_mnn
def test_the_converter_reports_what_it_cannot_convert(tmp_path) -> None:
    from edgefer.export.mnn import onnx_to_mnn

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match=r"MNN's converter could not convert bad\.onnx: .*"
                                          r"not onnx model"):
        onnx_to_mnn(bad, tmp_path / "bad.mnn")
    assert list(tmp_path.iterdir()) == [bad]  # no partial file left behind


def test_without_mnn_loading_names_the_extra(tmp_path, monkeypatch) -> None:
    from edgefer.runtimes import load_runtime

    path = tmp_path / "m.mnn"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "MNN", None)  # import MNN fails
    with pytest.raises(EngineMissingError, match=r"edgefer\[mnn\]"):
        load_runtime(path)
    from edgefer.export.mnn import onnx_to_mnn

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EngineMissingError, match=r"edgefer\[mnn\]"):
        onnx_to_mnn(onnx_path, tmp_path / "out.mnn")


@needs_mnn
def test_importing_mnn_prints_nothing_on_stdout() -> None:
    """MNN reports the CPU's features on stdout when imported: kept off edgefer's output
    (``predict --json`` writes there), shown on stderr with -v."""
    script = ("from edgefer.runtimes.mnn import mnn_module\nmnn_module()\nprint('done')\n")
    for verbose in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "EDGEFER_VERBOSE": verbose})
        assert done.stdout == "done\n", done.stdout + done.stderr
        assert ("device supports" in done.stderr) == (verbose == "1")


@needs_mnn
def test_bench_gives_an_ok_row(exported, tmp_path, monkeypatch) -> None:
    from _bench_models import write_fer_csv

    monkeypatch.setenv("EDGEFER_CACHE", str(tmp_path / "cache"))
    data = write_fer_csv(tmp_path / "fer.csv")
    model = tmp_path / exported["fp32"].name
    shutil.copy(exported["fp32"], model)
    out = tmp_path / "run.json"
    result = CliRunner().invoke(main, [
        "bench", str(model), "--data", str(data), "--json", str(out), "--warmup", "1",
        "--min-runs", "3", "--min-time", "0", "--threads", "1", "--batch", "1,4"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["batch"], r["status"]) for r in rows] == [
        ("small-fp32", 1, "ok"), ("small-fp32", 4, "ok")]
    row = rows[0]
    assert row["engine"] == "mnn" and row["target"] == "mnn" and row["precision"] == "fp32"
    assert row["latency_ms"]["p50"] > 0 and row["accuracy"]["images"] == 28


@needs_mnn
@pytest.mark.tf
def test_export_of_a_keras_model_agrees_with_it(tiny_model_dirs, synthetic_fer,
                                                tmp_path) -> None:
    from edgefer.data import load_split
    from edgefer.export import Precision, Target, export_all
    from edgefer.runtimes import load_runtime

    pairs = [(Target.MNN, Precision.FP32), (Target.MNN, Precision.FP16)]
    results = list(export_all(tiny_model_dirs["float"], pairs, tmp_path, synthetic_fer,
                              parity_images=40))
    test = load_split(synthetic_fer, "test").images
    expected = load_runtime(tiny_model_dirs["float"]).predict_faces(test)
    for result, tolerance in zip(results, (1e-4, 0.03), strict=True):
        assert result.path.name.endswith(f"-{result.options.precision.value}.mnn")
        got = load_runtime(result.path).predict_faces(test)
        assert np.abs(got - expected).max() < tolerance
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95
