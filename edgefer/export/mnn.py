"""ONNX -> MNN with MNN's own converter, and edgefer's MNN format (edgefer.formats).

The converter is MNN's C++ MNNConvert, which the MNN wheel ships as the extension module
``_tools``. edgefer calls ``_tools.mnnconvert`` in a child Python process: the converter
prints on stdout (captured there and quoted in errors) and a crash stays in the child.
Not through ``MNN.tools.mnnconvert`` (the ``mnnconvert`` script): importing that module
pip-installs aliyun-log-python-sdk when it is missing, which downgrades protobuf below what
onnx and TensorFlow need, and posts a usage log to Alibaba's servers after each conversion.

The edgefer record (JSON) is the model's ``bizCode``, a free string of MNN's ``Net`` table
that the converter sets (``--bizCode``) and ``MNN.nn.load_module_from_file(...).get_info()``
reads back. edgefer reads it from the FlatBuffer itself, so that the record of a model is
known where MNN is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flatbuffers import encode, packer, table
from flatbuffers import number_types as N

from edgefer.errors import EngineMissingError, ExportError, ModelError
from edgefer.outputs import PartialFile

DEFAULT_BIZ_CODE = "edgefer"
CONVERT_TIMEOUT_S = 600
# the converter, as MNN's mnnconvert script calls it, without that script's logger
_CONVERT = "import sys, _tools; _tools.mnnconvert(['MNNConvert', *sys.argv[1:]])"
# Net, Op, Convolution2D and IDSTQuan fields (MNN's schema/default/*.fbs): vtable slots
_NET_BIZ_CODE, _NET_OPLISTS = 4, 10
_OP_MAIN_TYPE, _OP_MAIN = 6, 8
_CONV2D = 9  # OpParameter union: Convolution2D
_CONV_WEIGHT, _CONV_QUAN = 6, 10
_QUAN_BUFFER, _QUAN_TYPE = 4, 8
_QUAN_FP16 = 3  # IDSTQuan.type: the weights as raw float16
# MNN op types that compute (what ``inspect`` lists as computing in float)
_COMPUTING = ("Convolution", "ConvolutionDepthwise", "Deconvolution", "DeconvolutionDepthwise",
              "MatMul", "BatchMatMul", "InnerProduct")


@dataclass(frozen=True)
class MnnExport:
    """What ``write_artifact`` converts: the float ONNX model and how to store its weights.
    The converter runs there, because the record goes in through its ``--bizCode``."""

    onnx: bytes
    fp16: bool = False


# --- converting ----------------------------------------------------------------------

def onnx_to_mnn(onnx_path: str | os.PathLike, mnn_path: str | os.PathLike, fp16: bool = False,
                biz_code: str = DEFAULT_BIZ_CODE) -> Path:
    """Convert an ONNX model to ``mnn_path`` with MNN's converter; ``fp16`` stores the
    convolution weights as float16. ExportError with the converter's reason on failure."""
    onnx_path, mnn_path = Path(onnx_path), Path(mnn_path)
    if not onnx_path.is_file():
        raise ExportError(f"MNN export: {onnx_path} not found")
    _require_converter()
    with PartialFile(mnn_path) as partial:
        args = ["-f", "ONNX", "--modelFile", str(onnx_path.resolve()),
                "--MNNModel", str(partial.tmp.resolve()), "--bizCode", biz_code,
                *(["--fp16"] if fp16 else [])]
        output = _run_converter(args, onnx_path.name)
        if not partial.tmp.is_file() or partial.tmp.stat().st_size == 0:
            raise ExportError(f"MNN's converter could not convert {onnx_path.name}: "
                              f"{_reason(output)}")
    return mnn_path


def _require_converter() -> None:
    """The converter's module is there (found, not imported: importing prints on stdout)."""
    for module in ("MNN", "_tools"):
        if importlib.util.find_spec(module) is None:
            raise EngineMissingError("MNN", "mnn", "its converter comes with it")


def _run_converter(args: list[str], name: str) -> str:
    with tempfile.TemporaryDirectory(prefix="edgefer-mnn-") as cwd:
        try:
            done = subprocess.run([sys.executable, "-c", _CONVERT, *args], cwd=cwd,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=CONVERT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"MNN's converter did not finish {name} in "
                              f"{CONVERT_TIMEOUT_S} s") from exc
    output = done.stdout + done.stderr
    from edgefer.quiet import verbose

    if verbose():
        sys.stderr.write(output)
    if done.returncode != 0:
        raise ExportError(f"MNN's converter failed on {name} (exit code {done.returncode}): "
                          f"{_reason(output)}")
    return output


def _reason(output: str) -> str:
    """The converter's own words for a failure: its error lines, else its last lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()
             and "device supports" not in line]
    errors = [line for line in lines if any(
        word in line for word in ("Not Support", "ERROR", "Error", "failed", "Failed"))]
    return " | ".join(dict.fromkeys(errors or lines[-3:]))[:600] or "no output"


# --- edgefer's MNN format (edgefer.formats): export, record, inspect -----------------

def export_mnn(source, options) -> MnnExport:
    """The export's float ONNX model, converted by ``write_artifact``; fp16 stores the
    weights as float16 (MNN computes in float32 on x86, in fp16 where asked and the CPU
    has it)."""
    from edgefer.export.convert import _onnx_float
    from edgefer.export.options import Precision

    proto = _onnx_float(source, options)
    return MnnExport(proto.SerializeToString(), fp16=options.precision is Precision.FP16)


def write_artifact(artifact: MnnExport, record: str, info, path: Path) -> None:
    """``path`` (.mnn), with the edgefer record as its bizCode."""
    with tempfile.TemporaryDirectory(prefix="edgefer-mnn-") as tmp:
        onnx_path = Path(tmp) / f"{path.name}.onnx"
        onnx_path.write_bytes(artifact.onnx)
        onnx_to_mnn(onnx_path, path, fp16=artifact.fp16, biz_code=record)


def mnn_record(path: Path) -> str | None:
    """The edgefer record (the bizCode, when it is a JSON object); None for another
    model's bizCode ("MNN", "MNNTest"); ModelError for a file that is not a whole MNN model."""
    biz_code = _string_field(_read_net(Path(path)), _NET_BIZ_CODE, path)
    return biz_code if biz_code and biz_code.lstrip().startswith("{") else None


