"""Recipe ablations at a fixed budget, compared on the validation slice (issue 19).

Each candidate is the base config with a few options changed, trained for the same number
of float epochs in a child process of its own (fresh TensorFlow), one after another; a
candidate that costs more per epoch (a wider model) is given fewer epochs in its own
options (``model.width=1.25,epochs=1``), so that each gets about the same CPU time. The
table gives each candidate's validation accuracy per epoch, its best and last epoch, the
saved (best) model's macro-F1 on the validation slice, images/s and the CPU time it used;
the plot its learning curves. Candidates are compared on validation only (never on
PublicTest).

    python benchmarks/ablate.py --base models/edgefer-mnv3s-v5.toml \\
        --init-from models/campaign/edgefer-mnv3s-v5-float --epochs 2 \\
        --json reports/ablation.json --plot reports/img/ablation.png \\
        baseline label_smoothing=0 augment.erasing=0 class_weights=none \\
        "label_smoothing=0,augment.erasing=0"

A candidate is ``baseline`` or ``key=value[,key=value...]`` with the config's option names
(``model.width``, ``augment.erasing``: sections by a dot). A candidate whose run folder is
already complete is read, not trained again, so a cut session loses only the candidate in
progress.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("runs/ablation")


def parse_candidate(text: str) -> dict[str, object]:
    """``a=1,b.c=x`` -> {"a": 1, "b.c": "x"}; ``baseline`` -> {}."""
    if text == "baseline":
        return {}
    changes: dict[str, object] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise SystemExit(f"candidate {text!r}: expected key=value[,key=value]")
        changes[key.strip()] = _value(value.strip())
    return changes


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_name(candidate: str) -> str:
    return "ablate-" + re.sub(r"[^A-Za-z0-9.]+", "-", candidate).strip("-")


def candidate_config(base: str, candidate: str, epochs: int, init_from: str, data: str):
    """The candidate's training config; its run folder is named by the candidate and by
    every setting that shapes the model, so a finished run is reused only by the same
    ablation, never by one with another base config, budget or warm start."""
    from dataclasses import replace

    from edgefer.train.config import load_config

    overrides = {"name": run_name(candidate), "out": str(OUT), "epochs": epochs,
                 "qat_epochs": 0, "prune": False, "init_from": init_from or None,
                 "data": data or None, **parse_candidate(candidate)}
    config = load_config(base, **overrides)
    return replace(config, name=f"{config.name}-{settings_key(config)}")


def settings_key(config) -> str:
    shaping = {k: v for k, v in config.to_dict().items() if k not in ("name", "out", "data")}
    return hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]


def child(base: str, candidate: str, epochs: int, init_from: str, data: str) -> None:
    """Trains one candidate's float stage (in this process)."""
    from edgefer.train.run import Trainer

    Trainer(candidate_config(base, candidate, epochs, init_from, data), log=print).run()


def validation_scores(config) -> dict:
    """Top-1 and macro-F1 of the candidate's saved model on its validation slice: the
    logs have top-1 only, and class weights trade top-1 for the rare classes' recall."""
    from edgefer.bench.accuracy import score
    from edgefer.runtimes import load_runtime
    from edgefer.train.run import train_val_split

    val = train_val_split(config)[1]
    runtime = load_runtime(config.run_dir / "float" / "model")
    predicted = runtime.predict_faces(val.images).argmax(axis=1)
    scores = score(val.labels, predicted, split="validation")
    return {"val_top1": scores.top1, "val_macro_f1": scores.macro_f1,
            "val_recall": {name: c.recall for name, c in scores.per_class.items()}}


