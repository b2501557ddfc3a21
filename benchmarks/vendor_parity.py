"""edgefer's latency against the engines' own benchmark tools, on the same files.

For the fp32 and INT8 exports of the shipped model (TFLite and OpenVINO IR, made with
``edgefer export`` unless they are in --exports already), at batch 1 with one thread, each
round runs ``litert-benchmark`` (ai-edge-litert's tool) or OpenVINO's ``benchmark_app``
and ``edgefer bench`` on a file, taking turns (the order flips every round), so that load
from other work on a shared machine hits both alike. Writes each round's medians, and per
file the median over the rounds of edgefer's ``latency_ms`` p50 / the tool's median (the
goal: within 10%), and the same for the Python round trip (``call_ms``).

In the same rounds, ``edgefer bench`` runs the static batch-1 exports (the default) and
``--dynamic-batch`` ones of all three targets, taking turns, at batch 1 and 32: what a
static input costs or saves on each engine ("batch_shapes" in the JSON).

    python benchmarks/vendor_parity.py --json reports/vendor_parity.json

ONNX Runtime's tool, ``onnxruntime_perf_test``, is not published on PyPI (it comes with a
build from source), so ONNX Runtime is in the batch-shape comparison only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

MODEL = "edgefer-mnv3s"
PRECISIONS = ("fp32", "int8")
TARGETS = {"tflite": ".tflite", "openvino": ".xml"}
TOOL_OF_TARGET = {"tflite": "litert-benchmark", "openvino": "benchmark_app"}
NOT_ON_PYPI = {
    "onnxruntime": "onnxruntime_perf_test is not published on PyPI (onnxruntime wheels ship no "
                   "benchmark tool; it comes with a build from source), so ONNX Runtime is not "
                   "compared here",
}
GOAL = 0.10  # edgefer's p50 within 10% of the tool's median


# --- the tools' command lines and output ---------------------------------------------

def tool_path(name: str) -> str:
    """A console script next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install -e '.[all]'")
    return found


def litert_command(model: Path, threads: int, runs: int, warmup: int) -> list[str]:
    return [tool_path("litert-benchmark"), "--model", str(model), "--num_threads", str(threads),
            "--num_runs", str(runs), "--warmup_runs", str(warmup)]


def benchmark_app_command(model: Path, threads: int, runs: int,
                          shape: str | None = None) -> list[str]:
    """Synchronous requests, one stream, no hint: a latency run like edgefer's."""
    command = [tool_path("benchmark_app"), "-m", str(model), "-d", "CPU", "-api", "sync",
               "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
               "-niter", str(runs)]
    return command + (["-shape", shape] if shape else [])


def edgefer_command(model: Path, threads: int, runs: int, warmup: int, json_path: Path,
                    batches: tuple[int, ...] = (1,), min_time: float = 0.0) -> list[str]:
    """At each batch size: ``runs`` timed calls and ``min_time`` seconds at least."""
    return [sys.executable, "-m", "edgefer", "bench", str(model), "--threads", str(threads),
            "--batch", ",".join(map(str, batches)), "--warmup", str(warmup), "--min-runs",
            str(runs), "--min-time", f"{min_time:g}", "--json", str(json_path)]


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _find(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {what} in the tool's output")
    return float(match.group(1))


_UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "\u00b5s": 1e-3, "ns": 1e-6}
_UNIT = r"\s+(s|ms|us|\u00b5s|ns)\b"


