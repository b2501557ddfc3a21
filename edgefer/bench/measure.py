"""Measuring one model: load time, latency, throughput, peak memory, size, predictions.

Each model is measured in a fresh process (``spawn``), so that its peak resident memory
is its own engine's and one engine's thread pools or crashes cannot touch the next.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer.errors import ConfigError, DeviceUnavailableError, EdgeferError, EngineMissingError
from edgefer.formats import model_files

# a latency loop stops after this long even if min_runs is not reached (very slow models)
MAX_TIME_S = 60.0
QUANTILES = tuple(range(0, 101))  # the latency distribution kept for plots, in percent


@dataclass(frozen=True)
class MeasureOptions:
    """How long to measure: ``warmup`` calls, then until both ``min_runs`` and ``min_time_s``."""

    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 1.0
    max_time_s: float = MAX_TIME_S

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ConfigError(f"warmup must be 0 or more, got {self.warmup}")
        if self.min_runs < 1:
            raise ConfigError(f"min runs must be at least 1, got {self.min_runs}")
        if not math.isfinite(self.min_time_s) or self.min_time_s < 0:
            raise ConfigError(f"min time must be 0 or more seconds, got {self.min_time_s}")
        if self.max_time_s < self.min_time_s:
            raise ConfigError("max time must not be below min time")


def time_calls(call: Callable[[], object], options: MeasureOptions) -> np.ndarray:
    """Milliseconds per call of ``call``: warm-up first, then until min runs and min time."""
    for _ in range(options.warmup):
        call()
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    while True:
        t0 = clock()
        call()
        t1 = clock()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) >= options.min_runs and elapsed >= options.min_time_s:
            break
        if elapsed >= options.max_time_s and len(samples) >= 3:
            break
    return np.asarray(samples, dtype=np.float64) * 1000.0


def model_size(path: str | os.PathLike) -> tuple[int, int]:
    """(raw bytes, gzip -9 bytes) of a model's files, the way it would be shipped."""
    raw = 0
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    packed = 0
    for file in model_files(path):
        with file.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                raw += len(block)
                packed += len(packer.compress(block))
    packed += len(packer.flush())
    return raw, packed


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where unknown).

    Linux: ``VmHWM``, which starts afresh at exec; ``ru_maxrss`` would carry over the
    peak of the parent that forked the worker.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / 2**20
        except (ImportError, AttributeError):
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def synthetic_faces(count: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """Random gray faces for timing when no data set is given (latency ignores content)."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


# --- one model in one process ------------------------------------------------------

@dataclass(frozen=True)
class MeasureJob:
    """What one worker measures: one model file on one device with one thread count."""

    path: str
    device: str = "cpu"
    threads: int | None = None
    batches: tuple[int, ...] = (1,)
    options: MeasureOptions = MeasureOptions()
    info: dict | None = None  # ModelInfo.to_dict() for files without edgefer metadata
    eval_file: str | None = None  # .npy of uint8 faces to predict (accuracy)
    eval_batch: int = 64
    timing: bool = True  # False: predictions only (a reference model)
    engine: str | None = None  # the engine to run it with; None: its format's default


@dataclass(frozen=True)
class MeasureOutcome:
    """What a worker found; the runner turns it into BenchResults."""

    status: str  # ok | unavailable | failed
    reason: str = ""
    error: str = ""  # device | engine | model | crash | timeout | other
    engine: str = ""
    ran_on: str = ""
    fell_back: bool = False
    precision: str = ""
    classes: tuple[str, ...] = ()
    load_ms: float = 0.0
    first_ms: float = 0.0
    samples_ms: dict[int, np.ndarray] = field(default_factory=dict)  # batch -> ms per engine run
    call_samples_ms: dict[int, np.ndarray] = field(default_factory=dict)  # ms per predict call
    base_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    predicted: np.ndarray | None = None  # top-1 ids in FER2013's class order


def measure(job: MeasureJob) -> MeasureOutcome:
    """Load, time and run one model here, in this process. Errors become outcomes."""
    try:
        return _measure(job)
    except DeviceUnavailableError as exc:
        return MeasureOutcome("unavailable", str(exc), "device")
    except EngineMissingError as exc:
        return MeasureOutcome("unavailable", str(exc), "engine")
    except EdgeferError as exc:
        return MeasureOutcome("failed", str(exc), "model")
    except Exception as exc:  # an engine's own error types: report, don't crash the run
        return MeasureOutcome("failed", f"{type(exc).__name__}: {exc}", "other")


def _measure(job: MeasureJob) -> MeasureOutcome:
    from edgefer.bench.accuracy import top1_in_order
    from edgefer.preprocess import ModelInfo
    from edgefer.runtimes import RuntimeOptions, load_runtime
    from edgefer.runtimes.base import checked_predict

    base_rss = peak_rss_mb()
    options = RuntimeOptions(device=job.device, threads=job.threads)
    info = ModelInfo.from_dict(job.info) if job.info else None
    t0 = time.perf_counter()
    runtime = load_runtime(job.path, options, info, engine=job.engine)
    load_ms = (time.perf_counter() - t0) * 1000.0

    faces = np.load(job.eval_file, mmap_mode="r") if job.eval_file else None
    pool = np.asarray(faces[: max(job.batches)]) if faces is not None and len(faces) else \
        synthetic_faces(max(job.batches))
    inputs = runtime.info.preprocess(pool)
    t0 = time.perf_counter()
    checked_predict(runtime, inputs[:1])  # a model unlike its metadata fails here
    first_ms = (time.perf_counter() - t0) * 1000.0

    samples: dict[int, np.ndarray] = {}
    calls: dict[int, np.ndarray] = {}
    if job.timing:
        for batch in job.batches:
            x = np.resize(inputs, (batch, *inputs.shape[1:])) if batch > len(inputs) \
                else inputs[:batch]
            x = np.ascontiguousarray(x)
            # the engine's run call alone, in a tight loop as the engines' own tools time
            # it (latency_ms), then the round trip an application makes (call_ms)
            samples[batch] = time_calls(runtime.bound_run(x), job.options)
            calls[batch] = time_calls(lambda x=x: runtime.predict(x), job.options)
    peak = peak_rss_mb()  # before the evaluation data set is decoded and preprocessed

    predicted = None
    if faces is not None:
        probs = [runtime.predict(runtime.info.preprocess(np.asarray(faces[i:i + job.eval_batch])))
                 for i in range(0, len(faces), job.eval_batch)]
        predicted = top1_in_order(np.concatenate(probs), runtime.info.classes).astype(np.int8)
    return MeasureOutcome(
        status="ok", engine=runtime.engine, ran_on=runtime.ran_on, fell_back=runtime.fell_back,
        precision=runtime.info.precision, classes=tuple(runtime.info.classes),
        load_ms=load_ms, first_ms=first_ms, samples_ms=samples, call_samples_ms=calls,
        base_rss_mb=base_rss, peak_rss_mb=peak, predicted=predicted)


def _child(conn, job: MeasureJob, log: str) -> None:
    """The worker process: engines' native chatter goes to ``log``, the outcome to ``conn``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from edgefer.quiet import keep_native_output

    keep_native_output()  # the log is where a crash's reason is read back from
    conn.send(measure(job))
    conn.close()


def run_job(job: MeasureJob, isolate: bool = True, timeout_s: float | None = None
            ) -> MeasureOutcome:
    """Measure ``job`` in a fresh process (``isolate``) or here; a crash becomes an outcome."""
    if not isolate:
        return measure(job)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgefer-bench-") as tmp:
        log = os.path.join(tmp, "worker.log")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(child, job, log), daemon=True)
        proc.start()
        child.close()
        try:
            if parent.poll(timeout_s):
                return parent.recv()
            return MeasureOutcome("failed", f"timed out after {timeout_s:.0f} s", "timeout")
        except EOFError:
            proc.join(5)
            return MeasureOutcome(
                "failed", f"the worker process died (exit code {proc.exitcode}): "
                f"{_tail(log)}", "crash")
        finally:
            parent.close()
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _tail(path: str, lines: int = 3) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return " | ".join(text[-lines:]) or "no output"


def save_faces(faces: np.ndarray, folder: str | os.PathLike) -> str:
    """Write faces for workers to map (not pickle) and return the file's path."""
    path = os.path.join(folder, "faces.npy")
    np.save(path, np.ascontiguousarray(faces, dtype=np.uint8))
    return path
