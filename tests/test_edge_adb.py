"""``edgefer bench --on adb``: command construction, benchmark_model's output, and the errors
for a missing adb or device. No phone needed: a fake ``adb`` script stands in for one."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from edgefer.bench.results import Status
from edgefer.edge.adb import (
    AdbBenchOptions,
    AdbDevice,
    AdbTarget,
    benchmark_args,
    find_adb,
    find_benchmark_model,
    latency_from_output,
    parse_adb_target,
    parse_benchmark_output,
    parse_devices,
    pick_device,
    plan_commands,
    run_adb_bench,
)
from edgefer.edge.profiles import DeviceProfile, get_profile
from edgefer.errors import ConfigError, RemoteError

# benchmark_model's log as TFLite 2.x prints it (plain stdout), with the memory lines that
# --report_peak_memory_footprint=true adds
OUTPUT_PLAIN = """\
STARTING!
Log parameter values verbosely: [0]
Min num runs: [50]
Num threads: [4]
Min warmup runs: [5]
Graph: [/data/local/tmp/edgefer-model.tflite]
Report the peak memory footprint: [1]
#threads used for CPU inference: [4]
Use xnnpack: [1]
Loaded model /data/local/tmp/edgefer-model.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
XNNPACK delegate created.
Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the \
delegate.
The input model file size (MB): 1.23456
Initialized session in 4.3ms.
Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if \
exceeding 150 seconds.
count=204 first=2900 curr=2421 min=2398 max=3211 avg=2500.5 std=95

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if \
exceeding 150 seconds.
count=408 first=2460 curr=2433 min=2390 max=2870 avg=2450.1 std=40

