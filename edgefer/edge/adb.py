"""Android over adb: push a .tflite and TFLite's ``benchmark_model``, run, parse, clean up.

Pure parts (target parsing, ``adb devices`` parsing, command construction, output parsing)
are separate functions so they are tested without a phone; ``run_adb_bench`` glues them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from edgefer.artifacts import recorded_precision
from edgefer.bench.results import BenchResult, Context, LatencyStats, Status
from edgefer.edge.profiles import Delegate, DeviceProfile
from edgefer.errors import ConfigError, ModelError, RemoteError

REMOTE_DIR = "/data/local/tmp"
BENCHMARK_BINARY_ENV = "EDGEFER_BENCHMARK_MODEL"
INSTALL_ADB = ("install Android platform-tools (Debian/Ubuntu: apt-get install adb; "
               "or https://developer.android.com/tools/releases/platform-tools) "
               "and put adb on PATH")
GET_BENCHMARK_MODEL = ("download TFLite's prebuilt benchmark_model for android_aarch64 "
                       "(https://ai.google.dev/edge/litert/models/measurement) and pass its "
                       f"path with --benchmark-model or ${BENCHMARK_BINARY_ENV}, or put it on "
                       "PATH")


@dataclass(frozen=True)
class AdbTarget:
    serial: str | None = None  # None: the only device attached

    @property
    def name(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"


def parse_adb_target(text: str) -> AdbTarget:
    """``adb`` or ``adb:SERIAL`` (``adb:emulator-5554``, ``adb:192.168.1.7:5555``)."""
    if text == "adb":
        return AdbTarget()
    if not text.startswith("adb:"):
        raise ConfigError(f"not an adb target: {text!r} (use adb or adb:SERIAL)")
    serial = text[len("adb:"):]
    if not serial or any(c.isspace() for c in serial):
        raise ConfigError(f"bad adb serial in {text!r}; see `adb devices` for serials")
    return AdbTarget(serial)


# --- finding adb, the device and benchmark_model ----------------------------------

def find_adb(path: str | os.PathLike | None = None) -> Path:
    """The adb binary: ``path``, ``$ADB``, or adb on PATH."""
    given = path or os.environ.get("ADB")
    found = shutil.which(str(given)) if given else shutil.which("adb")
    if not found:
        where = f"{given} is not an executable" if given else "adb is not on PATH"
        raise RemoteError(f"{where}: {INSTALL_ADB}")
    return Path(found)


def find_benchmark_model(path: str | os.PathLike | None = None) -> Path:
    """The Android benchmark_model binary to push (a file on this machine)."""
    given = path or os.environ.get(BENCHMARK_BINARY_ENV)
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"benchmark_model not found at {given}: {GET_BENCHMARK_MODEL}")
        return Path(given)
    for name in ("benchmark_model", "android_aarch64_benchmark_model"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ConfigError(f"no benchmark_model binary: {GET_BENCHMARK_MODEL}")


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # device | unauthorized | offline | no permissions ...
    details: str = ""


def parse_devices(output: str) -> list[AdbDevice]:
    """The rows of ``adb devices -l``."""
    devices = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "daemon")):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        serial, rest = parts
        # "no permissions (user in plugdev group; ...)" is a two-word state
        if rest.startswith("no permissions"):
            state, details = "no permissions", rest[len("no permissions"):].strip()
        else:
            state, _, details = rest.partition(" ")
        devices.append(AdbDevice(serial, state, details.strip()))
    return devices


def pick_device(devices: Sequence[AdbDevice], target: AdbTarget) -> AdbDevice:
    """The device ``target`` names, ready to use, or a RemoteError that says what to do."""
    if target.serial:
        chosen = [d for d in devices if d.serial == target.serial]
        if not chosen:
            seen = ", ".join(d.serial for d in devices) or "none"
            raise RemoteError(f"no Android device {target.serial!r} attached (attached: {seen}); "
                              "check the cable, or `adb connect HOST:PORT` for Wi-Fi debugging")
    else:
        chosen = list(devices)
        if not chosen:
            raise RemoteError("no Android device attached: connect one with USB debugging on "
                              "(Settings > Developer options) and check `adb devices`")
        if len(chosen) > 1:
            raise RemoteError("several Android devices attached ("
                              + ", ".join(d.serial for d in chosen)
                              + "); pick one with --on adb:SERIAL")
    device = chosen[0]
    if device.state == "unauthorized":
        raise RemoteError(f"device {device.serial} has not authorized this computer: unlock it "
                          "and accept the 'Allow USB debugging?' prompt")
    if device.state == "no permissions":
        raise RemoteError(f"no permission to use device {device.serial} ({device.details}); "
                          "add a udev rule or run `adb kill-server; sudo adb start-server`")
    if device.state != "device":
        raise RemoteError(f"device {device.serial} is {device.state}; reconnect it and check "
                          "`adb devices`")
    return device


# --- commands -------------------------------------------------------------------

@dataclass(frozen=True)
class AdbBenchOptions:
    warmup_runs: int = 20
    num_runs: int = 100
    min_secs: float = 1.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.num_runs < 1:
            raise ConfigError("benchmark_model needs warmup_runs >= 0 and num_runs >= 1")


def adb_base(adb: str | os.PathLike, serial: str | None) -> list[str]:
    return [str(adb), *(["-s", serial] if serial else [])]


def remote_paths(model: Path) -> tuple[str, str]:
    """(remote model, remote binary) under /data/local/tmp; names are edgefer's own."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model.name)
    return f"{REMOTE_DIR}/edgefer-{safe}", f"{REMOTE_DIR}/edgefer-benchmark_model"


