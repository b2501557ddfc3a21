"""A stand-in Raspberry Pi: an arm64 Debian userland run under QEMU user-mode emulation.

Exported models then run on real arm64 binaries (LiteRT's XNNPACK arm64 kernels, ONNX
Runtime's, arm64 NumPy and OpenCV) on this x86 machine, so that a result that depends on
the CPU architecture shows before anyone buys a board. It proves nothing about speed:
emulated latency is 40-120x the host's, and every number measured here says "emulated".

The rootfs (``mmdebstrap`` from Debian's mirror, then ``pip install -e '.[tflite]'``, ONNX
Runtime, ncnn and MNN into a venv from aarch64 wheels, as pyproject's extras pin them) is
cached as a compressed tarball under ``~/.cache/edgefer/armpi`` keyed by the Debian suite,
the recipe and ``pyproject.toml``; a tarball whose checksum does not match is rebuilt. The
checkout is bind-mounted over the installed copy of the source on every run, so code
changes need no rebuild.

Traps of this setup, handled here rather than in a README:

1. QEMU passes the x86 host's ``/proc/cpuinfo`` through, and LiteRT (the cpuinfo library)
   crashes on it: an ARM one for the emulated core is bind-mounted over it, its model name
   saying "emulated", so that a result's context never reads as a real Pi.
2. QEMU's default CPU model (``max``, with SVE and SME) makes XNNPACK compute garbage:
   ``QEMU_CPU`` is ``cortex-a72`` (Pi 4) or ``cortex-a76`` (Pi 5) for every command, and
   in sshd's ``SetEnv`` (sshd clears the environment of its sessions).
3. Every exec of an arm64 binary (console scripts, the bench's worker processes, pip)
   needs binfmt_misc mounted and qemu-aarch64 registered: ``check_host`` says what to run.
4. Commands start from an empty environment: the host's ``PIP_*`` (find-links, certs,
   indexes that exist only on the host) and everything else stay out.
5. A ``policy-rc.d`` refuses every service start in the rootfs, so installing a package
   there never starts a daemon on the host's network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from edgefer.errors import ConfigError, EmulationError

CACHE_ENV = "EDGEFER_ARMPI_CACHE"
MIRROR_ENV = "EDGEFER_ARMPI_MIRROR"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# bump when the way the rootfs is built changes: it is part of the cache key
RECIPE_VERSION = 1
PACKAGES = ("python3", "python3-venv", "openssh-server")
VENV = "/opt/edgefer/venv"
SOURCE = "/opt/edgefer/src"  # the installed copy; the live checkout is mounted over it
PYTHON = f"{VENV}/bin/python"
READY = ".edgefer-armpi-ready"
POLICY_RC = "/usr/sbin/policy-rc.d"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_CA = "/opt/edgefer/host-ca.crt"  # the host's CA bundle, for pip at build
EMULATED = "emulated arm64: QEMU user-mode on x86-64, not a Raspberry Pi"
_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SOURCE_PARTS = ("pyproject.toml", "README.md", "edgefer", "models")


class QemuCpu(str, Enum):
    """The CPU QEMU emulates: the cores of the boards edgefer's profiles name."""

    CORTEX_A72 = "cortex-a72"  # Raspberry Pi 4
    CORTEX_A76 = "cortex-a76"  # Raspberry Pi 5


