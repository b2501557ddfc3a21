"""Post-training INT8: the per-layer report and each fix, on tiny models made to have the
failure the fix is for (docs/quantization.md has the measurements on the real model)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.errors import ConfigError, ExportError

pytestmark = pytest.mark.tf


def _calibration(count: int = 48, seed: int = 0):
    from edgefer.calibration import CalibrationSet
    from edgefer.preprocess import Preprocess

    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, (count, 48, 48), dtype=np.uint8)
    return CalibrationSet(faces, Preprocess())


def _sqnr(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    return 10 * np.log10(float(np.sum(reference ** 2)) / max(noise, 1e-30))


# --- a Keras model with one depthwise channel of a huge range after batch-norm folding ---

def _outlier_model(gamma: float = 60.0):
    """conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU -> conv -> BN -> pool -> dense: the
    depthwise batch norm multiplies channel 3 by ``gamma`` and the next convolution reads
    that channel ``gamma`` times weaker, so after folding the depthwise output's channel 3
    spans ~``gamma`` times the others' range (one INT8 scale for all of them) while it
    matters no more than they do."""
    from edgefer._tf import keras

    k = keras()
    k.utils.set_random_seed(1)
    layers = k.layers
    face = layers.Input((48, 48, 1), name="face")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1")(face)
    x = layers.BatchNormalization(name="b1")(x)
    x = layers.ReLU(6.0, name="r1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="b2")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.Conv2D(8, 1, use_bias=False, name="c2")(x)
    x = layers.BatchNormalization(name="b3")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(7, name="logits")(x)
    model = k.Model(face, out)
    rng = np.random.default_rng(0)
    for name in ("b1", "b2", "b3"):
        bn = model.get_layer(name)
        n = bn.get_weights()[0].shape[0]
        gammas = rng.uniform(0.5, 1.5, n)
        if name == "b2":
            gammas[3] = gamma
        bn.set_weights([gammas, rng.normal(0.2, 0.3, n), rng.normal(0, 0.1, n),
                        rng.uniform(0.5, 1.5, n)])
    kernel = model.get_layer("c2").get_weights()[0]
    kernel[:, :, 3, :] /= gamma
    model.get_layer("c2").set_weights([kernel])
    return model


@pytest.fixture(scope="module")
def outlier_model():
    return _outlier_model()


def test_folding_and_equalization_keep_the_function_and_even_the_ranges(outlier_model):
    from edgefer.export.equalize import _output_range, equalize, fold_batchnorm

    x = _calibration(16).images()
    reference = outlier_model.predict(x, verbose=0)
    folded, count = fold_batchnorm(outlier_model)
    assert count == 3 and not any(layer.__class__.__name__ == "BatchNormalization"
                                  for layer in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), reference, rtol=1e-4, atol=1e-4)
    equalized, pairs = equalize(folded)
    assert pairs == (("c1", "dw"), ("dw", "c2"))
    np.testing.assert_allclose(equalized.predict(x, verbose=0), reference, rtol=1e-4, atol=1e-4)
    before, after = _output_range(folded.get_layer("dw")), _output_range(equalized.get_layer("dw"))
    assert before.max() / before.min() > 20 and after.max() / after.min() < 4
    # ReLU6 is not positively homogeneous: it became a ReLU and per-channel clips
    clip = equalized.get_layer("r1")
    assert clip.__class__.__name__ == "Clip" and np.ptp(clip.high) > 0
    # the source model is untouched
    assert _output_range(fold_batchnorm(outlier_model)[0].get_layer("dw")).max() == before.max()


def test_equalization_fixes_int8_of_a_channel_with_a_huge_range(outlier_model):
    from edgefer.export.equalize import equalize, fold_batchnorm
    from edgefer.export.options import IoType, Precision
    from edgefer.runtimes.litert import interpreter_module

    calibration = _calibration()
    x = _calibration(24, seed=5).images()
    reference = outlier_model.predict(x, verbose=0)
    folded, _ = fold_batchnorm(outlier_model)

    def int8_error(model) -> float:
        from edgefer.export.convert import keras_to_tflite

        data = keras_to_tflite(model, Precision.INT8, IoType.FLOAT, calibration)
        module, _ = interpreter_module()
        interp = module.Interpreter(model_content=data)
        interp.allocate_tensors()
        out = []
        for image in x:
            interp.set_tensor(interp.get_input_details()[0]["index"], image[None])
            interp.invoke()
            out.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0])
        return _sqnr(reference, np.array(out))

    plain, equalized = int8_error(folded), int8_error(equalize(folded)[0])
    assert equalized > plain + 6.0, (plain, equalized)  # at least a bit better


def test_bias_correction_removes_the_mean_shift_of_quantized_weights():
    from edgefer._tf import keras
    from edgefer.export.equalize import copy_model, correct_bias, weight_grid

    k = keras()
    k.utils.set_random_seed(2)
    face = k.layers.Input((48, 48, 1))
    # inputs far from zero mean and weights far off the int8 grid: a large mean shift
    x = k.layers.Conv2D(4, 3, padding="same", name="conv")(face)
    model = k.Model(face, k.layers.GlobalAveragePooling2D()(x))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 0] = 1.0
    kernel[0, 0, 0, 0] = 127.0 * 1.5  # a step of 1.5: every other weight rounds by ~0.5
    model.get_layer("conv").set_weights([kernel, bias])
    images = _calibration(16).images() + 3.0

    def shift(m) -> float:
        quantized = copy_model(m)
        layer = quantized.get_layer("conv")
        w, b = layer.get_weights()
        layer.set_weights([weight_grid(w, "Conv2D"), b])
        return float(np.abs(quantized.predict(images, verbose=0)
                            - model.predict(images, verbose=0)).mean(axis=0).max())

    corrected, count = correct_bias(copy_model(model), images)
    assert count == 1
    assert shift(model) > 1.0 and shift(corrected) < shift(model) / 20


# --- ONNX Runtime and OpenVINO: the engines' kernels -------------------------------------

def _conv_onnx(out_channels: int = 16, seed: int = 3, batch: int | None = None):
    """face (N, 48, 48, 1) -> transpose -> 3x3 conv with large same-signed weights (the
    16-bit pair sums of int8 kernels without VNNI overflow on it) -> ReLU -> 1x1 conv ->
    global pool -> flatten: a stem like the shipped model's, in ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.uniform(0.5, 1.0, (out_channels, 1, 3, 3)).astype(np.float32)
    w1[::2] *= -1
    w2 = rng.normal(0, 0.3, (7, out_channels, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["face"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["stem"], pads=[1, 1, 1, 1],
                         name="stem_conv"),
        helper.make_node("Relu", ["stem"], ["stem_act"], name="stem_relu"),
        helper.make_node("Conv", ["stem_act", "w2", "b2"], ["head"], name="head_conv"),
        helper.make_node("GlobalAveragePool", ["head"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["logits"], name="flatten"),
    ]
    inits = [numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(np.zeros(out_channels, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(
                 rng.normal(0, 0.1, 7).astype(np.float32), "b2")]
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("face", TensorProto.FLOAT,
                                                      [batch, 48, 48, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _ort(proto, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"face": images})[0]


def test_onnx_int8_report_and_no_kernel_overflow(tmp_path):
    from edgefer.export.options import CalibMethod
    from edgefer.export.ptq import onnx_int8
    from edgefer.export.quant_debug import onnx_report, write_report
    from edgefer.report import render_quant_report

    proto = _conv_onnx()
    int8 = onnx_int8(proto, _calibration(), CalibMethod.MINMAX)
    x = _calibration(32, seed=7).images()
    # the integer kernels as ONNX Runtime runs them, against the float model: no overflow
    # (int8 x int8 on AVX2 without VNNI came out at ~5 dB here)
    assert _sqnr(_ort(proto, x), _ort(int8, x)) > 25
    report = onnx_report(proto, int8, x)
    assert report.engine == "onnx" and report.images == 32 and report.agreement > 0.8
    by_name = {layer.tensor: layer for layer in report.layers}
    assert {"nchw", "stem_act", "head"} <= set(by_name)  # ORT fuses the ReLU into the conv
    stem = by_name["stem_act"]
    assert stem.op == "Relu" and stem.clipped == 0 and stem.float_min == 0 < stem.float_max
    assert stem.layer_sqnr_db > 30 and stem.sqnr_db is not None and stem.sqnr_db > 25
    worst = report.worst()
    assert [w.layer_sqnr_db for w in worst] == sorted(w.layer_sqnr_db for w in worst)
    files = write_report(report, tmp_path / "debug", "tiny", render_quant_report)
    assert sorted(p.suffix for p in files) == [".json", ".md", ".png"]
    assert "| 1 |" in (tmp_path / "debug" / "tiny.md").read_text()
    static = _conv_onnx(batch=1)  # what export writes by default: one face per call
    report = onnx_report(static, onnx_int8(static, _calibration(), CalibMethod.MINMAX), x)
    assert report.images == 32 and report.agreement > 0.8


def test_keep_float_leaves_the_named_layer_unquantized():
    from edgefer.export.options import CalibMethod
    from edgefer.export.ptq import onnx_int8

    int8 = onnx_int8(_conv_onnx(), _calibration(16), CalibMethod.MINMAX, ("head_conv",))
    quantized_inputs = {i for n in int8.graph.node if n.op_type == "DequantizeLinear"
                        for i in n.output}
    head = next(n for n in int8.graph.node if n.name == "head_conv")
    stem = next(n for n in int8.graph.node if n.name == "stem_conv")
    assert stem.input[0] in quantized_inputs and head.input[1] not in quantized_inputs
    with pytest.raises(ExportError, match="names no layer"):
        onnx_int8(_conv_onnx(), _calibration(16), CalibMethod.MINMAX, ("no_such_layer",))


def test_openvino_int8_keeps_every_calibration_value_in_range():
    """NNCF's default range is the mean over images of each image's min and max: with
    images of different contrast it clips the bright ones (the late 3x3 maps of the
    shipped model lost 25-35 dB that way); min-max keeps them."""
    from edgefer.export.convert import onnx_to_openvino
    from edgefer.export.options import CalibMethod
    from edgefer.export.ptq import openvino_int8
    from edgefer.export.quant_debug import openvino_report

    calibration = _calibration(32)
    faces = calibration.faces.copy()
    faces[::4] = faces[::4] // 8  # a quarter of the faces dark: per-image maxima differ
    calibration = type(calibration)(faces, calibration.preprocess)
    model = onnx_to_openvino(_conv_onnx())
    int8 = openvino_int8(model, calibration, CalibMethod.MINMAX)
    report = openvino_report(model, int8, calibration.images())
    assert report.engine == "openvino" and report.layers
    assert max(layer.clipped for layer in report.layers) < 1e-3
    assert min(layer.sqnr_db for layer in report.layers) > 20
    assert report.agreement > 0.8


def test_calibration_methods_per_engine():
    from edgefer.export import ExportOptions

    assert ExportOptions("onnx", "int8", calib_method="entropy").calib_method.value == "entropy"
    assert ExportOptions("openvino", "int8", calib_method="mse").calib_method.value == "mse"
    assert ExportOptions("tflite", "fp32", calib_method="mse")  # no INT8: nothing calibrates
    with pytest.raises(ConfigError, match="tflite has no entropy calibration"):
        ExportOptions("tflite", "int8", calib_method="entropy")
    with pytest.raises(ConfigError, match="openvino has no entropy"):
        ExportOptions("openvino", "int8", calib_method="entropy")
    assert ExportOptions("onnx", "int8", keep_float="a, b,").keep_float == ("a", "b")
    # bias correction: NNCF's for OpenVINO unless refused; the Keras one only when asked
    assert ExportOptions("openvino", "int8").corrects_bias
    assert not ExportOptions("openvino", "int8", bias_correction=False).corrects_bias
    assert not ExportOptions("tflite", "int8").corrects_bias
    assert ExportOptions("onnx", "int8", bias_correction=True).corrects_bias


def test_tflite_report_on_a_tiny_model():
    """QuantizationDebugger's per-layer errors, in graph order; a tensor the model clips
    next (the float twin's QAT ranges) is quantized with the clip's range, and the values
    the clip cuts are no quantization error."""
    from edgefer._tf import keras, tf
    from edgefer.export.convert import _serving_function
    from edgefer.export.quant_debug import tflite_report
    from edgefer.model.layers import Clip

    k = keras()
    k.utils.set_random_seed(0)
    face = k.layers.Input((48, 48, 1))
    x = k.layers.Conv2D(8, 3, name="conv")(face)
    x = Clip(-0.05, 0.05, name="clip")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    model = k.Model(face, k.layers.Dense(7, name="logits")(x))
    tflite = tf().lite
    converter = tflite.TFLiteConverter.from_concrete_functions([_serving_function(model)],
                                                               model)
    converter.optimizations = [tflite.Optimize.DEFAULT]
    calibration = _calibration(16)
    converter.representative_dataset = calibration.tflite_representative_dataset()
    report = tflite_report(converter, calibration, calibration.images()[:8])
    assert report.engine == "tflite" and report.images == 8
    assert [layer.op for layer in report.layers][:2] == ["CONV_2D", "MINIMUM"]
    assert all(layer.scale > 0 and layer.sqnr_db is not None for layer in report.layers)
    conv = report.layers[0]
    assert "conv" in conv.tensor and conv.clipped == 0 and conv.layer_sqnr_db > 25
    assert conv.float_min == pytest.approx(-0.05, abs=1e-3)
    assert report.worst()[0].layer_sqnr_db == min(r.layer_sqnr_db for r in report.layers)


# --- models edgefer did not train ------------------------------------------------------------

def test_a_users_onnx_model_exports_to_onnx_and_openvino(tmp_path, synthetic_fer,
                                                        tiny_calibration):
    import onnx

    from edgefer.artifacts import read_info
    from edgefer.export import Precision, Target, export_all
    from edgefer.export.user_model import InputSpec

    path = tmp_path / "stem.onnx"
    onnx.save(_conv_onnx(), path)
    spec = InputSpec(1 / 127.5, -1.0)
    with pytest.raises(ConfigError, match="TFLite needs a Keras model"):
        list(export_all(path, [(Target.TFLITE, Precision.INT8)], tmp_path / "out",
                        synthetic_fer, tiny_calibration, user_input=spec))
    with pytest.raises(ConfigError, match="--input-scale"):
        list(export_all(path, [(Target.ONNX, Precision.INT8)], tmp_path / "out",
                        synthetic_fer, tiny_calibration))
    pairs = [(Target.ONNX, Precision.INT8), (Target.OPENVINO, Precision.INT8)]
    results = list(export_all(path, pairs, tmp_path / "out", synthetic_fer, tiny_calibration,
                              user_input=spec, parity_images=40))
    for r in results:
        info = read_info(r.path)
        assert info.precision == "int8-ptq" and info.name == "stem"
        assert info.preprocess.scale == pytest.approx(1 / 127.5) and r.parity.agreement >= 0.95


@pytest.mark.slow
def test_a_keras_applications_mobilenet_through_the_calibrated_export(tmp_path, synthetic_fer,
                                                                     tiny_calibration):
    """keras.applications' MobileNetV3Small (minimalistic: ReLU, no squeeze-excite),
    trained briefly, as a user's .keras file, calibrated to INT8 on all three engines
    from the command line, with equalization (its expand/depthwise/project chains)."""
    from click.testing import CliRunner

    from edgefer._tf import keras
    from edgefer.artifacts import read_info
    from edgefer.cli import main
    from edgefer.data import load_split
    from edgefer.preprocess import Preprocess
    from edgefer.runtimes import load_runtime

    k = keras()
    k.utils.set_random_seed(0)
    model = k.applications.MobileNetV3Small(
        input_shape=(48, 48, 3), alpha=0.5, minimalistic=True, weights=None, classes=7,
        include_preprocessing=False)
    preprocess = Preprocess(channels=3)
    train = load_split(synthetic_fer, "train")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(preprocess(train.images), train.labels, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "mnv3.keras"
    model.save(path)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "export", str(path), "--input-scale", str(1 / 127.5), "--input-offset", "-1",
        "--target", "all", "--precision", "int8", "--int8-source", "calibrate", "--equalize",
        "--data", str(synthetic_fer), "--calib", str(tiny_calibration),
        "--min-agreement", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p for p in out.iterdir() if p.suffix in (".tflite", ".onnx", ".xml"))
    assert [p.suffix for p in files] == [".onnx", ".tflite", ".xml"]
    faces = load_split(synthetic_fer, "test").images
    expected = model.predict(preprocess(faces), verbose=0)
    for file in files:
        info = read_info(file)
        assert info.preprocess.channels == 3 and info.precision == "int8-ptq"
        probs = load_runtime(file).predict_faces(faces)
        assert probs.shape == expected.shape and np.abs(probs - expected).max() < 0.25, file


def test_clips_written_as_min_and_max_become_one_quantizer():
    """tf2onnx writes a clip as Min then Max; ONNX Runtime then quantizes the tensor before
    the clip with its own, wider range. As a Clip, the quantizer takes it over."""
    from onnx import helper, numpy_helper

    from edgefer.export.options import CalibMethod
    from edgefer.export.ptq import onnx_int8, onnx_min_max_to_clip

    proto = _conv_onnx()
    nodes = list(proto.graph.node)
    relu = next(n for n in nodes if n.op_type == "Relu")
    relu.output[0] = "wide"
    nodes.insert(nodes.index(relu) + 1, helper.make_node("Min", ["wide", "high"], ["lower"]))
    nodes.insert(nodes.index(relu) + 2, helper.make_node("Max", ["lower", "low"], ["stem_act"],
                                                         name="clip"))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend([numpy_helper.from_array(np.full(1, 2.0, np.float32), "high"),
                                    numpy_helper.from_array(np.zeros(1, np.float32), "low")])
    x = _calibration(8).images()
    clipped = onnx_min_max_to_clip(type(proto).FromString(proto.SerializeToString()))
    assert [n.op_type for n in clipped.graph.node].count("Clip") == 1
    np.testing.assert_allclose(_ort(clipped, x), _ort(proto, x), rtol=1e-6, atol=1e-6)
    int8 = onnx_int8(proto, _calibration(), CalibMethod.MINMAX)
    ops = [n.op_type for n in int8.graph.node]
    assert "Min" not in ops and "Max" not in ops and "Clip" not in ops
