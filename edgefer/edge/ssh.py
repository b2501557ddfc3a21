"""Benchmark on a remote Linux device (Raspberry Pi, Jetson, any ARM board) over SSH.

The system ``ssh`` binary does the work, so the user's ``~/.ssh/config`` (hosts, keys,
jump hosts) applies; ``BatchMode=yes`` makes a missing key an error, never a prompt. A run:

1. probe: the device's Python, edgefer and runtimes, and its context (board, CPU, cores,
   governor, temperature, throttling); nothing is written on the device yet;
2. ``mktemp -d`` a folder there, stream the model into it;
3. run ``python3 -m edgefer bench MODEL --json RESULT`` in its own process group, then
   read the context again (temperature after) and the JSON;
4. always (``finally``, also on SIGINT/SIGTERM) kill what still runs and remove the folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from edgefer.bench.results import BenchRun, Context
from edgefer.engines import ENGINES, EngineSpec, engine_named
from edgefer.errors import ConfigError, ModelError, RemoteError
from edgefer.formats import Format, file_format_of, model_files, suffixes_in_words
from edgefer.interrupts import interrupts_raise

REMOTE_PYTHON_ENV = "EDGEFER_REMOTE_PYTHON"
SSH_CONFIG_ENV = "EDGEFER_SSH_CONFIG"
_PROBE_MARK = "EDGEFER_PROBE "
_JSON_MARK = "EDGEFER_JSON_FOLLOWS"


# --- target and options -------------------------------------------------------------

@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """What ``ssh`` gets: ``user@host`` or ``host`` (so ~/.ssh/config's User applies)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def name(self) -> str:
        """The device name results carry."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{host}" + (f":{self.port}" if self.port else "")


def parse_ssh_target(text: str) -> SshTarget:
    """``ssh://[user@]host[:port]``; a host alias from ~/.ssh/config works too."""
    if not text.startswith("ssh://"):
        raise ConfigError(f"not an SSH target: {text!r} (use ssh://user@host[:port])")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad SSH target {text!r}: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"bad SSH target {text!r}: no host (use ssh://user@host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise ConfigError(f"bad SSH target {text!r}: only ssh://user@host[:port] is "
                          "understood (no path, password or query)")
    if port == 0:
        raise ConfigError(f"bad SSH target {text!r}: port must be 1..65535")
    user = parts.username or None
    if user is not None and not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._-]*", user):
        raise ConfigError(f"bad user name in SSH target {text!r}")
    return SshTarget(host=parts.hostname, user=user, port=port)


def default_remote_python() -> str:
    return os.environ.get(REMOTE_PYTHON_ENV) or "python3"


def default_ssh_config() -> Path | None:
    """``$EDGEFER_SSH_CONFIG`` (an ssh_config file for edgefer alone, e.g. in CI), else
    None: ssh reads ~/.ssh/config."""
    found = os.environ.get(SSH_CONFIG_ENV)
    return Path(found) if found else None


@dataclass(frozen=True)
class SshOptions:
    """How to reach the device and what to run there."""

    python: str = field(default_factory=default_remote_python)
    config_file: Path | None = field(default_factory=default_ssh_config)  # ssh -F
    identity_file: Path | None = None  # ssh -i
    ssh_options: tuple[str, ...] = ()  # extra -o KEY=VALUE
    connect_timeout_s: int = 10
    bench_timeout_s: float = 3600.0
    remote_tmp: str | None = None  # parent of the temporary folder (default: $TMPDIR or /tmp)
    ssh_binary: str = "ssh"

    def __post_init__(self) -> None:
        if self.connect_timeout_s < 1:
            raise ConfigError("connect_timeout_s must be at least 1")
        if not self.python.strip():
            raise ConfigError("the remote Python must not be empty")
        for option in self.ssh_options:
            if "=" not in option:
                raise ConfigError(f"SSH option {option!r} is not KEY=VALUE")


