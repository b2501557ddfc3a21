"""The ``edgefer`` command line: thin wrappers that turn EdgeferErrors into clean exits."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from edgefer import __version__
from edgefer.errors import EdgeferError


def friendly(func):
    """Run a command body; an EdgeferError becomes a message and exit code 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EdgeferError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgefer")
def main() -> None:
    """edgefer: facial-expression models from training to phones and Raspberry Pis.

    Train a MobileNetV3 on FER2013, export it to TFLite, ONNX and OpenVINO at fp32, fp16
    and INT8, benchmark every export, and run photos through face detection and the model.
    """


# --- data ------------------------------------------------------------------------

@main.group()
def data() -> None:
    """Inspect FER2013 (image folders or fer2013.csv)."""


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly
def data_info(path: Path, as_json: bool) -> None:
    """Counts per split and class, image size, and problems found in PATH."""
    from edgefer.dataset_info import describe, render_info

    info = describe(path)
    click.echo(json.dumps(info, indent=1) if as_json else render_info(info))


# --- calibrate -------------------------------------------------------------------

@main.group()
def calibrate() -> None:
    """Build and check calibration subsets for post-training INT8."""


@calibrate.command("build")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="FER2013 folder or CSV (default: $EDGEFER_FER2013 or ../shared/fer2013).")
@click.option("--size", default=500, show_default=True, help="Images in the subset.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the draw.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Manifest file (default: calibration/fer2013-train-SIZE-seedSEED.json).")
@friendly
def calibrate_build(data_path: Path | None, size: int, seed: int, out: Path | None) -> None:
    """Draw a class-stratified, deterministic subset of the training split."""
    from edgefer.calibration import build_manifest, default_manifest_name

    manifest = build_manifest(_data_or_default(data_path), size=size, seed=seed)
    path = manifest.write(out or Path("calibration") / default_manifest_name(size, seed))
    counts = ", ".join(f"{k} {v}" for k, v in manifest.class_counts.items())
    click.echo(f"wrote {path}: {len(manifest.ids)} images ({counts})")


@calibrate.command("check")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="FER2013 folder or CSV to check the manifest against.")
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
        raise DataError("no FER2013 given: use --data PATH or set EDGEFER_FER2013")
    return found


# --- train -----------------------------------------------------------------------

@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML training config (e.g. models/edgefer-mnv3s.toml).")
@click.option("--data", "data_path", default=None, help="FER2013 folder or CSV.")
@click.option("--out", default=None, help="Folder for runs (default: runs).")
@click.option("--name", default=None, help="Run name (a folder under --out).")
@click.option("--epochs", type=int, default=None, help="Float-training epochs.")
@click.option("--qat-epochs", type=int, default=None, help="QAT epochs (0: no QAT).")
@click.option("--prune-epochs", type=int, default=None, help="Pruning epochs (0: no pruning).")
@click.option("--sparsity", "target_sparsity", type=float, default=None,
              help="Target sparsity of pruned layers.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate (float stage).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None)
@click.option("--schedule", type=click.Choice(["cosine", "plateau"]), default=None)
@click.option("--loss", type=click.Choice(["crossentropy", "focal"]), default=None)
@click.option("--class-weights", type=click.Choice(["none", "balanced", "sqrt"]), default=None)
@click.option("--variant", "model__variant", type=click.Choice(["small", "large"]), default=None)
@click.option("--width", "model__width", type=float, default=None, help="Width multiplier.")
@click.option("--input-size", "model__input_size", type=int, default=None)
@click.option("--mixup", "augment__mixup", type=float, default=None, help="Mixup alpha (0: off).")
@click.option("--limit", type=int, default=None, help="Use only N training images (smoke runs).")
@click.option("--seed", type=int, default=None)
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              default=None, help="tf.distribute strategy for several GPUs or machines.")
@friendly
def train(config_path: Path | None, data_path: str | None, **options) -> None:
    """Train the expression model: float, then pruning and (pruning-preserving) QAT.

    Every stage checkpoints each epoch; run the same command again to resume.
    """
    from edgefer.train.config import load_config
    from edgefer.train.run import Trainer

    options = {key.replace("__", "."): value for key, value in options.items()}
    config = load_config(config_path, data=data_path, **options)
    summary = Trainer(config, log=click.echo).run()
    click.echo(json.dumps(summary["publictest_accuracy_keras"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
