"""The bench JSON schema: round trip, required keys, versioning, documentation."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from edgefer.bench.accuracy import score
from edgefer.bench.results import (
    SCHEMA_1_NOTE,
    SCHEMA_VERSION,
    Accuracy,
    BenchResult,
    BenchRun,
    ClassScore,
    Context,
    LatencyStats,
    Status,
)
from edgefer.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "bench-schema.md"
REQUIRED = ("target", "precision", "engine", "device", "threads", "batch", "status",
            "latency_ms", "call_ms", "throughput_ips", "peak_rss_mb", "size_bytes", "accuracy",
            "agreement")


def full_run() -> BenchRun:
    rng = np.random.default_rng(0)
    context = Context(cpu="Test CPU", cores=2, os="Linux", python="3.11", machine="x86_64",
                      edgefer_version="0.1.0", engine_versions={"onnxruntime": "1.0"},
                      git_revision="abc", extra={"governor": "performance"})
    labels = rng.integers(0, 7, 100)
    acc = score(labels, np.where(rng.random(100) < 0.7, labels, 0))
    latency = LatencyStats.from_samples(rng.gamma(5, 0.2, 200), load_ms=12.5, first_ms=3.0)
    call = LatencyStats.from_samples(rng.gamma(5, 0.25, 200), load_ms=12.5, first_ms=3.0)
    ok = BenchResult(model="m", target="tflite", precision="int8", engine="litert",
                     device="cpu", threads=1, batch=1, latency_ms=latency, throughput_ips=900.0,
                     peak_rss_mb=80.0, engine_rss_mb=20.0, size_bytes=1000,
                     size_gzip_bytes=800, accuracy=acc, agreement=0.97, ran_on="XNNPACK",
                     context=context, latency_quantiles_ms=tuple(float(i) for i in range(101)),
                     call_ms=call)
    missing = BenchResult(model="m", target="onnx", precision="fp32", engine="onnxruntime",
                          device="gpu", threads=1, batch=1, status=Status.UNAVAILABLE,
                          reason="no CUDA")
    return BenchRun((ok, missing), context, ("a note",))


def test_round_trip_through_json_text():
    run = full_run()
    again = BenchRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run
    assert isinstance(again.results[0].accuracy, Accuracy)
    assert isinstance(again.results[0].accuracy.per_class["happy"], ClassScore)
    assert again.results[1].status is Status.UNAVAILABLE


def test_every_result_has_the_required_keys():
    data = full_run().to_dict()
    assert data["schema"] == "edgefer-bench"
    assert data["schema_version"] == SCHEMA_VERSION
    for result in data["results"]:
        assert set(REQUIRED) <= set(result)
        assert result["status"] in {s.value for s in Status}
    for key in ("latency_ms", "call_ms"):  # the engine's call and the round trip, alike
        latency = data["results"][0][key]
        assert {"p50", "p90", "p99", "mean", "std", "min", "max", "runs"} <= set(latency)
    accuracy = data["results"][0]["accuracy"]
    assert {"top1", "macro_f1", "per_class"} <= set(accuracy)
    assert {"precision", "recall", "f1", "support"} <= set(accuracy["per_class"]["angry"])


def test_newer_schema_and_foreign_json_are_refused():
    data = full_run().to_dict()
    with pytest.raises(ConfigError, match="newer"):
        BenchRun.from_dict({**data, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ConfigError):
        BenchRun.from_dict({**data, "schema": "something-else"})


def test_older_files_without_new_fields_load():
    data = full_run().to_dict()
    for result in data["results"]:
        for key in ("role", "engine_rss_mb", "latency_quantiles_ms"):
            result.pop(key)
    run = BenchRun.from_dict(data)
    assert run.results[0].role == "model"
    assert run.results[0].latency_quantiles_ms == ()


def test_schema_1_latency_reads_back_as_the_round_trip():
    """Schema 1 timed ``predict`` and called it ``latency_ms``: that is ``call_ms`` now."""
    data = full_run().to_dict()
    data["schema_version"] = 1
    for result in data["results"]:
        result.pop("call_ms")
    adb = {**data["results"][0], "engine": "benchmark_model"}
    data["results"].append(adb)
    run = BenchRun.from_dict(data)
    old = full_run().results[0].latency_ms
    assert run.results[0].call_ms == old and run.results[0].latency_ms is None
    assert run.results[0].latency_quantiles_ms == ()
    assert run.results[2].latency_ms == old  # benchmark_model timed the engine already
    assert SCHEMA_1_NOTE in run.notes


@pytest.mark.parametrize("cls", [BenchResult, LatencyStats, Accuracy, ClassScore, Context])
def test_every_field_is_documented(cls):
    text = DOC.read_text()
    documented = set(re.findall(r"`([a-z0-9_]+)`", text))
    missing = [f.name for f in fields(cls) if f.name not in documented]
    assert not missing, f"{cls.__name__} fields missing from {DOC.name}: {missing}"
    assert f"version {SCHEMA_VERSION}" in text
