"""Calibrated (post-training) INT8 of a model under several settings: per setting, PublicTest
top-1 of the INT8 export against the float Keras model's, their top-1 agreement, the
parity gate's agreement (300 training images, ties allowed) and the conversion time;
with --latency, batch-1 latency of the exports measured interleaved (round after round,
so that other load on a shared machine hits them alike). The numbers of
docs/quantization.md come from it.

    python benchmarks/ptq_study.py --data ../shared/fer2013 onnx openvino:calib_method=mse \\
        tflite:calib=calibration/fer2013-train-100-seed0.json \\
        onnx:keep_float=block9_se_relu --json reports/ptq_study.jsonl

A setting is TARGET[:KEY=VALUE,...] with ExportOptions' fields (calib_method, equalize,
bias_correction, keep_float with ';' between layers, int8_graph) and calib (a manifest).
``--time FILE...`` only times exports already made (several runs' --keep folders) together:

    python benchmarks/ptq_study.py --data ../shared/fer2013 --time ptq/*.tflite ptq/*.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np

from edgefer.data import load_split


def parse(setting: str) -> tuple[str, dict]:
    target, _, rest = setting.partition(":")
    options: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key in ("equalize", "bias_correction"):
            options[key] = value.lower() in ("1", "true", "yes")
        elif key == "keep_float":
            options[key] = tuple(value.split(";"))
        else:
            options[key] = value
    return target, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default=None, help="Default: the shipped model.")
    parser.add_argument("--limit", type=int, default=0,
                        help="Scored images (a fixed random subset); 0: all of PublicTest or "
                             "of the --validation slice.")
    parser.add_argument("--json", type=Path, default=None, help="Append one JSON line each.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the exports here.")
    parser.add_argument("--validation", type=Path, default=None, metavar="CONFIG",
                        help="Score on this training config's validation slice of the "
                             "training split instead of PublicTest (to choose, not report).")
    parser.add_argument("--latency", action="store_true",
                        help="Then time the exports at batch 1, one thread, interleaved.")
    parser.add_argument("--time", nargs="+", type=Path, default=None,
                        help="Only time these exports (batch 1, one thread, interleaved).")
    args = parser.parse_args()
    if args.time:
        face = load_split(args.data, "test").images[:1]
        write_rows(interleaved([(str(p), p) for p in args.time], face, faces=True), args.json)
        return

    from edgefer.calibration import CalibrationSet
    from edgefer.export.options import ExportOptions
    from edgefer.export.pipeline import _write, artifact_info, check_parity, load_source
    from edgefer.formats import load
    from edgefer.runtimes import RuntimeOptions, load_runtime
    from edgefer.shipped import shipped_model

    test = validation_slice(args.validation, args.data) if args.validation \
        else load_split(args.data, "test")
    index = np.arange(len(test)) if args.limit <= 0 else \
        np.random.default_rng(0).permutation(len(test))[:args.limit]
    loaded = load_source(args.model or shipped_model(), args.data)
    x, labels = loaded.info.preprocess(test.images[index]), test.labels[index]
    reference = np.asarray(loaded.source.float_model.predict(x, batch_size=100, verbose=0)) \
        if loaded.source.float_model is not None else None
    keep = Path(args.keep or tempfile.mkdtemp(prefix="ptq-study-"))
    keep.mkdir(parents=True, exist_ok=True)
    made = []
    for number, setting in enumerate(args.settings):
        target, options = parse(setting)
        manifest = options.pop("calib", None)
        if manifest:  # another calibration subset: new calibration, new conversions
            object.__setattr__(loaded.source, "calibration", cache(
                lambda m=manifest: CalibrationSet.from_manifest(m, args.data,
                                                                loaded.info.preprocess)))
            loaded.source.converted.clear()
        chosen = ExportOptions(target, "int8", int8_source="calibrate", **options)
        start = time.time()
        artifact = load(chosen.format.exporter)(loaded.source, chosen)
        seconds = time.time() - start
        info = artifact_info(loaded, chosen)
        path = _write(artifact, chosen.target, info, keep / f"{number:02d}-{target}{chosen.suffix}")
        runtime = load_runtime(path, RuntimeOptions(threads=2), info=info)
        probs = np.concatenate([runtime.predict(x[i:i + 50]) for i in range(0, len(x), 50)])
        parity = check_parity(loaded, chosen, path, info, args.data)
        row = {"setting": setting, "calib": manifest, "model": str(args.model or "shipped"),
               "scored_on": "validation" if args.validation else "PublicTest",
               "images": len(labels),
               "top1_fp32": float(np.mean(reference.argmax(1) == labels)),
               "top1_int8": float(np.mean(probs.argmax(1) == labels)),
               "agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
               "parity": parity.agreement, "convert_s": round(seconds, 1), "file": str(path)}
        made.append((setting, path))
        print(json.dumps(row), flush=True)
        if args.json:
            with args.json.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    if args.latency:
        write_rows(interleaved(made, x[:1]), args.json)


def validation_slice(config_path: Path, data: Path):
    """The images a training run with this config held out, the same split it made."""
    from edgefer.train.config import load_config
    from edgefer.train.run import train_val_split

    return train_val_split(load_config(config_path, data=str(data)))[1]


def write_rows(p50s: dict[str, float], json_path: Path | None) -> None:
    for setting, p50 in p50s.items():
        row = {"setting": setting, "p50_ms_batch1_1thread": p50}
        print(json.dumps(row), flush=True)
        if json_path:
            with json_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


def interleaved(made: list[tuple[str, Path]], image: np.ndarray, rounds: int = 30,
                calls: int = 50, faces: bool = False) -> dict[str, float]:
    """Median batch-1 latency (ms) of each export, one thread, timed round-robin;
    ``faces``: ``image`` is a raw face, preprocessed once per export."""
    from edgefer.runtimes import RuntimeOptions, load_runtime

    runtimes = {s: load_runtime(p, RuntimeOptions(threads=1)) for s, p in made}
    inputs = {s: r.info.preprocess(image) if faces else image for s, r in runtimes.items()}
    times: dict[str, list[float]] = {s: [] for s in runtimes}
    for setting, runtime in runtimes.items():
        for _ in range(calls):
            runtime.predict(inputs[setting])
    for _ in range(rounds):
        for setting, runtime in runtimes.items():
            for _ in range(calls):
                start = time.perf_counter()
                runtime.predict(inputs[setting])
                times[setting].append(1000 * (time.perf_counter() - start))
    return {s: round(float(np.median(t)), 4) for s, t in times.items()}


if __name__ == "__main__":
    main()
