"""``edgefer bench --on TARGET``: bench's options mapped onto a remote or Android run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edgefer.bench.results import BenchRun
from edgefer.edge.adb import AdbBenchOptions, AdbTarget, parse_adb_target, run_adb_bench
from edgefer.edge.profiles import DeviceProfile, get_profile
from edgefer.edge.ssh import SshOptions, SshTarget, parse_ssh_target, remote_bench
from edgefer.errors import ConfigError

DEFAULT_ANDROID_PROFILE = "android-midrange"


def parse_target(text: str) -> SshTarget | AdbTarget:
    """``ssh://user@host[:port]``, ``adb`` or ``adb:SERIAL``."""
    text = text.strip()
    if text.startswith("ssh://"):
        return parse_ssh_target(text)
    if text == "adb" or text.startswith("adb:"):
        return parse_adb_target(text)
    raise ConfigError(f"unknown device {text!r}: use ssh://user@host[:port], adb or "
                      "adb:SERIAL")


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
    where = parse_target(target)
    chosen = get_profile(profile) if profile else None
    if isinstance(where, SshTarget):
        options = SshOptions(python=bench.remote_python) if bench.remote_python else \
            SshOptions()
        return remote_bench(models, where, remote_bench_args(chosen, bench), options, log)
    return _adb_run(models, where, chosen or get_profile(DEFAULT_ANDROID_PROFILE), bench, log)


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
