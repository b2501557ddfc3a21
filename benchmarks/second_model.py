"""Post-training INT8 of a float model edgefer did not make: Keras'
MobileNetV3Small(minimalistic=True, weights=None, input_shape=(48, 48, 3)) trained a few
epochs on FER2013, saved as a .keras file, then exported by ``edgefer export`` to fp32 and
calibrated INT8 on TFLite, ONNX Runtime and OpenVINO; PublicTest top-1 of each.

    python benchmarks/second_model.py --data ../shared/fer2013 --model runs/mnv3s-min.keras \\
        --epochs 8 --json reports/second_model.json

A model file already at --model is reused (no training; --reestimate-bn re-estimates its
batch-norm statistics first). --targets picks engines; --calib-method, --equalize,
--bias-correction / --no-bias-correction and --keep-float are the export's post-training
INT8 fixes (docs/quantization.md). The export is the command a user runs (the preprocessing
given on the command line):

    edgefer export runs/mnv3s-min.keras --input-scale 0.00784313725 --input-offset -1 \\
        --target all --precision fp32,int8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgefer.data import load_split
from edgefer.preprocess import Preprocess

PREPROCESS = Preprocess(size=48, channels=3, scale=1 / 127.5, offset=-1.0)


def train(data: Path, out: Path, epochs: int, seed: int = 0) -> float:
    """Train and save; returns the seconds it took."""
    from edgefer._tf import keras, tf

    k = keras()
    k.utils.set_random_seed(seed)
    split = load_split(data, "train", skip_bad=True)
    x, y = PREPROCESS(split.images), split.labels
    model = k.applications.MobileNetV3Small(
        input_shape=(48, 48, 3), minimalistic=True, weights=None, classes=7,
        include_preprocessing=False, dropout_rate=0.2)
    for layer in model.layers:  # 0.999 needs far more steps than a few epochs have
        if isinstance(layer, k.layers.BatchNormalization):
            layer.momentum = 0.99
    steps = epochs * (len(x) // 64)
    schedule = k.optimizers.schedules.CosineDecay(2e-3, steps)
    model.compile(k.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    flip = tf().image.flip_left_right
    dataset = (tf().data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
               .map(lambda a, b: (tf().cond(tf().random.uniform(()) < 0.5,
                                            lambda: flip(a), lambda: a), b))
               .batch(64))
    start = time.time()
    model.fit(dataset, epochs=epochs, verbose=2)
    reestimate_batchnorm(model, x)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return time.time() - start


def reestimate_batchnorm(model, x: np.ndarray, batches: int = 50, size: int = 128,
                         seed: int = 1) -> None:
    """Replace every batch norm's moving statistics by the average of its batch statistics
    over ``batches`` training batches (with keras.applications' momentum of 0.999, four
    epochs leave 16% of the initial statistics in the moving averages, and this model
    then predicts one class for every face)."""
    from edgefer._tf import keras

    norms = [layer for layer in model.layers
             if isinstance(layer, keras().layers.BatchNormalization)]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, np.float32))
    rng = np.random.default_rng(seed)
    for step in range(batches):
        for layer in norms:  # momentum step/(step+1): the running mean of batch statistics
            layer.momentum = step / (step + 1)
        model(x[rng.choice(len(x), size, replace=False)], training=True)
    for layer in norms:
        layer.momentum = 0.99


def top1(path: Path, test) -> tuple[float, np.ndarray]:
    from edgefer.runtimes import RuntimeOptions, load_runtime

    runtime = load_runtime(path, RuntimeOptions(threads=2))
    probs = np.concatenate([runtime.predict_faces(test.images[i:i + 256])
                            for i in range(0, len(test), 256)])
    return float(np.mean(probs.argmax(1) == test.labels)), probs.argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=Path("runs/mnv3s-min.keras"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("exports/second-model"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--reestimate-bn", action="store_true")
    parser.add_argument("--targets", default="tflite,onnx,openvino")
    parser.add_argument("--calib-method", default="minmax")
    parser.add_argument("--equalize", action="store_true")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction,
                        default=None)
    parser.add_argument("--keep-float", default="", help="Keras layer names, comma between.")
    args = parser.parse_args()
    result: dict = {"model": "keras.applications.MobileNetV3Small(minimalistic=True)"}
    if not args.model.exists():
        result["train_s"] = round(train(args.data, args.model, args.epochs))
        result["epochs"] = args.epochs
    elif args.reestimate_bn:
        from edgefer._tf import keras

        model = keras().models.load_model(str(args.model), compile=False)
        split = load_split(args.data, "train", skip_bad=True)
        reestimate_batchnorm(model, PREPROCESS(split.images))
        model.save(str(args.model))
    from edgefer.export import Precision, Target, export_all
    from edgefer.export.user_model import InputSpec

    targets = [Target(t.strip()) for t in args.targets.split(",")]  # ncnn, MNN: no INT8
    pairs = [(t, p) for t in targets for p in (Precision.FP32, Precision.INT8)]
    spec = InputSpec(PREPROCESS.scale, PREPROCESS.offset)
    test = load_split(args.data, "test")
    result["images"] = len(test)
    rows = {}
    for r in export_all(args.model, pairs, args.out, args.data, user_input=spec,
                        int8_source="calibrate", min_agreement=0.0, equalize=args.equalize,
                        bias_correction=args.bias_correction, keep_float=args.keep_float,
                        calib_method=args.calib_method):
        accuracy, picks = top1(r.path, test)
        rows[f"{r.options.target.value} {r.options.precision.value}"] = {
            "file": r.path.name, "top1": accuracy, "parity": r.parity.agreement, "picks": picks}
        print(f"{r.path.name}: top-1 {accuracy:.2%}, parity {r.parity.agreement:.1%}",
              flush=True)
    result["fixes"] = {k: getattr(args, k) for k in
                       ("calib_method", "equalize", "bias_correction", "keep_float")}
    for target in targets:
        fp32, int8 = rows[f"{target.value} fp32"], rows[f"{target.value} int8"]
        int8["drop_points"] = 100 * (fp32["top1"] - int8["top1"])
        int8["agreement_with_fp32"] = float(np.mean(fp32["picks"] == int8["picks"]))
    result["exports"] = {k: {kk: vv for kk, vv in v.items() if kk != "picks"}
                         for k, v in rows.items()}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
