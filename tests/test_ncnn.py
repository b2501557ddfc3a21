"""ONNX -> ncnn conversion (edgefer.export.ncnn) and the ncnn runtime.

The converter's files are checked without ncnn: parsed back, their weights read in layer
order, and run by a numpy reading of ncnn's layers (tests/_ncnn_numpy.py) against ONNX
Runtime on a small MobileNetV3-like graph. Tests that run ncnn itself skip with the
reason when its Python module is not installed (benchmarks/build_ncnn.sh builds it).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgefer.errors import ExportError

onnx = pytest.importorskip("onnx")
from _ncnn_numpy import NumpyNcnn  # noqa: E402
from _onnx_faces import face_model, onnx_reference, random_faces  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from edgefer.export.ncnn import (  # noqa: E402
    FP16_FLAG,
    INPUT_BLOB,
    OUTPUT_BLOB,
    onnx_model_to_ncnn,
    onnx_to_ncnn,
    read_param,
    storage_of,
)

HAVE_NCNN = importlib.util.find_spec("ncnn") is not None
needs_ncnn = pytest.mark.skipif(
    not HAVE_NCNN, reason="the ncnn Python module is not installed (pip install ncnn, or "
                          "benchmarks/build_ncnn.sh SRC PREFIX)")

SIZE, CHANNELS, CLASSES = 16, 8, 5


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def mobilenet_like(seed: int = 0, extra_node: onnx.NodeProto | None = None) -> onnx.ModelProto:
    """What tf2onnx makes of a MobileNetV3 block with QAT range clips: NHWC input
    reshaped to NCHW, a strided conv with TF's asymmetric padding, min/max clips,
    hard-swish as add/clip/mul/mul, a depthwise conv with ReLU, a squeeze-excite gate
    multiplying the map, global pooling, squeeze, two Gemms and a softmax."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.4, shape).astype(np.float32)  # noqa: E731
    inits = [
        numpy_helper.from_array(np.array([1, 1, SIZE, SIZE], np.int64), "nchw"),
        _const("stem_w", w(CHANNELS, 1, 3, 3)), _const("stem_b", w(CHANNELS)),
        _const("hi", 2.5), _const("lo", [[[[-1.5]]]]), _const("three", 3.0),
        _const("zero", 0.0), _const("six", 6.0), _const("sixth", 1 / 6),
        _const("dw_w", w(CHANNELS, 1, 3, 3)), _const("dw_b", w(CHANNELS)),
        _const("se1_w", w(4, CHANNELS, 1, 1)), _const("se1_b", w(4)),
        _const("se2_w", w(CHANNELS, 4, 1, 1)), _const("se2_b", w(CHANNELS)),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        _const("fc_w", w(CHANNELS, 16)), _const("fc_b", w(16)),
        _const("out_w", w(16, CLASSES)), _const("out_b", w(CLASSES)),
    ]
    n = helper.make_node
    nodes = [
        n("Reshape", ["face", "nchw"], ["x0"]),
        n("Conv", ["x0", "stem_w", "stem_b"], ["x1"], kernel_shape=[3, 3], strides=[2, 2],
          pads=[0, 0, 1, 1], group=1),
        n("Min", ["x1", "hi"], ["x2"]), n("Max", ["x2", "lo"], ["x3"]),
        n("Add", ["x3", "three"], ["h1"]), n("Clip", ["h1", "zero", "six"], ["h2"]),
        n("Mul", ["sixth", "h2"], ["h3"]), n("Mul", ["x3", "h3"], ["x4"]),
        n("Conv", ["x4", "dw_w", "dw_b"], ["x5"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
          group=CHANNELS),
        n("Relu", ["x5"], ["x6"]),
        n("GlobalAveragePool", ["x6"], ["s1"]),
        n("Conv", ["s1", "se1_w", "se1_b"], ["s2"], kernel_shape=[1, 1]),
        n("Relu", ["s2"], ["s3"]),
        n("Conv", ["s3", "se2_w", "se2_b"], ["s4"], kernel_shape=[1, 1]),
        n("Sigmoid", ["s4"], ["s5"]),
        n("Mul", ["x6", "s5"], ["x7"]),
        n("GlobalAveragePool", ["x7"], ["p1"]),
        n("Squeeze", ["p1", "axes"], ["p2"]),
        n("Gemm", ["p2", "fc_w", "fc_b"], ["f1"]),
        n("Relu", ["f1"], ["f2"]),
        n("Gemm", ["f2", "out_w", "out_b"], ["logits"]),
        n("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    if extra_node is not None:
        nodes.insert(-1, extra_node)
    return face_model(nodes, inits, "mobilenet_like", SIZE, CLASSES)


def faces(count: int, seed: int = 1) -> np.ndarray:
    return random_faces(count, SIZE, seed)


@pytest.fixture()
def converted(tmp_path: Path):
    model = mobilenet_like()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    param, weights = tmp_path / "m.ncnn.param", tmp_path / "m.ncnn.bin"
    result = onnx_to_ncnn(path, param, weights)
    return model, result, param, weights


def test_layers_fold_what_ncnn_runs_as_one(converted) -> None:
    _, result, param, _ = converted
    ops = Counter(layer.type for layer in read_param(param))
    assert ops == result.op_counts
    # min/max -> Clip folded into the stem conv; the add/clip/mul/mul chain -> HardSwish;
    # the ReLUs into their convs and inner product; the gate reshaped to (c, 1, 1)
    assert ops["HardSwish"] == 1 and ops["ReLU"] == 0
    assert ops["BinaryOp"] == 1 and ops["Reshape"] == 1
    # the squeeze-excite 1x1 convs of a pooled vector are inner products
    assert ops["Convolution"] == 1 and ops["ConvolutionDepthWise"] == 1
    assert ops["InnerProduct"] == 4 and ops["Softmax"] == 1 and ops["Pooling"] == 2
    stem = next(layer for layer in read_param(param) if layer.type == "Convolution")
    # TF's SAME padding for stride 2: nothing before, one after
    assert (stem.params[4], stem.params[15], stem.params[14], stem.params[16]) \
        == ("0", "1", "0", "1")
    assert stem.params[9] == "3"  # the clip runs in the conv
    assert [float(v) for v in stem.params[10].split(",")[1:]] == [-1.5, 2.5]


def test_param_file_follows_ncnn_rules(converted) -> None:
    _, _, param, _ = converted
    lines = param.read_text().splitlines()
    layers = read_param(param)
    layer_count, blob_count = (int(v) for v in lines[1].split())
    assert layer_count == len(layers)
    produced = [b for layer in layers for b in layer.outputs]
    consumed = [b for layer in layers for b in layer.inputs]
    assert len(produced) == len(set(produced)) == blob_count
    assert len(consumed) == len(set(consumed)), "a blob read twice needs a Split"
    assert set(consumed) <= set(produced)
    assert layers[0].type == "Input" and layers[0].outputs == (INPUT_BLOB,)
    assert layers[0].params == {0: str(SIZE), 1: str(SIZE), 2: "1"}
    assert layers[-1].outputs == (OUTPUT_BLOB,)
    assert len({layer.name for layer in layers}) == len(layers)
    # ncnn reads at most 15 characters per value
    assert all(len(v) <= 15 for layer in layers for value in layer.params.values()
               for v in value.split(","))


def test_numpy_reading_of_the_files_matches_onnx_runtime(converted) -> None:
    model, _, param, weights = converted
    batch = faces(6)
    reference = onnx_reference(model, batch)
    ncnn_like = NumpyNcnn(param, weights)  # reads every byte of the .bin in layer order
    got = np.stack([ncnn_like.run(x.transpose(2, 0, 1)) for x in batch])
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=2e-5)


def test_fp16_weights_are_flagged_and_half_the_size(converted, tmp_path: Path) -> None:
    _, _, param32, bin32 = converted
    param16, bin16 = tmp_path / "h.ncnn.param", tmp_path / "h.ncnn.bin"
    onnx_to_ncnn(tmp_path / "m.onnx", param16, bin16, fp16=True)
    assert param16.read_text() == param32.read_text()
    assert storage_of(bin16) == "fp16" and storage_of(bin32) == "fp32"
    assert int.from_bytes(bin16.read_bytes()[:4], "little") == FP16_FLAG
    assert bin16.stat().st_size < 0.7 * bin32.stat().st_size
    batch = faces(4)
    half = NumpyNcnn(param16, bin16)
    full = NumpyNcnn(param32, bin32)
    got16 = np.stack([half.run(x.transpose(2, 0, 1)) for x in batch])
    got32 = np.stack([full.run(x.transpose(2, 0, 1)) for x in batch])
    assert not np.array_equal(got16, got32)  # the weights really are rounded
    np.testing.assert_allclose(got16, got32, atol=1e-2)


def test_unsupported_operator_is_named() -> None:
    model = mobilenet_like(extra_node=helper.make_node("Tanh", ["logits"], ["unused"],
                                                      name="my_tanh"))
    with pytest.raises(ExportError, match=r"Tanh.*my_tanh"):
        onnx_model_to_ncnn(model)


def test_unsupported_reshape_says_what_is_supported() -> None:
    model = mobilenet_like()
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.array([1, 1, SIZE * SIZE, 1], np.int64), "nchw"))
    with pytest.raises(ExportError, match="Reshape"):
        onnx_model_to_ncnn(model)


