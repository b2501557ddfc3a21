"""Batch-1 latency of several TFLite models measured interleaved: round after round, each
model runs a block of calls in turn, so a burst of other load on a shared machine hits all
of them alike. Prints each model's p50 over all rounds and the spread of per-round p50s,
and the XNNPACK partition count (1 = XNNPACK runs the whole graph).

    python benchmarks/interleaved_latency.py exports/edgefer-mnv3s-int8.tflite \\
        exports/edgefer-mnv3s-fp32.tflite .fer-pkg/fer/data/emotion_model_quantized.tflite \\
        --json reports/interleaved_latency.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgefer.bench.context import collect
from edgefer.runtimes.litert import interpreter_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50, help="Timed calls per round.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = interleaved(args.models, args.threads, args.rounds, args.calls)
    for name, s in out["models"].items():
        print(f"{name:45s} p50 {s['p50_ms']:.3f} ms  round-p50 spread {s['round_spread']:.1%}"
              f"  XNNPACK partitions {s['xnnpack_partitions']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


def interleaved(paths: list[Path], threads: int = 1, rounds: int = 40,
                calls: int = 50) -> dict:
    """Batch-1 latency of each TFLite model, measured round-robin (see the module's doc)."""
    module, _ = interpreter_module()
    runs = [Run(module, path, threads) for path in paths]
    for run in runs:
        run.time(calls)  # warm-up
        run.rounds.clear()
    for _ in range(rounds):
        for run in runs:
            run.time(calls)
    return {"context": asdict(collect()), "threads": threads, "rounds": rounds,
            "calls_per_round": calls, "models": {r.path.name: r.summary() for r in runs}}


class Run:
    def __init__(self, module, path: Path, threads: int) -> None:
        self.path = path
        self.interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.index = detail["index"]
        self.input = np.zeros(detail["shape"], detail["dtype"])
        self.rounds: list[list[float]] = []

    def time(self, calls: int) -> None:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            self.interpreter.set_tensor(self.index, self.input)
            self.interpreter.invoke()
            times.append(time.perf_counter() - started)
        self.rounds.append(times)

    def summary(self) -> dict:
        every = np.concatenate(self.rounds) * 1e3
        per_round = np.array([np.median(r) for r in self.rounds]) * 1e3
        ops = self.interpreter._get_ops_details()  # LiteRT's only op listing
        return {"p50_ms": float(np.median(every)), "p90_ms": float(np.percentile(every, 90)),
                "round_spread": float((per_round.max() - per_round.min())
                                      / np.median(per_round)),
                "xnnpack_partitions": sum(op["op_name"] == "DELEGATE" for op in ops),
                "size_bytes": self.path.stat().st_size}


if __name__ == "__main__":
    main()