Inference timings in us: Init: 4300, First inference: 2900, Warmup (avg): 2500.5, \
Inference (avg): 2450.1
Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information \
at your discretion.
Memory footprint delta from the start of the tool (MB): init=3.2 overall=6.5
Overall peak memory footprint (MB) via periodic monitoring: 9.1
Memory status at the end of exeution:
- VmRSS              : 21 MB
"""

# newer builds: INFO: prefixes, percentiles on the count= lines, scientific notation
OUTPUT_NEWER = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgefer-model.tflite]
INFO: Loaded model /data/local/tmp/edgefer-model.tflite
INFO: The input model file size (MB): 67.3128
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if \
exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if \
exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 \
p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, \
Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at \
your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# read from logcat (adb logcat -s tflite), older "Peak memory footprint" wording, GPU delegate
OUTPUT_LOGCAT_GPU = """\
I tflite  : Loaded model /data/local/tmp/edgefer-model.tflite
I tflite  : Created TensorFlow Lite delegate for GPU.
I tflite  : Replacing 60 out of 64 node(s) with delegate (TfLiteGpuDelegateV2) node, \
yielding 2 partitions.
I tflite  : Initialized session in 92.318ms.
I tflite  : count=11 first=187533 curr=140000 min=139000 max=187533 avg=211669 std=14000
I tflite  : count=50 first=146000 curr=145000 min=144000 max=149000 avg=145528 std=900
I tflite  : Inference timings in us: Init: 92318, First inference: 187533, \
Warmup (avg): 211669, Inference (avg): 145528
I tflite  : Peak memory footprint (MB): init=4.92969 overall=138.809
"""


def test_parse_plain_output():
    out = parse_benchmark_output(OUTPUT_PLAIN)
    assert out.model_size_mb == pytest.approx(1.23456)
    assert out.init_ms == pytest.approx(4.3)
    assert out.first_ms == pytest.approx(2.9)
    assert out.warmup_avg_ms == pytest.approx(2.5005)
    assert out.avg_ms == pytest.approx(2.4501)
    # the measured run, not the warm-up
    assert out.count == 408
    assert out.std_ms == pytest.approx(0.040)
    assert (out.min_ms, out.max_ms) == (pytest.approx(2.39), pytest.approx(2.87))
    assert out.memory_init_mb == pytest.approx(3.2)
    assert out.memory_overall_mb == pytest.approx(6.5)
    assert out.peak_memory_mb == pytest.approx(9.1)
    assert out.median_ms is None


def test_parse_newer_output_with_percentiles():
    out = parse_benchmark_output(OUTPUT_NEWER)
    assert out.avg_ms == pytest.approx(1240.27)
    assert out.count == 50
    assert out.median_ms == pytest.approx(1239.807)
    assert out.p95_ms == pytest.approx(1247.415)
    assert out.init_ms == pytest.approx(5.579)
    assert out.memory_overall_mb == pytest.approx(109.832)
    assert out.peak_memory_mb is None
    stats = latency_from_output(out)
    assert stats.p50 == pytest.approx(1239.807)
    assert stats.p50 <= stats.p90 <= 1247.415 <= stats.max
    assert stats.p90 <= stats.p99 <= stats.max


def test_parse_logcat_output_with_gpu_delegate():
    out = parse_benchmark_output(OUTPUT_LOGCAT_GPU)
    assert out.avg_ms == pytest.approx(145.528)
    assert out.count == 50
    assert out.init_ms == pytest.approx(92.318)
    assert out.memory_overall_mb == pytest.approx(138.809)
    assert out.delegate_nodes == "60/64"


def test_output_without_timings_is_an_error():
    log = "STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\nAborted"
    with pytest.raises(RemoteError, match=r"(?s)printed no timings.*Could not open"):
        parse_benchmark_output(log)


def test_latency_estimates_stay_inside_the_observed_range():
    stats = latency_from_output(parse_benchmark_output(OUTPUT_PLAIN))
    assert stats.mean == pytest.approx(2.4501)
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p99 <= stats.max
    assert stats.p90 == pytest.approx(2.4501 + 1.2816 * 0.040)
    assert stats.runs == 408 and stats.load_ms == pytest.approx(4.3)


def test_to_result_schema(tmp_path):
    from edgefer.edge.adb import to_result

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x" * 1000)
    result = to_result(parse_benchmark_output(OUTPUT_PLAIN), model, get_profile(
        "android-midrange"), AdbTarget("R58M123"), precision="int8")
    assert result.engine == "benchmark_model" and result.device == "adb:R58M123"
    assert result.target == "tflite" and result.precision == "int8"
    assert result.threads == 4 and result.batch == 1
    assert result.status is Status.OK
    assert result.peak_rss_mb == pytest.approx(9.1)
    assert result.size_bytes == 1000
    assert result.throughput_ips == pytest.approx(1000 / 2.4501)
    assert "estimated" in result.reason
    assert "XNNPACK" in result.ran_on


def test_gpu_fallback_is_reported(tmp_path):
    from edgefer.edge.adb import to_result

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    log = OUTPUT_PLAIN + "ERROR: Failed to apply GPU delegate.\n"
    result = to_result(parse_benchmark_output(log), model, get_profile("android-flagship"),
                       AdbTarget("X"), precision="fp16")
    assert result.status is Status.FALLBACK


@pytest.mark.parametrize(("name", "threads", "xnnpack", "gpu", "nnapi"), [
    ("android-midrange", 4, "true", "false", "false"),
    ("android-flagship", 4, "false", "true", "false"),
    ("android-nnapi", 4, "false", "false", "true"),
    ("android-low", 2, "true", "false", "false"),
])
def test_benchmark_args_per_profile(name, threads, xnnpack, gpu, nnapi):
    args = benchmark_args("/data/local/tmp/edgefer-m.tflite", get_profile(name),
                          AdbBenchOptions(warmup_runs=7, num_runs=99))
    assert args == [
        "--graph=/data/local/tmp/edgefer-m.tflite",
        f"--num_threads={threads}",
        f"--use_xnnpack={xnnpack}",
        f"--use_gpu={gpu}",
        f"--use_nnapi={nnapi}",
        "--warmup_runs=7",
        "--num_runs=99",
        "--min_secs=1",
        "--report_peak_memory_footprint=true",
    ]


def test_xnnpack_off():
    args = benchmark_args("m", DeviceProfile("cpu-only", threads=1, xnnpack=False))
    assert "--use_xnnpack=false" in args and "--num_threads=1" in args


def test_plan_commands(tmp_path):
    plan = plan_commands("/sdk/adb", "emulator-5554", Path("/x/my model.tflite"),
                         Path("/bin/benchmark_model"), get_profile("android-midrange"))
    assert plan.push[0] == ("/sdk/adb", "-s", "emulator-5554", "push", "/x/my model.tflite",
                            "/data/local/tmp/edgefer-my_model.tflite")
    assert plan.push[1][-2:] == ("/bin/benchmark_model", "/data/local/tmp/edgefer-benchmark_model")
    assert plan.push[2][-3:] == ("chmod", "755", "/data/local/tmp/edgefer-benchmark_model")
    assert plan.run[:5] == ("/sdk/adb", "-s", "emulator-5554", "shell",
                            "/data/local/tmp/edgefer-benchmark_model")
    assert "--graph=/data/local/tmp/edgefer-my_model.tflite" in plan.run
    assert plan.cleanup[-4:] == ("rm", "-f", "/data/local/tmp/edgefer-my_model.tflite",
                                 "/data/local/tmp/edgefer-benchmark_model")
    no_serial = plan_commands("adb", None, Path("m.tflite"), Path("b"), get_profile("rpi4"))
    assert no_serial.run[:2] == ("adb", "shell")


def test_parse_targets():
    assert parse_adb_target("adb") == AdbTarget(None)
    assert parse_adb_target("adb:R58M123") == AdbTarget("R58M123")
    assert parse_adb_target("adb:192.168.1.7:5555").serial == "192.168.1.7:5555"
    assert AdbTarget("X").name == "adb:X"
    for bad in ("adb:", "adb: x", "android", "adb:a b"):
        with pytest.raises(ConfigError):
            parse_adb_target(bad)


DEVICES = """\
* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
R58M123ABC             device usb:1-1 product:a52q model:SM_A525F device:a52q transport_id:1
emulator-5554          unauthorized transport_id:2
0123456789             offline
ZY22                   no permissions (user in plugdev group; are your udev rules wrong?)