def ssh_command(target: SshTarget, options: SshOptions, remote: str) -> list[str]:
    """The local argv that runs the shell command ``remote`` on the device."""
    cmd = [options.ssh_binary, "-o", "BatchMode=yes",
           "-o", f"ConnectTimeout={options.connect_timeout_s}",
           "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
           "-o", "LogLevel=ERROR"]
    if options.config_file:
        cmd += ["-F", str(options.config_file)]
    if options.identity_file:
        cmd += ["-i", str(options.identity_file), "-o", "IdentitiesOnly=yes"]
    if target.port:
        cmd += ["-p", str(target.port)]
    for option in options.ssh_options:
        cmd += ["-o", option]
    return [*cmd, "--", target.destination, remote]


def sh(script: str, *args: str) -> str:
    """A remote command line that runs a POSIX ``script`` with ``args`` as $1.. whatever the
    login shell of the device's user is."""
    return " ".join(shlex.quote(part) for part in ("sh", "-c", script, "edgefer", *args))


# --- the remote scripts ---------------------------------------------------------------

# every module that can run a model, in edgefer's order of preference
MODULES = tuple(dict.fromkeys(module for engine in ENGINES for module in engine.modules))

PROBE_PY = r"""
import json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import edgefer
    out["edgefer"] = getattr(edgefer, "__version__", "unknown")
except Exception as exc:
    out["edgefer"] = None
    out["edgefer_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    from importlib.util import find_spec
    mods = __MODULES__
    out["modules"] = [m for m in mods if find_spec(m) is not None]
except Exception:
    out["modules"] = []
print("EDGEFER_PROBE " + json.dumps(out))
""".replace("__MODULES__", repr(MODULES))

CONTEXT_SH = r"""
ctx() {
  echo "ctx.$1=$2"
}
board=$(tr -d '\000' < /proc/device-tree/model 2>/dev/null)
cpu=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
[ -n "$cpu" ] || cpu=$(grep -m 1 -E '^(model name|Hardware|cpu model)' /proc/cpuinfo \
  2>/dev/null | cut -d: -f2- | sed 's/^[[:space:]]*//')
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)
gov=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)
freq=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq 2>/dev/null)
temp=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)
zone=$(cat /sys/class/thermal/thermal_zone0/type 2>/dev/null)
throttled=""
if command -v vcgencmd >/dev/null 2>&1; then
  throttled=$(vcgencmd get_throttled 2>/dev/null | sed -n 's/^throttled=//p')
fi
os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") )
ctx board "$board"; ctx cpu "$cpu"; ctx cores "$cores"; ctx governor "$gov"
ctx freq_khz "$freq"; ctx temp_millic "$temp"; ctx thermal_zone "$zone"
ctx throttled "$throttled"; ctx os "$os"; ctx kernel "$(uname -srm 2>/dev/null)"
"""

# $1 python, $2 probe code
PROBE_SH = r"""
if ! command -v "$1" >/dev/null 2>&1; then
  echo "EDGEFER_NO_PYTHON"
  exit 0
fi
"$1" -c "$2" 2>&1 || echo "EDGEFER_PROBE_FAILED"
""" + CONTEXT_SH

# $1 parent folder ("" for $TMPDIR or /tmp)
MKTEMP_SH = r"""
base=${1:-${TMPDIR:-/tmp}}
mktemp -d "$base/edgefer-bench.XXXXXXXX"
"""

# $1 folder, $2 file name: the model arrives on stdin
UPLOAD_SH = r"""
cat > "$1/$2"
"""

# $1 folder, $2 python, $3.. bench arguments. The bench runs in its own session so that
# cleanup can kill it and its workers as one process group.
RUN_SH = r"""
dir=$1; py=$2; shift 2
cd "$dir" || exit 97
if command -v setsid >/dev/null 2>&1; then
  setsid "$py" -m edgefer bench "$@" > "$dir/bench.log" 2>&1 < /dev/null &
else
  "$py" -m edgefer bench "$@" > "$dir/bench.log" 2>&1 < /dev/null &
fi
echo $! > "$dir/pid"
wait $!
rc=$?
echo "EDGEFER_RC=$rc"
""" + CONTEXT_SH + r"""
if [ -f "$dir/result.json" ]; then
  echo "EDGEFER_JSON_FOLLOWS"
  cat "$dir/result.json"
else
  echo "EDGEFER_LOG_FOLLOWS"
  tail -n 30 "$dir/bench.log"
fi
"""

