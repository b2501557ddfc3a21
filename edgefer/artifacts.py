"""The edgefer record inside each exported file (TFLite metadata, ONNX metadata_props,
OpenVINO rt_info), so that ``bench`` and ``predict`` need nothing but the file."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from edgefer.errors import ConfigError, EngineMissingError, ModelError
from edgefer.preprocess import ModelInfo

METADATA_KEY = "edgefer"


def tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        try:
            from edgefer._tf import tf

            tf()
            from tensorflow.lite.python import schema_py_generated
        except (ImportError, EngineMissingError) as exc:
            raise EngineMissingError("LiteRT", "tflite", "needed to read TFLite metadata") from exc
    return schema_py_generated


def tflite_metadata(data: bytes) -> dict[str, bytes]:
    """Name -> bytes of every metadata entry of a TFLite flatbuffer."""
    schema = tflite_schema()
    try:
        # a module function in older schemas, a Model classmethod in ai-edge-litert 2.x
        has_identifier = getattr(schema, "ModelBufferHasIdentifier", None) \
            or schema.Model.ModelBufferHasIdentifier
        if not has_identifier(data, 0):
            raise ModelError("not a TFLite model (no TFL3 identifier)")
        model = schema.Model.GetRootAs(data, 0)
        entries = {}
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            buffer = model.Buffers(meta.Buffer())
            entries[meta.Name().decode()] = buffer.DataAsNumpy().tobytes() \
                if buffer.DataLength() else b""
        return entries
    except ModelError:
        raise
    except Exception as exc:  # a truncated flatbuffer fails in many ways
        raise ModelError(f"corrupt TFLite model ({type(exc).__name__}: {exc})") from exc


def tflite_with_metadata(data: bytes, entries: dict[str, bytes]) -> bytes:
    """A copy of a TFLite flatbuffer with ``entries`` added (replacing same names)."""
    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    model.metadata = [m for m in (model.metadata or [])
                      if m.name.decode() not in entries]
    for name, payload in entries.items():
        buffer = schema.BufferT()
        buffer.data = list(payload)
        model.buffers.append(buffer)
        meta = schema.MetadataT()
        meta.name = name.encode()
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    return tflite_pack(model, len(data))


def tflite_pack(model, size_hint: int = 0) -> bytes:
    """The flatbuffer bytes of a TFLite object-API ``ModelT``, identical arrays stored once.

    Every per-channel weight and bias tensor carries its own vector of int64 zero points,
    all zero: sharing equal vectors makes an INT8 model about 7% smaller. Flatbuffers
    allow shared sub-objects, and TFLite reads them like any others.
    """
    builder = _sharing_builder_class()(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@functools.cache
def _sharing_builder_class():
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size: int) -> None:
            super().__init__(size)
            self._written: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x):
            key = (x.dtype.str, x.tobytes())
            if key not in self._written:
                self._written[key] = super().CreateNumpyVector(x)
            return self._written[key]

    return SharingBuilder


def read_info(path: str | os.PathLike) -> ModelInfo | None:
    """The edgefer record of a model file, or None for a file edgefer did not make."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        try:
            raw = tflite_metadata(path.read_bytes()).get(METADATA_KEY)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc
    elif suffix == ".onnx":
        raw = _onnx_metadata(path)
    elif suffix == ".xml":
        raw = _openvino_metadata(path)
    else:
        from edgefer.model.store import is_model_dir, read_record

        if not is_model_dir(path):
            raise ModelError(f"{path}: unknown model format (expected .tflite, .onnx, "
                             ".xml or an edgefer model folder)")
        return info_from_record(path, read_record(path).get("info"))
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"{path}: unreadable edgefer metadata ({exc})") from exc
    except RecursionError:
        raise ModelError(f"{path}: unreadable edgefer metadata (nested too deeply)") from None
    return info_from_record(path, record)


def info_from_record(path: str | os.PathLike, record: object) -> ModelInfo:
    """The ModelInfo of a model's record, checked (a NaN scale, a missing field): a
    ModelError naming the model otherwise."""
    try:
        if not isinstance(record, dict):
            raise ConfigError("not a JSON object")
        return ModelInfo.from_dict(record)
    except ConfigError as exc:
        raise ModelError(f"{path}: invalid edgefer metadata ({exc})") from exc


def _onnx_metadata(path: Path) -> str | None:
    try:
        import onnx
    except ImportError:  # a device with ONNX Runtime alone (pip install edgefer onnxruntime)
        return _onnx_runtime_metadata(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: corrupt ONNX model ({exc})") from exc
    return {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)


def _onnx_runtime_metadata(path: Path) -> str | None:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineMissingError("onnx", "onnx", "nor ONNX Runtime") from exc
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: corrupt ONNX model ({exc})") from exc
    return session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


def _openvino_metadata(path: Path) -> str | None:
    try:
        import openvino as ov
    except ImportError as exc:
        raise EngineMissingError("OpenVINO", "openvino") from exc
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: corrupt OpenVINO IR ({exc})") from exc
    if not model.has_rt_info([METADATA_KEY, "info"]):
        return None
    return str(model.get_rt_info([METADATA_KEY, "info"]).astype(str))
