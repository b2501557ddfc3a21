"""benchmarks/vendor_parity.py: the engines' tools' command lines and the parsing of their
output (captured from litert-benchmark 2.3.0 and benchmark_app 2026.4.1 on this machine),
and the ratios it writes. The tools themselves do not run here."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

from edgefer.bench.results import BenchResult, BenchRun, Context, LatencyStats, Status

LITERT_OUTPUT = """\
2026-12-01 15:10:26 INFO benchmark_litert_model: Num threads:     1
INFO: [cpu_registry.cc:75] XNNPACK CPU accelerator registered.
2026-12-01 15:10:27 INFO benchmark_litert_model: Running 200 benchmark iterations...

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  26.91 ms
Warmup (first):        0.98 ms
Warmup (avg):          3.52 ms (20 runs)
Inference (avg):       3.44 ms (200 runs)
Inference (min):       0.50 ms
Inference (max):       28.98 ms
Inference (median):    0.56 ms
Inference (std):       6.70 ms
Inference (p5):        0.51 ms
Inference (p95):       17.17 ms
Throughput:            0.64 MB/s
Fully accelerated:     False
========================================
INFO: [accelerator_registry.cc:43] DestroyAccelerator: ptr=0x5590913d56c0, name=NpuAccelerator
"""

BENCHMARK_APP_OUTPUT = """\
[Step 7/11] Loading the model to the device
[ INFO ] Compile model took 4279.18 ms
[ INFO ]   INFERENCE_NUM_THREADS: 1
[Step 10/11] Measuring performance (Start inference synchronously, limits: 200 iterations)
[ INFO ] Benchmarking in inference only mode (inputs filling are not included in measurement loop).
[ INFO ] First inference took 82.86 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            200 iterations
[ INFO ] Duration:         4915.59 ms
[ INFO ] Latency:
[ INFO ]    Median:        23.88 ms
[ INFO ]    Average:       24.25 ms
[ INFO ]    Min:           1.86 ms
[ INFO ]    Max:           54.83 ms
[ INFO ] Throughput:   40.69 FPS
"""


@pytest.fixture(scope="module")
def parity():
    return load_benchmark("vendor_parity")


def test_parse_litert_benchmark(parity):
    assert parity.parse_litert(LITERT_OUTPUT) == {
        "median_ms": 0.56, "mean_ms": 3.44, "min_ms": 0.50, "max_ms": 28.98, "runs": 200}


def test_parse_benchmark_app(parity):
    # "First inference took 82.86 ms" and the compile time are not the latency
    assert parity.parse_benchmark_app(BENCHMARK_APP_OUTPUT) == {
        "median_ms": 23.88, "mean_ms": 24.25, "min_ms": 1.86, "max_ms": 54.83, "runs": 200}


def test_parse_benchmark_app_below_a_millisecond(parity):
    # under 1 ms benchmark_app switches to microseconds
    text = BENCHMARK_APP_OUTPUT.replace("23.88 ms", "600.22 us").replace("1.86 ms", "562.24 us")
    parsed = parity.parse_benchmark_app(text)
    assert parsed["median_ms"] == pytest.approx(0.60022)
    assert parsed["min_ms"] == pytest.approx(0.56224)
    assert parsed["max_ms"] == 54.83


@pytest.mark.parametrize("text", ["", "Inference (avg):       3.44 ms (200 runs)\n",
                                  "[ INFO ] Count:  5 iterations\n"])
def test_output_without_the_numbers_is_an_error(parity, text):
    for parse in (parity.parse_litert, parity.parse_benchmark_app):
        with pytest.raises(ValueError):
            parse(text)


def test_parse_edgefer_reads_the_engine_and_the_round_trip(parity):
    def stats(p50: float) -> LatencyStats:
        return LatencyStats(p50=p50, p90=p50, p99=p50, mean=p50 + 0.01, std=0, min=p50,
                            max=p50, runs=1000)

    row = BenchResult(model="m", target="tflite", precision="int8", engine="litert",
                      device="cpu", threads=1, batch=1, latency_ms=stats(0.7),
                      call_ms=stats(0.9), ran_on="XNNPACK")
    missing = BenchResult(model="m", target="tflite", precision="int8", engine="litert",
                          device="gpu", threads=1, batch=1, status=Status.UNAVAILABLE)
    data = BenchRun((row, missing), Context()).to_dict()
    assert parity.parse_edgefer(data) == {"latency_p50_ms": 0.7, "latency_mean_ms": 0.71,
                                          "call_p50_ms": 0.9, "runs": 1000,
                                          "throughput_ips": None, "load_ms": 0.0,
                                          "ran_on": "XNNPACK"}
    with pytest.raises(ValueError, match="batch-32"):
        parity.parse_edgefer(data, 32)


def test_commands_ask_for_one_thread_batch_one_and_the_same_runs(parity, tmp_path):
    model = tmp_path / "m.xml"
    litert = parity.litert_command(tmp_path / "m.tflite", 1, 1000, 50)
    assert litert[1:] == ["--model", str(tmp_path / "m.tflite"), "--num_threads", "1",
                          "--num_runs", "1000", "--warmup_runs", "50"]
    app = parity.benchmark_app_command(model, 1, 1000)
    assert "-shape" not in app  # a static IR needs none
    pairs = dict(zip(app[1::2], app[2::2], strict=False))
    assert pairs == {"-m": str(model), "-d": "CPU", "-api": "sync", "-hint": "none",
                     "-nstreams": "1", "-nthreads": "1", "-niter": "1000"}
    assert parity.benchmark_app_command(model, 1, 1000, "[1,48,48,1]")[-2:] == \
        ["-shape", "[1,48,48,1]"]
    edgefer = parity.edgefer_command(model, 1, 1000, 50, tmp_path / "b.json", (1, 32), 0.5)
    assert edgefer[1:5] == ["-m", "edgefer", "bench", str(model)]
    assert dict(zip(edgefer[5::2], edgefer[6::2], strict=True)) == {
        "--threads": "1", "--batch": "1,32", "--warmup": "50", "--min-runs": "1000",
        "--min-time": "0.5", "--json": str(tmp_path / "b.json")}
    assert parity.edgefer_command(model, 1, 1000, 50, tmp_path / "b.json")[-3] == "0"


def test_summary_is_the_median_of_the_per_round_ratios(parity):
    rounds = [{"tool": {"median_ms": tool}, "edgefer": {"latency_p50_ms": ours,
                                                        "call_p50_ms": ours + 0.2}}
              for tool, ours in ((1.0, 1.05), (2.0, 1.9), (1.0, 1.3), (1.0, 0.98), (1.0, 1.0))]
    summary = parity.summarize(rounds)
    assert summary["latency_ratios"] == [1.05, 0.95, 1.3, 0.98, 1.0]
    assert summary["latency_ratio_median"] == pytest.approx(1.0)
    assert summary["within_goal"] is True
    assert summary["tool_median_ms"] == 1.0 and summary["edgefer_latency_p50_ms"] == 1.05
    assert summary["call_ratio_median"] == pytest.approx(1.2)
    slow = [{**r, "edgefer": {"latency_p50_ms": 1.2, "call_p50_ms": 1.4}} for r in rounds]
    assert parity.summarize(slow)["within_goal"] is False


def test_batch_shapes_are_dynamic_over_static_per_round(parity):
    def measured(latency: float, throughput: float) -> dict:
        one = {"latency_p50_ms": latency, "call_p50_ms": latency + 0.3, "load_ms": 100.0,
               "throughput_ips": 1000 / latency}
        return {1: one, 32: {**one, "throughput_ips": throughput}}

    rounds = [{"static": measured(1.0, 900.0), "dynamic": measured(1.1, 1800.0)},
              {"static": measured(2.0, 450.0), "dynamic": measured(2.0, 1350.0)},
              {"static": measured(1.0, 1000.0), "dynamic": measured(1.05, 2000.0)}]
    summary = parity.summarize_batch_shapes(rounds)
    assert summary["dynamic_over_static"]["latency_p50"] == pytest.approx(1.05)
    assert summary["dynamic_over_static"]["throughput_batch_32"] == pytest.approx(2.0)
    assert summary["dynamic_over_static"]["load"] == pytest.approx(1.0)
    assert summary["static"]["throughput_ips_batch_32"] == 900.0
