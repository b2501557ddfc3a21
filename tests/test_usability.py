"""What a new user trips over (issue 16, items 11-19): where outputs go, one size format,
the README's examples, quiet engines, a table that fits, one option convention, exports
that do not overwrite silently, predict's own outputs, latency outliers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_bench_schema import full_run

from edgefer.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED_INT8 = REPO / "models" / "edgefer-mnv3s" / "edgefer-mnv3s-int8.tflite"
SIZE = SHIPPED_INT8.stat().st_size  # about 1.7 MB: decimal megabytes, two decimals


# --- 12: one size format ---------------------------------------------------------------

def test_one_size_format_in_inspect_table_report_and_export(monkeypatch, tmp_path):
    from edgefer.export.inspect import inspect_model
    from edgefer.report import markdown, render_inspection, render_table, size_text

    shown = f"{SIZE / 1e6:.2f} MB"
    assert size_text(SIZE) == shown
    assert size_text(1_696_816) == "1.70 MB"  # not 1.62 MiB
    assert f"size       {shown}" in render_inspection(inspect_model(SHIPPED_INT8))
    run = full_run()
    run = replace(run, results=(replace(run.results[0], size_bytes=SIZE), *run.results[1:]))
    console = Console(record=True, width=250)
    console.print(render_table(run))
    assert shown in console.export_text()
    assert f"| {shown} |" in markdown(run)

    import edgefer.export
    from edgefer.export import ExportOptions, ExportResult
    from edgefer.export.parity import Parity

    def fake_export_all(*args, **kwargs):
        yield ExportResult(tmp_path / "m-int8.tflite", ExportOptions("tflite", "int8"),
                           Parity(300, 0.99, 0.01, 0.95), SIZE, "qat")

    monkeypatch.setattr(edgefer.export, "export_all", fake_export_all)
    result = CliRunner().invoke(main, ["export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert shown in result.output


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


# --- 19: a uniformly slow latency run is flagged -----------------------------------------

def _timed(threads: int, batch: int, ms: float, model: str = "m"):
    import numpy as np

    from edgefer.bench.results import BenchResult, LatencyStats

    samples = ms * (1 + 0.05 * np.random.default_rng(threads * 100 + batch).random(60))
    return BenchResult(model=model, target="tflite", precision="dynamic", engine="litert",
                       device="cpu", threads=threads, batch=batch,
                       latency_ms=LatencyStats.from_samples(samples))


def test_uniformly_slow_row_is_flagged_by_name():
    from edgefer.bench.runner import latency_outliers

    # measured on this VM: dynamic-range TFLite, 2 threads 13.2 and 14.2 ms, 1 thread 1.03
    notes = latency_outliers([_timed(1, 1, 1.03), _timed(1, 32, 0.9), _timed(2, 1, 13.2),
                              _timed(2, 32, 14.2), _timed(1, 1, 1.0, model="other")])
    assert len(notes) == 2, notes
    assert "m tflite dynamic (cpu, 2 threads, batch 1)" in notes[0]
    assert "m tflite dynamic (cpu, 2 threads, batch 32)" in notes[1]
    assert all("(cpu, 1 thread, batch 1)" in n for n in notes)  # what it was compared with


def test_expected_differences_are_not_outliers():
    from edgefer.bench.runner import latency_outliers

    # one thread 3.5x slower than four; batch 1 per image 5x slower than batch 32 (a GPU)
    scaled = [_timed(1, 1, 3.5), _timed(4, 1, 1.0), _timed(4, 32, 0.2), _timed(1, 32, 0.7)]
    assert latency_outliers(scaled) == []
    # the single-thread row was the one disturbed: 13x slower than with two threads
    assert "(cpu, 1 thread, batch 1)" in " ".join(
        latency_outliers([_timed(1, 1, 13.0), _timed(2, 1, 1.0)]))


# --- 16: one option convention -------------------------------------------------------------

def _command(*path: str):
    command = main
    for name in path:
        command = command.commands[name]
    return command


def _option(command, flag: str):
    return next((p for p in command.params if flag in getattr(p, "opts", ())), None)


def test_every_command_names_the_model_data_and_outputs_alike():
    for path in (("export",), ("predict",), ("bench",), ("benchmark",), ("inspect",)):
        assert _option(_command(*path), "--model") is not None, path
    for path in (("export",), ("predict",), ("bench",), ("benchmark",), ("train",),
                 ("calibrate", "build")):
        assert _option(_command(*path), "--out") is not None, path
    for path in (("bench",), ("benchmark",)):  # old spellings still work, out of the help
        for old in ("--report", "--json"):
            assert _option(_command(*path), old).hidden, (path, old)
    data_helps = {" ".join(path): _option(_command(*path), "--data").help
                  for path in (("export",), ("bench",), ("benchmark",), ("train",),
                               ("calibrate", "build"), ("calibrate", "check"))}
    for name, text in data_helps.items():
        assert "$EDGEFER_FER2013, else ../shared/fer2013 or ./fer2013" in text, name
    assert "$EDGEFER_FER2013, else ../shared/fer2013" in _command("data", "info").help
    readme = (REPO / "README.md").read_text()
    assert "The same options mean the same in every command" in readme


def test_data_info_falls_back_to_the_default_data(synthetic_fer, monkeypatch):
    monkeypatch.setenv("EDGEFER_FER2013", str(synthetic_fer))
    named = CliRunner().invoke(main, ["data", "info", str(synthetic_fer), "--json"])
    found = CliRunner().invoke(main, ["data", "info", "--json"])
    option = CliRunner().invoke(main, ["data", "info", "--data", str(synthetic_fer), "--json"])
    assert named.exit_code == found.exit_code == option.exit_code == 0, found.output
    assert named.stdout == found.stdout == option.stdout


def test_model_as_argument_or_option_and_out_under_its_old_name(tiny_tflite, tmp_path):
    by_argument = CliRunner().invoke(main, ["inspect", str(tiny_tflite)])
    by_option = CliRunner().invoke(main, ["inspect", "--model", str(tiny_tflite)])
    assert by_argument.exit_code == by_option.exit_code == 0, by_option.output
    assert by_argument.stdout == by_option.stdout
    both = CliRunner().invoke(main, ["inspect", str(tiny_tflite), "--model", "other.tflite"])
    assert both.exit_code == 2 and "once" in both.output
    quick = ["--in-process", "--threads", "1", "--batch", "1", "--warmup", "1",
             "--min-runs", "3", "--min-time", "0"]
    old = CliRunner().invoke(main, ["bench", "--model", str(tiny_tflite), *quick,
                                    "--report", str(tmp_path / "old")])
    assert old.exit_code == 0, old.output
    assert (tmp_path / "old" / "bench.json").is_file()


# --- 11: the main job leaves the checkout clean and says where everything went ------------

def _git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def test_benchmark_writes_to_a_run_folder_git_ignores(tiny_tflite, tmp_path, monkeypatch):
    import shutil

    import edgefer.bench.exports as exports
    from edgefer.bench.runner import ModelSpec

    def fake_export_matrix(source, out_dir, data=None, progress=None):
        out_dir.mkdir(parents=True)
        made = shutil.copy(tiny_tflite, out_dir / "tiny-fp32.tflite")
        return [ModelSpec(made, name="tiny")], []

    monkeypatch.setattr(exports, "export_matrix", fake_export_matrix)
    monkeypatch.setattr(exports, "export_count", lambda: 1)
    monkeypatch.delenv("EDGEFER_FER2013", raising=False)
    checkout = tmp_path / "checkout"
    (checkout / "reports").mkdir(parents=True)
    shutil.copy(REPO / ".gitignore", checkout / ".gitignore")
    (checkout / "reports" / "bench.md").write_text("the committed report\n")
    _git(checkout, "init", "-q")
    _git(checkout, "add", ".")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(checkout)
    quick = ["--in-process", "--threads", "1", "--batch", "1", "--warmup", "1",
             "--min-runs", "3", "--min-time", "0"]
    result = CliRunner().invoke(main, ["benchmark", str(tiny_tflite), *quick])
    assert result.exit_code == 0, result.output
    assert _git(checkout, "status", "--porcelain", "--untracked-files=all") == ""
    assert (checkout / "reports" / "bench.md").read_text() == "the committed report\n"
    runs = list((checkout / "runs" / "benchmark").iterdir())
    assert len(runs) == 1 and (runs[0] / "bench.md").is_file()
    assert (runs[0] / "exports" / "tiny-fp32.tflite").is_file()
    where = str(Path("runs") / "benchmark" / runs[0].name)
    assert f"wrote the report to {where}" in result.output
    assert f"wrote 1 exported model(s) to {where}/exports" in result.output
    # the committed report is remade only when asked for by name
    again = CliRunner().invoke(main, ["benchmark", str(tiny_tflite), *quick, "--out", "reports"])
    assert again.exit_code == 0, again.output
    assert "wrote the report to reports" in again.output
    assert (checkout / "reports" / "bench.json").is_file()


# --- 17: exports never take each other's names, and a replaced file is announced ----------

def test_every_int8_export_has_a_name_of_its_own():
    from types import SimpleNamespace

    from edgefer.export import ExportOptions
    from edgefer.export.pipeline import LoadedModel, artifact_name

    qat = LoadedModel(Path("m"), "m", SimpleNamespace(quantized=True), None, "")
    ways = [
        ("tflite", {}, "m-int8.tflite"),
        ("tflite", {"int8_source": "calibrate"}, "m-int8-ptq.tflite"),
        ("tflite", {"int8_graph": "pure"}, "m-int8-pure.tflite"),
        ("tflite", {"io": "float"}, "m-int8-float-io.tflite"),
        ("onnx", {}, "m-int8.onnx"),
        ("onnx", {"int8_source": "calibrate"}, "m-int8-ptq.onnx"),
        ("onnx", {"int8_source": "calibrate", "calib_method": "entropy"},
         "m-int8-ptq-entropy.onnx"),
        ("openvino", {}, "m-int8.xml"),
        ("openvino", {"int8_source": "calibrate"}, "m-int8-ptq.xml"),
        ("openvino", {"int8_source": "calibrate", "calib_method": "percentile"},
         "m-int8-ptq-percentile.xml"),
    ]
    for target, options, name in ways:
        assert artifact_name(qat, ExportOptions(target, "int8", **options)) == name
    float_model = LoadedModel(Path("f"), "f", SimpleNamespace(quantized=False), None, "")
    assert artifact_name(float_model, ExportOptions("onnx", "int8")) == "f-int8-ptq.onnx"
    assert artifact_name(qat, ExportOptions("onnx", "fp16")) == "m-fp16.onnx"


def test_a_second_export_to_the_same_name_says_it_replaced_the_first(monkeypatch, tmp_path):
    import tempfile
    from types import SimpleNamespace

    from onnx import TensorProto, helper

    import edgefer.export.convert as convert
    import edgefer.export.pipeline as pipeline
    from edgefer.export import ExportOptions
    from edgefer.export.parity import Parity
    from edgefer.preprocess import ModelInfo

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])])
    model = helper.make_model(graph).SerializeToString()
    monkeypatch.setattr(convert, "export_onnx", lambda source, options: model)
    monkeypatch.setattr(pipeline, "check_parity", lambda *a, **k: Parity(10, 1.0, 0.0, 0.5))
    loaded = pipeline.LoadedModel(Path("m"), "m", SimpleNamespace(quantized=True),
                                  ModelInfo(name="m"), "abc")
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    qat = pipeline.export_model(loaded, ExportOptions("onnx", "int8"), out)
    ptq = pipeline.export_model(loaded, ExportOptions("onnx", "int8", int8_source="calibrate"),
                                out)
    again = pipeline.export_model(loaded, ExportOptions("onnx", "int8"), out)
    assert sorted(p.name for p in out.iterdir()) == ["m-int8-ptq.onnx", "m-int8.onnx"]
    assert (qat.replaced, ptq.replaced, again.replaced) == (False, False, True)

    import edgefer.export

    monkeypatch.setattr(edgefer.export, "export_all", lambda *a, **k: iter([again]))
    said = CliRunner().invoke(main, ["export", "--out", str(out)])
    assert said.exit_code == 0, said.output
    assert f"note: replaced the earlier {out / 'm-int8.onnx'}" in said.stderr


# --- 18: predict's own outputs, inspect's hints, parity explained, plots, reference ------

def test_predict_into_its_own_input_folder_or_above_it(tmp_path, monkeypatch):
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(REPO / "docs" / "astronaut.jpg", photos / "a.jpg")
    for _ in range(2):  # the second run must not take the first one's pictures as inputs
        run = CliRunner().invoke(main, ["predict", str(photos), "--out", str(photos)])
        assert run.exit_code == 0, run.output
        assert run.stdout.count("1 face: happy") == 1, run.stdout
    monkeypatch.chdir(tmp_path)
    above = CliRunner().invoke(main, ["predict", "photos", "--out", "."])
    assert above.exit_code == 0, above.output
    assert above.stdout.count("1 face: happy") == 1, above.stdout
    inside = CliRunner().invoke(main, ["predict", "photos", "--out", "photos/out"])
    again = CliRunner().invoke(main, ["predict", "photos", "--out", "photos/out"])
    assert again.exit_code == inside.exit_code == 0 and again.stdout == inside.stdout


def test_inspect_gives_one_hint_for_a_weights_file_and_any_folder(tmp_path):
    from edgefer.errors import ModelError
    from edgefer.export.inspect import inspect_model

    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "m-int8.xml").write_text("<net/>")
    (exports / "m-int8.bin").write_bytes(b"\0" * 16)
    (tmp_path / "empty").mkdir()
    messages = []
    for path in (exports / "m-int8.bin", exports, tmp_path / "empty",
                 REPO / "models" / "edgefer-mnv3s"):
        try:
            inspect_model(path)
        except ModelError as exc:
            messages.append(str(exc))
    assert len(messages) == 4
    assert all("inspect reads one exported model file (.tflite, .onnx, OpenVINO .xml, "
               ".ncnn.param or .mnn)" in m
               for m in messages), messages
    assert "model folder" not in " ".join(messages[:3])
    assert str(exports / "m-int8.xml") in messages[0] and str(exports / "m-int8.xml") in \
        messages[1]


def test_export_says_what_parity_and_max_dp_mean(monkeypatch, tmp_path):
    import edgefer.export
    from edgefer.export import ExportOptions, ExportResult
    from edgefer.export.parity import Parity

    def fake_export_all(*args, **kwargs):
        yield ExportResult(tmp_path / "m-int8.tflite", ExportOptions("tflite", "int8"),
                           Parity(300, 0.99, 0.047, 0.95), SIZE, "qat")

    monkeypatch.setattr(edgefer.export, "export_all", fake_export_all)
    result = CliRunner().invoke(main, ["export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "max |dp| 0.047" in result.stdout
    assert "max |dp|: the largest difference between the two models' probabilities" \
        in result.stderr


def test_pareto_accuracy_axis_spans_five_points(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from edgefer.report import accuracy_axis, plot_pareto

    low, high = accuracy_axis([57.0, 57.3, 57.6])
    assert high - low >= 5 and low < 57.0 and high > 57.6
    assert accuracy_axis([20.0, 60.0]) == (19.5, 60.5)  # a wide spread keeps its own span
    monkeypatch.setattr(plt, "close", lambda fig: None)
    run = full_run()
    ok = run.results[0]
    near = [replace(ok, accuracy=replace(ok.accuracy, top1=t), precision=p)
            for t, p in ((0.570, "int8"), (0.576, "fp32"))]
    assert plot_pareto(replace(run, results=tuple(near)), tmp_path / "p.png")
    bottom, top = plt.gcf().axes[0].get_ylim()
    assert top - bottom >= 5
    plt.close("all")


def test_report_names_the_reference_and_skips_plots_without_matplotlib(monkeypatch, tmp_path):
    import sys

    from edgefer.bench.results import BenchRun
    from edgefer.report import markdown, write_report

    run = replace(full_run(), reference="edgefer-mnv3s (models/edgefer-mnv3s)")
    assert BenchRun.from_dict(run.to_dict()).reference == run.reference
    assert "(the reference: edgefer-mnv3s (models/edgefer-mnv3s))" in markdown(run)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a runtime-only install
    written = write_report(run, tmp_path)
    assert not any(p.suffix == ".png" for p in written)
    assert "plots not drawn: matplotlib is not installed" in (tmp_path / "bench.md").read_text()


def test_bench_records_its_reference(tiny_tflite, synthetic_fer, tmp_path):
    result = CliRunner().invoke(main, [
        "bench", str(tiny_tflite), "--data", str(synthetic_fer), "--in-process", "--threads",
        "1", "--batch", "1", "--warmup", "1", "--min-runs", "3", "--min-time", "0",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import json

    assert json.loads((tmp_path / "bench.json").read_text())["reference"] == \
        f"tiny ({tiny_tflite})"
    assert f"(the reference: tiny ({tiny_tflite}))" in (tmp_path / "bench.md").read_text()


def test_plots_are_an_extra_the_runtime_install_does_not_pull():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("matplotlib") for d in project["dependencies"])
    assert any(d.startswith("matplotlib") for d in project["optional-dependencies"]["plots"])
    assert "plots" in project["optional-dependencies"]["all"][0]
    assert not any("matplotlib" in d for d in project["optional-dependencies"]["tflite"])


# --- 15: the terminal table fits the terminal, every row named ---------------------------

def _main_job_like_run():
    from edgefer.bench.results import BenchResult, Status

    base = full_run().results[0]
    rows = []
    for target, precision in (("keras", "int8-qat"), ("tflite", "fp32"), ("tflite", "fp16"),
                              ("tflite", "dynamic"), ("tflite", "int8-qat"),
                              ("onnx", "int8-qat"), ("openvino", "int8-qat")):
        for threads in (1, 2):
            rows.append(replace(base, model="edgefer-mnv3s", target=target,
                                precision=precision, threads=threads, size_bytes=SIZE,
                                role="reference" if target == "keras" else "model"))
    rows.append(replace(base, model="fer-mini-xception", precision="dynamic", role="baseline"))
    rows.append(BenchResult(model="edgefer-mnv3s", target="openvino", precision="fp32",
                            engine="openvino", device="gpu", threads=1, batch=1,
                            status=Status.UNAVAILABLE, reason="no GPU plugin in OpenVINO "
                            "2026.4 on this machine (devices: CPU)"))
    return replace(full_run(), results=tuple(rows))


def test_table_fits_80_columns_and_names_every_row():
    from edgefer.report import render_table

    console = Console(record=True, width=80)
    console.print(render_table(_main_job_like_run()))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text and "edgefer-mnv3s" in text.splitlines()[0]  # in the title
    for label in ("keras int8-qat", "tflite fp16", "openvino int8-qat", "fer-mini-xception",
                  "unavailable", "[1] no GPU plugin"):
        assert label in text, label
    assert "p99 ms" not in text and "gzip" not in text
    wide = Console(record=True, width=250)
    wide.print(render_table(_main_job_like_run(), wide=True))
    every = wide.export_text()
    assert all(h in every for h in ("p99 ms", "gzip", "RSS MiB", "F1 %")), every


def test_noisy_note_names_the_rows():
    from edgefer.bench.results import LatencyStats
    from edgefer.bench.runner import _warnings

    run = _main_job_like_run()
    noisy = LatencyStats.from_samples([1.0] * 80 + [5.0] * 20)
    assert noisy.noisy
    calm = LatencyStats.from_samples([1.0] * 100)
    rows = [replace(run.results[4], latency_ms=noisy, call_ms=None),
            *(replace(r, latency_ms=calm, call_ms=None) for r in run.results[5:8])]
    note = " ".join(_warnings(rows))
    assert "edgefer-mnv3s tflite fp16 (cpu, 1 thread, batch 1)" in note
    assert "dynamic" not in note


def test_bench_table_in_an_80_column_terminal(tiny_tflite, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(main, [
        "bench", str(tiny_tflite), "--in-process", "--threads", "1", "--batch", "1",
        "--warmup", "1", "--min-runs", "3", "--min-time", "0"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout


# --- 14: engines' log lines hidden unless -v ---------------------------------------------

NOISE = ("absl::InitializeLog", "cuda drivers", "cuInit", "oneDNN", "UserWarning",
         "XNNPACK delegate", "consider to run pre-processing", "INFO:nncf", "fully_quantize",
         "WARNING:tensorflow", "AutoGraph", "tf2onnx")


def _edgefer(*args: str, cwd: Path | None = None):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("EDGEFER_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=env, timeout=900)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def test_predict_is_quiet_by_default_and_shows_engine_lines_with_v():
    quiet = _edgefer("predict", "docs/astronaut.jpg")
    assert quiet.returncode == 0, quiet.stderr
    assert _noise(quiet.stdout + quiet.stderr) == []
    assert quiet.stdout.startswith("docs/astronaut.jpg: 1 face: happy")
    loud = _edgefer("-v", "predict", "docs/astronaut.jpg")
    assert loud.returncode == 0 and "XNNPACK delegate" in loud.stderr


@pytest.mark.slow
def test_export_through_every_engine_is_quiet(tiny_model_dirs, tiny_calibration, synthetic_fer,
                                               tmp_path):
    """TensorFlow's import and conversion, tf2onnx, ONNX Runtime's calibration, NNCF."""
    run = _edgefer("export", "--model", str(tiny_model_dirs["float"]), "--target", "all",
                   "--precision", "int8", "--int8-source", "calibrate", "--calib",
                   str(tiny_calibration), "--data", str(synthetic_fer), "--min-agreement", "0",
                   "--out", str(tmp_path / "exports"))
    assert run.returncode == 0, run.stderr
    assert _noise(run.stdout + run.stderr) == [], run.stderr
    assert run.stderr.count("exporting") == 3  # edgefer's own progress lines still show
