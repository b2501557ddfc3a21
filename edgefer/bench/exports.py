"""The main job's first half: export the shipped model to every target and precision.

One function, ``export_matrix``, talks to ``edgefer.export``; an export that cannot be
made (engine missing, parity gate failed) becomes a result row instead of stopping the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edgefer.bench.results import BenchResult, Status
from edgefer.bench.runner import ModelSpec
from edgefer.errors import EdgeferError, EngineMissingError


def export_matrix(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  data: Path | None = None, progress: Callable[[str], None] | None = None
                  ) -> tuple[list[ModelSpec], list[BenchResult]]:
    """Export ``model_dir`` to every target x precision edgefer supports into ``out_dir``.

    Returns the exported models to benchmark and a row for each export that failed.
    """
    from edgefer.export import SUPPORTED, ExportOptions, export_model, load_source

    step = progress or (lambda _label: None)
    loaded = load_source(model_dir, data)
    specs: list[ModelSpec] = []
    failed: list[BenchResult] = []
    for target, precisions in SUPPORTED.items():
        for precision in precisions:
            step(f"export {target.value} {precision.value}")
            try:
                result = export_model(loaded, ExportOptions(target, precision), out_dir, data)
            except EngineMissingError as exc:
                failed.append(export_failure(loaded.name, target.value, precision.value,
                                             Status.UNAVAILABLE, str(exc)))
                continue
            except EdgeferError as exc:
                failed.append(export_failure(loaded.name, target.value, precision.value,
                                             Status.FAILED, f"export failed: {exc}"))
                continue
            specs.append(ModelSpec(result.path, name=loaded.name))
    return specs, failed


def export_count() -> int:
    """How many exports ``export_matrix`` makes (for progress bars)."""
    from edgefer.export import SUPPORTED

    return sum(len(p) for p in SUPPORTED.values())


def export_failure(model: str, target: str, precision: str, status: Status,
                   reason: str) -> BenchResult:
    from edgefer.formats import format_named

    try:
        engine = format_named(target).default_engine
    except KeyError:
        engine = target
    return BenchResult(model=model, target=target, precision=precision,
                       engine=engine, device="cpu", threads=0,
                       batch=1, status=status, reason=reason)
