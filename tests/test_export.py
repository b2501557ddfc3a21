"""Export matrix (target x precision) of a tiny QAT model: every artifact loads with its
engine, carries its record, and agrees with the Keras model it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgefer.errors import ConfigError, ExportError
from edgefer.export import SUPPORTED, ExportOptions, Precision, Target

pytestmark = pytest.mark.tf

PAIRS = [(t.value, p.value) for t, ps in SUPPORTED.items() for p in ps]


@pytest.fixture(scope="module")
def reference(tiny_model_dirs, synthetic_fer):
    from edgefer.data import load_split
    from edgefer.runtimes import load_runtime

    faces = load_split(synthetic_fer, "test").images
    return faces, load_runtime(tiny_model_dirs["qat"]).predict_faces(faces)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "precision"), PAIRS)
def test_each_export_loads_and_agrees(tiny_exports, reference, target, precision):
    from edgefer.artifacts import read_info
    from edgefer.runtimes import load_runtime

    if (target, precision) not in tiny_exports:
        pytest.skip(f"{target}'s engine is not installed here (export checks what it writes)")
    path = tiny_exports[(target, precision)]
    info = read_info(path)
    assert info.precision.startswith(precision) and info.source_sha256
    assert info.classes[3] == "happy" and info.preprocess.size == 48
    faces, expected = reference
    probs = load_runtime(path).predict_faces(faces)
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.02)
    tolerance = {"fp32": 1e-4, "fp16": 0.02, "dynamic": 0.1, "int8": 0.15}[precision]
    # fp32/fp16 come from the float twin; QAT int8 simulates what the Keras model computes
    assert np.abs(probs - expected).max() < max(tolerance, 0.15)


@pytest.mark.slow
def test_int8_is_smaller_than_fp32(tiny_exports):
    for target in ("tflite", "onnx"):
        fp32 = tiny_exports[(target, "fp32")].stat().st_size
        int8 = tiny_exports[(target, "int8")].stat().st_size
        # the tiny model's QDQ scales weigh more than the shipped model's (3.3x smaller there)
        assert int8 < fp32 / 1.8, target


@pytest.mark.slow
def test_calibrated_int8_from_a_float_model(tiny_model_dirs, synthetic_fer, tiny_calibration,
                                            tmp_path):
    from edgefer.artifacts import read_info
    from edgefer.export import export_all

    pairs = [(Target.TFLITE, Precision.INT8), (Target.ONNX, Precision.INT8),
             (Target.OPENVINO, Precision.INT8)]
    results = list(export_all(tiny_model_dirs["float"], pairs, tmp_path, synthetic_fer,
                              tiny_calibration, parity_images=40, min_agreement=0.0))
    assert [r.int8_from for r in results] == ["calibration"] * 3
    assert all(read_info(r.path).precision == "int8-ptq" for r in results)


def test_unknown_target_and_precision():
    with pytest.raises(ConfigError, match="unknown target 'coreml'"):
        ExportOptions("coreml", "fp32")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        ExportOptions("tflite", "int4")
    with pytest.raises(ConfigError, match="onnx cannot export dynamic"):
        ExportOptions("onnx", "dynamic")


@pytest.mark.parametrize("target, reason", [
    ("ncnn", "ncnn's pip wheel has no ncnn2table/ncnn2int8"),
    ("mnn", "does not support the QDQ ONNX model's Conv"),
])
def test_int8_not_supported_says_why_in_one_line(tmp_path, target, reason):
    from edgefer.cli import main
    from edgefer.formats import format_named

    assert reason in format_named(target).int8_unsupported
    result = CliRunner().invoke(main, ["export", "--target", target, "--precision", "int8",
                                       "--model", str(tmp_path)])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"{target} cannot export int8, not supported: " in line and reason in line
    assert line.endswith("it can do fp32, fp16")


def test_cli_errors_are_clean(tmp_path):
    from edgefer.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["export", "--target", "coreml", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "unknown target" in result.output
    result = runner.invoke(main, ["export", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not an edgefer Keras model" in result.output


def test_failed_parity_leaves_nothing_under_the_final_name(tiny_model_dirs, tmp_path,
                                                          monkeypatch):
    from edgefer.export import export_model, load_source, pipeline

    real = pipeline.compare

    def shifted(reference, candidate, threshold, synthetic=False):  # a broken converter
        return real(reference, np.roll(candidate, 1, axis=1), threshold, synthetic)

    loaded = load_source(tiny_model_dirs["qat"])
    (tmp_path / "keep.txt").write_text("the user's file")
    monkeypatch.setattr(pipeline, "compare", shifted)
    with pytest.raises(ExportError, match="parity gate failed"):
        export_model(loaded, ExportOptions("tflite", "fp16", parity_images=8), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_float_model_without_calibration_data_is_a_clear_error(tiny_model_dirs, tmp_path):
    from edgefer.export import export_model, load_source

    loaded = load_source(tiny_model_dirs["float"])
    with pytest.raises(ExportError, match="needs calibration data"):
        export_model(loaded, ExportOptions("tflite", "int8"), tmp_path, None)
    assert list(tmp_path.iterdir()) == []


def test_calibration_manifest_for_other_data(tiny_model_dirs, synthetic_fer, tmp_path):
    from conftest import write_image_folder

    from edgefer.calibration import build_manifest
    from edgefer.errors import DataError
    from edgefer.export import load_source
    from edgefer.labels import CLASS_NAMES

    manifest = build_manifest(synthetic_fer, 14, 0).write(tmp_path / "m.json")
    other = write_image_folder(tmp_path / "other", {n: (3, 1) for n in CLASS_NAMES}, seed=5)
    with pytest.raises(DataError, match="differ"):  # at load, before any conversion
        load_source(tiny_model_dirs["float"], other, manifest)
    with pytest.raises(ConfigError, match="needs the FER2013 images it names"):
        load_source(tiny_model_dirs["float"], None, manifest)
    assert not (tmp_path / "out").exists()


def test_every_option_is_checked_before_the_model_loads(monkeypatch, tmp_path):
    from edgefer import export

    def never(*args, **kwargs):
        raise AssertionError("loaded the model before checking the options")

    monkeypatch.setattr(export, "load_source", never)
    pairs = [("tflite", "fp32"), ("onnx", "dynamic")]
    with pytest.raises(ConfigError, match="onnx cannot export dynamic"):
        list(export.export_all(tmp_path, pairs, tmp_path))
    with pytest.raises(ConfigError, match="max drop must be above 0"):
        list(export.export_all(tmp_path, [("openvino", "int8")], tmp_path, max_drop=-1))


def _inspect(path) -> dict:
    from edgefer.cli import main

    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _xnnpack_partitions(path) -> int:
    from edgefer.runtimes.litert import interpreter_module

    module, _ = interpreter_module()
    interpreter = module.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def test_inspect_reports_int8_tensors_and_the_float_islands(tiny_exports):
    body = _inspect(tiny_exports[("tflite", "int8")])
    assert body["format"] == "tflite" and body["precision"] == "int8-qat"
    assert set(body["float_ops"]) == {"HARD_SWISH", "MEAN"}
    assert body["inputs"][0]["dtype"] == "int8"
    assert body["inputs"][0]["name"] == "face"  # the signature's name, not the converter's
    assert body["inputs"][0]["quantization"] is not None
    assert body["size_gzip_bytes"] < body["size_bytes"]


def test_int8_graph_cpu_lets_xnnpack_take_the_whole_graph(tiny_exports, tiny_model_dirs,
                                                               synthetic_fer, tmp_path):
    from edgefer.export import export_model, load_source

    default = tiny_exports[("tflite", "int8")]
    loaded = load_source(tiny_model_dirs["qat"], synthetic_fer)
    pure = export_model(loaded, ExportOptions("tflite", "int8", int8_graph="pure",
                                              parity_images=40, min_agreement=0.0),
                        tmp_path, synthetic_fer).path
    assert _inspect(pure)["float_ops"] == {}
    assert _xnnpack_partitions(default) == 1 < _xnnpack_partitions(pure)


def _pools_off_the_exact_mean(path, faces) -> float:
    """Share of the int8 global-average-pool outputs that TFLite's built-in kernels put
    off the exact mean of their int8 inputs (rounded; exact ties left out)."""
    from edgefer.runtimes.litert import interpreter_module, quantize

    module, _ = interpreter_module()
    interp = module.Interpreter(
        model_path=str(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    producer = {o: op for op in ops for o in op["outputs"]}
    consumer = {i: op for op in ops for i in op["inputs"]}
    pools = []  # (int8 input, int8 output) of each MEAN, through its float island if any
    for op in (op for op in ops if op["op_name"] == "MEAN"):
        x, y = op["inputs"][0], op["outputs"][0]
        if tensors[x]["dtype"] != np.int8:
            x, y = producer[x]["inputs"][0], consumer[y]["outputs"][0]
        pools.append((x, y))
    assert pools
    detail = interp.get_input_details()[0]
    off, total = 0, 0
    for face in faces:
        interp.set_tensor(detail["index"], quantize(face[None], detail))
        interp.invoke()
        for x, y in pools:
            (sx, zx), (sy, zy) = tensors[x]["quantization"], tensors[y]["quantization"]
            mean = (interp.get_tensor(x).astype(np.float64) - zx).mean(axis=(1, 2)) * sx / sy + zy
            got = interp.get_tensor(y).reshape(mean.shape)
            clear = np.abs(mean - np.floor(mean) - 0.5) > 1e-3
            off += int(np.sum((got != np.round(mean)) & clear))
            total += int(clear.sum())
    return off / total


def test_int8_graph_cpu_pools_exactly(tiny_exports, tiny_model_dirs, synthetic_fer, tmp_path):
    from edgefer.data import load_split
    from edgefer.export import export_model, load_source
    from edgefer.preprocess import Preprocess

    faces = Preprocess()(load_split(synthetic_fer, "test").images[:8])
    loaded = load_source(tiny_model_dirs["qat"], synthetic_fer)
    pure = export_model(loaded, ExportOptions("tflite", "int8", int8_graph="pure",
                                              parity_images=40, min_agreement=0.0),
                        tmp_path, synthetic_fer).path
    assert _pools_off_the_exact_mean(tiny_exports[("tflite", "int8")], faces) == 0.0
    # what the float MEAN is for: TFLite's int8 kernel rounds low (1% of the pools of this
    # tiny model, 25-43% in some blocks of the shipped one)
    assert _pools_off_the_exact_mean(pure, faces) > 0.0


@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".xml"])
def test_inspect_corrupt_file(tmp_path, suffix):
    from edgefer.cli import main

    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a model")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bad" in result.output


def test_qat_weight_grid_is_found_and_kept_exact():
    from edgefer.export.convert import _grid_levels

    rng = np.random.default_rng(0)
    levels = np.array([127, 40, 16])
    steps = np.array([0.01, 0.003, 0.2])
    q = rng.integers(-levels[:, None], levels[:, None] + 1, (3, 50))
    q[:, 0] = -levels  # each channel reaches its top level
    weight = (q * steps[:, None]).astype(np.float32)
    found = _grid_levels(weight, axis=0)
    assert all(f % level == 0 for f, level in zip(found, levels, strict=True))
    scale = np.abs(weight).max(axis=1) / found
    restored = np.round(weight / scale[:, None]) * scale[:, None]
    np.testing.assert_allclose(restored, weight, rtol=0, atol=1e-6)


def test_tflite_int8_stores_equal_zero_point_vectors_once(tiny_exports):
    from edgefer.artifacts import tflite_schema

    schema = tflite_schema()
    data = tiny_exports[("tflite", "int8")].read_bytes()
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    where: dict[tuple[int, bytes], set[int]] = {}
    per_channel = 0
    for i in range(graph.TensorsLength()):
        quant = graph.Tensors(i).Quantization()
        if quant is None or quant.ZeroPointLength() < 2:
            continue
        start = quant._tab.Vector(quant._tab.Offset(10))  # zero_point is field 3 (vtable 10)
        key = (quant.ZeroPointLength(), quant.ZeroPointAsNumpy().tobytes())
        where.setdefault(key, set()).add(start)
        per_channel += 1
    assert per_channel > len(where) > 0  # weights and biases of a layer share one
    assert all(len(starts) == 1 for starts in where.values())


def test_tflite_export_has_a_serving_signature(tiny_exports, reference):
    from edgefer.artifacts import read_info
    from edgefer.runtimes import load_runtime
    from edgefer.runtimes.litert import interpreter_module

    path = tiny_exports[("tflite", "fp32")]
    faces = reference[0][:4]
    module, _ = interpreter_module()
    runner = module.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    (output,) = runner(face=read_info(path).preprocess(faces).astype(np.float32)).values()
    np.testing.assert_allclose(output, load_runtime(path).predict_faces(faces), atol=1e-5)


@pytest.mark.parametrize(("args", "told"), [
    (["--model", "{tmp}"], "is not an edgefer Keras model"),
    (["--data", "{tmp}/missing"], "FER2013 not found at"),
    (["--data", "{tmp}/fer.csv", "--calib", "{tmp}/missing.json"],
     "calibration manifest not found"),
])
def test_export_checks_model_data_and_calib_before_tensorflow_loads(tmp_path, args, told):
    """In a fresh process: a wrong --model, --data or --calib is an error in seconds,
    and TensorFlow (tens of seconds to load) was never imported."""
    import subprocess
    import sys

    (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n" + "3," + " ".join(["7"] * 2304)
                                      + ",Training\n")
    script = ("import sys\nfrom click.testing import CliRunner\nfrom edgefer.cli import main\n"
              "r = CliRunner().invoke(main, sys.argv[1:])\n"
              "print(r.exit_code, 'tensorflow' in sys.modules, r.output)\n")
    argv = [a.format(tmp=tmp_path) for a in ["export", "--out", "{tmp}/out", *args]]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.stdout.startswith("1 False "), done.stdout + done.stderr
    assert told in done.stdout


# --- static batch-1 inputs by default, dynamic on request (issue 20) ----------------------

def _input_batch(path) -> int | None:
    """The exported input's batch size; None where it is dynamic."""
    if path.name.endswith(".ncnn.param"):
        return 1  # ncnn's blobs have no batch axis: one image per call
    suffix = path.suffix
    if suffix == ".mnn":
        from edgefer.export.inspect import inspect_model

        return inspect_model(path).inputs[0].shape[0]
    if suffix == ".tflite":
        from edgefer.runtimes.litert import interpreter_module

        module, _ = interpreter_module()
        batch = int(module.Interpreter(model_path=str(path)).get_input_details()[0][
            "shape_signature"][0])
        return batch if batch > 0 else None
    if suffix == ".onnx":
        import onnx

        dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
        return dim.dim_value or None
    import openvino as ov

    dim = ov.Core().read_model(str(path)).inputs[0].partial_shape[0]
    return dim.get_length() if dim.is_static else None