def test_non_scalar_constant_operand_is_refused() -> None:
    model = mobilenet_like()
    for i, init in enumerate(model.graph.initializer):
        if init.name == "three":
            model.graph.initializer[i].CopyFrom(_const("three", np.full((1, CHANNELS, 1, 1), 3)))
    with pytest.raises(ExportError, match="scalars only"):
        onnx_model_to_ncnn(model)


def small_info(precision: str = "fp32"):
    from edgefer.preprocess import ModelInfo

    return ModelInfo.from_dict({
        "classes": [f"c{i}" for i in range(CLASSES)], "name": "t", "precision": precision,
        "preprocess": {"channels": 1, "offset": -1.0, "scale": 1 / 127.5, "size": SIZE}})


@pytest.fixture()
def exported(tmp_path: Path) -> Path:
    """The small model as edgefer's export writes it: .ncnn.param, .ncnn.bin, .ncnn.json."""
    import json

    from edgefer.export.ncnn import write_artifact

    info = small_info("fp16")
    path = tmp_path / "t-fp16.ncnn.param"
    write_artifact(onnx_model_to_ncnn(mobilenet_like(), fp16=True),
                   json.dumps(info.to_dict()), info, path)
    return path


def test_the_format_registry_knows_ncnn_files(exported: Path) -> None:
    from edgefer.artifacts import read_info
    from edgefer.formats import companion_of, format_of, model_files

    weights, record = exported.with_suffix(".bin"), exported.with_suffix(".json")
    assert format_of(exported).name == "ncnn" and format_of(exported).default_engine == "ncnn"
    assert model_files(exported, strict=True) == [exported, weights, record]
    fmt, part = companion_of(weights)
    assert fmt.name == "ncnn" and part.what == "weights"
    assert fmt.model_beside(weights, part) == exported
    # a plain m.bin stays OpenVINO's
    assert companion_of(exported.with_name("m.bin"))[0].name == "openvino"
    assert read_info(exported) == small_info("fp16")
    weights.unlink()
    with pytest.raises(Exception, match=r"weights t-fp16\.ncnn\.bin are missing"):
        model_files(exported, strict=True)


