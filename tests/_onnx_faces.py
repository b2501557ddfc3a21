"""Small ONNX face classifiers for the converter tests (ncnn, MNN): the graph's frame
(input ``face`` NHWC, output ``probabilities``, opset 17) and random faces for it."""

from __future__ import annotations

import numpy as np


def face_model(nodes: list, inits: list, name: str, size: int, classes: int):
    """A checked ONNX model of ``nodes``: input ``face`` [1, size, size, 1], output
    ``probabilities`` [1, classes]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, [1, size, size, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def random_faces(count: int, size: int, seed: int = 1) -> np.ndarray:
    """``count`` faces of uniform noise in [-1, 1], NHWC float32."""
    return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 1)).astype(np.float32)


def onnx_reference(model, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime's probabilities for ``batch``, one face per call (a batch-1 model)."""
    import pytest

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"face": x[None]})[0] for x in batch])
