"""``edgefer bench`` end to end on numpy-made ONNX models and a small FER2013-style CSV."""

from __future__ import annotations

import json

import pytest
from _bench_models import make_band_onnx, write_fer_csv
from click.testing import CliRunner

from edgefer.bench.measure import MeasureOptions
from edgefer.bench.results import Status
from edgefer.bench.runner import BenchPlan, ModelSpec, Role, baseline_specs, run_plan
from edgefer.cli import main
from edgefer.labels import CLASS_NAMES

pytest.importorskip("onnxruntime")

QUICK = ["--warmup", "1", "--min-runs", "3", "--min-time", "0", "--threads", "1",
         "--batch", "1,4", "--in-process"]
# the baseline's outputs in this order; its weights are permuted to match
THEIR_ORDER = (6, 3, 4, 5, 2, 1, 0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEFER_FER2013", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def files(tmp_path):
    return {"model": make_band_onnx(tmp_path / "band.onnx"),
            "theirs": make_band_onnx(tmp_path / "theirs.onnx", THEIR_ORDER, info=None),
            "data": write_fer_csv(tmp_path / "fer.csv")}


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_bench_with_accuracy_and_label_mapped_baseline(files, tmp_path):
    labels = ",".join(CLASS_NAMES[k] for k in THEIR_ORDER)
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], "--data", files["data"], "--json", out,
                    "--report", tmp_path / "rep", "--baseline", files["theirs"],
                    "--baseline-labels", labels, "--baseline-precision", "fp32",
                    "--reference", files["model"], *QUICK)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [(r["model"], r["batch"]) for r in rows] == [
        ("band", 1), ("band", 4), ("theirs", 1), ("theirs", 4)]
    for row in rows:
        assert row["status"] == "ok"
        assert row["latency_ms"]["p50"] > 0 and row["throughput_ips"] > 0
        assert row["size_bytes"] > row["size_gzip_bytes"] > 0
        # band faces are separable: both classify all 28 test faces, in FER2013's order
        assert row["accuracy"]["top1"] == 1.0 and row["accuracy"]["images"] == 28
        assert row["agreement"] == 1.0
    assert rows[0]["role"] == "reference" and rows[2]["role"] == "baseline"
    assert (tmp_path / "rep" / "bench.md").exists()


def test_baseline_without_its_label_order_scores_badly(files, tmp_path):
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], "--data", files["data"], "--json", out,
                    "--baseline", files["theirs"], "--reference", files["model"], *QUICK)
    assert result.exit_code == 0, result.output
    theirs = [r for r in json.loads(out.read_text())["results"] if r["model"] == "theirs"]
    assert theirs[0]["accuracy"]["top1"] < 0.5 and theirs[0]["agreement"] < 0.5


def test_no_data_means_latency_and_size_only(files, tmp_path):
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], "--json", out, *QUICK)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert any("no FER2013" in note for note in data["notes"])
    assert data["results"][0]["accuracy"] is None
    assert data["results"][0]["latency_ms"]["runs"] >= 3


def test_gpu_asked_for_by_name_is_a_clear_error(files):
    result = invoke("bench", files["model"], "--device", "gpu", *QUICK)
    assert result.exit_code == 1
    assert "GPU" in result.output and "Traceback" not in result.output


def test_device_all_gives_unavailable_rows(files, tmp_path):
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], "--device", "all", "--json", out, *QUICK)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    by_device = {}
    for row in rows:
        by_device.setdefault(row["device"], []).append(row)
    assert all(r["status"] == "ok" for r in by_device["cpu"])
    for device in ("gpu", "npu"):
        (row,) = by_device[device]
        assert row["status"] == "unavailable"
        assert device.upper() in row["reason"]
        assert row["latency_ms"] is None


def test_provider_that_falls_back_is_reported_as_fallback(files, monkeypatch):
    """CUDA listed as available but not usable: ORT runs on the CPU, and we say so."""
    import onnxruntime

    real = onnxruntime.get_available_providers
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", *real()])
    plan = BenchPlan(models=(ModelSpec(files["model"]),), device="gpu", threads=(1,),
                     batches=(1,), measure=MeasureOptions(warmup=0, min_runs=2, min_time_s=0),
                     isolate=False)
    (row,) = run_plan(plan).results
    assert row.status is Status.FALLBACK
    assert "CUDA" not in row.ran_on and "CPU" in row.ran_on
    assert "ran on" in row.reason


def test_measured_in_a_fresh_process(files):
    plan = BenchPlan(models=(ModelSpec(files["model"]),), threads=(1,), batches=(1,),
                     measure=MeasureOptions(warmup=0, min_runs=2, min_time_s=0), isolate=True,
                     data=files["data"], reference=ModelSpec(files["model"]))
    (row,) = run_plan(plan).results
    assert row.status is Status.OK, row.reason
    assert row.peak_rss_mb > row.engine_rss_mb > 0
    assert row.accuracy.top1 == 1.0


def test_baseline_options_pair_up_by_position(files):
    specs = baseline_specs([files["theirs"], files["theirs"]], input_sizes=(64,),
                           scales=(1 / 255, 2 / 255), offsets=(0.0, -1.0))
    assert [s.info.preprocess.size for s in specs] == [64, 64]
    assert [s.info.preprocess.offset for s in specs] == [0.0, -1.0]
    assert all(s.role is Role.BASELINE for s in specs)


def test_missing_model_is_a_clear_error(tmp_path):
    result = invoke("bench", tmp_path / "nope.onnx", *QUICK)
    assert result.exit_code == 1 and "not found" in result.output


