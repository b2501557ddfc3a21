"""Training throughput of configurations side by side, and where a training step's time goes.

    python benchmarks/train_throughput.py --json reports/train_throughput.json --profile

Each configuration trains in a child process of its own (fresh TensorFlow, same data), and
the configurations take turns for ``--rounds`` rounds, so load from other tenants of the
machine hits them alike; the table gives the median over rounds and the ratio to the first.
Two rates per run: images per wall-clock second, and images per CPU-second of the child
(user + system time), which other processes on a shared machine disturb much less.

``--profile`` adds a timed ablation of the model itself: every layer's forward and
backward pass alone at its own input shape, summed by layer type (CPU ms per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setup:
    batch: int
    augment: str  # "fused", "keras" or "none"
    inter_op: int = 0  # threads; 0 = TensorFlow's default
    intra_op: int = 0
    model: tuple[tuple[str, object], ...] = ()  # ModelConfig fields other than the default
    jit: bool = False  # XLA-compile the training step (the model and loss, not tf.data)
    size: int = 0  # scale the augmented batches to this many px ([low_res] epochs); 0: 48


# run 8's architecture (models/edgefer-mnv3l-v8.toml)
LARGE_075 = (("variant", "large"), ("width", 0.75), ("stem_stride", 2), ("head", 256))
CONFIGS = {
    "keras-layers-aug b128": Setup(128, "keras"),  # the recipe before the fused augmentation
    "fused-aug b128": Setup(128, "fused"),  # today's recipe
    "fused-aug b256": Setup(256, "fused"),
    # smaller batches: a 128 x 48 x 48 x 16 activation map (19 MB) does not fit this
    # machine's 16 MB L3 cache, one of 32 or 64 images does
    "fused-aug b64": Setup(64, "fused"),
    "fused-aug b32": Setup(32, "fused"),
    "fused-aug b128 inter1": Setup(128, "fused", inter_op=1),
    "no-aug b128": Setup(128, "none"),  # the model alone: the ceiling for input-side work
    "fused-aug b128 xla": Setup(128, "fused", jit=True),
    "large-0.75 stem2 head256 b128": Setup(128, "fused", model=LARGE_075),
    # a [low_res] epoch: the same network (any input size) on batches scaled down
    "fused-aug b128 32px": Setup(128, "fused", size=32),
    "fused-aug b128 24px": Setup(128, "fused", size=24),
}


def _keras_layers_augment(keras, augment):
    """Flip, rotation, shift and zoom as four Keras preprocessing layers (four passes)."""
    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(augment.rotation_deg / 360.0, fill_mode="reflect"),
        layers.RandomTranslation(augment.shift, augment.shift, fill_mode="reflect"),
        layers.RandomZoom(augment.zoom, fill_mode="reflect"),
    ])


def _dataset(tf, keras, images, labels, batch: int, aug: str, size: int = 0):
    from edgefer.preprocess import Preprocess
    from edgefer.train.config import Augment
    from edgefer.train.pipeline import affine_augment, random_erasing, scaled_to

    augment = Augment()
    x = Preprocess()(images)
    y = tf.one_hot(labels, 7)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).repeat()
    ds = ds.batch(batch, drop_remainder=True)
    if aug == "fused":
        ds = ds.map(lambda a, b: (random_erasing(affine_augment(a, augment), augment.erasing), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    elif aug == "keras":
        layers = _keras_layers_augment(keras, augment)
        ds = ds.map(lambda a, b: (random_erasing(layers(a, training=True), augment.erasing), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if size:
        ds = ds.map(lambda a, b: (scaled_to(a, tf.constant(size)), b))
    return ds.prefetch(tf.data.AUTOTUNE)


def run_child(name: str, data: str, images_n: int, steps: int) -> dict:
    setup = CONFIGS[name]
    from edgefer._tf import keras, tf

    tf_, keras_ = tf(), keras()
    if setup.inter_op:
        tf_.config.threading.set_inter_op_parallelism_threads(setup.inter_op)
    if setup.intra_op:
        tf_.config.threading.set_intra_op_parallelism_threads(setup.intra_op)
    from edgefer.data import load_split
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    split = load_split(data, "train", skip_bad=True).limit(images_n)
    model = build_model(ModelConfig(**dict(setup.model)))
    if setup.size:
        from edgefer.model.store import with_any_input_size

        model = with_any_input_size(model)
    model.compile(keras_.optimizers.AdamW(1e-3),
                  keras_.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  jit_compile=setup.jit)
    ds = _dataset(tf_, keras_, split.images, split.labels, setup.batch, setup.augment,
                  setup.size)
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = steps * setup.batch
    return {"config": name, "images": images, "wall_s": wall, "cpu_s": cpu,
            "images_per_s": images / wall, "images_per_cpu_s": images / cpu}


def profile_layers(batch: int, repeats: int = 10) -> dict[str, float]:
    """CPU ms of each layer type's forward + backward pass per batch, the model's layers alone."""
    from edgefer._tf import keras, tf
    from edgefer.model.mobilenetv3 import ModelConfig, build_model

    tf_, keras_ = tf(), keras()
    model = build_model(ModelConfig())
    totals: dict[str, float] = defaultdict(float)
    for layer in model.layers:
        if isinstance(layer, keras_.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        xs = [tf_.random.normal((batch, *t.shape[1:])) for t in inputs]
        step = _layer_step(tf_, layer, len(xs))
        step(*xs)
        start = time.process_time()
        for _ in range(repeats):
            step(*xs)
        kind = type(layer).__name__
        if kind == "Conv2D":
            kind += f" {layer.kernel_size[0]}x{layer.kernel_size[1]}"
        totals[kind] += (time.process_time() - start) / repeats * 1000
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _layer_step(tf_, layer, n_inputs: int):
    @tf_.function
    def step(*xs):
        with tf_.GradientTape() as tape:
            tape.watch(xs)
            y = layer(list(xs) if n_inputs > 1 else xs[0], training=True)
            loss = tf_.reduce_sum(y * y)
        return tape.gradient(loss, [*xs, *layer.trainable_variables])
    return step


def _spawn(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", args.data,
           "--images", str(args.images), "--steps", str(args.steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("EDGEFER_FER2013", "../shared/fer2013"))
    parser.add_argument("--images", type=int, default=4096, help="training images to use")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated names (first = baseline of the ratios)")
    parser.add_argument("--profile", action="store_true", help="add the per-layer-type profile")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.data, args.images, args.steps)))
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; known: {list(CONFIGS)}")
    runs = [_spawn(name, args) for _ in range(args.rounds) for name in names]
    summary = _summarise(names, runs)
    for row in summary:
        print(f"{row['config']:26s} {row['images_per_s']:7.1f} img/s ({row['ratio_wall']:.2f}x)"
              f"  {row['images_per_cpu_s']:7.1f} img/CPU-s ({row['ratio_cpu']:.2f}x)")
    result = {"machine": _machine(), "rounds": args.rounds, "steps": args.steps,
              "configs": {n: {**asdict(CONFIGS[n]), "model": dict(CONFIGS[n].model)}
                          for n in names},
              "summary": summary, "runs": runs}
    if args.profile:
        result["profile_cpu_ms_per_batch128"] = profile_layers(128)
        for kind, ms in result["profile_cpu_ms_per_batch128"].items():
            print(f"  {kind:26s} {ms:8.1f} CPU ms per batch of 128 (forward + backward)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def _summarise(names: list[str], runs: list[dict]) -> list[dict]:
    rows = []
    for name in names:
        mine = [r for r in runs if r["config"] == name]
        rows.append({"config": name,
                     "images_per_s": statistics.median(r["images_per_s"] for r in mine),
                     "images_per_cpu_s": statistics.median(r["images_per_cpu_s"] for r in mine)})
    for row in rows:
        row["ratio_wall"] = row["images_per_s"] / rows[0]["images_per_s"]
        row["ratio_cpu"] = row["images_per_cpu_s"] / rows[0]["images_per_cpu_s"]
    return rows


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} cores, {model}; load average {os.getloadavg()[0]:.1f} at start"


if __name__ == "__main__":
    main()
