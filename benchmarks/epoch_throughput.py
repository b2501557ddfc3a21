"""Training throughput over whole epochs, the pause between them included (issue 19).

    python benchmarks/epoch_throughput.py --epochs 4 --json reports/epoch_throughput.json

``benchmarks/train_throughput.py`` times steps inside one epoch; this one times what a
training run pays per epoch: ``edgefer train``'s float stage (the Trainer, today's recipe
from ``--base``, on the real training split) for a few epochs, where an epoch is measured
from one epoch's end to the next, so the time Keras spends between epochs (dropping one
epoch's input iterator and making the next, validation, checkpoints) counts. Two arms, in
child processes of their own, taking turns over ``--rounds``:

- ``autotune-model``: tf.data's model-based autotuning left on (the pipeline before the
  fix): its optimizer thread waits out a growing optimization period, and fit blocks on it
  whenever it drops an epoch's iterator;
- ``today``: edgefer's pipeline, which turns that autotuning off.

Both train the same network on the same data with the same options, so the validation
accuracy per epoch is the same recipe's (it differs by run-to-run noise only); the table
gives it beside the times.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("autotune-model", "today")
OUT = Path("runs/epoch-throughput")


def child(arm: str, base: str, epochs: int, data: str, round_: int, limit: int) -> None:
    from edgefer.train import pipeline, run
    from edgefer.train.config import load_config

    if arm == "autotune-model":
        pipeline._without_autotune_model = lambda ds: ds
    ends: list[float] = []
    original = run.Throughput.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        ends.append(time.perf_counter())

    run.Throughput.on_epoch_end = on_epoch_end
    name = f"{arm}-r{round_}"
    config = load_config(base, name=name, out=str(OUT), epochs=epochs, qat_epochs=0,
                         prune=False, init_from=None, data=data or None, early_stopping=epochs,
                         limit=limit or None)
    trainer = run.Trainer(config, log=lambda *a, **k: None)
    trainer.run()
    with (config.run_dir / "float" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    print("RESULT " + json.dumps({
        "arm": arm, "epoch_end_times": ends,
        "val_accuracy": [float(r["val_accuracy"]) for r in rows],
        "images_per_s_in_epoch": [float(r["images_per_s"]) for r in rows],
        "train_images": len(trainer.train) // config.batch_size * config.batch_size}),
        flush=True)


def run_arm(arm: str, args, round_: int) -> dict:
    folder = OUT / f"{arm}-r{round_}"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # a benchmark starts from scratch, never resumes
    command = [sys.executable, __file__, "--child", arm, "--base", args.base,
               "--epochs", str(args.epochs), "--data", args.data, "--round", str(round_),
               "--limit", str(args.limit)]
    out = subprocess.run(command, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{arm}: failed (exit {out.returncode})\n{out.stderr[-3000:]}")
    record = json.loads(line[len("RESULT "):])
    ends = record["epoch_end_times"]
    # the first epoch also pays for tracing; each later one is end-to-end
    record["epoch_seconds"] = [b - a for a, b in itertools.pairwise(ends)]
    return record


def summary(results: dict[str, list[dict]]) -> dict:
    table = {}
    for arm, records in results.items():
        seconds = [s for r in records for s in r["epoch_seconds"]]
        in_epoch = [v for r in records for v in r["images_per_s_in_epoch"][1:]]
        images = records[0]["train_images"]
        table[arm] = {"median_epoch_s": statistics.median(seconds),
                      "median_images_per_s_whole_epoch": images / statistics.median(seconds),
                      "median_images_per_s_in_epoch": statistics.median(in_epoch),
                      "val_accuracy_per_epoch": [r["val_accuracy"] for r in records]}
    reference = table[ARMS[0]]["median_epoch_s"]
    for row in table.values():
        row["ratio"] = reference / row["median_epoch_s"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="models/edgefer-mnv3s-v10.toml",
                        help="the recipe (a training config)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", default="")
    parser.add_argument("--limit", type=int, default=0,
                        help="use only this many training images (a quick check); 0: all")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.base, args.epochs, args.data, args.round, args.limit)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (an epoch is timed from the last one's end)")
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for round_ in range(args.rounds):
        for arm in ARMS:
            results[arm].append(run_arm(arm, args, round_))
            seconds = ", ".join(f"{s:.0f}" for s in results[arm][-1]["epoch_seconds"])
            print(f"round {round_ + 1} {arm}: epochs (end to end) {seconds} s", flush=True)
    table = summary(results)
    for arm, row in table.items():
        print(f"{arm:16s} {row['median_epoch_s']:6.1f} s/epoch "
              f"{row['median_images_per_s_whole_epoch']:6.1f} img/s whole epoch "
              f"({row['ratio']:.2f}x), {row['median_images_per_s_in_epoch']:.1f} img/s "
              "inside an epoch")
    if args.json:
        record = {"command": " ".join(sys.argv), "machine": os.uname().machine,
                  "cpus": os.cpu_count(), "base": args.base, "epochs": args.epochs,
                  "summary": table, "runs": results}
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
