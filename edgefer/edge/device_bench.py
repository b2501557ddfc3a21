"""``edgefer bench --on TARGET``: bench's options mapped onto a remote or Android run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edgefer.bench.results import BenchRun
from edgefer.edge.adb import AdbBenchOptions, AdbTarget, parse_adb_target, run_adb_bench
from edgefer.edge.armpi import ArmPiTarget, parse_armpi_target
from edgefer.edge.profiles import DeviceProfile, get_profile
from edgefer.edge.ssh import SshOptions, SshTarget, parse_ssh_target, remote_bench
from edgefer.errors import ConfigError

DEFAULT_ANDROID_PROFILE = "android-midrange"
ARMPI_FACES = 200  # FER2013 faces --on armpi runs by default (emulation is slow)


def parse_target(text: str, profile: str | None = None) -> SshTarget | AdbTarget | ArmPiTarget:
    """``ssh://user@host[:port]``, ``adb``, ``adb:SERIAL`` or ``armpi[:CPU]``."""
    text = text.strip()
    if text.startswith("ssh://"):
        return parse_ssh_target(text)
    if text == "adb" or text.startswith("adb:"):
        return parse_adb_target(text)
    if text == "armpi" or text.startswith("armpi:"):
        return parse_armpi_target(text, profile)
    raise ConfigError(f"unknown device {text!r}: use ssh://user@host[:port], adb, "
                      "adb:SERIAL or armpi (an emulated Raspberry Pi)")


@dataclass(frozen=True)
class DeviceBench:
    """What to measure on the device (bench's own options, as the user gave them)."""

    threads: str | None = None  # comma list; None: the profile's, else bench's default
    batches: str | None = None  # comma list; None: the profile's batch, else bench's default
    device: str = "cpu"
    warmup: int = 10
    min_runs: int = 50
    min_time_s: float = 1.0
    remote_python: str | None = None
    benchmark_model: Path | None = None
    data: Path | None = None  # FER2013, for --on armpi's accuracy and arm64-vs-x86 check
    limit: int | None = None  # --on armpi: faces (default ARMPI_FACES)

    def __post_init__(self) -> None:
        """Checked here, before anything is sent to the device."""
        from edgefer.bench.measure import MeasureOptions
        from edgefer.bench.runner import parse_list

        if self.threads is not None:
            parse_list(self.threads, "threads")
        if self.batches is not None:
            parse_list(self.batches, "batch sizes")
        MeasureOptions(warmup=self.warmup, min_runs=self.min_runs, min_time_s=self.min_time_s)


def remote_bench_args(profile: DeviceProfile | None, bench: DeviceBench) -> list[str]:
    """The ``edgefer bench`` options run on an SSH device."""
    threads = bench.threads or (str(profile.threads) if profile else None)
    batches = bench.batches or (str(profile.batch) if profile else None)
    args = ["--device", bench.device, "--warmup", str(bench.warmup),
            "--min-runs", str(bench.min_runs), "--min-time", f"{bench.min_time_s:g}"]
    if threads:
        args += ["--threads", threads]
    if batches:
        args += ["--batch", batches]
    return args


def bench_on_device(models: Sequence[str | os.PathLike], target: str,
                    profile: str | None, bench: DeviceBench,
                    log: Callable[[str], None] | None = None) -> BenchRun:
    """Benchmark ``models`` on ``target`` and return one BenchRun for the local report."""
    if not models:
        raise ConfigError("--on needs the MODEL files to send to the device")
    where = parse_target(target, profile)
    chosen = get_profile(profile) if profile else None
    if isinstance(where, ArmPiTarget):
        return _armpi_run(models, where, bench, log)
    if isinstance(where, SshTarget):
        options = SshOptions(python=bench.remote_python) if bench.remote_python else \
            SshOptions()
        return remote_bench(models, where, remote_bench_args(chosen, bench), options, log)
    return _adb_run(models, where, chosen or get_profile(DEFAULT_ANDROID_PROFILE), bench, log)


