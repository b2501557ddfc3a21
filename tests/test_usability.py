"""What a new user trips over (issue 16, items 11-19): where outputs go, one size format,
the README's examples, quiet engines, a table that fits, one option convention, exports
that do not overwrite silently, predict's own outputs, latency outliers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console
from test_bench_schema import full_run

from edgefer.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED_INT8 = REPO / "models" / "edgefer-mnv3s" / "edgefer-mnv3s-int8.tflite"
SIZE = 1_696_816  # the shipped INT8 TFLite: 1.70 MB, 1.62 MiB


# --- 12: one size format ---------------------------------------------------------------

def test_one_size_format_in_inspect_table_report_and_export(monkeypatch, tmp_path):
    from edgefer.export.inspect import inspect_model
    from edgefer.report import markdown, render_inspection, render_table, size_text

    assert size_text(SIZE) == "1.70 MB"
    assert SHIPPED_INT8.stat().st_size == SIZE
    assert "size       1.70 MB" in render_inspection(inspect_model(SHIPPED_INT8))
    run = full_run()
    run = replace(run, results=(replace(run.results[0], size_bytes=SIZE), *run.results[1:]))
    console = Console(record=True, width=250)
    console.print(render_table(run))
    assert "1.70 MB" in console.export_text()
    assert "| 1.70 MB |" in markdown(run)

    import edgefer.export
    from edgefer.export import ExportOptions, ExportResult
    from edgefer.export.parity import Parity

    def fake_export_all(*args, **kwargs):
        yield ExportResult(tmp_path / "m-int8.tflite", ExportOptions("tflite", "int8"),
                           Parity(300, 0.99, 0.01, 0.95), SIZE, "qat")

    monkeypatch.setattr(edgefer.export, "export_all", fake_export_all)
    result = CliRunner().invoke(main, ["export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1.70 MB" in result.output


# --- 13: the README's predict example runs on an [all] install ---------------------------

def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_predict_example_runs_with_what_all_installs(monkeypatch, tmp_path):
    import json
    import shlex

    block = _readme_block("### Predict")
    assert "skimage" not in block and "python" not in block  # nothing [all] lacks
    command = next(line for line in block.splitlines() if line.startswith("edgefer predict"))
    promised = json.loads("".join(line.lstrip("# ") for line in block.splitlines()
                                  if line.startswith("#")).replace(", ...", ""))
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(tmp_path / "out")
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout.splitlines()[-1])
    assert got["faces"][0]["box"] == promised["faces"][0]["box"]
    assert got["faces"][0]["label"] == promised["faces"][0]["label"]
    assert Path(got["output"]).name == Path(promised["output"]).name
    assert Path(got["output"]).is_file()