def _find_ms(pattern: str, text: str, what: str) -> float:
    """A duration in milliseconds; ``pattern`` ends where its number and unit follow
    (benchmark_app prints ``600.22 us`` below a millisecond and ``1.16 ms`` above)."""
    match = re.search(pattern + _NUMBER + _UNIT, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {what} in the tool's output")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_litert(text: str) -> dict[str, float]:
    """``litert-benchmark``'s result block: ``Inference (median):    0.73 ms`` and so on."""
    out = {key: _find_ms(rf"^Inference \({key}\):\s+", text, f"{key} latency")
           for key in ("median", "avg", "min", "max")}
    out["runs"] = _find(r"^Inference \(avg\):\s+[0-9.]+ ms \(([0-9]+) runs\)", text, "run count")
    return {"median_ms": out["median"], "mean_ms": out["avg"], "min_ms": out["min"],
            "max_ms": out["max"], "runs": int(out["runs"])}


def parse_benchmark_app(text: str) -> dict[str, float]:
    """``benchmark_app``'s summary: ``[ INFO ]    Median:        1.16 ms`` under ``Latency:``
    (the requests' own latency, measured inside OpenVINO), and the iteration count."""
    latency = text[text.index("Latency:"):] if "Latency:" in text else ""
    if not latency:
        raise ValueError("no Latency block in benchmark_app's output")
    out = {f"{key.lower()}_ms": _find_ms(rf"^\[ INFO \]\s+{key}:\s+", latency,
                                         f"{key} latency")
           for key in ("Median", "Average", "Min", "Max")}
    out["runs"] = int(_find(r"^\[ INFO \] Count:\s+([0-9]+) iterations", text, "count"))
    out["mean_ms"] = out.pop("average_ms")
    return out


def parse_edgefer(data: dict, batch: int = 1) -> dict[str, float]:
    """``edgefer bench --json``'s row at ``batch``: engine latency and the round trip."""
    rows = [r for r in data["results"] if r["batch"] == batch and r["status"] == "ok"]
    if len(rows) != 1:
        raise ValueError(f"expected one batch-{batch} result, found {len(rows)}")
    row = rows[0]
    latency, call = row["latency_ms"], row["call_ms"]
    return {"latency_p50_ms": latency["p50"], "latency_mean_ms": latency["mean"],
            "call_p50_ms": call["p50"], "runs": latency["runs"],
            "throughput_ips": row["throughput_ips"], "load_ms": latency["load_ms"],
            "ran_on": row["ran_on"]}


# --- running -------------------------------------------------------------------------

def run(command: list[str], cwd: Path | None = None) -> str:
    env = None
    if cwd is not None:  # edgefer bench: no FER2013 found there, no accuracy pass to wait for
        env = {k: v for k, v in os.environ.items() if k != "EDGEFER_FER2013"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd,
                          env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise SystemExit(f"{Path(command[0]).name} failed (exit {done.returncode}):\n{tail}")
    return done.stdout + done.stderr


def vendor(target: str, model: Path, args, tries: int = 3) -> dict[str, float]:
    """The tool's statistics; a run whose summary cannot be read (seen once in ten rounds
    of benchmark_app) is run again, and the last output is shown if none can be read."""
    if target == "tflite":
        command, parse = litert_command(model, args.threads, args.runs, args.warmup), \
            parse_litert
    else:
        shape = None if static_ir(model) else "[1,48,48,1]"  # a dynamic IR needs its shape
        command, parse = benchmark_app_command(model, args.threads, args.runs, shape), \
            parse_benchmark_app
    for attempt in range(tries):
        text = run(command)
        try:
            return parse(text)
        except ValueError as exc:
            if attempt == tries - 1:
                tail = "\n".join(text.strip().splitlines()[-15:])
                raise SystemExit(f"{Path(command[0]).name}: {exc}:\n{tail}") from None
            print(f"{Path(command[0]).name}: {exc}; running it again", flush=True)
    raise AssertionError("unreachable")


def static_ir(model: Path) -> bool:
    import openvino as ov

    return ov.Core().read_model(str(model)).inputs[0].partial_shape.is_static


def edgefer(model: Path, args, folder: Path, batches: tuple[int, ...] = (1,),
            runs: int | None = None, min_time: float = 0.0) -> dict[int, dict[str, float]]:
    path = folder / "bench.json"
    run(edgefer_command(model.resolve(), args.threads, runs or args.runs, args.warmup, path,
                        batches, min_time), cwd=folder)
    data = json.loads(path.read_text())
    return {batch: parse_edgefer(data, batch) for batch in batches}


def ensure_exports(folder: Path, targets: dict[str, str], dynamic: bool = False
                   ) -> dict[tuple[str, str], Path]:
    files = {(t, p): folder / f"{MODEL}-{p}{suffix}" for t, suffix in targets.items()
             for p in PRECISIONS}
    if not all(f.exists() for f in files.values()):
        print(f"exporting to {folder} ...", flush=True)
        run([sys.executable, "-m", "edgefer", "export", "--target", ",".join(targets),
             "--precision", ",".join(PRECISIONS), "--out", str(folder),
             *(["--dynamic-batch"] if dynamic else [])])
    return files


def in_turns(turns: list, i: int) -> dict:
    """Run each (name, measure) of ``turns``, in reverse order on odd rounds."""
    return {name: measure() for name, measure in (turns if i % 2 == 0 else turns[::-1])}


def summarize(rounds: list[dict]) -> dict:
    """Medians over the rounds and the median of the per-round ratios."""
    ratio = [r["edgefer"]["latency_p50_ms"] / r["tool"]["median_ms"] for r in rounds]
    call = [r["edgefer"]["call_p50_ms"] / r["tool"]["median_ms"] for r in rounds]
    ratio_median = statistics.median(ratio)
    return {"tool_median_ms": statistics.median(r["tool"]["median_ms"] for r in rounds),
            "edgefer_latency_p50_ms": statistics.median(r["edgefer"]["latency_p50_ms"]
                                                        for r in rounds),
            "edgefer_call_p50_ms": statistics.median(r["edgefer"]["call_p50_ms"]
                                                     for r in rounds),
            "latency_ratios": [round(x, 4) for x in ratio],
            "latency_ratio_median": ratio_median,
            "call_ratio_median": statistics.median(call),
            "within_goal": abs(ratio_median - 1.0) <= GOAL}


def summarize_batch_shapes(rounds: list[dict]) -> dict:
    """Dynamic over static, medians of the per-round ratios: batch-1 engine latency and
    round trip, batch-32 engine throughput (a static file runs 32 calls), load time."""
    def median(shape: str, batch: int, key: str) -> float:
        return statistics.median(r[shape][batch][key] for r in rounds)

    def ratio(batch: int, key: str) -> float:
        return statistics.median(r["dynamic"][batch][key] / r["static"][batch][key]
                                 for r in rounds)

    out = {}
    for shape in ("static", "dynamic"):
        out[shape] = {"latency_p50_ms": median(shape, 1, "latency_p50_ms"),
                      "call_p50_ms": median(shape, 1, "call_p50_ms"),
                      "throughput_ips_batch_32": median(shape, BATCH, "throughput_ips"),
                      "load_ms": median(shape, 1, "load_ms")}
    out["dynamic_over_static"] = {"latency_p50": ratio(1, "latency_p50_ms"),
                                  "call_p50": ratio(1, "call_p50_ms"),
                                  "throughput_batch_32": ratio(BATCH, "throughput_ips"),
                                  "load": ratio(1, "load_ms")}
    return out


BATCH = 32  # the batch size at which dynamic-batch files are compared for throughput
SHAPE_TARGETS = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    temp = Path(tempfile.gettempdir())
    parser.add_argument("--exports", type=Path, default=temp / "edgefer-vendor-parity",
                        help="Where the (static batch-1) exports are; made if not.")
    parser.add_argument("--dynamic-exports", type=Path,
                        default=temp / "edgefer-vendor-parity-dynamic",
                        help="Where the --dynamic-batch exports are; made if not.")
    parser.add_argument("--no-batch-shapes", action="store_true",
                        help="Skip the static against dynamic batch comparison.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000, help="Timed runs per measurement.")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--shape-runs", type=int, default=20,
                        help="Timed runs per batch size in the batch-shape comparison, and "
                        "--shape-time seconds at least.")
    parser.add_argument("--shape-time", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("reports/vendor_parity.json"))
    args = parser.parse_args()

    from edgefer.bench.context import collect
    from edgefer.outputs import check_writable, write_text_atomic

    check_writable(args.json, folder=False)
    files = ensure_exports(args.exports, TARGETS)
    shapes = {}
    if not args.no_batch_shapes:
        static = ensure_exports(args.exports, SHAPE_TARGETS)
        dynamic = ensure_exports(args.dynamic_exports, SHAPE_TARGETS, dynamic=True)
        shapes = {key: (static[key], dynamic[key]) for key in static}
    rounds: dict[str, list[dict]] = {f"{t} {p}": [] for t, p in files}
    shape_rounds: dict[str, list[dict]] = {f"{t} {p}": [] for t, p in shapes}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgefer-parity-") as tmp:
        for i in range(args.rounds):
            for (target, precision), model in files.items():
                result = in_turns([("tool", lambda t=target, m=model: vendor(t, m, args)),
                                   ("edgefer", lambda m=model: edgefer(m, args, Path(tmp))[1])],
                                  i)
                rounds[f"{target} {precision}"].append(result)
                print(f"round {i + 1} {target} {precision}: {TOOL_OF_TARGET[target]} "
                      f"{result['tool']['median_ms']:.3f} ms, edgefer latency "
                      f"{result['edgefer']['latency_p50_ms']:.3f} ms, call "
                      f"{result['edgefer']['call_p50_ms']:.3f} ms", flush=True)
            for (target, precision), pair in shapes.items():
                result = in_turns([(shape, lambda m=model: edgefer(
                    m, args, Path(tmp), (1, BATCH), args.shape_runs, args.shape_time))
                    for shape, model in zip(("static", "dynamic"), pair, strict=True)], i)
                shape_rounds[f"{target} {precision}"].append(result)
                print(f"round {i + 1} {target} {precision}: latency static "
                      f"{result['static'][1]['latency_p50_ms']:.3f} ms, dynamic "
                      f"{result['dynamic'][1]['latency_p50_ms']:.3f} ms", flush=True)
    summary = {key: {"file": files[tuple(key.split())].name,
                     "tool": TOOL_OF_TARGET[key.split()[0]], **summarize(r), "rounds": r}
               for key, r in rounds.items()}
    shape_summary = {key: {**summarize_batch_shapes(r), "rounds": r}
                     for key, r in shape_rounds.items()}
    out = {"context": asdict(collect()), "threads": args.threads, "batch": 1,
           "rounds": args.rounds, "runs_per_measurement": args.runs, "warmup": args.warmup,
           "batch_shape_measurement": f"at least {args.shape_runs} runs and "
                                      f"{args.shape_time:g} s per batch size",
           "seconds": round(time.time() - started), "goal": f"latency ratio within {GOAL:.0%}",
           "not_compared": NOT_ON_PYPI, "models": summary, "batch_shapes": shape_summary}
    for key, s in summary.items():
        print(f"{key:16s} {s['tool']:16s} median {s['tool_median_ms']:.3f} ms  edgefer "
              f"latency {s['edgefer_latency_p50_ms']:.3f} ms (ratio "
              f"{s['latency_ratio_median']:.3f})  call {s['edgefer_call_p50_ms']:.3f} ms "
              f"(ratio {s['call_ratio_median']:.3f})")
    for key, s in shape_summary.items():
        r = s["dynamic_over_static"]
        print(f"{key:16s} dynamic/static: latency {r['latency_p50']:.3f}, call "
              f"{r['call_p50']:.3f}, batch-{BATCH} throughput {r['throughput_batch_32']:.3f}, "
              f"load {r['load']:.3f}")
    write_text_atomic(args.json, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