def _armpi_run(models: Sequence[str | os.PathLike], target: ArmPiTarget, bench: DeviceBench,
               log: Callable[[str], None] | None) -> BenchRun:
    """The models on the emulated Pi: accuracy, agreement and arm64-vs-x86 parity on fixed
    faces; no latency (an emulated one is no Pi's)."""
    from edgefer.edge.arm_parity import check_models, emulated_bench
    from edgefer.edge.armpi import ArmPi, ArmPiOptions
    from edgefer.errors import DataError

    say = log or (lambda _msg: None)
    if bench.data is None:
        raise ConfigError("--on armpi compares answers, not speed: give FER2013 with --data "
                          "(or $EDGEFER_FER2013)")
    if not Path(bench.data).exists():
        raise DataError(f"FER2013 not found at {bench.data}")
    if bench.limit is not None and bench.limit < 1:
        raise ConfigError(f"limit must be at least 1, got {bench.limit}")
    paths = check_models(models)  # before minutes of building the rootfs
    pi = ArmPi(ArmPiOptions(cpu=target.cpu)).ensure(say)
    run, parities = emulated_bench(pi, paths, Path(bench.data), bench.limit or ARMPI_FACES,
                                   say)
    for parity in parities:
        say(parity.describe())
    return run


# the exports the emulated Pi runs beside the main job: the formats a Pi app uses
EMULATED_FORMATS = ("tflite",)


def check_emulated_pi(data: Path | None) -> None:
    """What the emulated Pi's rows need, checked before the main job's long run."""
    from edgefer.edge.armpi import check_host

    if data is None:
        raise ConfigError("the emulated Pi compares answers, not speed: it needs FER2013 "
                          "(--data or $EDGEFER_FER2013)")
    check_host()


def with_emulated_pi(run: BenchRun, models: Sequence[str | os.PathLike], cpu: str,
                     data: Path | None, limit: int | None = None,
                     log: Callable[[str], None] | None = None) -> BenchRun:
    """``run`` with rows for the TFLite files of ``models`` run on the emulated Pi
    (``cpu``: cortex-a72 or cortex-a76): accuracy, agreement and arm64-vs-x86 parity;
    latency left out. The rows and their note are appended to ``run``'s own."""
    from edgefer.formats import file_format_of

    chosen = [Path(m) for m in models
              if getattr(file_format_of(Path(m)), "name", None) in EMULATED_FORMATS]
    if not chosen:
        raise ConfigError("the emulated Pi runs TFLite files, and there are none to run")
    target = parse_armpi_target(f"armpi:{cpu}")
    emulated = _armpi_run(chosen, target, DeviceBench(data=data, limit=limit), log)
    return replace(run, results=(*run.results, *emulated.results),
                   notes=(*run.notes, *emulated.notes))


def _adb_run(models: Sequence[str | os.PathLike], target: AdbTarget, profile: DeviceProfile,
             bench: DeviceBench, log: Callable[[str], None] | None) -> BenchRun:
    from edgefer.bench.runner import parse_list

    say = log or (lambda _msg: None)
    threads = parse_list(bench.threads, "threads") if bench.threads else (profile.threads,)
    options = AdbBenchOptions(warmup_runs=bench.warmup, num_runs=bench.min_runs,
                              min_secs=bench.min_time_s)
    results = []
    for model in models:
        for count in threads:
            say(f"benchmark_model on {target.name}: {Path(model).name}, {count} threads, "
                f"{profile.name}")
            results.append(run_adb_bench(model, target, replace(profile, threads=count),
                                         bench.benchmark_model, options=options))
    notes = [f"measured on {results[0].device} with TFLite's benchmark_model "
             f"(profile {profile.name}, delegate {profile.delegate.value})"]
    if bench.batches not in (None, "1"):
        notes.append("benchmark_model runs the model's own batch size; --batch is ignored")
    return BenchRun(results=tuple(results), context=results[0].context, notes=tuple(notes))