# $1 folder: stop what runs there, then remove it
CLEANUP_SH = r"""
dir=$1
case "$dir" in
  */edgefer-bench.*) ;;
  *) echo "refusing to remove $dir" >&2; exit 2 ;;
esac
if [ -f "$dir/pid" ]; then
  pid=$(cat "$dir/pid")
  # "-PID" is the process group (dash's kill takes no "--")
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
fi
rm -rf -- "$dir"
"""


# --- parsing what came back -----------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    python: str
    edgefer: str | None
    modules: tuple[str, ...]
    error: str = ""


@dataclass(frozen=True)
class DeviceState:
    """The device's context lines (``ctx.KEY=VALUE``) at one moment."""

    values: dict[str, str]

    def get(self, key: str) -> str:
        return self.values.get(key, "")

    @property
    def temperature_c(self) -> float | None:
        raw = self.get("temp_millic")
        try:
            return int(raw) / 1000.0
        except ValueError:
            return None


def parse_context(text: str) -> DeviceState:
    values = {}
    for line in text.splitlines():
        if line.startswith("ctx."):
            key, _, value = line[4:].partition("=")
            if value.strip():
                values[key] = value.strip()
    return DeviceState(values)


def parse_probe(text: str, host: str, python: str) -> Probe:
    """The probe's JSON line, or a RemoteError telling the user what to install."""
    if "EDGEFER_NO_PYTHON" in text:
        raise RemoteError(f"{python} not found on {host}: install Python 3.10+ there "
                          "(sudo apt install python3 python3-venv) or name the device's Python "
                          f"with --remote-python or ${REMOTE_PYTHON_ENV}")
    for line in text.splitlines():
        if line.startswith(_PROBE_MARK):
            data = json.loads(line[len(_PROBE_MARK):])
            return Probe(python=data.get("python", ""), edgefer=data.get("edgefer"),
                         modules=tuple(data.get("modules", ())),
                         error=data.get("edgefer_error", ""))
    tail = " | ".join(text.strip().splitlines()[-5:])
    raise RemoteError(f"{python} on {host} did not run edgefer's probe: {tail}")


def model_format(model: Path) -> Format:
    """The format of a model file sent to a device (a Keras folder is not sent)."""
    fmt = file_format_of(model)
    if fmt is not None:
        return fmt
    raise ConfigError(f"{model}: --on ssh:// runs {suffixes_in_words()} files")


def model_engine(model: Path) -> EngineSpec:
    """The engine that runs ``model`` on the device: its format's default."""
    return engine_named(model_format(model).default_engine)


def require_ready(probe: Probe, model: Path, host: str, python: str) -> None:
    """Edgefer and a runtime for ``model`` must be on the device."""
    fmt, engine = model_format(model), model_engine(model)
    hint = engine.install_hint
    if probe.edgefer is None:
        raise RemoteError(f"edgefer is not installed for {python} on {host} "
                          f"({probe.error or 'import failed'}); install it there with: {hint}")
    if not any(m in probe.modules for m in engine.modules):
        names = " or ".join(engine.modules)
        raise RemoteError(f"no {fmt.name} runtime ({names}) for {python} on {host}; "
                          f"install one there with: {hint}")


THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now",
    3: "soft temperature limit now", 16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def decode_throttled(value: str) -> str:
    """Raspberry Pi ``vcgencmd get_throttled`` bits in words ("none" for 0x0)."""
    try:
        bits = int(value, 16)
    except ValueError:
        return ""
    names = [name for bit, name in THROTTLE_BITS.items() if bits & (1 << bit)]
    return ", ".join(names) if names else "none"


def merge_context(context: Context | None, before: DeviceState, after: DeviceState,
                  target: SshTarget) -> Context:
    """The remote run's own context, filled in and extended with what the shell saw."""
    base = context or Context()
    extra = dict(base.extra)
    extra["host"] = target.name
    for key in ("governor", "freq_khz", "thermal_zone", "kernel"):
        if before.get(key):
            extra.setdefault(key, before.get(key))
    for when, state in (("before", before), ("after", after)):
        if state.temperature_c is not None:
            extra[f"temperature_{when}_c"] = f"{state.temperature_c:.1f}"
        if state.get("throttled"):
            extra[f"throttled_{when}"] = state.get("throttled")
            extra[f"throttling_{when}"] = decode_throttled(state.get("throttled"))
    cores = base.cores
    if not cores:
        with suppress(ValueError):
            cores = int(before.get("cores"))
    return replace(base, device_model=base.device_model or before.get("board"),
                   cpu=base.cpu or before.get("cpu"), cores=cores,
                   os=base.os or before.get("os"), extra=extra)