def test_every_export_has_a_static_batch_of_one(tiny_exports):
    assert {key: _input_batch(path) for key, path in tiny_exports.items()} == \
        {key: 1 for key in tiny_exports}


def test_onnx_int8_stores_dense_weights_in_8_bits_with_a_static_batch(tiny_exports):
    """tf2onnx writes a Dense layer as Gemm when the batch is static: its weights are
    quantized as the convolutions' are (the fp32 head weighed 2.4 of the shipped model's
    3.7 MB), not left in float."""
    import onnx

    proto = onnx.load(str(tiny_exports[("onnx", "int8")]))
    producers = {o: n for n in proto.graph.node for o in n.output}
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert "Gemm" in {n.op_type for n in weighted}
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in weighted)


@pytest.mark.slow
def test_dynamic_batch_exports_take_any_batch(tiny_model_dirs, synthetic_fer, tmp_path):
    from edgefer.data import load_split
    from edgefer.export import export_all
    from edgefer.runtimes import RuntimeOptions, load_runtime

    pairs = [("tflite", "int8"), ("onnx", "int8"), ("openvino", "fp32")]
    results = list(export_all(tiny_model_dirs["qat"], pairs, tmp_path, synthetic_fer,
                              parity_images=8, min_agreement=0.0, dynamic_batch=True))
    faces = load_split(synthetic_fer, "test").images[:4]
    for r in results:
        assert _input_batch(r.path) is None, r.path.name
        runtime = load_runtime(r.path, RuntimeOptions(threads=1))
        assert runtime._fixed_batch is None  # one call for the whole batch
        alone = np.concatenate([runtime.predict_faces(faces[i:i + 1]) for i in range(4)])
        np.testing.assert_allclose(runtime.predict_faces(faces), alone, atol=1e-5)


def test_cli_dynamic_batch_reaches_the_export_options(monkeypatch, tmp_path):
    from edgefer import export
    from edgefer.cli import main

    seen = {}

    def capture(model, pairs, out_dir, data=None, calib=None, progress=None, user_input=None,
                **options):
        seen.update(options)
        return iter(())

    monkeypatch.setattr(export, "export_all", capture)
    for args, dynamic in (([], False), (["--dynamic-batch"], True)):
        result = CliRunner().invoke(main, ["export", "--model", str(tmp_path), "--out",
                                           str(tmp_path / "out"), *args])
        assert result.exit_code == 0, result.output
        assert ExportOptions("onnx", "fp32", **seen).batch == (None if dynamic else 1)
