"""How much OpenVINO's batch-1 latency moves from one compiled model to the next, in one
process: each round compiles the same IR again with each of three settings (edgefer's:
LATENCY hint, one thread; benchmark_app's ``-hint none -nstreams 1 -nthreads 1``; and the
hint with one stream) and takes the median of ``--calls`` timed ``infer()`` calls.

    python benchmarks/openvino_compile_spread.py exports/edgefer-mnv3s-int8.xml --rounds 6

If the levels differ between compiles of one file in one process, a ratio of two single
runs (two processes, two tools) says which level each landed on, not which tool is faster.

``--passes P`` tells a level that a compile decides from one that the machine's load sets:
it compiles every model first, keeps them all, and measures each one in P passes taking
turns. If one compiled model moves between passes as much as the models differ within a
pass, the level belongs to the time, not to the compile.
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


def compiled_request(core, path: Path, config: dict, warmup: int):
    import openvino as ov

    model = core.compile_model(str(path), "CPU", config)
    request = model.create_infer_request()
    shape = [d if d > 0 else 1 for d in model.inputs[0].partial_shape.get_min_shape()]
    request.set_input_tensor(ov.Tensor(np.random.default_rng(0).random(shape, np.float32)))
    for _ in range(warmup):
        request.infer()
    return model, request


def p50_ms(request, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        request.infer()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def compiled_p50_ms(core, path: Path, config: dict, calls: int) -> float:
    _model, request = compiled_request(core, path, config, calls // 4)
    return p50_ms(request, calls)


def kept_models_p50_ms(core, path: Path, config: dict, models: int, passes: int,
                       calls: int) -> list[list[float]]:
    """p50 of each of ``models`` compiles (kept alive), per pass: [pass][model]."""
    kept = [compiled_request(core, path, config, calls // 4) for _ in range(models)]
    return [[p50_ms(request, calls) for _model, request in kept] for _ in range(passes)]


def spread(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) + f"  (max/min {max(values) / min(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--passes", type=int, default=0,
                        help="Compile --rounds models with edgefer's settings first, keep them, "
                             "and measure each in this many passes taking turns.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import openvino as ov

    core, out = ov.Core(), {}
    if args.passes:
        for path in args.models:
            table = kept_models_p50_ms(core, path, settings()["edgefer"], args.rounds,
                                       args.passes, args.calls)
            out[path.name] = {"p50_ms_by_pass_and_model": table}
            for i, row in enumerate(table):
                print(f"{path.name:32s} pass {i}: models {spread(row)}")
            for j in range(args.rounds):
                print(f"{path.name:32s} model {j}: passes {spread([row[j] for row in table])}")
        if args.json:
            args.json.write_text(json.dumps({"models_kept": args.rounds, "passes": args.passes,
                                             "calls": args.calls, "p50_ms": out}, indent=1)
                                 + "\n")
        return
    for path in args.models:
        levels: dict[str, list[float]] = {name: [] for name in settings()}
        for _ in range(args.rounds):
            for name, config in settings().items():
                levels[name].append(compiled_p50_ms(core, path, config, args.calls))
        out[path.name] = levels
        for name, values in levels.items():
            print(f"{path.name:32s} {name:20s} {spread(values)}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "calls": args.calls,
                                         "p50_ms": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