def merge_run(run: BenchRun, before: DeviceState, after: DeviceState, target: SshTarget,
              remote_models: dict[Path, str]) -> BenchRun:
    """The device's BenchRun as the local report needs it: device ``ssh://host``, the local
    model path, the device's context on every result."""
    context = merge_context(run.context, before, after, target)
    results = []
    for r in run.results:
        model = r.model
        for local, remote in remote_models.items():
            model = model.replace(remote, str(local))
        results.append(replace(r, device=target.name, model=model,
                               context=merge_context(r.context, before, after, target)
                               if r.context else context))
    note = f"measured on {target.name} ({context.device_model or context.cpu or 'device'})"
    return replace(run, results=tuple(results), context=context, notes=(*run.notes, note))


# --- running ------------------------------------------------------------------------------

def classify_ssh_failure(stderr: str, target: SshTarget) -> RemoteError:
    """ssh's exit 255 in words the user can act on."""
    text = stderr.strip()
    where = target.destination + (f" port {target.port}" if target.port else "")
    lower = text.lower()
    if "permission denied" in lower or "too many authentication failures" in lower:
        return RemoteError(
            f"SSH authentication to {where} failed (key-based login only): copy your key "
            f"there with `ssh-copy-id {target.destination}` or set IdentityFile for the host "
            f"in ~/.ssh/config ({text.splitlines()[-1] if text else 'permission denied'})")
    if "host key verification failed" in lower or "remote host identification" in lower:
        return RemoteError(f"the host key of {where} is unknown or changed: connect once with "
                           f"`ssh {target.destination}` and check it")
    unreachable = ("connection refused", "timed out", "no route to host", "could not resolve",
                   "network is unreachable", "name or service not known", "connection closed",
                   "connection reset", "kex_exchange_identification")
    if any(word in lower for word in unreachable):
        return RemoteError(f"cannot reach {where}: {text.splitlines()[-1]}; check the address, "
                           "that the device is on, and that its SSH server runs "
                           "(sudo systemctl enable --now ssh)")
    return RemoteError(f"ssh to {where} failed: {text or 'no message'}")


