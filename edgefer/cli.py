"""The ``edgefer`` command line: thin wrappers that turn EdgeferErrors into clean exits."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from edgefer import __version__
from edgefer.errors import EdgeferError
from edgefer.interrupts import interrupts_raise


def friendly(func):
    """Run a command body; an EdgeferError becomes a message and exit code 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with interrupts_raise():  # SIGTERM cleans up as Ctrl-C does
                return func(*args, **kwargs)
        except EdgeferError as exc:
            raise click.ClickException(_one_line(str(exc))) from exc
        except OSError as exc:  # a disk or folder problem edgefer did not foresee
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
    return wrapper


def _one_line(message: str, limit: int = 400) -> str:
    """Engines' own messages can run to many lines: keep one, whitespace collapsed."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say_if_replacing(path: Path) -> None:
    if path.exists():
        click.echo(f"note: replacing the existing {path}", err=True)


# One convention in every command: --model names the model (bench, benchmark, export and
# inspect also take it as their argument), --data the FER2013 with the same default,
# --out where files go, --json JSON on stdout, -v the engines' own log lines.
DATA_DEFAULT = "default: $EDGEFER_FER2013, else ../shared/fer2013 or ./fer2013"
DATA_HELP = f"FER2013 image folder or fer2013.csv ({DATA_DEFAULT})."
MODEL_HELP = ("The edgefer model folder to export, instead of MODEL (default: the shipped "
              "models/edgefer-mnv3s).")


def _one(argument: Path | None, option: Path | None, name: str) -> Path | None:
    """A value given as the argument or as --NAME (not two different ones)."""
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"give the {name} once: as the argument or as --{name}")
    return argument if argument is not None else option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgefer")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the engines' own log lines (TensorFlow, LiteRT, ONNX Runtime, NNCF).")
def main(verbose: bool) -> None:
    """edgefer: facial-expression models from training to phones and Raspberry Pis.

    Train a MobileNetV3 on FER2013, export it to TFLite, ONNX and OpenVINO at fp32, fp16
    and INT8, benchmark every export, and run photos through face detection and the model.
    """
    from edgefer import quiet

    if verbose:  # for this process and the bench workers it starts
        quiet.set_verbose(True)
    quiet.configure()


# --- data ------------------------------------------------------------------------

@main.group()
def data() -> None:
    """Inspect FER2013 (image folders or fer2013.csv)."""


@data.command("info")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="The FER2013 to describe, instead of PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--skip-bad", is_flag=True,
              help="Count and list unreadable or wrong-size images and bad CSV rows "
              "instead of stopping at the first.")
@friendly
def data_info(path: Path | None, data_path: Path | None, as_json: bool, skip_bad: bool) -> None:
    """Counts per split and class, image size, and problems found in PATH.

    PATH (or --data) is a FER2013 image folder (train/, test/) or fer2013.csv(.gz);
    default: $EDGEFER_FER2013, else ../shared/fer2013 or ./fer2013.
    """
    from edgefer.dataset_info import describe, render_info

    info = describe(_data_or_default(_one(path, data_path, "data")), skip_bad)
    click.echo(json.dumps(info, indent=1) if as_json else render_info(info))


# --- calibrate -------------------------------------------------------------------

@main.group()
def calibrate() -> None:
    """Build and check calibration subsets for post-training INT8."""


@calibrate.command("build")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help=DATA_HELP)
@click.option("--size", default=500, show_default=True, help="Images in the subset.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the draw.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Manifest file (default: calibration/fer2013-train-SIZE-seedSEED.json).")
@friendly
def calibrate_build(data_path: Path | None, size: int, seed: int, out: Path | None) -> None:
    """Draw a class-stratified, deterministic subset of the training split."""
    from edgefer.calibration import build_manifest, default_manifest_name
    from edgefer.outputs import check_writable

    data = _data_or_default(data_path)
    target = check_writable(out or Path("calibration") / default_manifest_name(size, seed),
                            folder=False, inputs=[data])
    manifest = build_manifest(data, size=size, seed=seed)
    _say_if_replacing(target)
    path = manifest.write(target)
    counts = ", ".join(f"{k} {v}" for k, v in manifest.class_counts.items())
    click.echo(f"wrote {path}: {len(manifest.ids)} images ({counts})")


@calibrate.command("check")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help=f"The FER2013 to check the manifest against ({DATA_DEFAULT}).")
@friendly
def calibrate_check(manifest: Path, data_path: Path | None) -> None:
    """Verify that MANIFEST matches the data (same files, same pixels)."""
    from edgefer.calibration import CalibrationSet
    from edgefer.preprocess import Preprocess

    subset = CalibrationSet.from_manifest(manifest, _data_or_default(data_path), Preprocess())
    click.echo(f"{manifest}: {len(subset)} images, matches the data")


def _data_or_default(path: Path | None) -> Path:
    from edgefer.datasets import default_data_path
    from edgefer.errors import DataError

    found = path or default_data_path()
    if found is None:
        raise DataError("no FER2013 given or found (looked for $EDGEFER_FER2013, "
                        "../shared/fer2013, ./fer2013 and ./fer2013.csv): use --data PATH")
    return found


# --- train -----------------------------------------------------------------------

@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML training config (e.g. models/edgefer-mnv3s.toml).")
@click.option("--data", "data_path", default=None, help=DATA_HELP)
@click.option("--out", default=None, help="Folder for runs (default: runs).")
@click.option("--name", default=None, help="Run name (a folder under --out).")
@click.option("--epochs", type=int, default=None, help="Float-training epochs.")
@click.option("--qat-epochs", type=int, default=None, help="QAT epochs (0: no QAT).")
@click.option("--prune-epochs", type=int, default=None, help="Pruning epochs (0: no pruning).")
@click.option("--sparsity", "target_sparsity", type=float, default=None,
              help="Target sparsity of pruned layers.")
@click.option("--prune-min-weights", type=int, default=None,
              help="Prune only layers with at least this many weights (default 20000).")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate (float stage).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None)
@click.option("--schedule", type=click.Choice(["cosine", "plateau"]), default=None)
@click.option("--loss", type=click.Choice(["crossentropy", "focal"]), default=None)
@click.option("--class-weights", type=click.Choice(["none", "balanced", "sqrt"]), default=None)
@click.option("--ema", type=float, default=None, metavar="MOMENTUM",
              help="Validate and keep a moving average of the weights in the float, QAT "
              "and PQAT stages (e.g. 0.998; 0: off).")
@click.option("--architecture", default=None,
              help="Network (default mobilenetv3; minixception: fer's 60k-parameter model).")
@click.option("--variant", "model__variant", type=click.Choice(["small", "large"]), default=None,
              help="MobileNetV3 variant.")
@click.option("--width", "model__width", type=float, default=None, help="Width multiplier.")
@click.option("--input-size", "model__input_size", type=int, default=None)
@click.option("--mixup", "augment__mixup", type=float, default=None, help="Mixup alpha (0: off).")
@click.option("--distill-from", "distill__teacher", multiple=True, metavar="MODEL",
              help="Distil from this trained edgefer model: its predictions (averaged with "
              "the mirror image's) become part of every training target. Repeat it to "
              "distil from an ensemble (the models' predictions averaged).")
@click.option("--distill-weight", "distill__weight", type=float, default=None,
              help="The teacher's share of each target (default 0.5).")
@click.option("--low-res", "low_res__size", type=int, default=None, metavar="PX",
              help="Progressive resizing: train the float stage's first --low-res-epochs "
              "epochs on images scaled down to PX px (a step at 32 px costs about half).")
@click.option("--low-res-epochs", "low_res__epochs", type=int, default=None, metavar="N",
              help="How many of the float stage's epochs train at --low-res px.")
@click.option("--limit", type=int, default=None, help="Use only N training images (smoke runs).")
@click.option("--init-from", default=None,
              help="Start the float stage from this edgefer model's weights (continue a run).")
@click.option("--seed", type=int, default=None)
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              default=None, help="tf.distribute strategy for several GPUs or machines "
              "(multiworker: the cluster comes from TF_CONFIG or --workers).")
@click.option("--workers", default=None, metavar="HOST:PORT,...",
              help="Train on several machines: every worker's address, the chief first "
              "(sets TF_CONFIG; implies --strategy multiworker). See docs/distributed.md.")
@click.option("--worker-index", type=int, default=None,
              help="With --workers: this machine's place in the list (0: the chief).")
@friendly
def train(config_path: Path | None, data_path: str | None, workers: str | None,
          worker_index: int | None, **options) -> None:
    """Train the expression model: float, then pruning and (pruning-preserving) QAT.

    Every stage checkpoints each epoch; run the same command again to resume. With
    --workers (or TF_CONFIG and --strategy multiworker), run it on every machine.
    """
    from edgefer.outputs import check_writable
    from edgefer.train.cluster import use_workers
    from edgefer.train.config import load_config
    from edgefer.train.run import Trainer

    options = {key.replace("__", "."): value for key, value in options.items()}
    options["distill.teacher"] = options["distill.teacher"] or None  # not given: the config's
    if workers is not None or worker_index is not None:
        options["strategy"] = use_workers(workers, worker_index, options["strategy"])
    config = load_config(config_path, data=data_path, **options)
    check_writable(config.run_dir, folder=True,
                   inputs=[config_path, config.data or None, config.init_from or None,
                           *config.distill.teachers])
    summary = Trainer(config, log=click.echo).run()
    if summary is not None:  # None on the workers that are not the chief
        click.echo(json.dumps(summary["publictest_accuracy_keras"]))


# --- export ------------------------------------------------------------------------

@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help=MODEL_HELP)
@click.option("--target", default="tflite", show_default=True,
              help="tflite, onnx, openvino, ncnn, mnn, a comma list, or all.")
@click.option("--precision", default="int8", show_default=True,
              help="fp32, fp16, dynamic (TFLite), int8, a comma list, or all.")
@click.option("--int8-source", type=click.Choice(["auto", "qat", "calibrate"]), default="auto",
              show_default=True, help="INT8 from the QAT model's ranges, or calibrated "
              "post-training on --calib (auto: QAT when the model is QAT).")
@click.option("--io", type=click.Choice(["int8", "float"]), default="int8", show_default=True,
              help="TFLite INT8 input/output type.")
@click.option("--int8-graph", type=click.Choice(["cpu", "pure"]), default="cpu",
              show_default=True, help="TFLite INT8 graph: cpu runs hard-swish and average "
              "pooling in float, so that XNNPACK (phone, Pi and PC CPUs) runs the whole graph "
              "(2x faster) and pooling is exact; pure keeps an integer-only graph for NPUs, "
              "the Edge TPU and microcontrollers.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration manifest (default: calibration/fer2013-train-500-seed0.json).")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile", "mse"]),
              default="minmax", show_default=True, help="Calibration of activation ranges: "
              "minmax (every engine), entropy (ONNX Runtime), percentile (ONNX Runtime, "
              "OpenVINO), mse (OpenVINO).")
@click.option("--max-drop", type=float, default=None,
              help="OpenVINO NNCF accuracy control: largest top-1 drop allowed (0.01 = 1 pt).")
@click.option("--equalize/--no-equalize", default=False, show_default=True,
              help="Calibrated INT8: cross-layer equalization of the float model first "
              "(across ReLU and clips; see docs/quantization.md).")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="Calibrated INT8: correct the mean shift quantization causes (NNCF's bias "
              "correction for OpenVINO, on by default; the weights' for TFLite and ONNX, off "
              "by default).")
@click.option("--keep-float", default="", metavar="LAYERS",
              help="Calibrated INT8: keep these layers (comma list of names from the "
              "--debug-int8 report, matched as parts of node names) in float.")
@click.option("--debug-int8", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Calibrated INT8: write a per-layer error report (table, plot, JSON) "
              "to DIR, also when the parity gate fails.")
@click.option("--input-scale", type=float, default=None,
              help="A model edgefer did not train (.keras, .h5, SavedModel, .onnx): input = "
              "pixel * scale + offset.")
@click.option("--input-offset", type=float, default=None, help="See --input-scale.")
@click.option("--labels", default=None,
              help="A model edgefer did not train: its output classes in order, comma list "
              "(default: FER2013's angry,disgust,fear,happy,sad,surprise,neutral).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help=f"FER2013 for calibration and parity ({DATA_DEFAULT}).")
@click.option("--min-agreement", type=float, default=None,
              help="Parity gate: minimum top-1 agreement with the source model.")
@click.option("--dynamic-batch", is_flag=True,
              help="Export an input of any batch size (for batched throughput) instead of "
              "the static batch of 1 a device runs.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("exports"),
              show_default=True, help="Output folder.")
@friendly
def export(model: Path | None, model_path: Path | None, target: str, precision: str,
           data_path: Path | None, calib: Path | None, out_dir: Path, input_scale: float | None,
           input_offset: float | None, labels: str | None, **options) -> None:
    """Export MODEL, check each artifact against it, and write it to --out.

    MODEL is an edgefer model folder, or a float model trained elsewhere: a Keras file
    (.keras, .h5), a Keras SavedModel folder or an ONNX file (NHWC input), with
    --input-scale and --input-offset saying how a pixel becomes its input.

    Every artifact carries its class names, preprocessing and precision, and is written
    only after it agrees with the source model (the parity gate) on FER2013 images.
    """
    from edgefer.datasets import default_data_path
    from edgefer.export import export_all, plan
    from edgefer.outputs import check_writable
    from edgefer.shipped import shipped_model

    source = _one(model, model_path, "model") or shipped_model()
    check_writable(out_dir, folder=True, inputs=[source, calib, data_path])
    if options["debug_int8"] is not None:
        check_writable(options["debug_int8"], folder=True, inputs=[source, calib, data_path])
    data = data_path or default_data_path()
    if data is None:
        click.echo("note: no FER2013 found; parity is checked on random faces", err=True)
    from edgefer.export.user_model import InputSpec

    user_input = InputSpec(input_scale, input_offset,
                           tuple(x.strip() for x in labels.split(",")) if labels else None)
    if target == "all":
        from edgefer.engines import engine_named
        from edgefer.export import uninstalled_targets
        from edgefer.formats import format_named

        for missing in uninstalled_targets():
            engine = engine_named(format_named(missing.value).default_engine)
            click.echo(f"note: {missing.value} left out: {engine.label} is not installed "
                       f"({engine.install_hint})", err=True)
    results = export_all(source, plan(target, precision), out_dir, data,
                         calib, progress=lambda t, p: click.echo(f"exporting {t.value} {p.value}"
                                                                   " ...", err=True),
                         user_input=user_input, **options)
    from edgefer.report import size_text

    parity = None
    for r in results:
        source = f", INT8 from {r.int8_from}" if r.int8_from else ""
        click.echo(f"{r.path}  {size_text(r.size_bytes)}  parity {r.parity.agreement:.1%} "
                   f"top-1 agreement, max |dp| {r.parity.max_prob_diff:.3f}{source}")
        if r.replaced:
            click.echo(f"note: replaced the earlier {r.path}", err=True)
        if r.reports:
            click.echo(f"per-layer INT8 report: {r.reports[-1]}", err=True)
        parity = r.parity
    if parity is not None:
        faces = "random faces (no FER2013)" if parity.synthetic else "FER2013 training images"
        click.echo(f"parity: on {parity.images} {faces}, the share whose top-1 class is the "
                   "source Keras model's; max |dp|: the largest difference between the two "
                   "models' probabilities for one class of one image (0 to 1)", err=True)


@main.command("inspect")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="The exported model file to inspect, instead of MODEL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def inspect_command(model: Path | None, model_path: Path | None, as_json: bool) -> None:
    """Format, precision, tensors and quantization, ops, float ops left, sparsity and size
    of MODEL, an exported .tflite, .onnx, OpenVINO .xml, .ncnn.param or .mnn file."""
    from dataclasses import asdict

    from edgefer.export.inspect import inspect_model
    from edgefer.report import render_inspection

    chosen = _one(model, model_path, "model")
    if chosen is None:
        raise click.UsageError("give the model to inspect: edgefer inspect MODEL")
    found = inspect_model(chosen)
    click.echo(json.dumps(asdict(found), indent=1) if as_json else render_inspection(found))


# --- bench -------------------------------------------------------------------------

def _bench_options(main_job: bool):
    """The options ``bench`` and ``benchmark`` share."""
    from edgefer.engines import Device

    report_help = "Write bench.json (docs/bench-schema.md), bench.csv and bench.md with plots here"
    report_help += " (default: a new runs/benchmark/DATE-TIME)." if main_job else "."
    options = [
        click.option("--device", type=click.Choice([d.value for d in Device]),
                     default="cpu", show_default=True,
                     help="all: cpu, gpu and npu, with an 'unavailable' row where one is "
                     "missing; a device asked for by name must be there."),
        click.option("--threads", default=None,
                     help="Thread counts, comma list (default: 1 and every core)."),
        click.option("--batch", "batches", default="1,32", show_default=True,
                     help="Batch sizes, comma list; latency is measured at each, per image."),
        click.option("--warmup", default=10, show_default=True, help="Untimed calls first."),
        click.option("--min-runs", default=50, show_default=True, help="Timed calls at least."),
        click.option("--min-time", default=1.0, show_default=True,
                     help="Seconds of timed calls at least (per model and batch size)."),
        click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
                     help=f"FER2013 for accuracy ({DATA_DEFAULT})."),
        click.option("--split", default="test", show_default=True,
                     help="Split to measure accuracy on (test = PublicTest, private)."),
        click.option("--limit", type=int, default=None,
                     help="Measure accuracy on N images only (a fixed random subset)."),
        click.option("--reference", type=click.Path(path_type=Path), default=None,
                     help="Model agreement is measured against (default: the Keras model "
                     "among MODELS, else the first fp32 one)."),
        click.option("--out", "report_dir", type=click.Path(path_type=Path), default=None,
                     help=report_help),
        click.option("--report", "report_alias", type=click.Path(path_type=Path),
                     default=None, hidden=True, help="The old name of --out."),
        click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
                     hidden=True, help="Also write the results as JSON to this file."),
        click.option("--exports", "exports_dir", type=click.Path(path_type=Path),
                     default=None, help="Folder for the models " + (
                         "it exports" if main_job else "--export all makes")
                     + " (default: a new runs/benchmark/DATE-TIME/exports)."),
        click.option("--baseline", "baselines", multiple=True,
                     type=click.Path(path_type=Path),
                     help="Another expression model (TFLite/ONNX, 7 outputs) to compare; "
                     "repeatable. The --baseline-* options go with the baselines in order."),
        click.option("--baseline-input-size", multiple=True, type=int,
                     help="Its input size in pixels (default 48)."),
        click.option("--baseline-channels", multiple=True, type=int,
                     help="Its input channels, 1 or 3 (default 1)."),
        click.option("--baseline-scale", multiple=True, type=float,
                     help="input = pixel * scale + offset (default 1/127.5)."),
        click.option("--baseline-offset", multiple=True, type=float,
                     help="input = pixel * scale + offset (default -1)."),
        click.option("--baseline-labels", multiple=True,
                     help="Its output order, e.g. angry,disgust,fear,happy,sad,surprise,"
                     "neutral (default: FER2013's)."),
        click.option("--baseline-precision", multiple=True,
                     help="Its precision, for the report (e.g. int8, fp32)."),
        click.option("--baseline-name", multiple=True,
                     help="Its name in tables (default: the file's stem)."),
        click.option("--wide", is_flag=True,
                     help="Every column in the table (fits an 80-column terminal without)."),
        click.option("--in-process", is_flag=True, hidden=True,
                     help="Measure in this process (tests; peak memory is then shared)."),
    ]

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func
    return apply


@main.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--model", "model_paths", multiple=True, type=click.Path(path_type=Path),
              help="A model to benchmark, as MODELS are; repeatable.")
@click.option("--export", "export_mode", type=click.Choice(["none", "all"]), default="none",
              show_default=True, help="all: first export MODEL (default: the shipped model) "
              "to every target and precision, then benchmark them all.")
@click.option("--engine", default=None, metavar="ENGINE",
              help="Run MODELS with this engine, one their format lists (.onnx: onnxruntime "
              "or openvino; default: the format's first).")
@_bench_options(main_job=False)
@click.option("--on", "on_target", default=None, metavar="TARGET",
              help="Measure on a device: ssh://user@host[:port] (edgefer[tflite] installed "
              "there), adb[:SERIAL] (Android, TFLite's benchmark_model) or armpi[:CPU] (an "
              "emulated arm64 Raspberry Pi: accuracy and x86 parity, no latency). See "
              "docs/edge.md.")
@click.option("--profile", default=None,
              help="Device profile setting threads, delegate and batch: rpi4, rpi5, rpi-zero2, "
              "android-low, android-midrange, android-flagship, android-nnapi.")
@click.option("--budget", default=None, metavar="EXPR",
              help='Exit 1 when a result misses it, e.g. "p90_ms<=3,top1>=0.69" (metrics: '
              "p50_ms p90_ms p99_ms mean_ms top1 macro_f1 size_mb peak_rss_mb throughput_ips "
              "agreement; p*_ms/mean_ms are the engine's latency, call_p50_ms call_p90_ms "
              "call_p99_ms call_mean_ms the Python round trip).")
@click.option("--remote-python", default=None,
              help="Python on the SSH device (default: $EDGEFER_REMOTE_PYTHON or python3).")
@click.option("--benchmark-model", type=click.Path(path_type=Path), default=None,
              help="Android benchmark_model binary for --on adb (default: "
              "$EDGEFER_BENCHMARK_MODEL or PATH).")
@friendly
def bench(models: tuple[Path, ...], model_paths: tuple[Path, ...], export_mode: str,
          engine: str | None, on_target: str | None, profile: str | None, budget: str | None,
          remote_python: str | None, benchmark_model: Path | None, **options) -> None:
    """Benchmark MODELS (.tflite, .onnx, OpenVINO .xml, .ncnn.param, .mnn, edgefer Keras folders).

    Latency per image (p50/p90/p99 of the engine's run call, as the engines' own tools
    time it; the Python round trip beside it; load and first call apart), throughput at
    each batch size, peak memory of the engine, size raw and gzip, and, with FER2013, top-1,
    macro-F1, per-class scores, confusion matrices and agreement with the reference.
    """
    from edgefer.edge.budget import enforce, parse_budget
    from edgefer.edge.profiles import get_profile

    models = (*models, *model_paths)
    _out_alias(options)
    limits = parse_budget(budget) if budget else None  # a typo fails before the long run
    chosen = get_profile(profile) if profile else None
    batch_given = click.get_current_context().get_parameter_source("batches") \
        is not click.core.ParameterSource.DEFAULT
    if on_target:
        from edgefer.bench.job import check_outputs
        from edgefer.datasets import default_data_path
        from edgefer.edge.device_bench import DeviceBench, bench_on_device

        # the emulated Pi (armpi) measures accuracy on FER2013 faces, which it is given here
        _refuse_on_device(("data_path", "limit") if on_target.strip().startswith("armpi")
                          else ())
        check_outputs(models, ((options["json_path"], False), (options["report_dir"], True)))
        run = bench_on_device(models, on_target, profile, DeviceBench(
            threads=options["threads"], batches=options["batches"] if batch_given else None,
            device=options["device"], warmup=options["warmup"], min_runs=options["min_runs"],
            min_time_s=options["min_time"], remote_python=remote_python,
            benchmark_model=benchmark_model, data=options["data_path"] or default_data_path(),
            limit=options["limit"]), log=lambda msg: click.echo(msg, err=True))
        _emit_run(run, options["json_path"], options["report_dir"], options["wide"])
    else:
        if chosen is not None:
            options["threads"] = options["threads"] or str(chosen.threads)
            options["batches"] = options["batches"] if batch_given else str(chosen.batch)
        if export_mode == "all" and options["exports_dir"] is None:
            options["exports_dir"] = _new_run_dir() / "exports"
        run = _run_bench(models, export_mode == "all", engine=engine, **options)
    if limits is not None:
        enforce(limits, run.results)
        click.echo(f"budget {limits} met by every result")
    _fail_if_any_failed(run)


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help=MODEL_HELP)
@_bench_options(main_job=True)
@click.option("--emulated-pi", default=None, metavar="CPU",
              type=click.Choice(["cortex-a72", "cortex-a76"]),
              help="Also run the TFLite exports on an emulated arm64 Raspberry Pi "
              "(QEMU user-mode; cortex-a72: Pi 4, cortex-a76: Pi 5) and add its rows: "
              "accuracy and arm64-vs-x86 agreement, latency left out. Needs FER2013, "
              "qemu-user-static and binfmt_misc; see docs/edge.md.")
@friendly
def benchmark(model: Path | None, model_path: Path | None, emulated_pi: str | None,
              **options) -> None:
    """The main job: export MODEL (default: the shipped model) to every target and
    precision, benchmark them all beside the Keras model, and write the report and the
    exports to a new folder runs/benchmark/DATE-TIME (--out and --exports choose others).

    Reports accuracy when FER2013 is found ($EDGEFER_FER2013 or --data), latency and
    size only otherwise.
    """
    model = _one(model, model_path, "model")
    _out_alias(options)
    run_dir = _new_run_dir()
    options["report_dir"] = options["report_dir"] or run_dir
    options["exports_dir"] = options["exports_dir"] or run_dir / "exports"
    _fail_if_any_failed(_run_bench((model,) if model else (), True, emulated_pi=emulated_pi,
                                   **options))


def _new_run_dir() -> Path:
    """A folder of its own for one run's outputs (git ignores runs/): never the committed
    reports/, never an earlier run's."""
    from datetime import datetime

    base = Path("runs") / "benchmark" / datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _out_alias(options: dict) -> None:
    """--report DIR, the old spelling of --out DIR."""
    alias = options.pop("report_alias")
    if alias is None:
        return
    given = click.get_current_context().get_parameter_source("report_dir")
    if given is not click.core.ParameterSource.DEFAULT and options["report_dir"] != alias:
        raise click.UsageError("give the report folder once: --out (--report is its old name)")
    options["report_dir"] = alias