def inspect_mnn(path: Path):
    """What ``edgefer inspect`` shows of an MNN model: its ops and tensors as MNN loads
    them, the convolution weights read from the file."""
    from edgefer.export.inspect import TensorInfo, _sparsity
    from edgefer.runtimes.mnn import mnn_module, stdout_captured

    kernels = conv_kernels(path)
    mnn = mnn_module()
    with stdout_captured() as said:
        try:
            interpreter = mnn.Interpreter(str(path))
            session = interpreter.createSession({"numThread": 1})
            variables = mnn.expr.load_as_dict(str(path))
        except Exception as exc:  # MNN raises plain Exception
            failed = exc
        else:
            failed = None
    if failed is not None:
        raise ModelError(f"{path}: not a whole MNN model (MNN: "
                         f"{said.last_lines() or failed})") from failed

    def describe(tensors: dict) -> tuple:
        return tuple(TensorInfo(name, "float32", tuple(int(d) for d in t.getShape()))
                     for name, t in tensors.items())

    ops = dict(Counter(v.op_type for v in variables.values() if v.op_type != "Const"))
    computing = {k: v for k, v in ops.items() if k in _COMPUTING}
    return ("mnn", describe(interpreter.getSessionInputAll(session)),
            describe(interpreter.getSessionOutputAll(session)), ops, computing,
            _sparsity(kernels))


# --- reading the FlatBuffer ----------------------------------------------------------

def _read_net(path: Path):
    data = path.read_bytes()
    try:
        if len(data) < 8:
            raise IndexError("shorter than a FlatBuffer")
        return table.Table(data, _checked(data, encode.Get(packer.uoffset, data, 0), 4))
    except (IndexError, struct.error) as exc:
        raise ModelError(f"{path}: not a whole MNN model ({exc})") from exc


def _checked(data: bytes, position: int, size: int) -> int:
    if position < 0 or position + size > len(data):
        raise IndexError(f"offset {position} past the end ({len(data)} bytes): truncated?")
    return position


def _field(tab, slot: int) -> int:
    """The absolute position of a table's field, 0 when it is absent."""
    vtable = tab.Pos - tab.Get(N.SOffsetTFlags, tab.Pos)
    _checked(tab.Bytes, vtable, 4)
    if slot >= tab.Get(N.VOffsetTFlags, vtable):
        return 0
    offset = tab.Get(N.VOffsetTFlags, _checked(tab.Bytes, vtable + slot, 2))
    return tab.Pos + offset if offset else 0


def _string_field(tab, slot: int, path) -> str | None:
    try:
        where = _field(tab, slot)
        if not where:
            return None
        start = _checked(tab.Bytes, where + tab.Get(N.UOffsetTFlags, where), 4)
        length = tab.Get(N.UOffsetTFlags, start)
        raw = bytes(tab.Bytes[_checked(tab.Bytes, start + 4, length):start + 4 + length])
        return raw.decode("utf-8")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a whole MNN model ({exc})") from exc


def _vector(tab, where: int) -> tuple[int, int]:
    """(first element's position, length) of the vector a field at ``where`` points to."""
    start = _checked(tab.Bytes, where + tab.Get(N.UOffsetTFlags, where), 4)
    return start + 4, tab.Get(N.UOffsetTFlags, start)


def _child(tab, where: int):
    return table.Table(tab.Bytes, _checked(tab.Bytes, where + tab.Get(N.UOffsetTFlags, where), 4))


def conv_kernels(path: Path) -> list[np.ndarray]:
    """The float32 or float16 weights of each convolution (MNN runs Gemm as one too);
    weights stored quantized are left out."""
    net = _read_net(Path(path))
    try:
        where = _field(net, _NET_OPLISTS)
        if not where:
            return []
        first, count = _vector(net, where)
        kernels = []
        for i in range(count):
            op = _child(net, _checked(net.Bytes, first + 4 * i, 4))
            kind, main = _field(op, _OP_MAIN_TYPE), _field(op, _OP_MAIN)
            if kind and main and op.Get(N.Uint8Flags, kind) == _CONV2D:
                kernel = _conv_weights(_child(op, main))
                if kernel is not None:
                    kernels.append(kernel)
        return kernels
    except (IndexError, struct.error, ValueError) as exc:
        raise ModelError(f"{path}: not a whole MNN model ({exc})") from exc


def _conv_weights(conv) -> np.ndarray | None:
    where = _field(conv, _CONV_WEIGHT)
    if where:
        first, count = _vector(conv, where)
        _checked(conv.Bytes, first, 4 * count)
        return np.frombuffer(conv.Bytes, "<f4", count, first)
    where = _field(conv, _CONV_QUAN)
    if not where:
        return None
    quan = _child(conv, where)
    kind, buffer = _field(quan, _QUAN_TYPE), _field(quan, _QUAN_BUFFER)
    if not (kind and buffer and quan.Get(N.Int32Flags, kind) == _QUAN_FP16):
        return None
    first, count = _vector(quan, buffer)
    _checked(quan.Bytes, first, count)
    return np.frombuffer(quan.Bytes, "<f2", count // 2, first).astype(np.float32)
