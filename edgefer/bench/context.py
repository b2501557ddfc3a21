"""The machine and software a benchmark ran on, recorded with every result."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from edgefer import __version__
from edgefer.bench.results import Context
from edgefer.engines import ENGINES

# distribution names whose versions matter for the numbers, per engine (edgefer.engines)
ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    **{engine.name: engine.packages for engine in ENGINES}, "numpy": ("numpy",)}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def engine_versions() -> dict[str, str]:
    """Installed versions of every package that can run a model, by distribution name."""
    found: dict[str, str] = {}
    for names in ENGINE_PACKAGES.values():
        for name in names:
            version = package_version(name)
            if version:
                found[name] = version
    return found


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 and ARM forms), else platform's."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    keys = ("model name", "hardware", "processor", "cpu model")
    for key in keys:
        for line in cpuinfo.splitlines():
            name, _, value = line.partition(":")
            value = value.strip()
            # ARM's "processor : 0" is an index, not a name
            if name.strip().lower() == key and value and not value.isdigit():
                return value
    if platform.system() == "Darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (affinity and cgroup limits aside from quotas)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def git_revision(folder: str | os.PathLike | None = None) -> str:
    """``HEAD``'s hash of the checkout edgefer runs from, ``-dirty`` if changed; else ""."""
    if folder is None:
        folder = Path(__file__).resolve().parents[2]
        if not (folder / ".git").exists():  # an installed wheel, not a checkout
            return ""
    rev = _run(["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"])
    if not rev:
        return ""
    dirty = _run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"])
    return rev + ("-dirty" if dirty else "")


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip().rstrip("\x00")
    except OSError:
        return ""


def machine_extra() -> dict[str, str]:
    """Things that move latency numbers: governor, load at the start, memory."""
    extra: dict[str, str] = {}
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        extra["governor"] = governor
    if hasattr(os, "getloadavg"):
        extra["loadavg_1m"] = f"{os.getloadavg()[0]:.2f}"
    extra["cpu_count"] = str(os.cpu_count() or 0)
    return extra


def collect() -> Context:
    """The context of a run on this machine, now."""
    return Context(
        cpu=cpu_model(),
        cores=usable_cores(),
        os=platform.platform(),
        python=platform.python_version(),
        machine=platform.machine(),
        edgefer_version=__version__,
        engine_versions=engine_versions(),
        git_revision=git_revision(),
        device_model=_read("/proc/device-tree/model"),
        extra=machine_extra(),
    )
