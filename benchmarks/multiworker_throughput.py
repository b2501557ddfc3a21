"""Training throughput of one worker against two worker processes on this machine.

    python benchmarks/multiworker_throughput.py --json reports/multiworker_throughput.json

Each run is a real ``edgefer train --workers ...`` (float stage only) on synthetic 48x48
faces, with one worker and then with two worker processes on 127.0.0.1; the runs take
turns for ``--rounds`` rounds so that load from other tenants of the machine hits both
alike. Two rates per epoch, the first epoch (tracing) left out: training images per
wall-clock second (the global batch: all workers together), and images per CPU-second
of all worker processes together (user + system time read from /proc at each epoch's
end), which other processes on a shared machine disturb much less.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def synthetic_faces(root: Path, train: int, test: int = 70) -> Path:
    """A FER2013 image folder of noisy 48x48 patterns (the content does not matter here)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            label = i % len(CLASSES)
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            image = rng.normal(128 + 10 * label, 40, (48, 48)).clip(0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{split}_{i:06d}.png"), image)
    return root


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def run(workers: int, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """One training run; per-epoch wall time, CPU time and images from the chief's log."""
    addresses = ",".join(f"127.0.0.1:{p}" for p in _free_ports(workers))
    command = [sys.executable, "-m", "edgefer", "train", "--data", str(data), "--out", str(out),
               "--name", f"w{workers}", "--epochs", str(args.epochs), "--qat-epochs", "0",
               "--prune-epochs", "0", "--batch-size", str(args.batch),
               "--width", str(args.width), "--workers", addresses]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out.mkdir(parents=True, exist_ok=True)
    logs = [out / f"w{workers}-worker{i}.log" for i in range(workers)]
    procs = [subprocess.Popen([*command, "--worker-index", str(i)], env=env, cwd=out,
                              stdout=logs[i].open("w"), stderr=subprocess.STDOUT)
             for i in range(workers)]
    log = out / f"w{workers}" / "float" / "log.csv"
    marks: list[tuple[float, float]] = []  # (wall, CPU seconds) at each epoch's end
    started = time.monotonic()
    while any(p.poll() is None for p in procs):
        rows = log.read_text().count("\n") - 1 if log.is_file() else 0
        if rows > len(marks):
            marks.append((time.monotonic(), _cpu_seconds([p.pid for p in procs])))
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    if codes != [0] * workers:
        tails = "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-10:])
                          for f in logs)
        raise SystemExit(f"{workers} worker(s): exit codes {codes}\n{tails}")
    with log.open() as handle:
        logged = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    steady = list(itertools.pairwise(marks))  # epochs 2.. (the first one traces the model)
    train = args.images - max(len(CLASSES), round(args.images * 0.1))  # less validation
    images = train // args.batch * args.batch  # whole global batches, as Trainer counts
    return {"workers": workers, "total_s": time.monotonic() - started,
            "images_per_epoch": images,
            "wall_images_per_s": [images / (b[0] - a[0]) for a, b in steady],
            "cpu_images_per_s": [images / max(b[1] - a[1], 1e-9) for a, b in steady],
            "keras_logged_images_per_s": logged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536, help="training images")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="edgefer-mw-") as tmp:
        data = synthetic_faces(Path(tmp) / "fer", args.images)
        for r in range(args.rounds):
            for workers in (1, 2):
                out = Path(tmp) / f"round{r}"
                out.mkdir(exist_ok=True)
                runs.append(run(workers, data, out, args))
                print(json.dumps({"round": r, **runs[-1]}), flush=True)
    table = {}
    for workers in (1, 2):
        mine = [x for x in runs if x["workers"] == workers]
        table[workers] = {k: statistics.median(v for x in mine for v in x[k])
                          for k in ("wall_images_per_s", "cpu_images_per_s")}
    report = {"machine": f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start, "
                         f"{os.getloadavg()[0]:.1f} at end",
              "settings": vars(args) | {"json": str(args.json)}, "median": table,
              "two_over_one": {k: table[2][k] / table[1][k] for k in table[1]}, "runs": runs}
    for workers, rates in table.items():
        print(f"{workers} worker(s): {rates['wall_images_per_s']:.1f} images/s (wall), "
              f"{rates['cpu_images_per_s']:.1f} images per CPU-second")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
