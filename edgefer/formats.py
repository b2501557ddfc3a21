"""Every model format edgefer knows, one ``Format`` record each, in one table.

Export, artifacts, inspect, the runtimes, bench and the edge devices read what they need
to know about a file type from here: its suffix and the files beside it, where its
edgefer record lives, the functions that write and inspect it, the precisions export
makes, the engines that run it and the pip extra that installs them.

Functions are named as ``"module:attribute"`` and imported only when called, so that
reading this table imports no engine (and no module that imports this one).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgefer.errors import ModelError


def load(reference: str):
    """The object a ``"package.module:attribute"`` reference names, imported now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Companion:
    """A file a model file needs beside it, named from the model's ``{stem}``/``{name}``."""

    pattern: str  # "{stem}.bin", "{name}.data"
    what: str  # what it holds, for messages: "weights", "external data"
    required: bool = False

    def path_for(self, model: Path) -> Path:
        return model.with_name(self.pattern.format(stem=model.stem, name=model.name))


@dataclass(frozen=True)
class Format:
    """One model format: a file type, or (``suffix`` empty) edgefer's Keras model folder."""

    name: str  # the export target and the ``target`` of bench results: "tflite"
    label: str  # for people: "TFLite"
    suffix: str  # ".tflite", ".ncnn.param" (the name's ending); "" for a folder
    engines: tuple[str, ...]  # engine names (edgefer.engines), the default first
    extra: str  # the pip extra whose packages read and write it
    metadata: str  # where the edgefer record lives, for people
    read_record: str  # "module:function" (Path) -> the record as JSON text (or bytes), None
    companions: tuple[Companion, ...] = ()
    write: str = ""  # "module:function" (artifact, record JSON, ModelInfo, Path) -> None
    exporter: str = ""  # "module:function" (Source, ExportOptions) -> artifact
    inspector: str = ""  # "module:function" (Path) -> what ``edgefer inspect`` shows
    precisions: tuple[str, ...] = ()  # what export makes; () for a format it cannot write
    calib_methods: tuple[str, ...] = ()  # the INT8 calibration methods of its converter
    int8_unsupported: str = ""  # why export makes no int8 of it (one line), for the error

    @property
    def exportable(self) -> bool:
        return bool(self.precisions)

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    def companion_files(self, model: Path) -> list[Path]:
        return [c.path_for(model) for c in self.companions]

    def model_beside(self, path: Path, companion: Companion) -> Path | None:
        """The model file ``path`` would be ``companion`` of (None: not named as one):
        ``{name}.data`` -> ``{name}``; ``{stem}.bin`` -> ``{stem}`` + the last suffix."""
        ending = companion.pattern.format(stem="", name="")
        if not (path.suffix and path.name.lower().endswith(ending)):
            return None
        base = path.name[:len(path.name) - len(ending)]
        if "{name}" in companion.pattern:
            return path.with_name(base)
        return path.with_name(base + self.suffix[self.suffix.rfind("."):])

    def matches(self, path: str | os.PathLike) -> bool:
        """``path``'s name ends with this format's suffix (a file format only)."""
        return bool(self.suffix) and Path(path).name.lower().endswith(self.suffix)


