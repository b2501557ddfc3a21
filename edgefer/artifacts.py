"""The edgefer record inside each exported file (TFLite metadata, ONNX metadata_props,
OpenVINO rt_info), so that ``bench`` and ``predict`` need nothing but the file.

Each format's reader and writer is named by its record in ``edgefer.formats``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path

from edgefer.engines import require
from edgefer.errors import ConfigError, EdgeferError, EngineMissingError, ModelError
from edgefer.preprocess import ModelInfo

METADATA_KEY = "edgefer"


def tflite_schema():
    with contextlib.suppress(EngineMissingError):
        return require("ai_edge_litert.schema_py_generated", "tflite")
    try:
        from edgefer._tf import tf

        tf()
        return require("tensorflow.lite.python.schema_py_generated", "tflite")
    except EngineMissingError as exc:
        raise EngineMissingError("LiteRT", "tflite", "needed to read TFLite metadata") from exc


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
    from edgefer.formats import format_of, load

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    raw = load(format_of(path).read_record)(path)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"{path}: unreadable edgefer metadata ({exc})") from exc
    except RecursionError:
        raise ModelError(f"{path}: unreadable edgefer metadata (nested too deeply)") from None
    return info_from_record(path, record)


def recorded_precision(path: str | os.PathLike) -> str:
    """The precision a model file records; "" when it records none or cannot be read
    here (a file edgefer did not make, an engine missing)."""
    try:
        info = read_info(path)
    except EdgeferError:
        return ""
    return info.precision if info else ""


def info_from_record(path: str | os.PathLike, record: object) -> ModelInfo:
    """The ModelInfo of a model's record, checked (a NaN scale, a missing field): a
    ModelError naming the model otherwise."""
    try:
        if not isinstance(record, dict):
            raise ConfigError("not a JSON object")
        return ModelInfo.from_dict(record)
    except ConfigError as exc:
        raise ModelError(f"{path}: invalid edgefer metadata ({exc})") from exc


def tflite_record(path: Path) -> bytes | None:
    try:
        return tflite_metadata(path.read_bytes()).get(METADATA_KEY)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def keras_record(path: Path) -> str:
    """The ``info`` of an edgefer model folder's model.json, as JSON text."""
    from edgefer.model.store import read_record

    return json.dumps(read_record(path).get("info"))


def onnx_record(path: Path) -> str | None:
    try:
        onnx = require("onnx", "onnx")
    except EngineMissingError:  # a device with ONNX Runtime alone (pip install edgefer onnxruntime)
        return _onnx_runtime_metadata(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: corrupt ONNX model ({exc})") from exc
    return {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)


def _onnx_runtime_metadata(path: Path) -> str | None:
    onnxruntime = require("onnxruntime", "onnx", "onnx", "nor ONNX Runtime")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: corrupt ONNX model ({exc})") from exc
    return session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


def openvino_record(path: Path) -> str | None:
    ov = require("openvino", "openvino", "OpenVINO")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: corrupt OpenVINO IR ({exc})") from exc
    if not model.has_rt_info([METADATA_KEY, "info"]):
        return None
    return str(model.get_rt_info([METADATA_KEY, "info"]).astype(str))


# --- writing: the exported artifact with its record, under ``path`` -------------------

def write_tflite(artifact: bytes, record: str, info: ModelInfo, path: Path) -> None:
    path.write_bytes(tflite_with_metadata(artifact, {METADATA_KEY: record.encode()}))


def write_onnx(artifact: bytes, record: str, info: ModelInfo, path: Path) -> None:
    from edgefer import __version__

    onnx = require("onnx", "onnx")
    proto = onnx.load_from_string(artifact)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, record
    proto.producer_name, proto.producer_version = "edgefer", __version__
    onnx.save(proto, str(path))


def write_openvino(artifact, record: str, info: ModelInfo, path: Path) -> None:
    ov = require("openvino", "openvino", "OpenVINO")
    artifact.set_rt_info(record, [METADATA_KEY, "info"])
    ov.save_model(artifact, str(path), compress_to_fp16=info.precision == "fp16")
