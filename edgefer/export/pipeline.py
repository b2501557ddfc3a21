"""``export_model``: convert, embed the edgefer record, gate on parity, then publish.

The artifact is written under a temporary name and renamed only after the parity gate
passes, so a failed export never leaves a file under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from edgefer import __version__
from edgefer.calibration import CalibrationSet, choose_subset
from edgefer.errors import ConfigError, ExportError
from edgefer.export.convert import Source, int8_from_qat
from edgefer.export.options import ExportOptions, Precision, Target
from edgefer.export.parity import Parity, compare
from edgefer.formats import file_format_of, format_named, load
from edgefer.outputs import output_file
from edgefer.preprocess import ModelInfo
from edgefer.quiet import conversion_quiet

PARITY_SEED = 1


@dataclass(frozen=True)
class ExportResult:
    path: Path
    options: ExportOptions
    parity: Parity
    size_bytes: int
    int8_from: str = ""  # "qat" or "calibration" for INT8 exports
    replaced: bool = False  # an earlier file of the same name was there
    reports: tuple[Path, ...] = ()  # the per-layer INT8 report's files (--debug-int8)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A trained edgefer model, loaded once for any number of exports."""

    path: Path
    name: str
    source: Source
    info: ModelInfo
    sha256: str


def load_source(model_path: str | os.PathLike, data: Path | None = None,
                calib_manifest: Path | None = None, user_input=None) -> LoadedModel:
    """Load the model for exports. The model's record, ``data`` and a ``calib_manifest``
    asked for by name are checked first, before TensorFlow loads (tens of seconds).

    ``model_path`` is an edgefer model folder, or a user's float model (Keras file or
    SavedModel, ONNX file) whose preprocessing ``user_input`` (a ``user_model.InputSpec``)
    gives."""
    from edgefer.data import check_source
    from edgefer.export import user_model
    from edgefer.model.store import check_record

    if user_model.is_user_model(model_path):
        return _load_user_model(Path(model_path), data, calib_manifest,
                                user_input or user_model.InputSpec())
    if user_input is not None and user_input.given:
        raise ConfigError("--input-scale, --input-offset and --labels describe a model "
                          "edgefer did not train; an edgefer model records its own")
    _, info = check_record(model_path)
    if data is not None:
        check_source(data, "train")
    calibration = _calibration_loader(calib_manifest, data, info)
    if calib_manifest is not None:
        if calibration is None:
            raise ConfigError(f"--calib {calib_manifest} needs the FER2013 images it names: "
                              "give --data PATH or set EDGEFER_FER2013")
        calibration()  # cached: the exports reuse it

    from edgefer.model.registry import config_from_record
    from edgefer.model.store import float_twin, load_model, read_record, weights_sha256

    model, stage, info = load_model(model_path)
    config = config_from_record(read_record(model_path), model_path)
    twin = float_twin(model, config, keep_qat_ranges=True) if stage.quantized else model
    shape = (config.input_size, config.input_size, config.channels)
    source = Source(model, twin, stage.quantized, shape, calibration=calibration,
                    validation=_validation_loader(data, info))
    return LoadedModel(Path(model_path), info.name, source, info, weights_sha256(model_path))


def _load_user_model(path: Path, data: Path | None, calib_manifest: Path | None,
                     spec) -> LoadedModel:
    from edgefer.data import check_source
    from edgefer.export import user_model

    if not path.exists():
        raise ConfigError(f"model not found: {path}")
    if data is not None:
        check_source(data, "train")
    if path.suffix.lower() == ".onnx":
        proto = user_model.load_onnx(path)
        info = user_model.model_info(path, user_model.onnx_input_shape(proto), spec)
        keras_model = None
    else:
        keras_model = user_model.load_keras(path)
        proto = None
        info = user_model.model_info(path, tuple(keras_model.input_shape), spec)
    calibration = _calibration_loader(calib_manifest, data, info)
    if calib_manifest is not None and calibration is not None:
        calibration()
    shape = (info.preprocess.size, info.preprocess.size, info.preprocess.channels)
    source = Source(keras_model, keras_model, False, shape, calibration=calibration,
                    validation=_validation_loader(data, info), float_onnx=proto)
    return LoadedModel(path, info.name, source, info, user_model.file_sha256(path))


def _calibration_loader(manifest: Path | None, data: Path | None,
                        info: ModelInfo) -> Callable[[], CalibrationSet] | None:
    if data is None:
        return None
    from edgefer.calibration import DEFAULT_MANIFEST

    chosen = manifest or DEFAULT_MANIFEST
    return cache(lambda: CalibrationSet.from_manifest(chosen, data, info.preprocess))


def _validation_loader(data: Path | None, info: ModelInfo):
    if data is None:
        return None
    return cache(lambda: parity_images(data, info, 300))


