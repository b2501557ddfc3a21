"""Formatting benchmark results: JSON, CSV, a Markdown page with pictures, a rich table.

The only module that turns ``BenchRun``/``BenchResult`` into text or images.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgefer.bench.results import BenchResult, BenchRun, Status
from edgefer.errors import ConfigError
from edgefer.outputs import publish, write_text_atomic

JSON_NAME = "bench.json"
CSV_NAME = "bench.csv"
MARKDOWN_NAME = "bench.md"
IMAGE_DIR = "img"
PLOT_NAMES = ("pareto", "latency", "confusion")  # write_plots' files: IMAGE_DIR/NAME.png

CSV_COLUMNS = (
    "model", "role", "target", "precision", "engine", "device", "threads", "batch", "status",
    "reason", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "runs",
    "load_ms", "first_ms", "noisy", "throughput_ips", "peak_rss_mb", "engine_rss_mb",
    "size_bytes", "size_gzip_bytes", "top1", "macro_f1", "agreement", "images", "ran_on",
    "call_p50_ms", "call_p90_ms", "call_p99_ms", "call_mean_ms",
)


# --- files ---------------------------------------------------------------------------

def write_json(run: BenchRun, path: str | os.PathLike) -> Path:
    return write_text_atomic(path, json.dumps(run.to_dict(), indent=1) + "\n")


def read_json(path: str | os.PathLike) -> BenchRun:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable bench JSON ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: unreadable bench JSON (nested too deeply)") from None
    return BenchRun.from_dict(data)


def csv_row(result: BenchResult) -> dict[str, object]:
    lat = result.latency_ms
    acc = result.accuracy
    row: dict[str, object] = {
        "model": result.model, "role": result.role, "target": result.target,
        "precision": result.precision, "engine": result.engine, "device": result.device,
        "threads": result.threads, "batch": result.batch, "status": result.status.value,
        "reason": result.reason, "throughput_ips": _num(result.throughput_ips, 2),
        "peak_rss_mb": _num(result.peak_rss_mb, 1), "engine_rss_mb": _num(result.engine_rss_mb, 1),
        "size_bytes": result.size_bytes, "size_gzip_bytes": result.size_gzip_bytes,
        "top1": _num(acc.top1 if acc else None, 4),
        "macro_f1": _num(acc.macro_f1 if acc else None, 4),
        "agreement": _num(result.agreement, 4), "images": acc.images if acc else "",
        "ran_on": result.ran_on,
    }
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        row[f"{key}_ms"] = _num(getattr(lat, key) if lat else None, 4)
    for key in ("p50", "p90", "p99", "mean"):
        row[f"call_{key}_ms"] = _num(getattr(result.call_ms, key) if result.call_ms else None, 4)
    row.update(runs=lat.runs if lat else "", load_ms=_num(lat.load_ms if lat else None, 1),
               first_ms=_num(lat.first_ms if lat else None, 2),
               noisy=str(lat.noisy).lower() if lat else "")
    return row


def write_csv(run: BenchRun, path: str | os.PathLike) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for result in run.results:
        writer.writerow(csv_row(result))
    return write_text_atomic(path, text.getvalue())


def write_report(run: BenchRun, folder: str | os.PathLike) -> list[Path]:
    """``bench.json``, ``bench.csv``, ``bench.md`` and its pictures under ``folder``, as one
    unit: made in a staging folder, then moved into place together (``outputs.publish``),
    so an interrupted or failed report leaves the previous one whole; an earlier plot this
    run does not make is removed with it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bench-partial-", dir=folder))
    try:
        written = [write_json(run, staging / JSON_NAME), write_csv(run, staging / CSV_NAME)]
        images = write_plots(run, staging / IMAGE_DIR)
        page = write_text_atomic(staging / MARKDOWN_NAME, markdown(
            run, {k: p.relative_to(staging).as_posix() for k, p in images.items()}))
        stale = [folder / IMAGE_DIR / f"{name}.png" for name in PLOT_NAMES if name not in images]
        return publish([*written, page, *images.values()], staging, folder, remove=stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- what goes into tables and plots -------------------------------------------------

def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def size_text(n: int | None) -> str:
    """A file size in decimal units, the one way edgefer prints sizes: 1,696,816 bytes is
    "1.70 MB" (MB = 10^6 bytes, kB = 10^3), "-" for none."""
    if not n:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1000 else f"{n} B"


def overhead(result: BenchResult) -> str:
    """How much longer the round trip's p50 is than the engine's: ``+0.12 ms (+14%)``."""
    lat, call = result.latency_ms, result.call_ms
    if lat is None or call is None or lat.p50 <= 0:
        return "-"
    extra = call.p50 - lat.p50
    return f"{extra:+.3f} ms ({100 * extra / lat.p50:+.0f}%)"


def label(result: BenchResult) -> str:
    """Short name of a result's model: ``target precision`` or its own name for baselines."""
    if result.role == "baseline":
        return f"{result.model} ({result.target} {result.precision})"
    return f"{result.target} {result.precision}".strip()


def usable(result: BenchResult) -> bool:
    return result.status in (Status.OK, Status.FALLBACK)


def latency_rows(run: BenchRun) -> list[BenchResult]:
    """Batch-1 results at the fewest threads measured, fastest first (the Pareto view)."""
    rows = [r for r in run.results if usable(r) and r.batch == 1 and r.latency_ms]
    if not rows:
        return []
    fewest = min(r.threads for r in rows)
    return sorted((r for r in rows if r.threads == fewest), key=lambda r: r.latency_ms.p50)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower x and higher y, by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# --- rich table --------------------------------------------------------------------

def failure_reasons(run: BenchRun) -> list[str]:
    """The distinct reasons of results that are not ok, numbered [1], [2]... in the table."""
    return list(dict.fromkeys(r.reason for r in run.results
                              if r.status is not Status.OK and r.reason))


def render_table(run: BenchRun, title: str = "edgefer bench", wide: bool = False,
                 reasons_below: bool = False):
    """A rich Table of every result (import rich only when asked).

    By default the columns an 80-column terminal holds, each row named by its target and
    precision (with its model's name when the run has several models), as the notes name
    rows; ``wide`` adds every other column. ``reasons_below``: the caller prints
    ``failure_reasons`` itself, unwrapped (commands in them stay whole)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    names = {r.model for r in run.results if r.role != "baseline"}
    one_model = len(names) == 1 and not wide
    if one_model:
        title = f"{title}: {escape(next(iter(names)))}"
    several_devices = len({r.device for r in run.results}) > 1
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    columns = [(name, justify) for name, justify, shown in (
        ("model", "left", True), ("target", "left", wide), ("prec", "left", wide),
        ("device" if wide else "dev", "left", wide or several_devices), ("thr", "right", True),
        ("batch", "right", True), ("status", "left", True), ("p50 ms", "right", True),
        ("p90 ms", "right", wide), ("p99 ms", "right", wide), ("call p50", "right", wide),
        ("img/s", "right", wide), ("RSS MiB", "right", wide), ("size", "right", True),
        ("gzip", "right", wide), ("top-1 %" if wide else "top-1", "right", True),
        ("F1 %", "right", wide), ("agree %" if wide else "agree", "right", True)) if shown]
    reasons: list[str] = []
    rows = [_table_cells(r, reasons, one_model, wide) for r in run.results]
    longest = max((len(row["model"]) for row in rows), default=5)
    for name, justify in columns:
        # short row names never wrap; only long ones (several models) and status may
        wraps = name == "status" or (name == "model" and longest > 20)
        table.add_column(name, justify=justify, no_wrap=not wraps, overflow="fold",
                         min_width=11 if name == "status" else None)
    for cells in rows:
        table.add_row(*(cells[name] for name, _ in columns))
    caption = [LATENCY_LEGEND]
    if run.reference:
        caption.append(f"agree: top-1 agreement with {escape(run.reference)}")
    if not reasons_below:
        caption += [f"[{i}] {escape(reason)}" for i, reason in enumerate(reasons, 1)]
    table.caption = "\n".join(caption)
    table.caption_justify = "left"
    return table


def _table_cells(r: BenchResult, reasons: list[str], one_model: bool,
                 wide: bool) -> dict[str, str]:
    from rich.markup import escape

    lat = r.latency_ms
    status = r.status.value
    if r.status is not Status.OK:
        status = f"[yellow]{status}[/]"
        if r.reason:
            if r.reason not in reasons:
                reasons.append(r.reason)
            status += f" [{reasons.index(r.reason) + 1}]"
    elif lat is not None and lat.noisy:
        status = "ok [yellow](noisy)[/]"
    if wide or (one_model and r.role == "baseline"):
        model = r.model  # a baseline is named by its own name
    elif one_model:
        model = f"{r.target} {r.precision}"
    else:
        model = f"{r.model} {r.target} {r.precision}"
    return {
        "model": escape(model), "target": r.target, "prec": r.precision, "device": r.device,
        "dev": r.device,
        "thr": str(r.threads), "batch": str(r.batch), "status": status,
        "p50 ms": _ms(lat.p50 if lat else None), "p90 ms": _ms(lat.p90 if lat else None),
        "p99 ms": _ms(lat.p99 if lat else None),
        "call p50": _ms(r.call_ms.p50 if r.call_ms else None),
        "img/s": "-" if r.throughput_ips is None else f"{r.throughput_ips:.0f}",
        "RSS MiB": "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
        "size": size_text(r.size_bytes), "gzip": size_text(r.size_gzip_bytes),
        "top-1 %": _pct(r.accuracy.top1 if r.accuracy else None),
        "F1 %": _pct(r.accuracy.macro_f1 if r.accuracy else None),
        "agree %": _pct(r.agreement),
        "top-1": _pct_sign(r.accuracy.top1 if r.accuracy else None),
        "agree": _pct_sign(r.agreement)}


def _pct_sign(value: float | None) -> str:
    return "-" if value is None else f"{_pct(value)}%"


LATENCY_LEGEND = ("p50/p90/p99: the engine's run call with its input bound, per image (what "
                  "litert-benchmark and benchmark_app time); call p50: predict() from Python, "
                  "input conversion and output read back included.")


# --- markdown ----------------------------------------------------------------------

def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(run: BenchRun, images: dict[str, str] | None = None) -> str:
    """The report page; ``images`` maps plot names to paths relative to the page."""
    images = images or {}
    ctx = run.context
    out = ["# edgefer benchmark", ""]
    out.append(f"edgefer {ctx.edgefer_version}" + (f" ({ctx.git_revision})"
                                                    if ctx.git_revision else "")
               + f" on {ctx.cpu or 'unknown CPU'}, {ctx.cores} cores, {ctx.os}, "
               f"Python {ctx.python}.")
    if ctx.device_model:
        out.append(f"Board: {ctx.device_model}.")
    engines = ", ".join(f"{k} {v}" for k, v in sorted(ctx.engine_versions.items()))
    if engines:
        out.append(f"Engines: {engines}.")
    if ctx.extra:
        out.append("Machine: " + ", ".join(f"{k} {v}" for k, v in sorted(ctx.extra.items()))
                   + ".")
    out.append("")
    if run.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in run.notes] + [""]

    out += ["## Latency, size and accuracy", "",
            "Per-image latency at batch 1 (warm-up excluded), fewest threads measured, "
            "fastest first. Latency (p50/p90/p99, mean) is the engine's run call with its "
            "input already bound, as the engines' own tools time it (`litert-benchmark`, "
            "OpenVINO's `benchmark_app`); *call p50* is the round trip an application makes "
            "from Python (input conversion, run, output read back), and *round trip* what "
            "that adds. Accuracy is top-1 on the evaluation split; agreement is the share "
            "of images where a model's top-1 equals the reference model's"
            + (f" (the reference: {run.reference})." if run.reference else "."), ""]
    rows = latency_rows(run)
    out.append(_md_table(
        ("model", "target", "precision", "engine", "device", "threads", "p50 ms", "p90 ms",
         "p99 ms", "mean ± std ms", "call p50 ms", "round trip", "load ms", "first ms", "size",
         "gzip", "peak RSS MiB", "top-1 %", "macro-F1 %", "agreement %"),
        [(r.model, r.target, r.precision, r.engine, r.device, r.threads, _ms(r.latency_ms.p50),
          _ms(r.latency_ms.p90), _ms(r.latency_ms.p99),
          f"{_ms(r.latency_ms.mean)} ± {_ms(r.latency_ms.std)}",
          _ms(r.call_ms.p50 if r.call_ms else None), overhead(r),
          f"{r.latency_ms.load_ms:.0f}",
          _ms(r.latency_ms.first_ms), size_text(r.size_bytes), size_text(r.size_gzip_bytes),
          "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
          _pct(r.accuracy.top1 if r.accuracy else None),
          _pct(r.accuracy.macro_f1 if r.accuracy else None), _pct(r.agreement))
         for r in rows]))
    out.append("")
    if not images and rows and not plots_available():
        out += [f"*{PLOTS_MISSING}.*", ""]
    for key, caption in (("pareto", "Accuracy vs latency (batch 1); the line joins the "
                                    "Pareto-optimal models."),
                         ("latency", "Per-image latency distributions at batch 1 (box: "
                                     "p25-p75, whiskers: p1-p99).")):
        if key in images:
            out += [f"![{caption}]({images[key]})", "", f"*{caption}*", ""]

    out += _accuracy_only(run)
    out += ["## Every setting", "", "Throughput is images per second of the engine's run "
            "calls at that batch size; latency is per image (batch time / batch).", ""]
    out.append(_md_table(
        ("model", "target", "precision", "device", "threads", "batch", "status", "p50 ms",
         "call p50 ms", "img/s", "ran on"),
        [(r.model, r.target, r.precision, r.device, r.threads, r.batch,
          r.status.value + (f": {r.reason}" if r.reason else ""),
          _ms(r.latency_ms.p50 if r.latency_ms else None),
          _ms(r.call_ms.p50 if r.call_ms else None),
          "-" if r.throughput_ips is None else f"{r.throughput_ips:.0f}", r.ran_on or "-")
         for r in run.results]))
    out.append("")

    scored = _one_per_model([r for r in run.results if r.accuracy is not None])
    if scored:
        classes = scored[0].accuracy.classes
        out += ["## Per-class precision / recall (%)", "",
                f"On {scored[0].accuracy.images} images of the "
                f"{scored[0].accuracy.split} split.", ""]
        out.append(_md_table(
            ("model", "target", "precision", *classes),
            [(r.model, r.target, r.precision,
              *(f"{_pct(r.accuracy.per_class[c].precision)} / "
                f"{_pct(r.accuracy.per_class[c].recall)}" for c in classes))
             for r in scored]))
        out.append("")
    if "confusion" in images:
        caption = "Confusion matrices (rows: true class, normalised per row)."
        out += [f"![{caption}]({images['confusion']})", "", f"*{caption}*", ""]
    out += ["JSON schema: `docs/bench-schema.md` (version "
            f"{run.schema_version}). Raw numbers: `{JSON_NAME}`, `{CSV_NAME}`.", ""]
    return "\n".join(out)


def _accuracy_only(run: BenchRun) -> list[str]:
    """Rows measured for accuracy without a latency (the emulated Pi leaves it out)."""
    rows = [r for r in run.results if usable(r) and r.latency_ms is None and r.accuracy]
    if not rows:
        return []

    def extra(r: BenchResult, key: str) -> str:
        return (r.context.extra.get(key) if r.context else None) or "-"

    out = ["## Accuracy without latency", "",
           "Results whose latency was not measured or is left out (an emulated device's "
           "would say nothing about the real one); the arm64-vs-x86 columns compare each "
           "face's label and probabilities with this model on x86.", ""]
    out.append(_md_table(
        ("model", "target", "precision", "engine", "device", "top-1 %", "macro-F1 %",
         "agreement %", "labels as on x86", "max |p diff| vs x86", "why"),
        [(r.model, r.target, r.precision, r.engine, r.device, _pct(r.accuracy.top1),
          _pct(r.accuracy.macro_f1), _pct(r.agreement), extra(r, "arm64_vs_x86_labels"),
          extra(r, "arm64_vs_x86_max_diff"), r.reason or "-") for r in rows]))
    return [*out, ""]


def _one_per_model(results: Sequence[BenchResult]) -> list[BenchResult]:
    """The first result of each (model, target, precision, device): accuracy is per model."""
    seen, out = set(), []
    for r in results:
        key = (r.model, r.target, r.precision, r.device)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# --- pictures ----------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PLOTS_MISSING = ("plots not drawn: matplotlib is not installed (pip install 'edgefer[plots]'); "
                 "bench.json, bench.csv and bench.md are complete without them")


def plots_available() -> bool:
    """matplotlib is an extra (``edgefer[plots]``): a runtime-only install has none."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a module put in sys.modules as None
        return False


def write_plots(run: BenchRun, folder: str | os.PathLike) -> dict[str, Path]:
    """PNG files for the report; a plot with nothing to show is skipped, and all of them
    without matplotlib."""
    folder = Path(folder)
    made: dict[str, Path] = {}
    if not plots_available():
        return made
    for name, plot in (("pareto", plot_pareto), ("latency", plot_latency),
                       ("confusion", plot_confusion)):
        path = folder / f"{name}.png"
        if plot(run, path):
            made[name] = path
    return made


def plot_pareto(run: BenchRun, path: Path) -> bool:
    """Top-1 against p50 latency at batch 1 (or size against latency without accuracy)."""
    rows = latency_rows(run)
    if not rows:
        return False
    with_acc = all(r.accuracy is not None for r in rows)
    xs = [r.latency_ms.p50 for r in rows]
    ys = [100 * r.accuracy.top1 if with_acc else r.size_bytes / 1e6 for r in rows]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"model": "tab:blue", "reference": "tab:green", "baseline": "tab:red"}
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.scatter(x, y, color=colors.get(r.role, "tab:blue"), zorder=3)
        ax.annotate(label(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if with_acc:
        front = pareto_front(list(zip(xs, ys, strict=True)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="gray", zorder=2)
        ax.set_ylim(*accuracy_axis(ys))
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency per image, ms (batch 1, {rows[0].threads} thread(s), log)")
    ax.set_ylabel("top-1 accuracy, %" if with_acc else "model size, MB (no accuracy data)")
    ax.grid(True, alpha=0.3)
    ax.set_title("accuracy vs latency" if with_acc else "size vs latency")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# the Pareto plot's accuracy axis spans at least this many points, so that differences of
# a few tenths (within noise on 3,589 images) do not fill the picture
MIN_ACCURACY_SPAN = 5.0


def accuracy_axis(ys: Sequence[float]) -> tuple[float, float]:
    """Limits of the accuracy axis: every point, at least MIN_ACCURACY_SPAN points tall."""
    low, high = min(ys), max(ys)
    pad = max(MIN_ACCURACY_SPAN - (high - low), 0.0) / 2 + 0.5
    return max(low - pad, 0.0), min(high + pad, 100.0)


def plot_latency(run: BenchRun, path: Path) -> bool:
    """Box plots of batch-1 latency from the kept percentiles (p1, p25, p50, p75, p99)."""
    rows = [r for r in latency_rows(run) if len(r.latency_quantiles_ms) == 101]
    if not rows:
        return False
    stats = [{"label": label(r), "med": r.latency_quantiles_ms[50],
              "q1": r.latency_quantiles_ms[25], "q3": r.latency_quantiles_ms[75],
              "whislo": r.latency_quantiles_ms[1], "whishi": r.latency_quantiles_ms[99],
              "mean": r.latency_ms.mean, "fliers": []} for r in rows]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    try:
        ax.bxp(stats, orientation="horizontal", showmeans=True)
    except TypeError:  # matplotlib < 3.10
        ax.bxp(stats, vert=False, showmeans=True)
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, ms (batch 1, log)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def confusion_pair(run: BenchRun) -> list[BenchResult]:
    """The results whose confusion matrices the report shows: float, INT8, baselines."""
    scored = _one_per_model([r for r in run.results if r.accuracy is not None])
    own = [r for r in scored if r.role != "baseline"]
    floats = [r for r in own if r.precision == "fp32"]
    floats.sort(key=lambda r: (r.role != "reference", r.target != "keras"))
    int8 = [r for r in own if "int8" in r.precision]
    int8.sort(key=lambda r: (r.target != "tflite", r.precision != "int8"))
    picked = floats[:1] + int8[:1] + [r for r in scored if r.role == "baseline"][:1]
    return picked or scored[:2]


def plot_confusion(run: BenchRun, path: Path) -> bool:
    import numpy as np

    picked = confusion_pair(run)
    if not picked:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(picked), figsize=(4.2 * len(picked), 4.2), squeeze=False)
    for ax, r in zip(axes[0], picked, strict=True):
        counts = np.asarray(r.accuracy.confusion, dtype=np.float64)
        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        names = [c[:3] for c in r.accuracy.classes]
        ax.set_xticks(range(len(names)), names, rotation=45)
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title(f"{label(r)}\ntop-1 {100 * r.accuracy.top1:.1f}%", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render_inspection(found) -> str:
    """Plain text for ``edgefer inspect`` (an ``edgefer.export.inspect.Inspection``)."""
    def tensor(t) -> str:
        q = f" scale={t.quantization[0]:.6g} zero_point={t.quantization[1]}" \
            if t.quantization else ""
        return f"  {t.name}: {t.dtype} {list(t.shape)}{q}"

    lines = [f"{found.path}", f"format     {found.format}", f"precision  {found.precision}",
             f"size       {size_text(found.size_bytes)} "
             f"({size_text(found.size_gzip_bytes)} gzip)",
             f"sparsity   {found.weight_sparsity:.1%} of conv/dense weights are zero",
             "inputs", *map(tensor, found.inputs), "outputs", *map(tensor, found.outputs),
             "ops        " + ", ".join(f"{k} {v}" for k, v in sorted(found.ops.items()))]
    if found.precision.startswith("int8"):
        left = ", ".join(f"{k} {v}" for k, v in sorted(found.float_ops.items())) or "none"
        lines.append(f"float ops  {left}")
    if found.metadata:
        lines.append(f"classes    {', '.join(found.metadata['classes'])}")
        lines.append(f"preprocess {found.metadata['preprocess']}")
    return "\n".join(lines)


def render_quant_report(report, rows: int = 30) -> str:
    """Markdown for an ``edgefer.export.quant_debug.QuantReport``: the layers whose
    quantization adds the most error first (the plot beside it shows the graph order)."""
    def db(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    agreement = "" if report.agreement is None else \
        f"; top-1 agreement with the float model on them {report.agreement:.1%}"
    table = _md_table(
        ("rank", "tensor", "op", "float range", "scale", "zero point", "clipped",
         "this tensor's SQNR dB", "accumulated SQNR dB"),
        [(i + 1, layer.tensor, layer.op, f"[{layer.float_min:.3g}, {layer.float_max:.3g}]",
          f"{layer.scale:.4g}", layer.zero_point, f"{layer.clipped:.2%}",
          db(layer.layer_sqnr_db), db(layer.sqnr_db))
         for i, layer in enumerate(report.worst(rows))])
    return (f"# Per-layer INT8 error: {report.engine}\n\n"
            f"{report.images} calibration images{agreement}. SQNR in dB, higher is better "
            "(6 dB a bit): \"this tensor's\" is the error its own quantization adds, "
            "\"accumulated\" the INT8 model's tensor against the float model's as the engine "
            "ran it (everything upstream). A drop in the accumulated SQNR that the layer's "
            "own does not explain points at the engine's kernel, not at the ranges. "
            f"The {min(rows, len(report.layers))} worst of {len(report.layers)} quantized "
            "tensors:\n\n" + table + "\n")
