"""Report files: JSON, CSV, Markdown with plots, and the rich table."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from rich.console import Console
from test_bench_schema import full_run

from edgefer.bench.results import Status
from edgefer.report import (
    CSV_COLUMNS,
    confusion_pair,
    markdown,
    pareto_front,
    read_json,
    render_table,
    write_report,
)


def run_with_int8_and_float():
    run = full_run()
    ok = run.results[0]
    floats = replace(ok, precision="fp32", target="keras", role="reference")
    slow = replace(ok, precision="fp16", target="onnx",
                   latency_ms=replace(ok.latency_ms, p50=ok.latency_ms.p50 * 10))
    return replace(run, results=(floats, ok, slow, run.results[1]))


def test_write_report_files(tmp_path):
    run = run_with_int8_and_float()
    written = write_report(run, tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"bench.json", "bench.csv", "bench.md", "img/pareto.png", "img/latency.png",
            "img/confusion.png"} <= names
    for path in written:
        assert path.stat().st_size > 0
    assert read_json(tmp_path / "bench.json") == run
    rows = list(csv.DictReader(io.StringIO((tmp_path / "bench.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(run.results)
    assert rows[-1]["status"] == "unavailable" and rows[-1]["p50_ms"] == ""
    assert float(rows[1]["p50_ms"]) == round(run.results[1].latency_ms.p50, 4)
    assert float(rows[1]["call_p50_ms"]) == round(run.results[1].call_ms.p50, 4)
    assert rows[-1]["call_p50_ms"] == ""
    page = (tmp_path / "bench.md").read_text()
    assert "img/pareto.png" in page and "img/confusion.png" in page
    assert "a note" in page


def test_markdown_lists_fastest_first_and_skips_failed_rows():
    run = run_with_int8_and_float()
    page = markdown(run)
    table = page.split("## Latency")[1].split("## Every setting")[0]
    # the fp16 row is ten times slower than the others: it comes last
    assert table.index("| int8 |") < table.index("| fp16 |")
    assert "unavailable: no CUDA" in page


def test_markdown_shows_the_round_trip_beside_the_engine():
    run = full_run()
    row = run.results[0]
    page = markdown(run)
    extra = row.call_ms.p50 - row.latency_ms.p50
    assert f"{extra:+.3f} ms ({100 * extra / row.latency_ms.p50:+.0f}%)" in page
    assert "call p50 ms" in page and "litert-benchmark" in page


def test_confusion_pair_is_float_then_int8():
    picked = confusion_pair(run_with_int8_and_float())
    assert [r.precision for r in picked] == ["fp32", "int8"]


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.4), (4.0, 0.8)]
    assert pareto_front(points) == [3, 0, 1, 4]


def test_rich_table_shows_status_and_reason():
    run = run_with_int8_and_float()
    console = Console(record=True, width=250)
    console.print(render_table(run))
    text = console.export_text()
    assert "unavailable [1]" in text and "[1] no CUDA" in text
    assert "call p50" in text and "the engine's run call" in text
    assert f"{100 * run.results[1].accuracy.top1:.1f}" in text


def test_plots_skip_without_latency(tmp_path):
    run = full_run()
    only_missing = replace(run, results=(run.results[1],))
    written = write_report(only_missing, tmp_path)
    assert not any(p.suffix == ".png" for p in written)
    assert only_missing.results[0].status is Status.UNAVAILABLE


# --- a report is one unit (issue 16, item 9) ----------------------------------------------

def test_an_interrupted_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import pytest

    import edgefer.report as report

    first = write_report(run_with_int8_and_float(), tmp_path)
    before = {p: p.read_bytes() for p in first}

    def interrupted(*args, **kwargs):  # Ctrl-C after the JSON, CSV and plots were made
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "markdown", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(replace(full_run(), notes=("a second run",)), tmp_path)
    assert {p: p.read_bytes() for p in first} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.json",
                                                          "bench.md", "img"]


def test_a_new_report_takes_away_the_old_reports_plots_it_does_not_make(tmp_path):
    write_report(run_with_int8_and_float(), tmp_path)
    assert (tmp_path / "img" / "confusion.png").exists()
    run = run_with_int8_and_float()
    no_accuracy = replace(run, results=tuple(replace(r, accuracy=None, agreement=None)
                                             for r in run.results))
    written = write_report(no_accuracy, tmp_path)
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(
        p.name for p in written if p.suffix == ".png")
    assert "confusion.png" not in (tmp_path / "bench.md").read_text()
