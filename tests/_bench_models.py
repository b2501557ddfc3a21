"""Tiny models for the bench tests, made here without ``edgefer.export``.

A width-0.25 MobileNetV3 with random weights, saved as an edgefer Keras folder and
converted to TFLite (fp32, int8), ONNX (fp32) and OpenVINO (fp32), each carrying the
edgefer record so runtimes need only the file. Imported by the bench test modules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgefer.preprocess import ModelInfo


def faces(count: int = 16, seed: int = 0) -> np.ndarray:
    """Gray 'faces' with structure (gradients plus noise), so models' outputs vary."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 48)
    base = (ramp[None, :, None] * rng.uniform(0.2, 1, (count, 1, 1))
            + ramp[None, None, :] * rng.uniform(0, 0.8, (count, 1, 1)))
    return np.clip(base + rng.normal(0, 30, (count, 48, 48)), 0, 255).astype(np.uint8)


def keras_to_tflite(model, representative: Callable[[], Iterable[list]] | None = None) -> bytes:
    """A tf-keras model as TFLite (any batch size); given a representative data set, INT8
    with int8 input and output. From the traced inference function, not
    ``from_keras_model``, which first writes a SavedModel, tracing every layer again: 30 of
    the 33 CPU-s a width-0.25 MobileNetV3 took (edgefer's export does the same)."""
    from edgefer._tf import tf

    tf_ = tf()
    spec = tf_.TensorSpec((None, *model.input_shape[1:]), tf_.float32)
    function = tf_.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf_.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.experimental_lower_to_saved_model = False
    if representative is not None:
        converter.optimizations = [tf_.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf_.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf_.int8
        converter.inference_output_type = tf_.int8
    return bytes(converter.convert())


def make_tiny_models(folder: Path, targets: tuple[str, ...] = ("tflite", "onnx", "openvino")
                     ) -> dict[tuple[str, str], Path]:
    """(target, precision) -> path; ("keras", "fp32") is the reference folder."""
    from edgefer._tf import keras, tf
    from edgefer.artifacts import METADATA_KEY, tflite_with_metadata
    from edgefer.model.mobilenetv3 import ModelConfig, build_model
    from edgefer.model.store import Stage, save_model

    keras().utils.set_random_seed(0)
    config = ModelConfig(width=0.25)
    model = build_model(config)
    info = ModelInfo(name="tiny")
    out: dict[tuple[str, str], Path] = {}
    out["keras", "fp32"] = save_model(model, folder / "keras", config, Stage.FLOAT, info)

    def record(precision: str) -> bytes:
        return json.dumps(ModelInfo(name="tiny", precision=precision).to_dict()).encode()

    calib = info.preprocess(faces(32, seed=1))
    if "tflite" in targets:
        for precision in ("fp32", "int8"):
            representative = ((lambda: ([x[None]] for x in calib)) if precision == "int8"
                              else None)
            data = tflite_with_metadata(keras_to_tflite(model, representative),
                                        {METADATA_KEY: record(precision)})
            path = folder / f"tiny-{precision}.tflite"
            path.write_bytes(data)
            out["tflite", precision] = path
    if "onnx" in targets or "openvino" in targets:
        import onnx
        import tf2onnx

        spec = (tf().TensorSpec((None, 48, 48, 1), tf().float32, name="input"),)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, record("fp32").decode()
        path = folder / "tiny-fp32.onnx"
        onnx.save(proto, str(path))
        out["onnx", "fp32"] = path
        if "openvino" in targets:
            import openvino as ov

            ov_model = ov.convert_model(str(path))
            ov_model.set_rt_info(record("fp32").decode(), [METADATA_KEY, "info"])
            xml = folder / "tiny-fp32.xml"
            ov.save_model(ov_model, str(xml))
            out["openvino", "fp32"] = xml
    return out


# --- models made with numpy alone (no TensorFlow): fast tests ---------------------------

BAND_INFO = ModelInfo(name="band")
BAND = 6  # class k's faces have a bright band at rows k*BAND .. k*BAND+BAND


def band_faces(per_class: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose class is written as a bright horizontal band, with noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(7):
        for _ in range(per_class):
            face = rng.integers(0, 40, (48, 48))
            face[k * BAND:(k + 1) * BAND] = rng.integers(215, 256, (BAND, 48))
            images.append(face.astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.asarray(labels)


def band_weights(order: tuple[int, ...] = tuple(range(7))) -> np.ndarray:
    """(2304, 7) weights: output j scores the band of class ``order[j]``."""
    w = np.zeros((48, 48, 7), np.float32)
    for j, k in enumerate(order):
        w[k * BAND:(k + 1) * BAND, :, j] = 1.0 / (BAND * 48)
    return w.reshape(48 * 48, 7) * 8.0


def make_band_onnx(path: Path, order: tuple[int, ...] = tuple(range(7)),
                   info: ModelInfo | None = BAND_INFO, batch: int | str = "n") -> Path:
    """A linear ONNX classifier of ``band_faces``; ``info`` None: no edgefer record;
    ``batch`` an int: a static batch size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgefer.artifacts import METADATA_KEY

    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "band",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 48, 48, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 7])],
        initializer=[numpy_helper.from_array(np.array([-1, 48 * 48], np.int64), "shape"),
                     numpy_helper.from_array(band_weights(order), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if info is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(info.to_dict())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_fer_csv(path: Path, per_class: int = 4) -> Path:
    """A FER2013-style CSV of band faces (PublicTest and a few Training rows)."""
    rows = ["emotion,pixels,Usage"]
    for usage, seed in (("Training", 1), ("PublicTest", 2)):
        images, labels = band_faces(per_class, seed)
        rows += [f"{y},{' '.join(map(str, x.ravel()))},{usage}"
                 for x, y in zip(images, labels, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path