def train_candidate(args, candidate: str, config) -> dict:
    folder = config.run_dir
    timing_file = folder / "ablation_timing.json"
    if (folder / "float" / "done.json").is_file():
        print(f"{candidate}: done before, read from {folder}", flush=True)
        if timing_file.is_file():
            return json.loads(timing_file.read_text())
        return {"seconds": None, "cpu_seconds": None}
    print(f"{candidate}: {args.epochs} epoch(s) -> {folder}", flush=True)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    log = folder.with_name(f"{folder.name}.log").open("a")
    command = [sys.executable, __file__, "--child", candidate, "--base", args.base,
               "--epochs", str(args.epochs), "--init-from", args.init_from, "--data", args.data]
    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{candidate}: training failed (exit {code}); see {log.name}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timing = {"seconds": round(time.monotonic() - start, 1), "cpu_seconds": round(cpu, 1)}
    timing_file.write_text(json.dumps(timing) + "\n")  # for a later run that reads it
    return timing


def read_run(config) -> dict:
    folder = config.run_dir / "float"
    with (folder / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    val = [float(r["val_accuracy"]) for r in rows]
    raw = [float(r["raw_val_accuracy"]) for r in rows if r.get("raw_val_accuracy")]
    train = [float(r["accuracy"]) for r in rows]
    ips = sorted(float(r["images_per_s"]) for r in rows)
    return {"val_accuracy": val, "raw_val_accuracy": raw, "train_accuracy": train,
            "best_val": max(val), "last_val": val[-1], "median_images_per_s": ips[len(ips) // 2]}


def markdown(results: dict, baseline: str | None) -> str:
    lines = ["| candidate | epochs | validation per epoch | best | last | vs baseline (best) "
             "| macro-F1 (best) | training acc. (last) | images/s | CPU min |",
             "|---" * 10 + "|"]
    ref = results[baseline]["best_val"] if baseline else None
    for name, r in results.items():
        delta = f"{100 * (r['best_val'] - ref):+.2f}" if ref is not None else "-"
        cpu = f"{r['cpu_seconds'] / 60:.0f}" if r.get("cpu_seconds") else "-"
        curve = ", ".join(f"{100 * v:.1f}" for v in r["val_accuracy"])
        lines.append(f"| {name} | {len(r['val_accuracy'])} | {curve} "
                     f"| {100 * r['best_val']:.2f}% | {100 * r['last_val']:.2f}% | {delta} "
                     f"| {_pct(r.get('val_macro_f1'))} "
                     f"| {100 * r['train_accuracy'][-1]:.1f}% "
                     f"| {r['median_images_per_s']:.0f} | {cpu} |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        epochs = range(1, len(r["val_accuracy"]) + 1)
        ax.plot(epochs, [100 * v for v in r["val_accuracy"]], marker="o", label=name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Ablations at a fixed budget (validation slice)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="*", default=["baseline"])
    parser.add_argument("--base", required=True, help="the base TOML config")
    parser.add_argument("--init-from", default="", help="warm start: this model's weights")
    parser.add_argument("--data", default="")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.base, args.child, args.epochs, args.init_from, args.data)
    for candidate in args.candidates:
        parse_candidate(candidate)  # refuse a malformed one before hours of training
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for candidate in args.candidates:
        config = candidate_config(args.base, candidate, args.epochs, args.init_from,
                                  args.data)
        timing = train_candidate(args, candidate, config)
        results[candidate] = {"changes": parse_candidate(candidate), **timing,
                              **read_run(config), **validation_scores(config)}
        write_outputs(args, results)


def write_outputs(args, results: dict) -> None:
    baseline = "baseline" if "baseline" in results else None
    table = markdown(results, baseline)
    print(table, flush=True)
    if args.json:
        record = {"base": args.base, "init_from": args.init_from, "epochs": args.epochs,
"machine": _machine(),
                  "selection": "validation slice of the training split; never PublicTest",
                  "candidates": results, "table": table}
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, args.json)
    if args.plot:
        plot(results, args.plot)


def _machine() -> str:
    from edgefer.bench.context import cpu_model, usable_cores

    return f"{cpu_model()}, {usable_cores()} cores, load {os.getloadavg()[0]:.1f} at the end"


if __name__ == "__main__":
    main()