class RemoteSession:
    """The ssh calls of one remote bench; tracks the folder it must remove."""

    def __init__(self, target: SshTarget, options: SshOptions) -> None:
        self.target = target
        self.options = options
        self.folder: str | None = None

    def call(self, remote: str, timeout: float, stdin=None) -> str:
        cmd = ssh_command(self.target, self.options, remote)
        try:
            proc = subprocess.run(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"{self.target.name} did not answer within {timeout:g}s") from exc
        except FileNotFoundError as exc:
            raise RemoteError(f"no {self.options.ssh_binary} binary here: install OpenSSH's "
                              "client (sudo apt install openssh-client)") from exc
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode == 255:
            raise classify_ssh_failure(err, self.target)
        if proc.returncode != 0:
            raise RemoteError(f"command on {self.target.name} failed (exit {proc.returncode}): "
                              + " | ".join((err or out).strip().splitlines()[-5:]))
        return out

    def probe(self) -> tuple[Probe, DeviceState]:
        out = self.call(sh(PROBE_SH, self.options.python, PROBE_PY), 60)
        return parse_probe(out, self.target.name, self.options.python), parse_context(out)

    def make_folder(self) -> str:
        out = self.call(sh(MKTEMP_SH, self.options.remote_tmp or ""), 60).strip()
        folder = out.splitlines()[-1] if out else ""
        if not re.fullmatch(r"/\S*/edgefer-bench\.[A-Za-z0-9]+", folder):
            raise RemoteError(f"mktemp on {self.target.name} gave {out!r}, not a folder")
        self.folder = folder
        return folder

    def upload(self, path: Path) -> str:
        assert self.folder is not None
        with path.open("rb") as f:
            self.call(sh(UPLOAD_SH, self.folder, path.name), 60 + path.stat().st_size / 1e5,
                      stdin=f)
        return f"{self.folder}/{path.name}"

    def run_bench(self, args: Sequence[str]) -> tuple[int, DeviceState, str, bool]:
        """(exit code, context after, JSON text or the log's tail, whether it is JSON).

        A bench that wrote its JSON and exited 1 had a model fail (its row says why);
        the results still come back, and the caller decides.
        """
        assert self.folder is not None
        out = self.call(sh(RUN_SH, self.folder, self.options.python, *args),
                        self.options.bench_timeout_s)
        rc_match = re.search(r"^EDGEFER_RC=(\d+)$", out, re.MULTILINE)
        if rc_match is None:
            raise RemoteError(f"the bench on {self.target.name} ended without a status: "
                              + " | ".join(out.strip().splitlines()[-5:]))
        head, mark, payload = out.partition(_JSON_MARK)
        if not mark:
            head, _, payload = out.partition("EDGEFER_LOG_FOLLOWS")
        return int(rc_match[1]), parse_context(head), payload.strip(), bool(mark)

    def cleanup(self) -> None:
        if self.folder is None:
            return
        self.call(sh(CLEANUP_SH, self.folder), 60)
        self.folder = None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM off while cleanup runs, so a second Ctrl-C cannot skip it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def remote_bench(models: str | os.PathLike | Sequence[str | os.PathLike], target: SshTarget,
                 bench_args: Sequence[str] = (), options: SshOptions | None = None,
                 log=None) -> BenchRun:
    """Run ``edgefer bench`` for ``models`` on the device and return its BenchRun, with the
    device's context merged in. The remote folder is gone when this returns or raises."""
    options = options or SshOptions()
    paths = [Path(models)] if isinstance(models, (str, os.PathLike)) else \
        [Path(m) for m in models]
    if not paths:
        raise ConfigError("nothing to benchmark: give at least one model")
    for path in paths:
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError("models sent to a device need different file names")
    uploads = {path: model_files(path, strict=True) for path in paths}
    say = log or (lambda _msg: None)
    session = RemoteSession(target, options)
    remote_models: dict[Path, str] = {}
    with interrupts_raise():
        try:
            say(f"probing {target.name}")
            probe, before = session.probe()
            for path in paths:
                require_ready(probe, path, target.name, options.python)
            folder = session.make_folder()
            for path, files in uploads.items():
                say(f"copying {path.name} to {target.name}:{folder}")
                remote_models[path] = session.upload(files[0])
                for extra in files[1:]:
                    session.upload(extra)
            say(f"benchmarking on {target.name} (edgefer {probe.edgefer}, Python {probe.python})")
            rc, after, payload, is_json = session.run_bench(
                [*remote_models.values(), "--json", f"{folder}/result.json", *bench_args])
        finally:
            with signals_deferred():
                try:
                    session.cleanup()
                except RemoteError as exc:
                    say(f"warning: could not remove {session.folder} on {target.name}: {exc}")
    if rc != 0 and not is_json:
        raise _bench_failure(rc, payload, target, options.python)
    if not payload:
        raise RemoteError(f"edgefer bench on {target.name} wrote no JSON results")
    try:
        run = BenchRun.from_dict(json.loads(payload))
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"unreadable results from {target.name}: {exc}") from exc
    return merge_run(run, before, after, target, remote_models)


def _bench_failure(rc: int, log: str, target: SshTarget, python: str) -> RemoteError:
    text = log.strip()
    if "No module named edgefer.__main__" in text or "No such command 'bench'" in text:
        return RemoteError(f"the edgefer on {target.name} is too old to bench: upgrade it "
                           f"there with {python} -m pip install -U 'edgefer[tflite]'")
    last = text.splitlines()[-1] if text else ""
    error = re.sub(r"^Error:\s*", "", last)
    return RemoteError(f"edgefer bench on {target.name} failed (exit {rc}): "
                       f"{error or 'no output'}\n{text}")
