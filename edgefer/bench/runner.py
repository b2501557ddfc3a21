"""A benchmark plan (models x devices x threads x batches) and running it into a BenchRun."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import numpy as np

from edgefer.artifacts import recorded_precision
from edgefer.bench.measure import QUANTILES, MeasureJob, MeasureOptions, MeasureOutcome, run_job
from edgefer.bench.results import BenchResult, BenchRun, Context, LatencyStats, Status
from edgefer.engines import Device
from edgefer.errors import ConfigError, DeviceUnavailableError, EdgeferError
from edgefer.preprocess import ModelInfo, Preprocess

NO_DATA_NOTE = ("no FER2013 found (give --data PATH or set EDGEFER_FER2013): latency and size "
                "only, no accuracy")


class Role(str, Enum):
    MODEL = "model"
    REFERENCE = "reference"  # agreement is measured against it
    BASELINE = "baseline"  # someone else's model, benchmarked beside edgefer's


@dataclass(frozen=True)
class ModelSpec:
    """One model to benchmark. ``info`` describes files without edgefer metadata."""

    path: Path
    name: str = ""
    role: Role = Role.MODEL
    info: ModelInfo | None = None
    precision: str = ""  # default: the file's own record
    chosen_engine: str | None = None  # one its format lists; None: the format's default

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "role", Role(self.role))
        if not self.name:
            object.__setattr__(self, "name", default_name(self.path))
        if self.chosen_engine is not None:
            _ = self.engine  # an engine that cannot run the file fails here, before any work

    @property
    def target(self) -> str:
        """The model's format name (``tflite``, ``keras``): bench results' ``target``."""
        from edgefer.formats import format_of

        return format_of(self.path).name

    @property
    def engine(self) -> str:
        from edgefer.runtimes import engine_for

        return engine_for(self.path, self.chosen_engine)


def default_name(path: Path) -> str:
    """A model's display name: the file's stem, or the folder (and its parent's) for Keras."""
    from edgefer.formats import model_stem

    path = Path(path)
    if not path.is_dir():
        return model_stem(path)
    parts = [p for p in path.resolve().parts if p != "model"]
    if len(parts) > 1 and parts[-1] in ("float", "prune", "qat", "pqat"):  # a run's stage
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


def baseline_info(input_size: int = 48, channels: int = 1, scale: float = 1 / 127.5,
                  offset: float = -1.0, labels: Sequence[str] | None = None,
                  name: str = "baseline", precision: str = "") -> ModelInfo:
    """ModelInfo for another project's model from its preprocessing and its label order."""
    from edgefer.bench.accuracy import class_order
    from edgefer.labels import CLASS_NAMES

    classes = tuple(c.strip().lower() for c in labels) if labels else CLASS_NAMES
    class_order(classes)  # raises unless it is a reordering of FER2013's seven classes
    return ModelInfo(classes=classes, name=name, precision=precision or "?",
                     preprocess=Preprocess(size=input_size, channels=channels, scale=scale,
                                           offset=offset))


def parse_list(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """``"1,4"`` -> (1, 4), each at least 1, in order, without repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(dict.fromkeys(int(str(v).strip()) for v in items if str(v).strip()))
    except ValueError:
        raise ConfigError(f"{what} must be whole numbers separated by commas, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} must be at least 1, got {text!r}")
    return values


@dataclass(frozen=True)
class BenchPlan:
    """Every model on every device with every thread count and batch size."""

    models: tuple[ModelSpec, ...]
    device: Device = Device.CPU  # ALL: cpu, gpu and npu, missing ones `unavailable` rows
    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1, 32)
    measure: MeasureOptions = field(default_factory=MeasureOptions)
    data: Path | None = None
    split: str = "test"
    limit: int | None = None  # evaluate on the first N images only (quick runs)
    reference: ModelSpec | None = None  # agreement is top-1 agreement with this model
    isolate: bool = True  # a fresh process per measurement (honest peak memory)
    timeout_s: float = 900.0
    notes: tuple[str, ...] = ()
    extra_results: tuple[BenchResult, ...] = field(default=())  # e.g. exports that failed

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", Device(self.device))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models and not self.extra_results:
            raise ConfigError("nothing to benchmark: give at least one model")
        object.__setattr__(self, "threads", parse_list(self.threads, "threads"))
        object.__setattr__(self, "batches", parse_list(self.batches, "batch sizes"))
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.data is not None:
            object.__setattr__(self, "data", Path(self.data))

    @property
    def jobs(self) -> int:
        """Worker runs the plan takes (for progress bars)."""
        devices = len(self.device.devices())
        extra = 1 if self.reference is not None and not self._reference_listed() else 0
        return len(self.models) * devices * len(self.threads) + extra

    def _reference_listed(self) -> bool:
        return self.reference is not None and any(
            m.path.resolve() == self.reference.path.resolve() for m in self.models)


Progress = Callable[[str], None]


@dataclass(frozen=True)
class Evaluation:
    """The labelled images accuracy is measured on, saved once for all workers."""

    labels: np.ndarray
    faces_file: str
    split: str


def load_evaluation(plan: BenchPlan, folder: str) -> Evaluation | None:
    from edgefer.bench.measure import save_faces
    from edgefer.data import load_split

    if plan.data is None:
        return None
    split = load_split(plan.data, plan.split)
    faces, labels = split.images, split.labels
    if plan.limit is not None and plan.limit < len(labels):
        # a fixed random subset: the first N of a sorted folder would be one class
        keep = np.sort(np.random.default_rng(0).permutation(len(labels))[: plan.limit])
        faces, labels = faces[keep], labels[keep]
    return Evaluation(labels=np.asarray(labels), faces_file=save_faces(faces, folder),
                      split=split.name)


def run_plan(plan: BenchPlan, progress: Progress | None = None,
             context: Context | None = None) -> BenchRun:
    """Measure everything in ``plan``. A missing device is an ``unavailable`` row with
    ``--device all`` and a DeviceUnavailableError when it was asked for by name."""
    from edgefer.bench import context as context_mod

    context = context or context_mod.collect()
    step = progress or (lambda _label: None)
    notes = list(plan.notes)
    measured: list[tuple[ModelSpec, list[BenchResult], dict[str, np.ndarray]]] = []
    with tempfile.TemporaryDirectory(prefix="edgefer-bench-") as tmp:
        evaluation = load_evaluation(plan, tmp)
        if evaluation is None:
            notes.append(NO_DATA_NOTE)
        for spec in plan.models:
            rows, predicted = _bench_model(plan, spec, evaluation, context, step)
            measured.append((spec, rows, predicted))
        reference, reference_row = _reference_predictions(plan, evaluation, measured, step,
                                                          context)
    if evaluation is not None and reference is None:
        notes.append(f"the reference model {plan.reference.path} failed: agreement not measured"
                     if plan.reference is not None else
                     "no reference model: agreement not measured (give --reference)")
    results = [*plan.extra_results, *([reference_row] if reference_row else [])]
    for _spec, rows, predicted in measured:
        results.extend(annotate(row, predicted, evaluation, reference) for row in rows)
    notes.extend(_warnings(results))
    notes.extend(latency_outliers(results))
    named = plan.reference if reference is not None else None
    return BenchRun(tuple(results), context, tuple(notes),
                    reference=f"{named.name} ({named.path})" if named else "")


def annotate(row: BenchResult, predicted: dict[str, np.ndarray],
             evaluation: Evaluation | None, reference: np.ndarray | None) -> BenchResult:
    """``row`` with the accuracy of its device's predictions and agreement with the reference."""
    from edgefer.bench.accuracy import agreement, score

    preds = predicted.get(row.device)
    if evaluation is None or preds is None or row.status not in (Status.OK, Status.FALLBACK):
        return row
    return replace(row, accuracy=score(evaluation.labels, preds, split=evaluation.split),
                   agreement=agreement(preds, reference) if reference is not None else None)


def _reference_predictions(plan: BenchPlan, evaluation: Evaluation | None,
                           measured: list, step: Progress, context: Context | None = None
                           ) -> tuple[np.ndarray | None, BenchResult | None]:
    """Top-1 predictions of the reference model: from its own rows if it was benchmarked,
    else from a run of its own (predictions only, on the CPU). A reference that fails is
    no error: (None, its failed row), or (None, None) when it has rows of its own."""
    if plan.reference is None or evaluation is None:
        return None, None
    spec = plan.reference
    benchmarked = False
    for other, _rows, predicted in measured:
        if other.path.resolve() == spec.path.resolve():
            if "cpu" in predicted:
                return predicted["cpu"], None
            benchmarked = True
    step(f"reference {spec.name}")
    outcome = run_job(MeasureJob(path=str(spec.path), device="cpu", timing=False,
                                 info=spec.info.to_dict() if spec.info else None,
                                 eval_file=evaluation.faces_file, engine=spec.chosen_engine),
                      isolate=plan.isolate, timeout_s=plan.timeout_s)
    if outcome.status == "ok" and outcome.predicted is not None:
        return outcome.predicted, None
    if benchmarked:
        return None, None
    return None, _failed_reference(spec, plan, context, outcome.reason or "no predictions")


def _failed_reference(spec: ModelSpec, plan: BenchPlan, context: Context | None,
                      reason: str) -> BenchResult:
    try:
        target, engine = spec.target, spec.engine
    except EdgeferError:  # not a model format edgefer knows
        target = engine = ""
    return BenchResult(model=spec.name, target=target, precision=spec.precision, engine=engine,
                       device="cpu", threads=plan.threads[0], batch=1, status=Status.FAILED,
                       reason=f"reference model (for agreement) did not run: {reason}",
                       context=context, role=Role.REFERENCE.value)


def _bench_model(plan: BenchPlan, spec: ModelSpec, evaluation: Evaluation | None,
                 context: Context, step: Progress
                 ) -> tuple[list[BenchResult], dict[str, np.ndarray]]:
    """Rows for one model on every device/threads/batch, and its predictions per device."""
    from edgefer.bench.measure import model_size

    size, size_gz = model_size(spec.path)
    role = spec.role
    if plan.reference is not None and spec.path.resolve() == plan.reference.path.resolve():
        role = Role.REFERENCE
    base = BenchResult(model=spec.name, target=spec.target, precision=spec.precision,
                       engine=spec.engine, device="cpu", threads=plan.threads[0], batch=1,
                       size_bytes=size, size_gzip_bytes=size_gz, context=context,
                       role=role.value)
    rows: list[BenchResult] = []
    predicted: dict[str, np.ndarray] = {}
    for device in plan.device.devices():
        for i, threads in enumerate(plan.threads):
            step(f"{spec.name} {device} {threads} thread{'s' if threads > 1 else ''}")
            job = MeasureJob(path=str(spec.path), device=device, threads=threads,
                             batches=plan.batches, options=plan.measure,
                             info=spec.info.to_dict() if spec.info else None,
                             eval_file=evaluation.faces_file if evaluation and i == 0 else None,
                             engine=spec.chosen_engine)
            outcome = run_job(job, isolate=plan.isolate, timeout_s=plan.timeout_s)
            row = replace(base, device=device, threads=threads,
                          precision=spec.precision or outcome.precision
                          or recorded_precision(spec.path))
            if outcome.status != "ok":
                if outcome.error == "device" and plan.device is not Device.ALL:
                    raise DeviceUnavailableError(f"{spec.path}: {outcome.reason}")
                status = Status.UNAVAILABLE if outcome.status == "unavailable" else Status.FAILED
                rows.append(replace(row, status=status, reason=outcome.reason))
                for _ in plan.threads[i + 1:]:
                    step(f"{spec.name} {device} skipped")
                break
            if outcome.predicted is not None:
                predicted[device] = outcome.predicted
            rows.extend(outcome_rows(row, outcome, plan.batches))
    return rows, predicted


def outcome_rows(row: BenchResult, outcome: MeasureOutcome,
                 batches: Sequence[int]) -> list[BenchResult]:
    """One row per batch size from a worker's samples; latency is per image."""
    status = Status.FALLBACK if outcome.fell_back else Status.OK
    reason = (f"asked for {row.device}, ran on {outcome.ran_on}" if outcome.fell_back else "")
    engine_rss = None
    if outcome.peak_rss_mb is not None and outcome.base_rss_mb is not None:
        engine_rss = max(outcome.peak_rss_mb - outcome.base_rss_mb, 0.0)
    out = []
    for batch in batches:
        samples = outcome.samples_ms.get(batch)
        latency = throughput = None
        quantiles: tuple[float, ...] = ()
        if samples is not None and len(samples):
            per_image = np.asarray(samples) / batch
            latency = _stats(per_image, outcome)
            throughput = float(batch * len(samples) / (np.sum(samples) / 1000.0))
            quantiles = tuple(round(float(q), 5) for q in np.percentile(per_image, QUANTILES))
        calls = outcome.call_samples_ms.get(batch)
        call = _stats(np.asarray(calls) / batch, outcome) if calls is not None and len(calls) \
            else None
        out.append(replace(row, batch=batch, status=status, reason=reason, latency_ms=latency,
                           throughput_ips=throughput, peak_rss_mb=outcome.peak_rss_mb,
                           engine_rss_mb=engine_rss, ran_on=outcome.ran_on,
                           engine=outcome.engine or row.engine,
                           latency_quantiles_ms=quantiles, call_ms=call))
    return out


def _stats(per_image: np.ndarray, outcome: MeasureOutcome) -> LatencyStats:
    return LatencyStats.from_samples(per_image, load_ms=outcome.load_ms,
                                     first_ms=outcome.first_ms)


def _warnings(results: Sequence[BenchResult]) -> list[str]:
    noisy = [r for r in results if any(s is not None and s.noisy
                                       for s in (r.latency_ms, r.call_ms))]
    if not noisy:
        return []
    names = ", ".join(dict.fromkeys(setting_name(r) for r in noisy))
    return [f"noisy machine: p90 above 1.5x p50 for {names}; close other programs and rerun "
            "before trusting those latencies"]


# a row this many times slower than the same model with no more threads and no bigger batch
# (which may be up to linearly slower with fewer threads) was disturbed, not measured
OUTLIER_FACTOR = 3.0


def setting_name(result: BenchResult) -> str:
    """One result's row, told apart from the same model's others: ``edgefer-mnv3s tflite
    int8-qat (cpu, 2 threads, batch 1)``."""
    threads = f"{result.threads} thread{'s' if result.threads != 1 else ''}"
    return (f"{result.model} {result.target} {result.precision} ({result.device}, {threads}, "
            f"batch {result.batch})")


def latency_outliers(results: Sequence[BenchResult]) -> list[str]:
    """A note for each row whose every call was much slower than the same model's p50 at
    a setting that should not be faster (fewer or as many threads, no bigger batch)."""
    timed = [r for r in results if r.latency_ms is not None and r.latency_ms.p50 > 0]
    notes = []
    for row in timed:
        for other in timed:
            if other is row or (other.model, other.target, other.precision, other.engine,
                                other.device) != (row.model, row.target, row.precision,
                                                  row.engine, row.device):
                continue
            if other.batch > row.batch:
                continue  # batching may well make each image faster
            allowed = OUTLIER_FACTOR * max(1.0, other.threads / row.threads)
            ratio = row.latency_ms.min / other.latency_ms.p50
            if ratio >= allowed:
                notes.append(
                    f"latency outlier: {setting_name(row)} took {row.latency_ms.p50:.3g} ms "
                    f"per image (p50; fastest call {row.latency_ms.min:.3g} ms), "
                    f"{ratio:.1f}x the {other.latency_ms.p50:.3g} ms of {setting_name(other)}:"
                    " something else probably ran at the same time; rerun before trusting it")
                break
    return notes


def find_reference(models: Sequence[ModelSpec]) -> ModelSpec | None:
    """The Keras model among ``models``, else the first fp32 edgefer export, else None."""
    own = [m for m in models if m.role is Role.MODEL]
    for spec in own:
        if spec.path.is_dir():
            return replace(spec, role=Role.REFERENCE)
    for spec in own:
        if (spec.precision or recorded_precision(spec.path)) == "fp32":
            return replace(spec, role=Role.REFERENCE)
    return None


def env_threads() -> tuple[int, ...]:
    """Default thread counts: 1, and every usable core when there are more."""
    from edgefer.bench.context import usable_cores

    cores = usable_cores()
    return (1, cores) if cores > 1 else (1,)


def existing(paths: Sequence[str | os.PathLike]) -> list[Path]:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        from edgefer.errors import ModelError

        raise ModelError(f"model not found: {', '.join(missing)}")
    return [Path(p) for p in paths]


def baseline_specs(files: Sequence[str | os.PathLike], input_sizes: Sequence[int] = (),
                   channels: Sequence[int] = (), scales: Sequence[float] = (),
                   offsets: Sequence[float] = (), labels: Sequence[str] = (),
                   precisions: Sequence[str] = (), names: Sequence[str] = ()
                   ) -> list[ModelSpec]:
    """Baseline models from repeatable options: the i-th value of each option goes with the
    i-th file, the last value given with any file after it, edgefer's own without any."""
    def pick(values: Sequence, i: int, default):
        return values[min(i, len(values) - 1)] if values else default

    specs = []
    for i, path in enumerate(existing(files)):
        order = pick(labels, i, None)
        name = names[i] if i < len(names) else path.stem
        info = baseline_info(input_size=pick(input_sizes, i, 48), channels=pick(channels, i, 1),
                             scale=pick(scales, i, 1 / 127.5), offset=pick(offsets, i, -1.0),
                             labels=order.split(",") if order else None, name=name,
                             precision=pick(precisions, i, ""))
        specs.append(ModelSpec(path, name=name, role=Role.BASELINE, info=info,
                               precision=info.precision))
    return specs
