"""Export trained models to TFLite, ONNX and OpenVINO, each checked against its source."""

from edgefer.export.options import (
    SUPPORTED,
    CalibMethod,
    ExportOptions,
    Int8Source,
    IntGraph,
    IoType,
    Precision,
    Target,
)
from edgefer.export.pipeline import ExportResult, LoadedModel, export_model, load_source

__all__ = [
    "SUPPORTED",
    "CalibMethod",
    "ExportOptions",
    "ExportResult",
    "Int8Source",
    "IntGraph",
    "IoType",
    "LoadedModel",
    "Precision",
    "Target",
    "export_all",
    "export_model",
    "load_source",
]


def uninstalled_targets() -> list[Target]:
    """The targets whose engine is not installed here: export checks each file it makes
    by running it, so ``--target all`` leaves these out."""
    from edgefer.engines import engine_installed
    from edgefer.formats import format_named

    return [t for t in Target if not engine_installed(format_named(t.value).default_engine)]


def plan(targets: str, precisions: str) -> list[tuple[Target, Precision]]:
    """(target, precision) pairs for comma lists where ``all`` means every supported one
    whose engine is installed. With ``all`` targets, a precision goes to the targets that
    make it (int8: not ncnn or mnn)."""
    from edgefer.errors import ConfigError

    every_target = targets == "all"
    uninstalled = uninstalled_targets() if every_target else []
    target_list = [t for t in Target if t not in uninstalled] if every_target else [
        ExportOptions(t.strip(), "fp32").target for t in targets.split(",")]
    pairs = []
    for target in target_list:
        if precisions == "all":
            wanted = SUPPORTED[target]
        elif every_target:
            wanted = [p for p in _precisions(precisions) if p in SUPPORTED[target]]
        else:
            wanted = [ExportOptions(target, p.value).precision for p in _precisions(precisions)]
        pairs += [(target, p) for p in wanted]
    if not pairs:
        raise ConfigError("nothing to export")
    return pairs


def _precisions(precisions: str) -> list[Precision]:
    from edgefer.export.options import _enum

    return [_enum(Precision, p.strip(), "precision") for p in precisions.split(",")]


def export_all(model_path, pairs, out_dir, data=None, calib=None, progress=None,
               user_input=None, **options):
    """Export one model to several (target, precision) pairs; yields ExportResults.
    ``user_input``: the preprocessing of a model edgefer did not train
    (``edgefer.export.user_model.InputSpec``)."""
    from edgefer.errors import ConfigError

    every = [ExportOptions(target, precision, **options) for target, precision in pairs]
    if str(model_path).lower().endswith(".onnx") and any(
            o.target is Target.TFLITE for o in every):
        raise ConfigError(f"{model_path} is ONNX: edgefer exports it to onnx and openvino, "
                          "TFLite needs a Keras model")
    # only after every option is known good
    loaded = load_source(model_path, data, calib, user_input)
    for chosen in every:
        if progress:
            progress(chosen.target, chosen.precision)
        yield export_model(loaded, chosen, out_dir, data)