"""


def test_parse_devices():
    devices = parse_devices(DEVICES)
    assert [d.serial for d in devices] == ["R58M123ABC", "emulator-5554", "0123456789", "ZY22"]
    assert [d.state for d in devices] == ["device", "unauthorized", "offline", "no permissions"]
    assert "model:SM_A525F" in devices[0].details


def test_pick_device_errors():
    devices = parse_devices(DEVICES)
    assert pick_device(devices, AdbTarget("R58M123ABC")).serial == "R58M123ABC"
    with pytest.raises(RemoteError, match=r"no Android device attached"):
        pick_device([], AdbTarget())
    with pytest.raises(RemoteError, match=r"no Android device 'NOPE'.*attached: R58M123ABC"):
        pick_device(devices, AdbTarget("NOPE"))
    with pytest.raises(RemoteError, match=r"several Android devices.*adb:SERIAL"):
        pick_device(devices, AdbTarget())
    with pytest.raises(RemoteError, match=r"Allow USB debugging"):
        pick_device(devices, AdbTarget("emulator-5554"))
    with pytest.raises(RemoteError, match=r"offline"):
        pick_device(devices, AdbTarget("0123456789"))
    with pytest.raises(RemoteError, match=r"udev"):
        pick_device(devices, AdbTarget("ZY22"))
    assert pick_device([AdbDevice("only", "device")], AdbTarget()).serial == "only"


def test_adb_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(RemoteError, match=r"adb is not on PATH.*platform-tools"):
        find_adb()
    with pytest.raises(RemoteError, match=r"not an executable"):
        find_adb(tmp_path / "adb")


def test_benchmark_model_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("EDGEFER_BENCHMARK_MODEL", raising=False)
    with pytest.raises(ConfigError, match=r"no benchmark_model binary.*--benchmark-model"):
        find_benchmark_model()
    with pytest.raises(ConfigError, match=r"not found at"):
        find_benchmark_model(tmp_path / "nope")
    binary = tmp_path / "benchmark_model"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_benchmark_model() == binary


# --- the whole flow against a fake adb ---------------------------------------------------

def fake_adb(folder: Path, devices: str, bench_output: str, bench_rc: int = 0) -> Path:
    """An ``adb`` that logs its argv and answers like a phone would."""
    (folder / "devices.txt").write_text(devices)
    (folder / "bench.txt").write_text(bench_output)
    script = folder / "adb"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {shlex.quote(str(folder / "calls.log"))}
[ "$1" = "-s" ] && shift 2
case "$1" in
  devices) cat {shlex.quote(str(folder / "devices.txt"))} ;;
  push) echo "$2: 1 file pushed." ;;
  shell)
    case "$2" in
      getprop) printf '[ro.product.manufacturer]: [Google]\\n[ro.product.model]: [Pixel 7]\\n'
               printf '[ro.soc.model]: [GS201]\\n[ro.build.version.release]: [14]\\n' ;;
      cat) echo 0-7 ;;
      */edgefer-benchmark_model) cat {shlex.quote(str(folder / "bench.txt"))}; \
exit {bench_rc} ;;
    esac ;;
esac
""")
    script.chmod(0o755)
    return script


