"""What an architecture would cost on a device before training it: INT8 TFLite size and
batch-1 latency of candidate networks with fresh weights, side by side.

Each candidate is ``name:key=value,...`` (MobileNetV3 ``ModelConfig`` fields). Its network
is built with random weights, converted to INT8 TFLite as ``edgefer export`` does
(calibrated on --calib faces, the CPU graph), and all candidates, with any TFLite files
given by --also (the shipped export, ``fer``'s model), are timed round-robin in one
process (``interleaved_latency.py``). Latency does not depend on the weights' values.

    python benchmarks/arch_latency.py small:variant=small \\
        large075:variant=large,width=0.75,stem_stride=2,head=256 \\
        --also .fer-pkg/fer/data/emotion_model_quantized.tflite --json reports/arch_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from interleaved_latency import interleaved


def parse_candidate(text: str) -> tuple[str, dict]:
    name, _, options = text.partition(":")
    values: dict = {}
    for item in filter(None, options.split(",")):
        key, _, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw  # a bare word: variant=large
    return name, values


def build_tflite(options: dict, calibration, folder: Path, name: str) -> tuple[Path, int]:
    from edgefer.export.convert import keras_to_tflite, tflite_ops_to_float
    from edgefer.export.options import Precision
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    model = build_model(ModelConfig(**options))
    data = keras_to_tflite(model, Precision.INT8, calibration=calibration)
    path = folder / f"{name}.tflite"
    path.write_bytes(tflite_ops_to_float(data))
    return path, model.count_params()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="name:key=value,... (ModelConfig)")
    parser.add_argument("--also", nargs="*", type=Path, default=[], help="TFLite files")
    parser.add_argument("--data", default=os.environ.get("EDGEFER_FER2013", "../shared/fer2013"))
    parser.add_argument("--calib", default="calibration/fer2013-train-100-seed0.json")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from edgefer.calibration import CalibrationSet
    from edgefer.preprocess import Preprocess

    calibration = CalibrationSet.from_manifest(args.calib, args.data, Preprocess())
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for name, options in map(parse_candidate, args.candidates):
            path, params = build_tflite(options, calibration, Path(tmp), name)
            built[path.name] = {"options": options, "parameters": params}
        paths = [Path(tmp) / name for name in built] + list(args.also)
        out = interleaved(paths, 1, args.rounds, args.calls)
    for name, row in out["models"].items():
        row.update(built.get(name, {}))
        print(f"{name:40s} p50 {row['p50_ms']:.3f} ms  {row['size_bytes'] / 1e6:.2f} MB  "
              f"round-p50 spread {row['round_spread']:.0%}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