FORMATS: tuple[Format, ...] = (
    Format(
        name="tflite", label="TFLite", suffix=".tflite", engines=("litert",), extra="tflite",
        metadata="a TFLite metadata entry named edgefer",
        read_record="edgefer.artifacts:tflite_record",
        write="edgefer.artifacts:write_tflite",
        exporter="edgefer.export.convert:export_tflite",
        inspector="edgefer.export.inspect:inspect_tflite",
        precisions=("fp32", "fp16", "dynamic", "int8"),
        # TFLite's converter calibrates min-max only
        calib_methods=("minmax",)),
    Format(
        # OpenVINO reads ONNX files directly: load_runtime(path, engine="openvino")
        name="onnx", label="ONNX", suffix=".onnx", engines=("onnxruntime", "openvino"),
        extra="onnx",
        metadata="ONNX metadata_props, key edgefer",
        read_record="edgefer.artifacts:onnx_record",
        companions=(Companion("{name}.data", "external data"),
                    Companion("{stem}.data", "external data")),
        write="edgefer.artifacts:write_onnx",
        exporter="edgefer.export.convert:export_onnx",
        inspector="edgefer.export.inspect:inspect_onnx",
        precisions=("fp32", "fp16", "int8"),
        # ONNX Runtime's quantizer: MinMax, Entropy, Percentile (99.999%)
        calib_methods=("minmax", "entropy", "percentile")),
    Format(
        name="openvino", label="OpenVINO", suffix=".xml", engines=("openvino",),
        extra="openvino", metadata="OpenVINO rt_info edgefer/info",
        read_record="edgefer.artifacts:openvino_record",
        companions=(Companion("{stem}.bin", "weights", required=True),),
        write="edgefer.artifacts:write_openvino",
        exporter="edgefer.export.convert:export_openvino",
        inspector="edgefer.export.inspect:inspect_openvino",
        precisions=("fp32", "fp16", "int8"),
        # NNCF: MINMAX, MEAN_QUANTILE, HISTOGRAM (the range of least squared error)
        calib_methods=("minmax", "percentile", "mse")),
    Format(
        # ncnn's .param has no room for a record: a JSON sidecar holds it
        name="ncnn", label="ncnn", suffix=".ncnn.param", engines=("ncnn",), extra="ncnn",
        metadata="a sidecar .ncnn.json file", read_record="edgefer.export.ncnn:ncnn_record",
        companions=(Companion("{stem}.bin", "weights", required=True),
                    Companion("{stem}.json", "edgefer record")),
        write="edgefer.export.ncnn:write_artifact",
        exporter="edgefer.export.ncnn:export_ncnn",
        inspector="edgefer.export.ncnn:inspect_ncnn",
        precisions=("fp32", "fp16"),
        int8_unsupported="ncnn's pip wheel has no ncnn2table/ncnn2int8 (its INT8 tools come "
        "with a source build, see docs/ncnn.md)"),
    Format(
        # MNN's converter has no INT8 of ONNX's QDQ models (docs/mnn.md)
        name="mnn", label="MNN", suffix=".mnn", engines=("mnn",), extra="mnn",
        metadata="the MNN model's bizCode string", read_record="edgefer.export.mnn:mnn_record",
        write="edgefer.export.mnn:write_artifact",
        exporter="edgefer.export.mnn:export_mnn",
        inspector="edgefer.export.mnn:inspect_mnn",
        precisions=("fp32", "fp16"),
        int8_unsupported="MNN's converter does not support the QDQ ONNX model's Conv, and "
        "its mnnquant gave 11% agreement on this model (see docs/mnn.md)"),
    Format(
        name="keras", label="edgefer Keras model folder", suffix="", engines=("keras",),
        extra="train", metadata="model.json's info",
        read_record="edgefer.artifacts:keras_record"),
)

EXPORT_FORMATS: tuple[Format, ...] = tuple(f for f in FORMATS if f.exportable)
FILE_FORMATS: tuple[Format, ...] = tuple(f for f in FORMATS if f.suffix)


def format_named(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(name)


def suffixes_in_words(formats: tuple[Format, ...] = FILE_FORMATS) -> str:
    """``.tflite, .onnx or OpenVINO .xml``: the file types, for messages."""
    names = [f.suffix if f.label.lower() in f.suffix else f"{f.label} {f.suffix}"
             for f in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def format_of(path: str | os.PathLike) -> Format:
    """The format of a model file or folder, by its suffix; ModelError for others."""
    from edgefer.model.store import is_model_dir

    path = Path(path)
    fmt = file_format_of(path)
    if fmt is not None:
        return fmt
    if is_model_dir(path):
        return format_named("keras")
    raise ModelError(f"{path}: unknown model format (expected "
                     f"{', '.join(f.suffix for f in FILE_FORMATS)} or an edgefer model folder)")


def file_format_of(path: str | os.PathLike) -> Format | None:
    """The file format whose suffix ends ``path``'s name (the longest such suffix)."""
    found = [fmt for fmt in FILE_FORMATS if fmt.matches(path)]
    return max(found, key=lambda fmt: len(fmt.suffix)) if found else None


def model_stem(path: str | os.PathLike) -> str:
    """A model file's name without its format's suffix (``m.ncnn.param`` -> ``m``)."""
    path = Path(path)
    fmt = file_format_of(path)
    return path.name[:len(path.name) - len(fmt.suffix)] if fmt else path.stem


def companion_of(path: Path) -> tuple[Format, Companion] | None:
    """The format and companion a file is named as (``m.bin``: OpenVINO's weights,
    ``m.ncnn.bin``: ncnn's): a format whose model file would be named right beside it."""
    candidates = []
    for fmt in FILE_FORMATS:
        for companion in fmt.companions:
            model = fmt.model_beside(path, companion)
            if model is not None and fmt.matches(model):
                candidates.append(((model.exists(), len(fmt.suffix)), fmt, companion))
    if not candidates:
        return None
    _, fmt, companion = max(candidates, key=lambda c: c[0])
    return fmt, companion


def model_files(path: str | os.PathLike, strict: bool = False) -> list[Path]:
    """The files a model consists of: a folder's files, or the file and the companions
    beside it (OpenVINO's .bin, ONNX external data) that exist. ``strict``: a missing
    required companion is a ModelError (a model about to be copied somewhere)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    files = [path]
    fmt = file_format_of(path)
    for companion in fmt.companions if fmt else ():
        file = companion.path_for(path)
        if file.exists():
            files.append(file)
        elif strict and companion.required:
            raise ModelError(f"{path}: its {companion.what} {file.name} are missing")
    return files