def _model_and_binary(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 64)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\0")
    return model, binary


def test_run_adb_bench_with_fake_device(tmp_path):
    adb = fake_adb(tmp_path, "List of devices attached\nR58M123ABC\tdevice\n\n", OUTPUT_PLAIN)
    model, binary = _model_and_binary(tmp_path)
    result = run_adb_bench(model, AdbTarget(), get_profile("android-midrange"),
                           benchmark_model=binary, adb=adb)
    assert result.device == "adb:R58M123ABC"
    assert result.latency_ms.mean == pytest.approx(2.4501)
    assert result.context.device_model == "Google Pixel 7"
    assert result.context.cores == 8 and result.context.os == "Android 14"
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "devices -l"
    assert "push" in calls[-5] and "push" in calls[-4] and "chmod" in calls[-3]
    assert "--num_threads=4" in calls[-2] and "--use_xnnpack=true" in calls[-2]
    assert calls[-1].endswith("rm -f /data/local/tmp/edgefer-m.tflite "
                              "/data/local/tmp/edgefer-benchmark_model")


def test_run_adb_bench_cleans_up_when_benchmark_model_fails(tmp_path):
    adb = fake_adb(tmp_path, "List of devices attached\nX1\tdevice\n",
                   "ERROR: Failed to allocate tensors!\n", bench_rc=1)
    model, binary = _model_and_binary(tmp_path)
    with pytest.raises(RemoteError, match=r"Failed to allocate"):
        run_adb_bench(model, AdbTarget("X1"), get_profile("android-midrange"),
                      benchmark_model=binary, adb=adb)
    assert "rm -f" in (tmp_path / "calls.log").read_text().splitlines()[-1]


def test_run_adb_bench_no_device(tmp_path):
    adb = fake_adb(tmp_path, "List of devices attached\n\n", OUTPUT_PLAIN)
    model, binary = _model_and_binary(tmp_path)
    with pytest.raises(RemoteError, match=r"no Android device attached"):
        run_adb_bench(model, AdbTarget(), get_profile("android-midrange"),
                      benchmark_model=binary, adb=adb)
    assert "push" not in (tmp_path / "calls.log").read_text()


def test_run_adb_bench_needs_tflite(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"\.tflite"):
        run_adb_bench(onnx, AdbTarget(), get_profile("android-midrange"))


def test_no_adb_on_path_in_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    model, binary = _model_and_binary(tmp_path)
    with pytest.raises(RemoteError, match=r"adb is not on PATH"):
        run_adb_bench(model, AdbTarget(), get_profile("android-midrange"),
                      benchmark_model=binary)
    assert os.environ["PATH"] == str(tmp_path)