def benchmark_args(remote_model: str, profile: DeviceProfile,
                   options: AdbBenchOptions = AdbBenchOptions()) -> list[str]:
    """benchmark_model's flags for one profile."""
    return [
        f"--graph={remote_model}",
        f"--num_threads={profile.threads}",
        f"--use_xnnpack={_flag(profile.xnnpack and profile.delegate is Delegate.NONE)}",
        f"--use_gpu={_flag(profile.delegate is Delegate.GPU)}",
        f"--use_nnapi={_flag(profile.delegate is Delegate.NNAPI)}",
        f"--warmup_runs={options.warmup_runs}",
        f"--num_runs={options.num_runs}",
        f"--min_secs={options.min_secs:g}",
        "--report_peak_memory_footprint=true",
    ]


def _flag(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class AdbPlan:
    """Every adb command of one run, in order; cleanup always runs."""

    push: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    cleanup: tuple[str, ...]


def plan_commands(adb: str | os.PathLike, serial: str | None, model: Path, binary: Path,
                  profile: DeviceProfile,
                  options: AdbBenchOptions = AdbBenchOptions()) -> AdbPlan:
    base = adb_base(adb, serial)
    remote_model, remote_binary = remote_paths(model)
    return AdbPlan(
        push=(
            (*base, "push", str(model), remote_model),
            (*base, "push", str(binary), remote_binary),
            (*base, "shell", "chmod", "755", remote_binary),
        ),
        run=(*base, "shell", remote_binary, *benchmark_args(remote_model, profile, options)),
        cleanup=(*base, "shell", "rm", "-f", remote_model, remote_binary),
    )


# --- parsing benchmark_model's log ----------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PREFIX = re.compile(r"^(?:[A-Z]\s+[\w.-]+\s*:\s*|(?:INFO|WARNING|ERROR|VERBOSE):\s*)")
_KEYVAL = re.compile(rf"(\w+)=({_NUMBER})")


@dataclass(frozen=True)
class BenchmarkModelOutput:
    """What benchmark_model printed, in milliseconds and MB."""

    init_ms: float | None = None
    first_ms: float | None = None
    warmup_avg_ms: float | None = None
    avg_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    count: int = 0
    model_size_mb: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegate_nodes: str = ""  # "12/14" when a delegate took part of the graph
    fell_back: bool = False  # a delegate was asked for but ran nothing


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.strip()).strip()