def _fail_if_any_failed(run) -> None:
    """Exit 1 (after the reports are written) when a model or export broke, or when nothing
    could be measured; a device or engine that is not there (``unavailable``) beside
    measured results is not a failure."""
    from edgefer.bench.results import Status
    from edgefer.errors import BenchFailedError

    failed = [r for r in run.results if r.status is Status.FAILED]
    if failed:
        names = ", ".join(sorted({r.model for r in failed}))
        raise BenchFailedError(f"{len(failed)} of {len(run.results)} results failed ({names}); "
                               "the table says why")
    if not any(r.status is Status.OK for r in run.results):
        raise BenchFailedError("nothing was measured: every result is unavailable; "
                               "the table says why")


def _run_bench(models: tuple[Path, ...], export_all: bool, *, device: str,
               threads: str | None, batches: str, warmup: int, min_runs: int,
               min_time: float, data_path: Path | None, split: str, limit: int | None,
               reference: Path | None, json_path: Path | None, report_dir: Path | None,
               exports_dir: Path | None, baselines: tuple[Path, ...], in_process: bool,
               wide: bool, emulated_pi: str | None = None, engine: str | None = None,
               **baseline_options):
    """bench's options to ``edgefer.bench.benchmark``; its run printed and written
    (with ``emulated_pi``, beside the emulated Pi's rows for the TFLite exports)."""
    from edgefer.bench import benchmark
    from edgefer.bench.measure import MeasureOptions
    from edgefer.bench.runner import baseline_specs
    from edgefer.datasets import default_data_path
    from edgefer.edge.device_bench import check_emulated_pi, with_emulated_pi

    if emulated_pi:
        check_emulated_pi(data_path or default_data_path())
    outcome = benchmark(
        models, export_all=export_all, exports_dir=exports_dir, device=device,
        engine=engine, threads=threads, batches=batches,
        measure=MeasureOptions(warmup=warmup, min_runs=min_runs, min_time_s=min_time),
        data=data_path, split=split, limit=limit, reference=reference,
        baselines=baseline_specs(
            baselines, baseline_options["baseline_input_size"],
            baseline_options["baseline_channels"], baseline_options["baseline_scale"],
            baseline_options["baseline_offset"], baseline_options["baseline_labels"],
            baseline_options["baseline_precision"], baseline_options["baseline_name"]),
        isolate=not in_process, outputs=((json_path, False), (report_dir, True)),
        progress=_progress, log=lambda message: click.echo(message, err=True))
    run = outcome.run
    if emulated_pi:
        run = with_emulated_pi(run, outcome.exported, emulated_pi,
                               data_path or default_data_path(), limit,
                               lambda message: click.echo(message, err=True))
    _emit_run(run, json_path, report_dir, wide)
    if export_all:
        click.echo(f"wrote {len(outcome.exported)} exported model(s) to {exports_dir}")
    return run