def test_bench_names_an_ncnn_model_without_its_suffix(exported: Path) -> None:
    from edgefer.bench.runner import default_name

    assert default_name(exported) == "t-fp16"  # as t-fp16.tflite would be named
    assert default_name(exported.with_name("t-fp16.tflite")) == "t-fp16"


def test_inspect_reads_ncnn_without_ncnn(exported: Path) -> None:
    from edgefer.export.inspect import inspect_model

    seen = inspect_model(exported)
    assert (seen.format, seen.precision) == ("ncnn", "fp16")
    assert seen.inputs[0].shape == (1, SIZE, SIZE, 1)
    assert seen.outputs[0].shape == (1, CLASSES)
    assert seen.ops["InnerProduct"] == 4 and seen.ops["HardSwish"] == 1
    assert seen.metadata["precision"] == "fp16"
    assert 0.0 <= seen.weight_sparsity < 0.1


def test_export_plan_all_skips_what_ncnn_cannot_make() -> None:
    from edgefer.errors import ConfigError
    from edgefer.export import Precision, Target, plan

    assert Target.NCNN not in {t for t, _ in plan("all", "int8")}
    # ``all`` means the targets whose engine is installed (each export is checked by running it)
    assert ((Target.NCNN, Precision.FP16) in plan("all", "fp16")) == HAVE_NCNN
    assert (Target.NCNN, Precision.FP16) in plan("ncnn", "fp16")
    with pytest.raises(ConfigError, match="ncnn cannot export int8"):
        plan("ncnn", "int8")