def parity_images(data: Path | None, info: ModelInfo, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` preprocessed training-split images (stratified, fixed seed) and labels.

    Without FER2013, random faces stand in (the parity result says so).
    """
    if data is None:
        rng = np.random.default_rng(PARITY_SEED)
        faces = rng.integers(0, 256, (count, 48, 48), dtype=np.uint8)
        return info.preprocess(faces), np.full(count, -1)
    from edgefer.data import load_split

    split = load_split(data, "train", skip_bad=True)
    subset = split.subset(choose_subset(split, min(count, len(split)), PARITY_SEED))
    return info.preprocess(subset.images), subset.labels


def artifact_info(loaded: LoadedModel, options: ExportOptions) -> ModelInfo:
    precision = options.precision.value
    if options.precision is Precision.INT8:
        precision = "int8-qat" if int8_from_qat(loaded.source, options) else "int8-ptq"
    return replace(loaded.info, precision=precision, source_sha256=loaded.sha256,
                   edgefer_version=__version__)


def artifact_name(loaded: LoadedModel, options: ExportOptions) -> str:
    """``NAME-PRECISION``, and for INT8 what tells two exports apart: ``-ptq`` when
    calibrated (with the calibration method unless minmax), ``-pure`` and ``-float-io`` for
    TFLite's other graph and I/O: ``edgefer-mnv3s-int8.tflite`` (from QAT),
    ``edgefer-mnv3s-int8-ptq-entropy.onnx``."""
    from edgefer.export.options import CalibMethod, IntGraph, IoType

    parts = [loaded.name, options.precision.value]
    if options.precision is Precision.INT8:
        if not int8_from_qat(loaded.source, options):
            parts.append("ptq")
            if options.calib_method is not CalibMethod.MINMAX:
                parts.append(options.calib_method.value)
        if options.target is Target.TFLITE and options.int8_graph is IntGraph.PURE:
            parts.append("pure")
        if options.target is Target.TFLITE and options.io is IoType.FLOAT:
            parts.append("float-io")
    return "-".join(parts) + options.suffix


def export_model(loaded: LoadedModel, options: ExportOptions, out_dir: str | os.PathLike,
                 data: Path | None = None) -> ExportResult:
    """Export ``loaded`` as ``options`` says into ``out_dir``; raise ExportError on failure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / artifact_name(loaded, options)
    info = artifact_info(loaded, options)
    with conversion_quiet():  # converters' notes ("fully_quantize: 0", NNCF's bars) unless -v
        artifact = load(options.format.exporter)(loaded.source, options)
    reports = _debug_report(loaded, options, artifact, final)
    staging = out_dir / f".{final.stem}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        temp = _write(artifact, options.target, info, staging / final.name)
        parity = check_parity(loaded, options, temp, info, data)
        if not parity.passed:
            where = f"; per-layer report: {reports[-1]}" if reports else ""
            raise ExportError(
                f"parity gate failed for {final.name}: top-1 agreement {parity.agreement:.3f} "
                f"< {parity.threshold:.3f} on {parity.images} images (max probability "
                f"difference {parity.max_prob_diff:.3f}); nothing written. Use --min-agreement "
                f"to override{where}")
        replaced = final.exists()
        size = _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    int8_from = ""
    if options.precision is Precision.INT8:
        int8_from = "qat" if int8_from_qat(loaded.source, options) else "calibration"
    return ExportResult(final, options, parity, size, int8_from, replaced, reports)


def _debug_report(loaded: LoadedModel, options: ExportOptions, artifact,
                  final: Path) -> tuple[Path, ...]:
    """With ``--debug-int8 DIR``: the per-layer error report of a calibrated INT8 export
    (JSON, plot, Markdown table), written before the parity gate decides."""
    if options.debug_int8 is None or options.precision is not Precision.INT8:
        return ()
    if int8_from_qat(loaded.source, options):
        raise ConfigError("--debug-int8 reports calibrated INT8; this INT8 comes from the QAT "
                          "model's ranges (add --int8-source calibrate)")
    from edgefer.export.quant_debug import export_report, write_report
    from edgefer.report import render_quant_report

    report = export_report(loaded.source, options, artifact)
    stem = final.name.replace(".", "-") + ".layers"
    return tuple(write_report(report, options.debug_int8, stem, render_quant_report))


def _write(artifact, target: Target, info: ModelInfo, path: Path) -> Path:
    """``artifact`` with the edgefer record, written by its format's writer."""
    record = json.dumps(info.to_dict(), sort_keys=True)
    load(format_named(Target(target).value).write)(artifact, record, info, path)
    return path


def _publish(staging: Path, out_dir: Path) -> int:
    """Move every staged file into place; the main file last. Returns total bytes."""
    files = sorted(staging.iterdir(), key=lambda f: file_format_of(f) is not None)
    targets = [output_file(out_dir / file.name) for file in files]  # all checked first
    size = 0
    for file, target in zip(files, targets, strict=True):
        size += file.stat().st_size
        os.replace(file, target)
    return size


def reference_probabilities(loaded: LoadedModel, options: ExportOptions,
                            inputs: np.ndarray) -> np.ndarray:
    """The Keras model the export came from: the QAT model for QAT INT8, else the float one."""
    from_qat = options.precision is Precision.INT8 and int8_from_qat(loaded.source, options)
    model = loaded.source.model if from_qat else loaded.source.float_model
    if model is None:  # a user's ONNX model: ONNX Runtime runs the reference
        model = loaded.source.float_onnx
    key = (id(model), inputs.shape, float(inputs.sum()))
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = _predict(model, inputs)
    return _REFERENCE_CACHE[key]


def _predict(model, inputs: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict"):
        return np.asarray(model.predict(inputs, batch_size=100, verbose=0))
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + 1]})[0]
                           for i in range(len(inputs))])


_REFERENCE_CACHE: dict[tuple, np.ndarray] = {}


def check_parity(loaded: LoadedModel, options: ExportOptions, path: Path, info: ModelInfo,
                 data: Path | None) -> Parity:
    from edgefer.runtimes import RuntimeOptions, load_runtime

    inputs, _ = parity_images(data, info, options.parity_images)
    reference = reference_probabilities(loaded, options, inputs)
    runtime = load_runtime(path, RuntimeOptions(threads=2), info=info)
    candidate = np.concatenate([runtime.predict(inputs[i:i + 50])
                                for i in range(0, len(inputs), 50)])
    return compare(reference, candidate, options.threshold, synthetic=data is None)
