"""How well repeat runs of the same benchmark agree: run ``edgefer bench`` N times on the
same models (batch 1, one thread by default) and report each model's p50 per run, the
median, and the spread (max - min) / median.

    python benchmarks/repeat_spread.py models/edgefer-mnv3s/edgefer-mnv3s-int8.tflite \\
        --runs 5 --min-time 5 --json reports/repeat_spread.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--min-time", default="1", help="edgefer bench --min-time (seconds)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    p50s: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            subprocess.run([sys.executable, "-m", "edgefer", "bench", *args.models, "--threads",
                            args.threads, "--batch", "1", "--min-time", args.min_time,
                            "--json", str(out)],
                           check=True,
                           stdout=subprocess.DEVNULL)
            for result in json.loads(out.read_text())["results"]:
                if result["status"] == "ok" and result.get("latency_ms"):
                    p50s.setdefault(result["model"], []).append(result["latency_ms"]["p50"])
    summary = {}
    for model, values in p50s.items():
        median = float(np.median(values))
        summary[model] = {"p50_ms": values, "median_ms": median,
                          "spread": (max(values) - min(values)) / median}
        print(f"{model}: p50 {', '.join(f'{v:.3f}' for v in values)} ms; "
              f"spread {summary[model]['spread']:.1%} of the median")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