@pytest.mark.skipif(HAVE_NCNN, reason="ncnn is installed: the missing-engine message is "
                                      "not reachable")
def test_without_ncnn_loading_names_the_extra(exported: Path) -> None:
    from edgefer.errors import EngineMissingError
    from edgefer.runtimes import load_runtime

    with pytest.raises(EngineMissingError, match=r"edgefer\[ncnn\]"):
        load_runtime(exported)


@needs_ncnn
def test_ncnn_runs_the_conversion_like_onnx_runtime(converted) -> None:
    from edgefer.runtimes.ncnn import NcnnRuntime

    model, _, param, _ = converted
    runtime = NcnnRuntime.load(param, info=small_info())
    batch = faces(8)
    got = runtime.predict(batch)
    np.testing.assert_allclose(got, onnx_reference(model, batch), atol=1e-4)
    assert runtime.ran_on == "ncnn CPU"
    runtime.bound_run(batch[:2])()  # the timed call runs


@needs_ncnn
def test_ncnn_float32_throughout_when_fp16_is_off(converted) -> None:
    from edgefer.runtimes import RuntimeOptions
    from edgefer.runtimes.ncnn import NcnnOptions, NcnnRuntime

    model, _, param, _ = converted
    off = RuntimeOptions(engine_options=(NcnnOptions(fp16=False),))
    runtime = NcnnRuntime.load(param, off, info=small_info())
    flags = ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage")
    assert not any(getattr(runtime._net.opt, flag) for flag in flags)
    batch = faces(8)
    np.testing.assert_allclose(runtime.predict(batch), onnx_reference(model, batch), atol=2e-5)
    # ncnn's own defaults otherwise: what an application embedding it gets
    assert NcnnRuntime.load(param, info=small_info())._net.opt.use_fp16_storage


@needs_ncnn
def test_ncnn_missing_weights_is_a_model_error(converted) -> None:
    from edgefer.errors import ModelError
    from edgefer.runtimes.ncnn import NcnnRuntime

    _, _, param, weights = converted
    weights.unlink()
    with pytest.raises(ModelError, match="weights"):
        NcnnRuntime.load(param)


def test_export_publishes_the_param_file_last(tmp_path: Path, monkeypatch) -> None:
    """Readers take a model as complete once its main file is there: the .ncnn.param goes
    last, after its weights and record (as OpenVINO's .xml after its .bin)."""
    import os

    from edgefer.export import pipeline

    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    for name in ("m.ncnn.param", "m.ncnn.bin", "m.ncnn.json"):
        (staging / name).write_text(name)
    moved: list[str] = []
    monkeypatch.setattr(pipeline.os, "replace",
                        lambda src, dst: (moved.append(Path(src).name), os.rename(src, dst)))
    pipeline._publish(staging, out)
    assert moved[-1] == "m.ncnn.param" and sorted(moved) == sorted(
        ["m.ncnn.param", "m.ncnn.bin", "m.ncnn.json"])