def test_a_model_that_fails_to_load_exits_1_after_the_report(files, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(files["model"].read_bytes()[:200])  # truncated
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], broken, "--json", out, *QUICK)
    assert result.exit_code == 1 and "failed (broken)" in result.output
    rows = json.loads(out.read_text())["results"]
    assert {r["model"]: r["status"] for r in rows if r["batch"] == 1} == {
        "band": "ok", "broken": "failed"}


def test_an_fp32_file_is_the_default_reference(files, tmp_path):
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(files["model"].read_bytes())  # records precision fp32, like an export
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], twin, "--data", files["data"], "--json", out,
                    *QUICK)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["role"] == "reference"
    assert [r["agreement"] for r in rows] == [1.0] * len(rows)


def test_a_missing_engine_measures_nothing_and_exits_1(files, monkeypatch):
    from edgefer import runtimes
    from edgefer.errors import EngineMissingError

    def missing(*args, **kwargs):
        raise EngineMissingError("ONNX Runtime", "onnx")

    monkeypatch.setattr(runtimes, "load_runtime", missing)
    result = invoke("bench", files["model"], *QUICK)
    assert result.exit_code == 1
    assert "nothing was measured" in result.output
    assert "pip install 'edgefer[onnx]'" in result.output  # not eaten as rich markup


def test_a_reference_that_fails_is_a_failed_row_and_the_reports_are_written(files, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    result = invoke("bench", files["model"], "--data", files["data"], "--reference", broken,
                    "--json", tmp_path / "run.json", "--report", tmp_path / "rep", *QUICK)
    assert result.exit_code == 1 and "1 of 3 results failed (broken)" in result.output
    rows = json.loads((tmp_path / "run.json").read_text())["results"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["model"], r["role"]) for r in failed] == [("broken", "reference")]
    assert "reference model (for agreement) did not run" in failed[0]["reason"]
    assert all(r["agreement"] is None and r["accuracy"] for r in rows if r["model"] == "band")
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"bench.json", "bench.md"}
    assert "broken.onnx failed: agreement not measured" in result.output


def test_sigterm_removes_the_temporary_folders_as_ctrl_c_does(files, tmp_path):
    """What a device's cleanup sends (kill -TERM) must leave no /tmp/edgefer-bench-* behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefer", "bench", str(files["model"]), "--min-time", "60",
             "--warmup", "0", "--threads", "1", "--batch", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp.glob("edgefer-bench-*/worker.log")):  # a worker is measuring
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "interrupted" in log.read_text()
    assert list(tmp.glob("edgefer-bench-*")) == []  # (engines leave their own files)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_min_time_must_be_a_finite_number_of_seconds(files, value):
    result = CliRunner().invoke(main, ["bench", str(files["model"]), "--min-time", value])
    assert result.exit_code == 1
    assert "min time must be 0 or more seconds" in result.output


def test_benchmark_is_a_library_call_without_click(files, tmp_path):
    from edgefer.bench import benchmark
    from edgefer.errors import OutputError

    labels = [CLASS_NAMES[k] for k in THEIR_ORDER]
    theirs = baseline_specs([files["theirs"]], labels=[",".join(labels)], precisions=["fp32"])
    steps: list[str] = []

    class Recorder:
        def __init__(self, total: int) -> None:
            self.total = total

        def __enter__(self):
            return steps.append

        def __exit__(self, *exc) -> None:
            pass

    outcome = benchmark([files["model"]], data=files["data"], threads=(1,), batches=(1,),
                        measure=MeasureOptions(warmup=1, min_runs=3, min_time_s=0),
                        baselines=theirs, reference=files["model"], isolate=False,
                        progress=Recorder)
    rows = outcome.run.results
    assert [(r.model, r.status) for r in rows] == [("band", Status.OK), ("theirs", Status.OK)]
    assert all(r.agreement == 1.0 for r in rows) and outcome.exported == ()
    assert steps and all("band" in s or "theirs" in s for s in steps)
    with pytest.raises(OutputError, match="inputs"):
        benchmark([files["model"]], outputs=[(files["model"], False)])


def test_engine_runs_the_onnx_file_with_openvino(files, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "run.json"
    result = invoke("bench", files["model"], "--engine", "openvino", "--data", files["data"],
                    "--json", out, *QUICK)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [(r["engine"], r["status"]) for r in rows] == [("openvino", "ok")] * 2
    assert all(r["ran_on"].startswith("OpenVINO") for r in rows)
    assert all(r["accuracy"]["top1"] == 1.0 for r in rows)


def test_engine_in_a_fresh_process_too(files, tmp_path):
    pytest.importorskip("openvino")
    from edgefer.bench import benchmark

    outcome = benchmark([files["model"]], engine="openvino", data=None, threads=(1,),
                        batches=(1,), measure=MeasureOptions(warmup=0, min_runs=1, min_time_s=0))
    assert [(r.engine, r.status) for r in outcome.run.results] == [("openvino", Status.OK)]


@pytest.mark.parametrize("engine, told", [
    ("litert", "band.onnx: LiteRT does not run ONNX models; the engines that do: "
               "onnxruntime, openvino"),
    ("tvm", "unknown engine 'tvm'; choose from litert, onnxruntime"),
])
def test_an_engine_that_cannot_run_the_file_is_one_line(files, engine, told):
    result = invoke("bench", files["model"], "--engine", engine, *QUICK)
    assert result.exit_code == 1
    assert told in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_engine_needs_model_files_and_no_device(files):
    result = invoke("bench", "--export", "all", "--engine", "openvino", *QUICK)
    assert result.exit_code == 1 and "--engine chooses the engine of the MODEL" in result.output
    result = invoke("bench", files["model"], "--engine", "openvino", "--on", "ssh://pi@host")
    assert result.exit_code == 1 and "--engine" in result.output
    assert "not supported with --on" in result.output