def _refuse_on_device(allowed: tuple[str, ...] = ()) -> None:
    """bench --on measures the MODEL files on the device: the options that need FER2013,
    other models or exports here are refused before anything is sent, not dropped."""
    from edgefer.errors import ConfigError

    ctx = click.get_current_context()
    local_only = ("export_mode", "data_path", "split", "limit", "reference", "exports_dir",
                  "engine")
    given = [p.opts[0] for p in ctx.command.params if p.name not in allowed
             if p.name in local_only or (p.name or "").startswith("baseline")
             if ctx.get_parameter_source(p.name) in (click.core.ParameterSource.COMMANDLINE,
                                                     click.core.ParameterSource.ENVIRONMENT)]
    if given:
        raise ConfigError(f"{', '.join(given)}: not supported with --on, which measures "
                          "latency, memory and size of the MODEL files on the device; run "
                          "accuracy, baselines and exports here, without --on")


def _emit_run(run, json_path: Path | None, report_dir: Path | None,
              wide: bool = False) -> None:
    """Print the table and notes; write the JSON and the report where asked."""
    from rich.console import Console

    from edgefer.report import failure_reasons, render_table, write_json, write_report

    console = Console()
    if wide:  # every column on one line: wider than the terminal if need be (less -S)
        console = Console(width=max(console.width, 160))
    console.print(render_table(run, wide=wide, reasons_below=True))
    for i, reason in enumerate(failure_reasons(run), 1):  # unwrapped: commands stay whole
        click.echo(f"[{i}] {reason}")
    for note in run.notes:
        click.echo(f"note: {note}", err=True)
    if json_path:
        _say_if_replacing(json_path)
        click.echo(f"wrote {write_json(run, json_path)}")
    if report_dir:
        written = write_report(run, report_dir)
        plots = sum(p.suffix == ".png" for p in written)
        click.echo(f"wrote the report to {report_dir}: bench.md (open it), bench.json, "
                   f"bench.csv and {plots} plot(s)")
        from edgefer.report import PLOTS_MISSING, plots_available

        if not plots_available():
            click.echo(f"note: {PLOTS_MISSING}", err=True)


