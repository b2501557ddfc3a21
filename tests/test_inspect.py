"""`edgefer inspect` on hand-built INT8 models: a pruned weight stored as uint8 is its zero
point (128), and the sparsity must count it as zero in ONNX and in OpenVINO IR alike."""

from __future__ import annotations

import numpy as np
import pytest


def _pruned_qdq_onnx(path):
    """Conv with per-channel uint8 weights (zero point 128), half of them pruned; its input
    quantized and then reshaped, as tf2onnx writes a one-channel NHWC stem."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(1, 127, (8, 4, 3, 3)) * rng.choice([-1, 1], (8, 4, 3, 3))
    weights[:, :2] = 0  # half pruned
    inits = [numpy_helper.from_array((weights + 128).astype(np.uint8), "w_q"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.full(8, 128, np.uint8), "w_zero"),
             numpy_helper.from_array(np.asarray(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.asarray(128, np.uint8), "x_zero"),
             numpy_helper.from_array(np.asarray([1, 4, 8, 8], np.int64), "x_shape")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
             helper.make_node("Reshape", ["x_dq", "x_shape"], ["x_in"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["x_in", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "pruned", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_onnx_sparsity_counts_the_zero_point_as_zero(tmp_path):
    pytest.importorskip("onnx")
    from edgefer.export.inspect import inspect_model

    found = inspect_model(_pruned_qdq_onnx(tmp_path / "pruned.onnx"))
    assert found.weight_sparsity == pytest.approx(0.5)


def test_openvino_sparsity_and_inputs(tmp_path):
    pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from edgefer.export.inspect import inspect_model

    xml = tmp_path / "pruned.xml"
    ov.save_model(ov.convert_model(str(_pruned_qdq_onnx(tmp_path / "pruned.onnx"))), str(xml))
    found = inspect_model(xml)
    assert found.format == "openvino"
    assert found.weight_sparsity == pytest.approx(0.5)
    assert found.float_ops == {}  # its input is fake-quantized, through a Reshape
    assert found.inputs[0].dtype == "float32" and found.inputs[0].shape == (1, 4, 8, 8)


def test_a_model_folder_is_named_as_such_not_missing(tmp_path):
    from edgefer.errors import ModelError
    from edgefer.export.inspect import inspect_model

    with pytest.raises(ModelError, match="is a folder: inspect reads one exported model file"):
        inspect_model(tmp_path)
    with pytest.raises(ModelError, match="model not found"):
        inspect_model(tmp_path / "nope.tflite")


# --- model files that are not what they claim (issue 16, item 10) -----------------------

def _invoke(*args):
    from click.testing import CliRunner

    from edgefer.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_inspect_refuses_an_empty_or_graphless_onnx(tmp_path):
    pytest.importorskip("onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = _invoke("inspect", empty)
    assert result.exit_code == 1 and "empty (0 bytes)" in result.output
    graphless = tmp_path / "graphless.onnx"
    graphless.write_bytes(b"\x08\x08")  # a valid protobuf: ir_version 8, nothing else
    result = _invoke("inspect", graphless)
    assert result.exit_code == 1 and "not an ONNX model (it holds no graph)" in result.output
    assert "int8" not in result.output


def test_inspect_an_openvino_ir_whose_tensors_have_no_names(tmp_path):
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    parameter = ops.parameter([1, 48, 48, 1], np.float32)
    ov.save_model(ov.Model([ops.result(ops.relu(parameter))], [parameter], "unnamed"),
                  str(tmp_path / "unnamed.xml"))
    xml = tmp_path / "unnamed.xml"
    xml.write_text(xml.read_text().replace(' names="', ' dropped="'))  # tensors unnamed
    result = _invoke("inspect", xml)
    assert result.exit_code == 0, result.output
    assert "Parameter" in result.output and "float32 [1, 48, 48, 1]" in result.output


def _with_record(path, record: str):
    import onnx

    from edgefer.artifacts import METADATA_KEY

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, record
    onnx.save(model, str(path))
    return path


def test_a_nan_scale_in_metadata_is_refused_when_loading(tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    from _bench_models import make_band_onnx

    from edgefer.artifacts import read_info
    from edgefer.errors import ModelError
    from edgefer.preprocess import ModelInfo

    record = ModelInfo().to_dict()
    record["preprocess"]["scale"] = float("nan")
    model = _with_record(make_band_onnx(tmp_path / "nan.onnx"), json.dumps(record))
    with pytest.raises(ModelError, match="input scale must be a finite number, got nan"):
        read_info(model)
    face = tmp_path / "face.png"
    import cv2

    cv2.imwrite(str(face), np.full((48, 48), 99, np.uint8))
    result = _invoke("predict", face, "--model", model, "--json", "--no-detect")
    assert result.exit_code == 1 and "finite number" in result.output
    assert "NaN" not in result.output


def test_a_deeply_nested_model_record_is_a_clear_error(tmp_path):
    from edgefer.artifacts import read_info
    from edgefer.errors import ModelError

    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "weights.h5").write_bytes(b"")
    with pytest.raises(ModelError, match=r"model\.json: unreadable model record \(nested"):
        read_info(folder)
    result = _invoke("predict", tmp_path, "--model", folder)
    assert result.exit_code == 1 and "nested too deeply" in result.output
    assert "RecursionError" not in result.output
