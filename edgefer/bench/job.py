"""``benchmark``: the bench job as a library call (what ``edgefer bench`` and ``edgefer
benchmark`` run): optionally export a model to every target and precision, then
measure every model, beside any baselines, against a reference."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from edgefer.bench.measure import MeasureOptions
from edgefer.bench.results import BenchRun
from edgefer.bench.runner import ModelSpec

# (number of steps) -> a context whose value is called with each step's label
ProgressFactory = Callable[[int], AbstractContextManager[Callable[[str], None]]]


@dataclass(frozen=True)
class BenchOutcome:
    run: BenchRun
    exported: tuple[Path, ...] = ()  # the models exported for this run (export_all)


@contextlib.contextmanager
def _no_progress(_total: int) -> Iterator[Callable[[str], None]]:
    yield lambda _label: None


def benchmark(models: Sequence[str | os.PathLike] = (), *, export_all: bool = False,
              exports_dir: str | os.PathLike | None = None, device: str = "cpu",
              engine: str | None = None, threads: str | Sequence[int] | None = None,
              batches: str | Sequence[int] = (1, 32),
              measure: MeasureOptions | None = None,
              data: str | os.PathLike | None = None, split: str = "test",
              limit: int | None = None, reference: str | os.PathLike | None = None,
              baselines: Sequence[ModelSpec] = (), isolate: bool = True,
              outputs: Sequence[tuple[str | os.PathLike | None, bool]] = (),
              progress: ProgressFactory = _no_progress,
              log: Callable[[str], None] = lambda _message: None) -> BenchOutcome:
    """Benchmark ``models`` (files or edgefer model folders) and ``baselines`` (see
    ``runner.baseline_specs``); with ``export_all``, first export the one model given
    (default: the shipped model) into ``exports_dir`` and benchmark the exports beside it.

    ``data``: FER2013 for accuracy (default: where edgefer finds it; none: latency and
    size only). ``engine``: the engine that runs ``models`` (one their formats list;
    default: each format's own). ``threads`` default: 1 and every core. ``reference``:
    the model agreement is measured against (default: the Keras model, else the first
    fp32 one).
    ``outputs``: (path, is a folder) the caller will write, checked before any work
    so that a typo fails at once and no output replaces an input. ``progress`` makes
    a progress bar of N steps; ``log`` is told what the run replaced.
    """
    from edgefer.bench import runner
    from edgefer.datasets import default_data_path
    from edgefer.errors import ConfigError, DataError

    data = Path(data) if data is not None else default_data_path()
    if data is not None and not data.exists():
        raise DataError(f"FER2013 not found at {data}")
    if engine is not None and (export_all or not models):
        raise ConfigError("--engine chooses the engine of the MODEL files given; give them "
                          "(it does not go with --export all)")
    specs = [ModelSpec(p, chosen_engine=engine) for p in runner.existing(models)]
    runner.existing([reference] if reference else [])
    inputs = [*models, reference, *(b.path for b in baselines), data]
    check_outputs(inputs, [*outputs, (exports_dir if export_all else None, True)])
    exported: list[ModelSpec] = []
    failed_exports = []
    if export_all:
        source, exported, failed_exports = _export_all(specs, exports_dir, data, progress, log)
        specs = [ModelSpec(source), *exported]
    elif not specs and not baselines:
        raise ConfigError("give at least one MODEL, or --export all for the shipped model")
    specs += baselines
    plan = runner.BenchPlan(
        models=tuple(specs), device=device, threads=threads or runner.env_threads(),
        batches=batches, measure=measure or MeasureOptions(), data=data, split=split, limit=limit,
        reference=ModelSpec(reference) if reference else runner.find_reference(specs),
        isolate=isolate, extra_results=tuple(failed_exports))
    with progress(plan.jobs) as step:
        run = runner.run_plan(plan, step)
    return BenchOutcome(run, tuple(s.path for s in exported))


def check_outputs(inputs: Sequence, outputs: Sequence[tuple[str | os.PathLike | None, bool]]
                  ) -> None:
    """Each (path, is a folder) of ``outputs`` can be written and replaces no input."""
    from edgefer.outputs import check_writable

    for path, folder in outputs:
        if path is not None:
            check_writable(path, folder=folder, inputs=inputs)


def _export_all(specs: list[ModelSpec], exports_dir: str | os.PathLike | None,
                data: Path | None, progress: ProgressFactory, log: Callable[[str], None]):
    """(the model exported, its exports, rows for the exports that failed)."""
    from edgefer.bench.exports import export_count, export_matrix
    from edgefer.errors import ConfigError
    from edgefer.shipped import shipped_model

    if len(specs) > 1:
        raise ConfigError("--export all exports one model; give one MODEL folder")
    if exports_dir is None:
        raise ConfigError("exporting every target needs a folder for the exports")
    exports_dir = Path(exports_dir)
    source = specs[0].path if specs else shipped_model()
    before = set(exports_dir.iterdir()) if exports_dir.is_dir() else set()
    with progress(export_count()) as step:
        exported, failed = export_matrix(source, exports_dir, data, step)
    replaced = [s.path.name for s in exported if s.path in before]
    if replaced:
        log(f"note: replaced {len(replaced)} earlier export(s) in {exports_dir}: "
            + ", ".join(replaced))
    return source, exported, failed
