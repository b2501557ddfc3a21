"""Benchmark results as frozen dataclasses; only ``edgefer.report`` formats them.

The JSON form (``to_dict``/``from_dict``) is versioned: ``SCHEMA_VERSION`` changes when
a field changes meaning or goes away. See ``docs/bench-schema.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

# 2: ``latency_ms`` is the engine's run call alone (it was the Python round trip, which is
# now ``call_ms``); schema-1 files read back with their latency as ``call_ms``
SCHEMA_VERSION = 2


class Status(str, Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # engine, device or provider not present (reason says which)
    FAILED = "failed"  # it was there but broke (reason says how)
    FALLBACK = "fallback"  # asked for a device, ran elsewhere (e.g. CUDA EP fell back to CPU)


@dataclass(frozen=True)
class LatencyStats:
    """Per-image latency in milliseconds (time per call / batch)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int
    load_ms: float = 0.0
    first_ms: float = 0.0
    noisy: bool = False  # spread too wide for the p50 to be trusted

    @classmethod
    def from_samples(cls, samples_ms, load_ms: float = 0.0, first_ms: float = 0.0) -> LatencyStats:
        import numpy as np

        s = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = (float(np.percentile(s, q)) for q in (50, 90, 99))
        # a p90 far above the p50 means other work competed with the benchmark
        noisy = bool(p90 > 1.5 * p50)
        return cls(p50=p50, p90=p90, p99=p99, mean=float(s.mean()), std=float(s.std()),
                   min=float(s.min()), max=float(s.max()), runs=len(s),
                   load_ms=load_ms, first_ms=first_ms, noisy=noisy)


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Accuracy:
    top1: float
    macro_f1: float
    per_class: dict[str, ClassScore]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in `classes` order
    classes: tuple[str, ...]
    images: int
    split: str = "test"


@dataclass(frozen=True)
class Context:
    """Where and with what a result was measured."""

    cpu: str = ""
    cores: int = 0
    os: str = ""
    python: str = ""
    machine: str = ""
    edgefer_version: str = ""
    engine_versions: dict[str, str] = field(default_factory=dict)
    git_revision: str = ""
    device_model: str = ""  # e.g. "Raspberry Pi 5 Model B Rev 1.0" on boards
    extra: dict[str, str] = field(default_factory=dict)  # governor, temperatures, throttling


@dataclass(frozen=True)
class BenchResult:
    """One model on one engine/device/threads/batch setting."""

    model: str
    target: str  # tflite | onnx | openvino | keras
    precision: str  # fp32 | fp16 | int8 | dynamic-int8 | int8-qat ...
    engine: str  # litert | onnxruntime | openvino | keras | benchmark_model
    device: str  # cpu | gpu | npu | auto | adb:<serial> | ssh://host
    threads: int
    batch: int
    status: Status = Status.OK
    reason: str = ""
    # the engine's run call with its input bound (what litert-benchmark, benchmark_app and
    # benchmark_model time): the headline
    latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None  # images/s over the timed engine calls
    peak_rss_mb: float | None = None
    size_bytes: int = 0
    size_gzip_bytes: int = 0
    accuracy: Accuracy | None = None
    agreement: float | None = None  # top-1 agreement with the reference model
    ran_on: str = ""  # what really ran: provider, delegate, device name
    context: Context | None = None
    role: str = "model"  # model | reference | baseline (another project's model)
    engine_rss_mb: float | None = None  # peak_rss_mb less the worker's own before loading
    latency_quantiles_ms: tuple[float, ...] = ()  # per-image latency at 0,1,..,100 percent
    # the Python round trip an application makes: input conversion, run, output read back
    call_ms: LatencyStats | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        values = {f.name: data.get(f.name) for f in fields(cls) if f.name in data}
        values["status"] = Status(data.get("status", "ok"))
        for key in ("latency_ms", "call_ms"):
            if data.get(key):
                values[key] = LatencyStats(**data[key])
        if data.get("accuracy"):
            acc = dict(data["accuracy"])
            acc["per_class"] = {k: ClassScore(**v) for k, v in acc["per_class"].items()}
            acc["classes"] = tuple(acc["classes"])
            values["accuracy"] = Accuracy(**acc)
        if data.get("context"):
            values["context"] = Context(**data["context"])
        if "latency_quantiles_ms" in values:
            values["latency_quantiles_ms"] = tuple(values["latency_quantiles_ms"] or ())
        return cls(**values)


@dataclass(frozen=True)
class BenchRun:
    """A whole ``edgefer bench`` run: its results and the context they share."""

    results: tuple[BenchResult, ...]
    context: Context
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    reference: str = ""  # the model agreement was measured against: "NAME (PATH)"

    def to_dict(self) -> dict:
        return {"schema": "edgefer-bench", "schema_version": self.schema_version,
                "context": asdict(self.context), "notes": list(self.notes),
                "reference": self.reference, "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, data: dict) -> BenchRun:
        from edgefer.errors import ConfigError

        if data.get("schema") != "edgefer-bench":
            raise ConfigError("not an edgefer bench JSON (no 'schema': 'edgefer-bench')")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ConfigError(f"bench JSON schema {data['schema_version']} is newer than this "
                              f"edgefer understands ({SCHEMA_VERSION}); upgrade edgefer")
        results = tuple(BenchResult.from_dict(r) for r in data["results"])
        notes = tuple(data.get("notes", ()))
        if int(data.get("schema_version", 0)) < 2:
            results = tuple(_from_schema_1(r) for r in results)
            notes += (SCHEMA_1_NOTE,)
        return cls(results, Context(**data["context"]), notes,
                   reference=str(data.get("reference") or ""))


SCHEMA_1_NOTE = ("read from a schema-1 report (an older edgefer): its latency is the Python "
                 "round trip (call_ms); the engine's latency was not measured")


def _from_schema_1(result: BenchResult) -> BenchResult:
    """A schema-1 result: its ``latency_ms`` timed ``predict``, which is now ``call_ms``;
    a ``benchmark_model`` row (adb) timed the engine and stays as it is."""
    from dataclasses import replace

    if result.engine == "benchmark_model" or result.latency_ms is None:
        return result
    return replace(result, call_ms=result.latency_ms, latency_ms=None,
                   latency_quantiles_ms=())
