"""The emulated Raspberry Pi (edgefer.edge.armpi): unit tests of the traps it handles, then
the shipped model's exports on real arm64 binaries under QEMU against this x86 machine.

The arm64 tests need root, binfmt_misc and QEMU (``.ci/run`` installs them) and build or
restore the rootfs once per session; they skip with the reason where that cannot be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgefer.bench.context import cpu_model
from edgefer.bench.results import Accuracy, BenchResult, Context, LatencyStats, Status
from edgefer.edge import armpi
from edgefer.edge.arm_parity import Outputs, Parity, compare, emulated_row, emulated_rows
from edgefer.edge.armpi import ArmPi, ArmPiOptions, QemuCpu
from edgefer.errors import ConfigError, EmulationError

REPO = Path(__file__).resolve().parent.parent
FACES = 64  # fixed FER2013 PublicTest faces the arm64 checks run on (emulation is slow)


# --- unit tests -----------------------------------------------------------------------

@pytest.mark.parametrize(("cpu", "part", "core"), [(QemuCpu.CORTEX_A72, "0xd08", "Cortex-A72"),
                                                   (QemuCpu.CORTEX_A76, "0xd0b", "Cortex-A76")])
def test_cpuinfo_is_arm_and_says_emulated(cpu, part, core):
    text = armpi.cpuinfo_text(cpu, 3)
    assert text.count("processor\t:") == 3
    assert f"CPU part\t: {part}" in text and "CPU implementer\t: 0x41" in text
    # what a bench run there records as its CPU: never mistaken for a real board
    name = cpu_model(text)
    assert "emulated" in name and "not a Raspberry Pi" in name
    assert name.startswith(core)


def test_options_validated(tmp_path):
    with pytest.raises(ConfigError, match="cortex-a72, cortex-a76"):
        ArmPiOptions(cpu="max", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="suite"):
        ArmPiOptions(suite="../x", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="checkout"):
        ArmPiOptions(source=tmp_path, cache_dir=tmp_path)
    assert ArmPiOptions(cpu="cortex-a76", cache_dir=tmp_path).cpu is QemuCpu.CORTEX_A76


def _checkout(root: Path, pyproject: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(pyproject)
    return root


def test_cache_key_follows_suite_and_pyproject(tmp_path):
    a = _checkout(tmp_path / "a", "[project]\nname='x'\n")
    b = _checkout(tmp_path / "b", "[project]\nname='x'\ndependencies=['numpy']\n")
    key = armpi.cache_key
    base = ArmPiOptions(source=a, cache_dir=tmp_path)
    assert key(base) == key(replace(base, cpu=QemuCpu.CORTEX_A76))  # one rootfs, two CPUs
    assert key(base) != key(replace(base, source=b))
    assert key(base) != key(replace(base, suite="trixie"))
    # settings the rootfs does not install from cost no rebuild
    c = _checkout(tmp_path / "c", "[project]\nname='x'\n[project.optional-dependencies]\n"
                  "plots=['matplotlib']\n[tool.pytest.ini_options]\naddopts='-q'\n")
    assert key(base) == key(replace(base, source=c))
    for extra, pin in (("tflite", "ai-edge-litert"), ("ncnn", "ncnn"), ("mnn", "MNN==3.6.1")):
        d = _checkout(tmp_path / extra, "[project]\nname='x'\n"
                      f"[project.optional-dependencies]\n{extra}=['{pin}']\n")
        assert key(base) != key(replace(base, source=d)), extra


def test_rootfs_gets_the_engines_as_the_project_pins_them(tmp_path):
    project = _checkout(tmp_path / "p", "[project]\nname='x'\n[project.optional-dependencies]\n"
                        "onnx=['onnx>=1.16', 'onnxruntime>=1.20,<2']\n"
                        "ncnn=['ncnn>=1.0.2024', 'onnx>=1.16']\nmnn=['MNN==3.6.1', 'onnx']\n")
    assert armpi.engine_requirements(project / "pyproject.toml") == [
        "onnxruntime>=1.20,<2", "ncnn>=1.0.2024", "MNN==3.6.1"]
    bare = _checkout(tmp_path / "b", "[project]\nname='x'\n")
    assert armpi.engine_requirements(bare / "pyproject.toml") == ["onnxruntime", "ncnn", "MNN"]


def _binfmt(root: Path, entry: str | None) -> Path:
    root.mkdir()
    (root / "status").write_text("enabled\n")
    if entry is not None:
        (root / "qemu-aarch64").write_text(entry)
    return root


def test_binfmt_check_says_what_to_run(tmp_path):
    with pytest.raises(EmulationError, match=r"binfmt_misc is not mounted.*mount -t binfmt_misc"):
        armpi.binfmt_entry(tmp_path / "absent")
    with pytest.raises(EmulationError, match=r"no qemu-aarch64.*qemu-user-static"):
        armpi.binfmt_entry(_binfmt(tmp_path / "none", None))
    with pytest.raises(EmulationError, match=r"disabled.*update-binfmts --enable qemu-aarch64"):
        armpi.binfmt_entry(_binfmt(tmp_path / "off", "disabled\ninterpreter /q\nflags: F\n"))
    found = armpi.binfmt_entry(_binfmt(tmp_path / "on", "enabled\ninterpreter /usr/q\n"
                                                        "flags: PF\noffset 0\n"))
    assert found["interpreter"] == "/usr/q" and found["flags"] == "PF"


def _fake_entry(monkeypatch, flags: str = "PF") -> None:
    monkeypatch.setattr(armpi, "binfmt_entry",
                        lambda root=None: {"enabled": "enabled", "flags": flags,
                                           "interpreter": "/usr/libexec/qemu-aarch64"})


def test_commands_get_a_clean_environment_and_the_emulated_cpu(tmp_path, monkeypatch):
    _fake_entry(monkeypatch)
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CERT", "/host/only.crt")
    monkeypatch.setenv("QEMU_CPU", "max")
    pi = ArmPi(ArmPiOptions(cache_dir=tmp_path))
    cmd = pi.command(["python3", "-c", "pass"])
    script = cmd[-1]
    assert cmd[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "/usr/bin/env -i" in script
    assert "QEMU_CPU=cortex-a72" in script and "QEMU_CPU=max" not in script
    assert "PIP_" not in script
    # the ARM cpuinfo goes over the host's, read-only
    cpuinfo = pi.cpuinfo_file()
    assert f"mount --bind {cpuinfo} \"$r\"/proc/cpuinfo" in script
    assert "emulated" in cpuinfo.read_text()
    assert "QEMU_CPU" not in armpi._host_env() and "PIP_CERT" not in armpi._host_env()
    a76 = ArmPi(ArmPiOptions(cache_dir=tmp_path, cpu="cortex-a76"))
    assert "QEMU_CPU=cortex-a76" in a76.command(["true"])[-1]


def test_interpreter_without_fix_binary_flag_is_mounted_in(tmp_path, monkeypatch):
    _fake_entry(monkeypatch, flags="P")
    script = ArmPi(ArmPiOptions(cache_dir=tmp_path)).command(["true"])[-1]
    assert "mount --bind /usr/libexec/qemu-aarch64" in script


def test_sshd_config_keeps_the_emulated_cpu():
    # sshd clears its sessions' environment: without SetEnv they would run on QEMU's "max"
    text = armpi.sshd_config(2222, QemuCpu.CORTEX_A76)
    assert "SetEnv QEMU_CPU=cortex-a76" in text
    assert "ListenAddress 127.0.0.1" in text and "Port 2222" in text
    assert "PasswordAuthentication no" in text


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(armpi, "check_host", lambda build=False: {"flags": "PF"})
    pi = ArmPi(ArmPiOptions(cache_dir=tmp_path))
    built = []

    def fake_build(say):
        built.append(True)
        pi.rootfs.mkdir(parents=True)
        (pi.rootfs / armpi.READY).write_text(pi.key + "\n")

    monkeypatch.setattr(pi, "_build", fake_build)
    monkeypatch.setattr(pi, "_save", lambda say: None)
    pi.tarball.parent.mkdir(parents=True, exist_ok=True)
    pi.tarball.write_bytes(b"not a zstd tarball")
    pi.checksum.write_text("0" * 64 + f"  {pi.tarball.name}\n")
    said: list[str] = []
    assert pi.ensure(said.append).ready
    assert built == [True]
    assert any("corrupt" in line for line in said), said
    assert not pi.tarball.exists()  # the bad one is gone, not restored again and again


def test_cache_round_trip_restores_without_building(tmp_path, monkeypatch):
    monkeypatch.setattr(armpi, "check_host", lambda build=False: {"flags": "PF"})
    pi = ArmPi(ArmPiOptions(cache_dir=tmp_path))
    pi.rootfs.mkdir(parents=True)
    (pi.rootfs / "etc").mkdir()
    (pi.rootfs / "etc" / "os-release").write_text("ID=debian\n")
    (pi.rootfs / armpi.READY).write_text(pi.key + "\n")
    pi._save(lambda _msg: None)
    armpi._remove_tree(pi.rootfs)
    monkeypatch.setattr(pi, "_build", lambda say: pytest.fail("rebuilt a good cache"))
    said: list[str] = []
    assert pi.ensure(said.append).ready
    assert (pi.rootfs / "etc" / "os-release").read_text() == "ID=debian\n"
    assert any("restored" in line for line in said), said
    # a truncated tarball fails its checksum and is not unpacked
    armpi._remove_tree(pi.rootfs)
    pi.tarball.write_bytes(pi.tarball.read_bytes()[:-10])
    assert pi._restore() is False and not pi.rootfs.exists()


def test_divergence_names_the_model_and_output(tmp_path):
    model = tmp_path / "m.onnx"
    _float_onnx(model)
    x86 = Outputs(np.array([[0.6, 0.4], [0.2, 0.8]], np.float32), "x86")
    same = compare(model, Outputs(x86.probabilities + 1e-6, "arm"), x86)
    assert same.ok and same.same_labels == 2
    off = compare(model, Outputs(np.array([[0.6, 0.4], [0.9, 0.1]], np.float32), "arm"), x86)
    assert not off.ok and off.same_labels == 1 and off.worst_face == 1
    assert "m.onnx output 'probabilities'" in off.describe() and "DIVERGES" in off.describe()


def test_int8_output_allows_two_steps(tmp_path):
    # ONNX Runtime's integer kernels round differently on arm64 and x86 (docs/edge.md)
    model = _dequantized_onnx(tmp_path / "q.onnx", step=0.02)
    x86 = Outputs(np.array([[0.60, 0.40], [0.20, 0.80]], np.float32), "x86")
    nudge = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)
    near = compare(model, Outputs(x86.probabilities + 0.03 * nudge, "arm"), x86)
    assert near.tolerance == pytest.approx(0.04) and near.ok
    far = compare(model, Outputs(x86.probabilities + 0.05 * nudge, "arm"), x86)
    assert not far.ok and far.same_labels == 2


def _dequantized_onnx(path: Path, step: float) -> Path:
    import onnx
    from onnx import TensorProto, helper

    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [step])
    zero = helper.make_tensor("zero", TensorProto.INT8, [], [0])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["quant_probabilities"])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("quant_probabilities", TensorProto.FLOAT, ["n", 2])],
        initializer=[scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _float_onnx(path: Path, metadata: dict[str, str] | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["probabilities"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_read_with_onnx_runtime_alone(tmp_path, monkeypatch):
    # a device with `pip install edgefer onnxruntime` (docs/edge.md) has no onnx package;
    # found on the emulated Pi, where the ONNX exports could not be read before
    from edgefer.artifacts import METADATA_KEY, read_info
    from edgefer.preprocess import ModelInfo

    model = _float_onnx(tmp_path / "m.onnx", {METADATA_KEY: json.dumps(
        ModelInfo(name="tagged").to_dict())})
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert read_info(model).name == "tagged"


def _result(**kwargs) -> BenchResult:
    stats = LatencyStats.from_samples([50.0, 51.0, 52.0])
    accuracy = Accuracy(top1=0.5, macro_f1=0.4, per_class={}, confusion=[], classes=(),
                        images=64)
    values = {"model": "m", "target": "tflite", "precision": "int8", "engine": "litert",
              "device": "cpu", "threads": 1, "batch": 1, "latency_ms": stats,
              "throughput_ips": 20.0, "peak_rss_mb": 300.0, "accuracy": accuracy,
              "agreement": 0.98, "context": Context(cpu="Cortex-A72 (emulated ...)")}
    values.update(kwargs)
    return BenchResult(**values)


def test_emulated_row_keeps_accuracy_and_drops_latency():
    parity = Parity(model="m.tflite", output="probs", images=64, same_labels=64,
                    max_diff=0.0039, worst_face=3, tolerance=1 / 256, ran_on_arm="a",
                    ran_on_x86="x")
    row = emulated_row(_result(), "emulated-arm64:cortex-a72", parity)
    assert row.status is Status.OK and row.device == "emulated-arm64:cortex-a72"
    assert row.latency_ms is None and row.throughput_ips is None and row.peak_rss_mb is None
    assert row.accuracy.top1 == 0.5 and row.agreement == 0.98
    assert "emulated" in row.reason and "latency" in row.reason
    assert row.context.extra["arm64_vs_x86_labels"] == "64/64"
    diverged = emulated_row(_result(), "emulated-arm64:cortex-a72",
                            replace(parity, same_labels=60, max_diff=0.2))
    assert diverged.status is Status.FAILED
    assert "m.tflite output 'probs'" in diverged.reason and "60/64" in diverged.reason


def test_report_lists_rows_without_latency():
    from edgefer.bench.results import BenchRun
    from edgefer.report import markdown

    parity = Parity(model="m.tflite", output="probs", images=64, same_labels=64,
                    max_diff=0.0, worst_face=0, tolerance=1 / 256, ran_on_arm="", ran_on_x86="")
    row = emulated_row(_result(), "emulated-arm64:cortex-a72", parity)
    page = markdown(BenchRun(results=(row,), context=Context()))
    section = page[page.index("## Accuracy without latency"):page.index("## Every setting")]
    assert "| m | tflite | int8 | litert | emulated-arm64:cortex-a72 | 50.0 | 40.0 | 98.0 | 64/64" \
        in section
    assert "## Accuracy without latency" not in markdown(BenchRun(results=(_result(),),
                                                                  context=Context()))


def test_rows_get_their_own_models_parity():
    # m-int8.tflite and m-int8.onnx are both "m-int8" in bench's results, m.ncnn.param "m"
    models = [Path("a/m-int8.tflite"), Path("b/m-int8.onnx"), Path("c/m.ncnn.param")]
    parity = {name: Parity(model=name, output="o", images=8, same_labels=8, max_diff=diff,
                           worst_face=0, tolerance=0.01, ran_on_arm="", ran_on_x86="")
              for name, diff in (("m-int8.tflite", 0.0), ("m-int8.onnx", 0.007),
                                 ("m.ncnn.param", 1e-6))}
    results = [_result(model="m-int8", target="onnx"), _result(model="m-int8", target="tflite"),
               _result(model="m", target="ncnn")]
    rows = emulated_rows(results, models, parity, "emulated-arm64:cortex-a72")
    assert [r.context.extra["arm64_vs_x86_max_diff"] for r in rows] == ["0.007", "0", "1e-06"]


def _bench(*args):
    from click.testing import CliRunner

    from edgefer.cli import main

    return CliRunner().invoke(main, ["bench", *map(str, args)], catch_exceptions=False)


def test_on_armpi_options_checked_before_anything_runs(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    monkeypatch.setattr(ArmPi, "ensure", lambda self, log=None: pytest.fail("started"))
    bad_cpu = _bench(model, "--on", "armpi:max")
    assert bad_cpu.exit_code != 0 and "armpi:cortex-a72, armpi:cortex-a76" in bad_cpu.output
    # --data and --limit are what it measures with; other local options are still refused
    refused = _bench(model, "--on", "armpi", "--reference", model)
    assert refused.exit_code != 0 and "--reference" in refused.output
    monkeypatch.delenv("EDGEFER_FER2013", raising=False)
    monkeypatch.chdir(tmp_path)
    no_data = _bench(model, "--on", "armpi", "--data", tmp_path / "none")
    assert no_data.exit_code != 0 and "FER2013 not found" in no_data.output
    (tmp_path / "fer").mkdir()
    keras_folder = _bench(tmp_path, "--on", "armpi", "--data", tmp_path / "fer")
    assert keras_folder.exit_code != 0 and ".tflite, .onnx, .ncnn.param, .mnn" \
        in keras_folder.output


def test_main_job_gets_the_emulated_pis_rows_for_its_tflite_exports(monkeypatch, tmp_path):
    from edgefer.bench.results import BenchRun
    from edgefer.edge import device_bench
    from edgefer.report import markdown

    asked = {}

    def fake_armpi_run(models, target, bench, log):
        asked.update(models=models, cpu=target.cpu, limit=bench.limit)
        row = emulated_row(_result(model=models[0].stem), f"emulated-arm64:{target.cpu.value}",
                           None)
        return BenchRun(results=(row,), context=Context(), notes=("emulated note",))

    monkeypatch.setattr(device_bench, "_armpi_run", fake_armpi_run)
    x86 = BenchRun(results=(_result(model="m-int8"),), context=Context(), notes=("x86",))
    exports = [tmp_path / "m-int8.tflite", tmp_path / "m-int8.onnx", tmp_path / "m-fp32.xml"]
    run = device_bench.with_emulated_pi(x86, exports, "cortex-a76", tmp_path, 50)
    assert asked == {"models": [exports[0]], "cpu": QemuCpu.CORTEX_A76, "limit": 50}
    assert [r.device for r in run.results] == ["cpu", "emulated-arm64:cortex-a76"]
    assert run.notes == ("x86", "emulated note")
    page = markdown(run)
    assert "| m-int8 | tflite | int8 | litert | emulated-arm64:cortex-a76 |" in page
    with pytest.raises(device_bench.ConfigError, match="TFLite"):
        device_bench.with_emulated_pi(x86, exports[1:], "cortex-a72", tmp_path)


def test_main_job_checks_the_emulated_pi_before_exporting(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import edgefer.bench
    from edgefer.cli import main

    monkeypatch.setattr(edgefer.bench, "benchmark", lambda *a, **k: pytest.fail("ran"))
    monkeypatch.setattr("edgefer.datasets.default_data_path", lambda: None)
    result = CliRunner().invoke(main, ["benchmark", "--emulated-pi", "cortex-a72", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0 and "needs FER2013" in result.output
    bad = CliRunner().invoke(main, ["benchmark", "--emulated-pi", "max"])
    assert bad.exit_code == 2 and "cortex-a76" in bad.output


def test_armpi_target_follows_the_profile():
    assert armpi.parse_armpi_target("armpi").cpu is QemuCpu.CORTEX_A72
    assert armpi.parse_armpi_target("armpi", "rpi5").cpu is QemuCpu.CORTEX_A76
    assert armpi.parse_armpi_target("armpi:cortex-a72", "rpi5").cpu is QemuCpu.CORTEX_A72


# --- on the emulated arm64 device -----------------------------------------------------

@pytest.fixture(scope="session")
def pi() -> ArmPi:
    try:
        armpi.check_host()
    except EmulationError as exc:
        pytest.skip(f"no emulated arm64 device here: {exc}")
    try:
        armpi.check_host(build=True)
    except EmulationError as exc:
        options = ArmPiOptions()
        if not ArmPi(options).tarball.is_file() and not ArmPi(options).ready:
            pytest.skip(f"the arm64 rootfs cannot be built here: {exc}")
    return ArmPi().ensure(lambda msg: print(msg, file=sys.stderr))


@pytest.fixture(scope="session")
def fixed_faces(real_fer2013) -> np.ndarray:
    from edgefer.edge.arm_parity import fixed_faces

    return fixed_faces(real_fer2013, FACES)[0]


CALIBRATION = REPO / "calibration" / "fer2013-train-100-seed0.json"  # 100 faces: quick


@pytest.fixture(scope="session")
def shipped_exports(tmp_path_factory, real_fer2013) -> dict[tuple[str, str], Path]:
    """The shipped model's exports, made here (x86): fp32 and int8 TFLite (the shipped QAT
    one, and one calibrated after training) and ONNX, and fp32 ncnn and MNN where their
    engines are installed (edgefer makes no INT8 of either: formats.int8_unsupported)."""
    pytest.importorskip("tensorflow")
    from edgefer.engines import engine_installed
    from edgefer.export import ExportOptions, export_model, load_source
    from edgefer.shipped import SHIPPED_INT8, shipped_model

    out = tmp_path_factory.mktemp("shipped-exports")
    ways = [("tflite", "fp32", {}), ("onnx", "fp32", {}), ("onnx", "int8", {}),
            # calibrating a QAT model's float twin loses to its own ranges (its card), so
            # the x86 parity gate is off: these tests compare arm64 with x86, not with Keras
            ("tflite", "int8", {"int8_source": "calibrate", "min_agreement": 0.0})]
    ways += [(target, "fp32", {}) for target in ("ncnn", "mnn") if engine_installed(target)]
    loaded = load_source(shipped_model(), real_fer2013, CALIBRATION)
    found = {}
    for target, precision, options in ways:
        chosen = ExportOptions(target, precision, parity_images=32, calib_manifest=CALIBRATION,
                               **options)
        key = "int8-ptq" if options else precision
        found[(target, key)] = export_model(loaded, chosen, out, real_fer2013).path
    found[("tflite", "int8")] = shipped_model() / SHIPPED_INT8
    return found


def _assert_same(results):
    for parity in results:
        print(parity.describe())
    bad = [p.describe() for p in results if not p.ok]
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_tflite_exports_same_labels_on_arm64_and_report_rows(pi, shipped_exports,
                                                             real_fer2013):
    from edgefer.edge.arm_parity import emulated_bench

    models = [shipped_exports["tflite", "int8"], shipped_exports["tflite", "fp32"]]
    run, parities = emulated_bench(pi, models, real_fer2013, FACES)
    _assert_same(parities)
    assert [p.images for p in parities] == [FACES, FACES]
    assert all("XNNPACK" in p.ran_on_arm for p in parities)
    # the report rows: accuracy and agreement measured on arm64, no latency
    assert len(run.results) == 2
    for row in run.results:
        assert row.status is Status.OK, row.reason
        assert row.device == "emulated-arm64:cortex-a72"
        assert row.latency_ms is None and row.throughput_ips is None
        assert row.accuracy is not None and row.accuracy.images == FACES
        assert row.agreement is not None
        assert row.context.machine == "aarch64" and "emulated" in row.context.cpu
        assert row.context.extra["arm64_vs_x86_labels"] == f"{FACES}/{FACES}"
    assert any("latency left out" in note for note in run.notes)


# the exports checked by one parity call (one emulated process: its start costs minutes),
# each asserted by its own test below; (target, precision) -> what runs it there
OTHER_EXPORTS = {("onnx", "int8"): "ONNX Runtime", ("onnx", "fp32"): "ONNX Runtime",
                 ("tflite", "int8-ptq"): "XNNPACK", ("ncnn", "fp32"): "ncnn CPU",
                 ("mnn", "fp32"): "MNN CPU"}


@pytest.fixture(scope="session")
def other_parities(pi, shipped_exports, fixed_faces) -> dict[tuple[str, str], Parity]:
    """Every export but the TFLite ones of the bench test, on arm64 against x86."""
    from edgefer.edge.arm_parity import check_parity

    keys = [key for key in OTHER_EXPORTS if key in shipped_exports]
    found = check_parity(pi, [shipped_exports[key] for key in keys], fixed_faces)
    for parity in found:
        print(parity.describe())
    return dict(zip(keys, found, strict=True))


def _assert_export_same(other_parities, target: str, precision: str) -> None:
    parity = other_parities.get((target, precision))
    if parity is None:
        pytest.skip(f"no {target} {precision} export: its engine is not installed here "
                    f"(pip install -e '.[{target}]')")
    _assert_same([parity])
    assert parity.images == FACES
    assert OTHER_EXPORTS[target, precision] in parity.ran_on_arm, parity.ran_on_arm


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_onnx_exports_same_labels_on_arm64(other_parities, precision):
    _assert_export_same(other_parities, "onnx", precision)


@pytest.mark.slow
def test_calibrated_int8_tflite_same_labels_on_arm64(other_parities):
    _assert_export_same(other_parities, "tflite", "int8-ptq")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ncnn", "mnn"])
def test_ncnn_and_mnn_exports_same_labels_on_arm64(other_parities, target):
    _assert_export_same(other_parities, target, "fp32")


@pytest.mark.slow
def test_predict_json_is_identical_on_arm64(pi, tmp_path, fixed_faces):
    import cv2

    data = pytest.importorskip("skimage.data")
    cv2.imwrite(str(tmp_path / "astronaut.jpg"), np.ascontiguousarray(data.astronaut()[..., ::-1]))
    for i, face in enumerate(fixed_faces[:4]):
        cv2.imwrite(str(tmp_path / f"face{i}.png"), face)
    argv = ["-m", "edgefer", "predict", ".", "--json"]
    x86 = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    arm = pi.run([armpi.PYTHON, *argv], cwd="/work", timeout=900,
                 binds=[armpi.Bind(tmp_path, "/work")])
    assert x86.returncode == 0, x86.stderr
    assert arm.returncode == 0, arm.stderr
    lines = [json.loads(line) for line in x86.stdout.splitlines()]
    assert any(face["label"] == "happy" for line in lines for face in line.get("faces", []))
    assert arm.stdout == x86.stdout


@pytest.mark.slow
def test_bench_on_ssh_to_the_emulated_pi(pi, tmp_path, tiny_tflite):
    import shutil
    import socket

    if not (shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("needs OpenSSH's client: apt-get install -y openssh-client (.ci/run "
                    "installs it)")

    from edgefer.bench.results import BenchRun

    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host 127.0.0.1\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n")
    out = tmp_path / "pi.json"
    with armpi.sshd(pi, tmp_path / "sshd", port, (tmp_path / "client_key.pub").read_text()):
        done = subprocess.run(
            [sys.executable, "-m", "edgefer", "bench", str(tiny_tflite), "--on",
             f"ssh://root@127.0.0.1:{port}", "--profile", "rpi4", "--warmup", "1",
             "--min-runs", "3", "--min-time", "0", "--json", str(out)],
            capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "EDGEFER_SSH_CONFIG": str(config),
                 "EDGEFER_REMOTE_PYTHON": armpi.PYTHON})
    assert done.returncode == 0, done.stdout + done.stderr
    run = BenchRun.from_dict(json.loads(out.read_text()))
    assert run.results and {r.status for r in run.results} == {Status.OK}
    for result in run.results:
        assert result.device == f"ssh://127.0.0.1:{port}"
        assert result.context.machine == "aarch64"
        assert "emulated" in result.context.cpu and "Cortex-A72" in result.context.cpu
        assert "XNNPACK" in result.ran_on
