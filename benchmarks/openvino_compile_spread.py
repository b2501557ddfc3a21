"""How much OpenVINO's batch-1 latency moves from one compiled model to the next, in one
process: each round compiles the same IR again with each of three settings (edgefer's:
LATENCY hint, one thread; benchmark_app's ``-hint none -nstreams 1 -nthreads 1``; and the
hint with one stream) and takes the median of ``--calls`` timed ``infer()`` calls.

    python benchmarks/openvino_compile_spread.py exports/edgefer-mnv3s-int8.xml --rounds 6

If the levels differ between compiles of one file in one process, a ratio of two single
runs (two processes, two tools) says which level each landed on, not which tool is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def settings() -> dict[str, dict]:
    import openvino.properties.hint as hints

    latency = {hints.performance_mode: hints.PerformanceMode.LATENCY}
    return {"edgefer": {**latency, "INFERENCE_NUM_THREADS": 1},
            "benchmark_app": {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 1},
            "latency_one_stream": {**latency, "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 1}}


def compiled_p50_ms(core, path: Path, config: dict, calls: int) -> float:
    import openvino as ov

    model = core.compile_model(str(path), "CPU", config)
    request = model.create_infer_request()
    shape = [d if d > 0 else 1 for d in model.inputs[0].partial_shape.get_min_shape()]
    request.set_input_tensor(ov.Tensor(np.random.default_rng(0).random(shape, np.float32)))
    for _ in range(calls // 4):
        request.infer()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        request.infer()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import openvino as ov

    core, out = ov.Core(), {}
    for path in args.models:
        levels: dict[str, list[float]] = {name: [] for name in settings()}
        for _ in range(args.rounds):
            for name, config in settings().items():
                levels[name].append(compiled_p50_ms(core, path, config, args.calls))
        out[path.name] = levels
        for name, values in levels.items():
            print(f"{path.name:32s} {name:20s} " + " ".join(f"{v:.2f}" for v in values)
                  + f"  (max/min {max(values) / min(values):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "calls": args.calls,
                                         "p50_ms": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