# what /proc/cpuinfo says on the board: (implementer, variant, part, revision, features)
_CPUINFO = {
    QemuCpu.CORTEX_A72: ("0x41", "0x0", "0xd08", "3", "fp asimd evtstrm crc32 cpuid"),
    QemuCpu.CORTEX_A76: ("0x41", "0x4", "0xd0b", "1",
                         "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                         "cpuid asimdrdm lrcpc dcpop asimddp"),
}
_CPU_NAMES = {QemuCpu.CORTEX_A72: "Cortex-A72", QemuCpu.CORTEX_A76: "Cortex-A76"}


def cpu_label(cpu: QemuCpu) -> str:
    """The CPU name the emulated device reports (``Context.cpu`` of its results)."""
    return f"{_CPU_NAMES[cpu]} ({EMULATED})"


def cpuinfo_text(cpu: QemuCpu, processors: int) -> str:
    """An arm64 /proc/cpuinfo for ``cpu`` with ``processors`` entries, labelled emulated."""
    implementer, variant, part, revision, features = _CPUINFO[cpu]
    block = ("processor\t: {i}\nmodel name\t: {name}\nBogoMIPS\t: 108.00\n"
             f"Features\t: {features}\nCPU implementer\t: {implementer}\n"
             f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
             f"CPU revision\t: {revision}\n\n")
    blocks = "".join(block.format(i=i, name=cpu_label(cpu)) for i in range(processors))
    return blocks + f"Hardware\t: {EMULATED}\nModel\t\t: {EMULATED}\n"


def default_cache_dir() -> Path:
    found = os.environ.get(CACHE_ENV)
    return Path(found) if found else Path.home() / ".cache" / "edgefer" / "armpi"


def default_mirror() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


def checkout() -> Path:
    """The edgefer checkout this module runs from (its pyproject.toml is the key)."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ArmPiOptions:
    suite: str = DEFAULT_SUITE
    cpu: QemuCpu = QemuCpu.CORTEX_A72
    cache_dir: Path = field(default_factory=default_cache_dir)
    mirror: str = field(default_factory=default_mirror)
    source: Path = field(default_factory=checkout)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "cpu", QemuCpu(self.cpu))
        except ValueError:
            names = ", ".join(c.value for c in QemuCpu)
            raise ConfigError(f"unknown emulated CPU {self.cpu!r} (one of {names})") from None
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.suite):
            raise ConfigError(f"bad Debian suite name {self.suite!r}")
        if not (Path(self.source) / "pyproject.toml").is_file():
            raise ConfigError(f"{self.source} is not an edgefer checkout (no pyproject.toml): "
                              "the emulated Pi installs edgefer from its source, so run it "
                              "from a git checkout")


@dataclass(frozen=True)
class ArmPiTarget:
    """``--on armpi[:CPU]``: the emulated Pi as a bench target."""

    cpu: QemuCpu = QemuCpu.CORTEX_A72

    @property
    def name(self) -> str:
        return f"armpi:{self.cpu.value}"


# the boards of edgefer's device profiles, by the core QEMU emulates for them
PROFILE_CPUS = {"rpi4": QemuCpu.CORTEX_A72, "rpi5": QemuCpu.CORTEX_A76}


def parse_armpi_target(text: str, profile: str | None = None) -> ArmPiTarget:
    """``armpi`` (the profile's core, else a Pi 4's Cortex-A72) or ``armpi:cortex-a76``."""
    _, _, cpu = text.strip().partition(":")
    if not cpu:
        return ArmPiTarget(PROFILE_CPUS.get(profile or "", QemuCpu.CORTEX_A72))
    try:
        return ArmPiTarget(QemuCpu(cpu))
    except ValueError:
        names = ", ".join(f"armpi:{c.value}" for c in QemuCpu)
        raise ConfigError(f"unknown emulated CPU in {text!r}: use armpi or {names}") from None


@dataclass(frozen=True)
class Bind:
    """A host path made visible at ``target`` inside the rootfs."""

    source: Path
    target: str
    read_only: bool = True


# --- the host ---------------------------------------------------------------------------

INSTALL_HINT = ("apt-get install -y qemu-user-static binfmt-support mmdebstrap && "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && "
                "update-binfmts --enable qemu-aarch64")


def binfmt_entry(root: Path = BINFMT) -> dict[str, str]:
    """qemu-aarch64's binfmt_misc registration: ``enabled``, ``interpreter``, ``flags``;
    EmulationError saying what to run when it is not there."""
    if not (root / "status").exists():
        raise EmulationError(f"binfmt_misc is not mounted at {root}, so arm64 programs cannot "
                             f"start; as root: {INSTALL_HINT}")
    entry = root / "qemu-aarch64"
    if not entry.exists():
        raise EmulationError("no qemu-aarch64 binfmt_misc entry: arm64 programs cannot start; "
                             f"as root: {INSTALL_HINT}")
    lines = entry.read_text().splitlines()
    values = {"enabled": lines[0].strip() if lines else ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        values[key.rstrip(":")] = value.strip()  # "interpreter /usr/...", "flags: PF"
    if values["enabled"] != "enabled":
        raise EmulationError("the qemu-aarch64 binfmt_misc entry is disabled; as root: "
                             "update-binfmts --enable qemu-aarch64")
    if not values.get("interpreter"):
        raise EmulationError(f"{entry} names no interpreter; reinstall qemu-user-static")
    return values


def check_host(*, build: bool = False) -> dict[str, str]:
    """Everything running the rootfs needs (and building it, with ``build``), or an
    EmulationError naming what is missing and how to get it."""
    if os.uname().sysname != "Linux":
        raise EmulationError("the emulated Raspberry Pi needs Linux (QEMU user-mode, "
                             "binfmt_misc)")
    if os.geteuid() != 0:
        raise EmulationError("the emulated Raspberry Pi needs root (chroot and bind mounts); "
                             "run as root, e.g. in a container or CI job")
    tools = ["unshare", "chroot", "mount", "tar", "zstd"] + (["mmdebstrap"] if build else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise EmulationError(f"missing {', '.join(missing)}; as root: {INSTALL_HINT}"
                             + (" zstd" if "zstd" in missing else ""))
    return binfmt_entry()


# --- the cache ----------------------------------------------------------------------------

def cache_key(options: ArmPiOptions) -> str:
    """What the rootfs depends on: suite, recipe, packages and what the project installs
    there (not the rest of pyproject.toml: a test setting must not cost a rebuild)."""
    digest = hashlib.sha256()
    for part in (options.suite, str(RECIPE_VERSION), " ".join(PACKAGES),
                 json.dumps(install_inputs(Path(options.source) / "pyproject.toml"),
                            sort_keys=True)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


# the engines the rootfs adds to ``.[tflite]``: (extra in pyproject.toml, distribution);
# their runtimes only, not the converters the extras also list (onnx)
ENGINE_EXTRAS = (("onnx", "onnxruntime"), ("ncnn", "ncnn"), ("mnn", "MNN"))
# installed without their dependencies: ncnn's wheel requires opencv-python (for its model
# zoo, which edgefer does not use), whose cv2 would overwrite opencv-python-headless's and
# need libGL, which the rootfs has not
NO_DEPS = ("ncnn",)


def install_inputs(pyproject: Path) -> dict:
    """The parts of pyproject.toml that ``pip install -e '.[tflite]'`` and the engines'
    pins (ENGINE_EXTRAS) read in the rootfs."""
    data = _toml(pyproject)
    project = data.get("project", {})
    extras = project.get("optional-dependencies", {})
    return {"build-system": data.get("build-system", {}),
            "requires-python": project.get("requires-python", ""),
            "dependencies": project.get("dependencies", []),
            "tflite": extras.get("tflite", []),
            **{extra: extras.get(extra, []) for extra, _ in ENGINE_EXTRAS},
            "scripts": project.get("scripts", {})}


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def engine_requirements(pyproject: Path) -> list[str]:
    """The project's own pins of the engines in ENGINE_EXTRAS (ONNX Runtime, ncnn, MNN),
    from their extras, for the rootfs; an engine no extra pins goes in unpinned."""
    extras = _toml(pyproject).get("project", {}).get("optional-dependencies", {})
    found = []
    for extra, distribution in ENGINE_EXTRAS:
        pattern = rf"{re.escape(distribution)}(?![\w.-])"
        pins = [r for r in extras.get(extra, []) if re.match(pattern, r, re.IGNORECASE)]
        found.append(pins[0] if pins else distribution)
    return found


Log = Callable[[str], None]


class ArmPi:
    """A cached arm64 rootfs with edgefer installed, and the means to run commands in it."""

    def __init__(self, options: ArmPiOptions | None = None) -> None:
        self.options = options or ArmPiOptions()
        self.key = cache_key(self.options)
        cache = Path(self.options.cache_dir)
        self.rootfs = cache / f"rootfs-{self.options.suite}-{self.key}"
        self.tarball = cache / f"{self.options.suite}-{self.key}.tar.zst"
        self.checksum = self.tarball.with_name(self.tarball.name + ".sha256")
        self._binfmt: dict[str, str] | None = None  # qemu-aarch64's registration

    @property
    def ready(self) -> bool:
        marker = self.rootfs / READY
        return marker.is_file() and marker.read_text().strip() == self.key

    # -- build, save, restore --

    def ensure(self, log: Log | None = None) -> ArmPi:
        """The rootfs, ready to run: as it is, else from the tarball, else built (and
        saved). Returns self."""
        say = log or (lambda _msg: None)
        self._binfmt = check_host()
        if self.ready:
            return self
        cache = Path(self.options.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(cache / ".lock"):
            if self.ready:  # another process made it while this one waited
                return self
            if self.tarball.is_file():
                started = time.monotonic()
                if self._restore():
                    say(f"restored the arm64 rootfs from {self.tarball} "
                        f"in {time.monotonic() - started:.0f} s")
                    return self
                say(f"{self.tarball} is corrupt: building the rootfs again")
                self.tarball.unlink(missing_ok=True)
                self.checksum.unlink(missing_ok=True)
            check_host(build=True)
            started = time.monotonic()
            self._build(say)
            say(f"built the arm64 rootfs in {time.monotonic() - started:.0f} s")
            self._save(say)
            self._prune()
        return self

    def _build(self, say: Log) -> None:
        staging = self.rootfs.with_name(self.rootfs.name + ".building")
        _remove_tree(staging)
        say(f"building an arm64 Debian {self.options.suite} rootfs from "
            f"{self.options.mirror} (mmdebstrap; minutes)")
        # mmdebstrap keeps services from starting while it installs, then removes its guard
        cmd = ["mmdebstrap", "--arch=arm64", "--variant=apt", "--mode=root",
               f"--include={','.join(PACKAGES)}",
               "--dpkgopt=path-exclude=/usr/share/doc/*",
               "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*",
               # python3-venv pulls in ca-certificates, whose emulated postinst takes
               # minutes over its 140 certificates; pip gets the host's CAs at build time
               "--dpkgopt=path-exclude=/usr/share/ca-certificates/*",
               self.options.suite, str(staging), self.options.mirror]
        _checked(cmd, "mmdebstrap", env=_host_env(), timeout=3600)
        write_policy_rc(staging)
        self._install_edgefer(staging, say)
        (staging / READY).write_text(self.key + "\n")
        _remove_tree(self.rootfs)
        staging.rename(self.rootfs)

    def _install_edgefer(self, root: Path, say: Log) -> None:
        """A venv with edgefer's runtime-only install (``.[tflite]``), ONNX Runtime, ncnn and
        MNN, from aarch64 wheels; the source is a copy, hidden by the checkout at run time."""
        source = root / SOURCE.lstrip("/")
        _remove_tree(source)
        source.mkdir(parents=True)
        for part in _SOURCE_PARTS:
            origin = Path(self.options.source) / part
            if origin.is_dir():
                shutil.copytree(origin, source / part, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copy2(origin, source / part)
        engines = engine_requirements(Path(self.options.source) / "pyproject.toml")
        alone = [r for r, (_, name) in zip(engines, ENGINE_EXTRAS, strict=True)
                 if name in NO_DEPS]
        ca = host_ca_bundle()
        binds = [Bind(Path("/etc/resolv.conf"), "/etc/resolv.conf")]
        env = {"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_NO_CACHE_DIR": "1"}
        if ca is not None:  # the host's own CAs (a TLS-inspecting proxy's, say) for pip
            binds.append(Bind(ca, HOST_CA))
            env["PIP_CERT"] = HOST_CA  # in the environment: pip's build subprocess needs it
        say(f"installing edgefer[tflite] and {', '.join(engines)} in the rootfs (aarch64 "
            "wheels)")
        pip = f"{PYTHON} -m pip install --no-compile"
        script = (f"python3 -m venv {VENV} && {pip} -e {shlex.quote(SOURCE + '[tflite]')} "
                  + " ".join(shlex.quote(r) for r in engines if r not in alone)
                  + (f" && {pip} --no-deps " + " ".join(map(shlex.quote, alone))
                     if alone else ""))
        done = self._run_in(root, ["sh", "-c", script], binds=binds, env=env, timeout=3600,
                            mount_source=False)
        if done.returncode != 0:
            raise EmulationError("pip install in the arm64 rootfs failed: "
                                 + _tail(done.stdout + done.stderr))
        self._byte_compile(root)

    def _byte_compile(self, root: Path) -> None:
        """The venv's .pyc files, once: by this machine's Python when it is the rootfs's
        version (the same bytecode; emulated compiling takes minutes), else in the rootfs."""
        import sys

        found = sorted(root.glob("usr/lib/python3.*/"))
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = root / VENV.lstrip("/") / "lib"
        if found and found[-1].name == version:
            cmd = [sys.executable, "-m", "compileall", "-q", "-j", "0", str(site)]
            subprocess.run(cmd, capture_output=True, env=_host_env(), check=False)
        else:
            self._run_in(root, [PYTHON, "-m", "compileall", "-q", f"{VENV}/lib"],
                         timeout=3600, mount_source=False)

    def _save(self, say: Log) -> None:
        partial = self.tarball.with_name(f".{self.tarball.name}.partial")
        say(f"saving the rootfs to {self.tarball}")
        _checked(["tar", "--zstd", "--numeric-owner", "--one-file-system", "-C",
                  str(self.rootfs), "-cf", str(partial), "."], "tar", env=_host_env())
        self.checksum.write_text(f"{_sha256(partial)}  {self.tarball.name}\n")
        partial.rename(self.tarball)

    def _restore(self) -> bool:
        """Unpack the tarball if its checksum matches; False (nothing left) if not."""
        try:
            expected = self.checksum.read_text().split()[0]
        except (OSError, IndexError):
            return False
        if _sha256(self.tarball) != expected:
            return False
        staging = self.rootfs.with_name(self.rootfs.name + ".restoring")
        _remove_tree(staging)
        staging.mkdir(parents=True)
        done = subprocess.run(["tar", "--zstd", "--numeric-owner", "-xpf",
                               str(self.tarball), "-C", str(staging)],
                              capture_output=True, text=True, env=_host_env(), check=False)
        marker = staging / READY
        if done.returncode != 0 or not marker.is_file() \
                or marker.read_text().strip() != self.key:
            _remove_tree(staging)
            return False
        _remove_tree(self.rootfs)
        staging.rename(self.rootfs)
        return True

    def _prune(self) -> None:
        """Rootfs folders and tarballs of other keys for this suite (each is ~1 GB)."""
        cache = Path(self.options.cache_dir)
        for path in cache.glob(f"rootfs-{self.options.suite}-*"):
            if path != self.rootfs and path.is_dir():
                _remove_tree(path)
        for path in cache.glob(f"{self.options.suite}-*.tar.zst*"):
            if path not in (self.tarball, self.checksum):
                path.unlink(missing_ok=True)

    # -- running --

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment of a command in the rootfs: nothing from the host."""
        env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
               "QEMU_CPU": self.options.cpu.value, "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(extra or {})
        return env

    def cpuinfo_file(self) -> Path:
        processors = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        path = Path(self.options.cache_dir) / f"cpuinfo-{self.options.cpu.value}-{processors}"
        text = cpuinfo_text(self.options.cpu, processors)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(text)
            partial.rename(path)
        return path

    def command(self, argv: Sequence[str], *, binds: Sequence[Bind] = (),
                env: Mapping[str, str] | None = None, cwd: str = "/",
                mount_source: bool = True, root: Path | None = None) -> list[str]:
        """The host argv that runs ``argv`` in the rootfs, in a mount namespace of its own
        (its mounts vanish with its last process)."""
        root = Path(root or self.rootfs)
        mounts = [Bind(self.cpuinfo_file(), "/proc/cpuinfo")]
        if mount_source:
            mounts.append(Bind(Path(self.options.source), SOURCE))
        interpreter = self._binfmt or binfmt_entry()
        if "F" not in interpreter.get("flags", ""):
            # without the F flag the kernel opens the interpreter inside the chroot
            mounts.append(Bind(Path(interpreter["interpreter"]), interpreter["interpreter"]))
        mounts += list(binds)
        q = shlex.quote
        lines = ["set -e", f"r={q(str(root))}",
                 'mount -t proc proc "$r/proc"', 'mount --rbind /dev "$r/dev"',
                 'mount --rbind /sys "$r/sys"', 'mount -o remount,bind,ro "$r/sys" || true']
        for bind in mounts:
            target = f'"$r"{q(bind.target)}'
            kind = "-d" if Path(bind.source).is_dir() else "-f"
            make = f"mkdir -p {target}" if kind == "-d" else \
                f'mkdir -p "$(dirname {target})"; [ -e {target} ] || : > {target}'
            if bind.target.startswith("/proc/"):
                make = ":"
            lines.append(make)
            lines.append(f"mount --bind {q(str(bind.source))} {target}")
            if bind.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        assignments = [f"{k}={v}" for k, v in self.environment(env).items()]
        inner = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]
        lines.append("exec chroot \"$r\" /usr/bin/env -i "
                     + " ".join(q(a) for a in [*assignments, *inner]))
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", "\n".join(lines)]

    def run(self, argv: Sequence[str], *, binds: Sequence[Bind] = (),
            env: Mapping[str, str] | None = None, cwd: str = "/",
            timeout: float | None = None, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` in the rootfs and wait; stdout and stderr captured as text."""
        if not self.ready:
            raise EmulationError(f"the arm64 rootfs {self.rootfs} is not ready: call ensure()")
        done = self._run_in(self.rootfs, argv, binds=binds, env=env, cwd=cwd,
                            timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise EmulationError(f"{shlex.join(argv)} failed in the emulated arm64 rootfs "
                                 f"(exit {done.returncode}): "
                                 + _tail(done.stderr or done.stdout))
        return done

    def _run_in(self, root: Path, argv: Sequence[str], *, binds: Sequence[Bind] = (),
                env: Mapping[str, str] | None = None, cwd: str = "/",
                timeout: float | None = None, input: str | None = None,
                mount_source: bool = True) -> subprocess.CompletedProcess:
        cmd = self.command(argv, binds=binds, env=env, cwd=cwd, mount_source=mount_source,
                           root=root)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None
                                else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_host_env(),
                                start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            _kill_group(proc)
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def popen(self, argv: Sequence[str], *, binds: Sequence[Bind] = (),
              env: Mapping[str, str] | None = None, cwd: str = "/",
              **kwargs) -> subprocess.Popen:
        """Start ``argv`` in the rootfs (a server, say) in its own process group; stop it
        with ``stop``."""
        if not self.ready:
            raise EmulationError(f"the arm64 rootfs {self.rootfs} is not ready: call ensure()")
        return subprocess.Popen(self.command(argv, binds=binds, env=env, cwd=cwd),
                                env=_host_env(), start_new_session=True, **kwargs)

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        _kill_group(proc)


# --- sshd in the rootfs --------------------------------------------------------------------

SSHD_DIR = "/etc/edgefer-sshd"


def sshd_config(port: int, cpu: QemuCpu, folder: str = SSHD_DIR) -> str:
    """An sshd_config for the rootfs on 127.0.0.1:``port``, key login as root only.

    sshd gives its sessions a fresh environment, so ``QEMU_CPU`` goes in with ``SetEnv``:
    without it every command over SSH would run on QEMU's default CPU (wrong results)."""
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile none
AuthorizedKeysFile {folder}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers root
SetEnv QEMU_CPU={QemuCpu(cpu).value} PYTHONDONTWRITEBYTECODE=1
LogLevel VERBOSE
"""


@contextlib.contextmanager
def sshd(pi: ArmPi, folder: Path, port: int, authorized_key: str,
         timeout_s: float = 120.0) -> Iterator[subprocess.Popen]:
    """sshd of the rootfs on 127.0.0.1:``port``, its keys and config in ``folder`` (a host
    folder, mounted at SSHD_DIR); stopped when the block ends."""
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "host_key").exists():
        _checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                  str(folder / "host_key")], "ssh-keygen", env=_host_env())
    (folder / "authorized_keys").write_text(authorized_key.strip() + "\n")
    (folder / "sshd_config").write_text(sshd_config(port, pi.options.cpu))
    log = folder / "sshd.log"
    argv = ["sh", "-c", 'mkdir -p /run/sshd && exec /usr/sbin/sshd -D -f "$1" -E "$2"',
            "sh", f"{SSHD_DIR}/sshd_config", f"{SSHD_DIR}/sshd.log"]
    proc = pi.popen(argv, binds=[Bind(folder, SSHD_DIR, read_only=False)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise EmulationError("sshd in the arm64 rootfs did not start: "
                                     + _tail((proc.stderr.read() or b"").decode(errors="replace")
                                             + (log.read_text() if log.exists() else "")))
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise EmulationError(f"sshd in the arm64 rootfs did not listen on port {port} "
                                     f"within {timeout_s:g} s")
            time.sleep(0.2)
        yield proc
    finally:
        ArmPi.stop(proc)


# --- helpers -------------------------------------------------------------------------------

def write_policy_rc(root: Path) -> Path:
    """``usr/sbin/policy-rc.d`` answering 101 (action forbidden) to every service start, so
    that installing a package in the rootfs never starts its daemon on the host."""
    path = root / POLICY_RC.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n# edgefer's emulated Pi: no service starts in this rootfs\n"
                    "exit 101\n")
    path.chmod(0o755)
    return path


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts (it may hold a proxy's CA the rootfs lacks)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _host_env() -> dict[str, str]:
    """The environment of host-side tools (mmdebstrap, tar, unshare): the host's, less
    PIP_* and QEMU_*, which must not reach the rootfs through them."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "QEMU_"))}


def _checked(cmd: Sequence[str], what: str, env: Mapping[str, str],
             timeout: float | None = None) -> None:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, env=dict(env),
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise EmulationError(f"{what} is not installed; as root: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{what} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise EmulationError(f"{what} failed (exit {done.returncode}): "
                             + _tail(done.stderr or done.stdout))


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def _remove_tree(path: Path) -> None:
    """Remove a rootfs folder, never following a mount point out of it."""
    if not path.exists():
        return
    for mount in _mounts_under(path):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    found = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted((m for m in found if m.startswith(prefix)), key=len, reverse=True)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- command line: python -m edgefer.edge.armpi ensure | run CMD... ----------------------

def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m edgefer.edge.armpi",
        description="The emulated arm64 Raspberry Pi (QEMU user-mode): build or restore its "
        "rootfs, run a command in it. Benchmarks: edgefer bench MODELS --on armpi.")
    parser.add_argument("--cpu", default=QemuCpu.CORTEX_A72.value,
                        choices=[c.value for c in QemuCpu])
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure", help="build or restore the rootfs (exit 0 and say "
                                 "why when this machine cannot run it)")
    ensure.add_argument("--strict", action="store_true",
                        help="exit 2 when the machine cannot run it")
    run = commands.add_parser("run", help="run a command in the rootfs (the checkout is at "
                              f"{SOURCE}, edgefer's venv first on PATH)")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        check_host()
    except EmulationError as exc:
        say(f"no emulated arm64 device here: {exc}")
        return 2 if args.command == "run" or getattr(args, "strict", False) else 0
    try:
        pi = ArmPi(ArmPiOptions(cpu=args.cpu)).ensure(say)
        if args.command == "ensure":
            say(f"ready: {pi.rootfs} (QEMU_CPU={pi.options.cpu.value})")
            return 0
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("run needs a command")
        proc = pi.popen(command, cwd=SOURCE)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the command runs in a session of its own
            ArmPi.stop(proc)
            return 130
    except EmulationError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(_main())