class _progress:
    """A rich progress bar on stderr; calling it starts the next step."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(TextColumn("{task.description:<42}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task("starting", total=total)
        self._started = 0

    def __enter__(self):
        self._bar.start()
        return self

    def __call__(self, label: str) -> None:
        if self._started:
            self._bar.advance(self._task)
        self._started += 1
        self._bar.update(self._task, description=label)

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._bar.update(self._task, completed=self._bar.tasks[0].total,
                             description="done")
        self._bar.stop()


# --- predict -----------------------------------------------------------------------

@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Model file (.tflite, .onnx, .xml, .ncnn.param, .mnn or edgefer model folder; "
                   "default: models/edgefer-mnv3s/edgefer-mnv3s-int8.tflite).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for annotated images and videos, per-frame CSVs and timelines.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines on stdout: one per image, video frame, video and error.")
@click.option("--detect/--no-detect", "detect", default=None,
              help="Detect faces in every input / take every input whole as a face crop "
                   "(default: detect, except in small face crops such as FER2013's 48x48).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Video: full face detection every N frames, tracking in between.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads for the model and OpenCV.")
@click.option("--engine", default=None, metavar="ENGINE",
              help="Run the model with this engine, one its format lists (.onnx: onnxruntime "
              "or openvino; default: the format's first).")
@click.option("--detector-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A YuNet .onnx for cv2.FaceDetectorYN instead of Haar.")
@click.option("--min-face", type=click.IntRange(min=8), default=None,
              help="Smallest face to find, in pixels (default: 64, or 1/20 of a large "
                   "photo's shorter side).")
@click.option("--margin", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the face box added on each side of the crop.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop each video or camera after N frames (a camera runs until Ctrl-C).")
@friendly
def predict(inputs: tuple[str, ...], model_path: Path | None, out: Path | None,
            as_json: bool, detect: bool | None, every: int, threads: int,
            engine: str | None, detector_model: Path | None, min_face: int | None, margin: float,
            max_frames: int | None) -> None:
    """Find faces in INPUTS and name their expressions.

    INPUTS are images, folders of images, videos, or a camera index (0). An image without
    a face is reported, not an error; unreadable inputs are reported and skipped, and the
    exit code is non-zero at the end.
    """
    import cv2

    from edgefer.outputs import check_writable
    from edgefer.predict.recognizer import DetectMode, Recognizer, RecognizerOptions
    from edgefer.predict.run import predict_all
    from edgefer.shipped import shipped_int8

    if out is not None:
        check_writable(out, folder=True, inputs=[model_path, detector_model, *inputs])
    cv2.setNumThreads(threads)
    mode = DetectMode.AUTO if detect is None else (
        DetectMode.ALWAYS if detect else DetectMode.NEVER)
    options = RecognizerOptions(detect=mode, min_face=min_face, margin=margin,
                                detector_model=detector_model)
    recognizer = Recognizer.from_file(model_path or shipped_int8(), threads, options,
                                      engine=engine)
    predict_all(recognizer, inputs, out=out, as_json=as_json, every=every,
                max_frames=max_frames, echo=click.echo,
                warn=lambda message: click.echo(message, err=True))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