def parse_benchmark_output(text: str) -> BenchmarkModelOutput:
    """Parse benchmark_model's log (plain, ``INFO:``-prefixed or logcat-prefixed).

    The last ``count=`` line is the measured run (the first is the warm-up); its times are
    in microseconds. Missing lines leave fields None; a log with no timings at all is a
    RemoteError carrying the log's tail, since that means benchmark_model failed.
    """
    values: dict = {}
    stats: dict[str, float] = {}
    for raw in text.splitlines():
        line = _strip(raw)
        if line.startswith("count="):
            pairs = {k: float(v) for k, v in _KEYVAL.findall(line)}
            if pairs:
                stats = pairs
        elif m := re.search(rf"input model file size \(MB\):\s*({_NUMBER})", line):
            values["model_size_mb"] = float(m[1])
        elif m := re.search(rf"Initialized session in\s*({_NUMBER})\s*ms", line):
            values.setdefault("init_ms", float(m[1]))
        elif line.startswith("Inference timings in us:"):
            fields = dict(re.findall(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUMBER})",
                                     line[len("Inference timings in us:"):]))
            fields = {k.strip(): float(v) / 1000.0 for k, v in fields.items()}
            if "Init" in fields:
                values["init_ms"] = fields["Init"]
            if "First inference" in fields:
                values["first_ms"] = fields["First inference"]
            if "Warmup (avg)" in fields:
                values["warmup_avg_ms"] = fields["Warmup (avg)"]
            if "Inference (avg)" in fields:
                values["avg_ms"] = fields["Inference (avg)"]
        elif m := re.search(rf"memory footprint.*\(MB\):\s*init=({_NUMBER})\s+"
                            rf"overall=({_NUMBER})", line, re.IGNORECASE):
            values["memory_init_mb"], values["memory_overall_mb"] = float(m[1]), float(m[2])
        elif m := re.search(rf"peak memory footprint \(MB\) via periodic monitoring:\s*"
                            rf"({_NUMBER})", line, re.IGNORECASE):
            values["peak_memory_mb"] = float(m[1])
        elif m := re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate", line):
            values["delegate_nodes"] = f"{m[1]}/{m[2]}"
        elif "will not be executed by the delegate" in line or "Failed to apply" in line:
            values["fell_back"] = True
    if stats:
        values.update(count=int(stats.get("count", 0)))
        for key, name in (("avg", "avg_ms"), ("std", "std_ms"), ("min", "min_ms"),
                          ("max", "max_ms"), ("median", "median_ms"), ("p5", "p5_ms"),
                          ("p95", "p95_ms")):
            if key in stats and (name != "avg_ms" or "avg_ms" not in values):
                values[name] = stats[key] / 1000.0
        if "first_ms" not in values and "first" in stats:
            values["first_ms"] = stats["first"] / 1000.0
    if values.get("avg_ms") is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RemoteError(f"benchmark_model printed no timings; its output ended with:\n{tail}")
    return BenchmarkModelOutput(**values)


# z-scores of the normal distribution's 90th and 99th percentiles
_Z90, _Z99 = 1.2816, 2.3263


def latency_from_output(out: BenchmarkModelOutput) -> LatencyStats:
    """LatencyStats from benchmark_model's summary.

    benchmark_model reports avg/std/min/max (newer builds add median and p95), not the
    p90/p99 edgefer reports; missing percentiles are estimated as avg + z*std, clipped to
    the observed [min, max].
    """
    avg = out.avg_ms
    assert avg is not None
    std = out.std_ms or 0.0
    lo = out.min_ms if out.min_ms is not None else avg
    hi = out.max_ms if out.max_ms is not None else avg

    def clip(v: float) -> float:
        return min(max(v, lo), hi)

    p50 = out.median_ms if out.median_ms is not None else clip(avg)
    p90 = clip(avg + _Z90 * std)
    if out.p95_ms is not None:  # a real p95 bounds the estimated p90
        p90 = min(max(p90, p50), out.p95_ms)
    p99 = max(clip(avg + _Z99 * std), p90)
    return LatencyStats(p50=p50, p90=p90, p99=p99, mean=avg, std=std, min=lo, max=hi,
                        runs=out.count, load_ms=out.init_ms or 0.0,
                        first_ms=out.first_ms or 0.0, noisy=bool(p90 > 1.5 * p50))


def to_result(out: BenchmarkModelOutput, model: Path, profile: DeviceProfile,
              target: AdbTarget, context: Context | None = None,
              precision: str = "") -> BenchResult:
    """One BenchResult in edgefer's schema (engine ``benchmark_model``)."""
    latency = latency_from_output(out)
    delegate = profile.delegate.value if profile.delegate is not Delegate.NONE else (
        "XNNPACK" if profile.xnnpack else "builtin kernels")
    ran_on = f"benchmark_model {delegate}, {profile.threads} threads"
    if out.delegate_nodes:
        ran_on += f", {out.delegate_nodes} nodes delegated"
    status, reason = Status.OK, ""
    if out.fell_back and profile.delegate is not Delegate.NONE:
        status = Status.FALLBACK
        reason = f"the {profile.delegate.value} delegate declined (part of) the graph; CPU ran it"
    if out.median_ms is None:
        note = "p50/p90/p99 estimated from benchmark_model's avg/std (it reports no percentiles)"
    else:
        note = "p90/p99 estimated from benchmark_model's avg/std, p50 is its median"
    reason = f"{reason}; {note}" if reason else note
    size = model.stat().st_size if model.exists() else 0
    throughput = 1000.0 * profile.batch / latency.mean if latency.mean > 0 else None
    peak = out.peak_memory_mb if out.peak_memory_mb is not None else out.memory_overall_mb
    return BenchResult(
        model=str(model), target="tflite",
        precision=precision or recorded_precision(model) or "unknown",
        engine="benchmark_model", device=target.name, threads=profile.threads,
        batch=profile.batch, status=status, reason=reason, latency_ms=latency,
        throughput_ips=throughput, peak_rss_mb=peak, size_bytes=size, ran_on=ran_on,
        context=context)


# --- running --------------------------------------------------------------------

def _run(cmd: Sequence[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"timed out after {timeout:g}s: {' '.join(cmd)}") from exc
    except OSError as exc:
        raise RemoteError(f"cannot run {cmd[0]}: {exc}; {INSTALL_ADB}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RemoteError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}): "
                          + " | ".join(detail))
    return proc


def device_context(adb: Path, serial: str) -> Context:
    """The phone's model, SoC, cores and Android version (``getprop``)."""
    base = adb_base(adb, serial)
    props = _run([*base, "shell", "getprop"], 30, check=False).stdout
    prop = dict(re.findall(r"\[([^\]]+)\]:\s*\[([^\]]*)\]", props))
    cores = _run([*base, "shell", "cat", "/sys/devices/system/cpu/present"], 30,
                 check=False).stdout.strip()
    count = 0
    if m := re.fullmatch(r"(\d+)-(\d+)", cores):
        count = int(m[2]) - int(m[1]) + 1
    model = " ".join(p for p in (prop.get("ro.product.manufacturer", ""),
                                 prop.get("ro.product.model", "")) if p)
    extra = {k: v for k, v in (("soc", prop.get("ro.soc.model", "")),
                               ("board", prop.get("ro.board.platform", "")),
                               ("abi", prop.get("ro.product.cpu.abi", ""))) if v}
    return Context(cpu=prop.get("ro.soc.model") or prop.get("ro.board.platform", ""),
                   cores=count, os=f"Android {prop.get('ro.build.version.release', '?')}",
                   machine=prop.get("ro.product.cpu.abi", ""), device_model=model, extra=extra)


def run_adb_bench(model: str | os.PathLike, target: AdbTarget, profile: DeviceProfile,
                  benchmark_model: str | os.PathLike | None = None,
                  adb: str | os.PathLike | None = None,
                  options: AdbBenchOptions = AdbBenchOptions()) -> BenchResult:
    """Benchmark a .tflite on an Android device; the pushed files are removed afterwards."""
    model = Path(model)
    if model.suffix.lower() != ".tflite":
        raise ConfigError(f"{model}: --on adb runs TFLite's benchmark_model, which needs a "
                          ".tflite model")
    if not model.is_file():
        raise ModelError(f"model not found: {model}")
    adb_path = find_adb(adb)
    binary = find_benchmark_model(benchmark_model)
    devices = parse_devices(_run([str(adb_path), "devices", "-l"], 60).stdout)
    device = pick_device(devices, target)
    target = AdbTarget(device.serial)
    plan = plan_commands(adb_path, device.serial, model, binary, profile, options)
    context = device_context(adb_path, device.serial)
    try:
        for cmd in plan.push:
            _run(cmd, 300)
        proc = _run(plan.run, options.timeout_s, check=False)
    finally:
        with suppress(RemoteError):
            _run(plan.cleanup, 60, check=False)
    output = parse_benchmark_output(proc.stdout + "\n" + proc.stderr)
    return to_result(output, model, profile, target, context)
