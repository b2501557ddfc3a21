"""``edgefer bench --on ssh://``: unit tests, then end to end against a real OpenSSH server
that these tests start on 127.0.0.1 (Debian's openssh-server), standing in for a device."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefer.bench.results import BenchResult, BenchRun, Context, LatencyStats
from edgefer.edge.ssh import (
    DeviceState,
    Probe,
    SshOptions,
    SshTarget,
    classify_ssh_failure,
    decode_throttled,
    merge_run,
    parse_context,
    parse_probe,
    parse_ssh_target,
    remote_bench,
    require_ready,
    ssh_command,
)
from edgefer.errors import ConfigError, ModelError, RemoteError

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
NO_SSHD = ("needs OpenSSH's server and client: apt-get install -y openssh-server "
           "openssh-client (.ci/run installs them)")


# --- unit tests -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "host", "user", "port"), [
    ("ssh://pi@raspberrypi.local", "raspberrypi.local", "pi", None),
    ("ssh://pi@192.168.1.20:2222", "192.168.1.20", "pi", 2222),
    ("ssh://mypi", "mypi", None, None),  # an alias from ~/.ssh/config
    ("ssh://root@[::1]:22/", "::1", "root", 22),
])
def test_parse_ssh_target(text, host, user, port):
    assert parse_ssh_target(text) == SshTarget(host=host, user=user, port=port)


@pytest.mark.parametrize("text", ["pi@host", "ssh://", "ssh://pi@host:99999",
                                  "ssh://pi@host:port", "ssh://pi@host/home/pi",
                                  "ssh://pi:secret@host", "ssh://-oProxyCommand=x@host",
                                  "ssh://pi@host:0"])
def test_parse_ssh_target_rejects(text):
    with pytest.raises(ConfigError):
        parse_ssh_target(text)


def test_target_name_and_destination():
    assert SshTarget("pi5", "pi", 2222).name == "ssh://pi5:2222"
    assert SshTarget("pi5", "pi").destination == "pi@pi5"
    assert SshTarget("::1").name == "ssh://[::1]"


def test_ssh_command_is_batch_mode_with_timeout():
    cmd = ssh_command(SshTarget("h", "u", 2200),
                      SshOptions(python="python3", config_file=Path("/c"),
                                 identity_file=Path("/k"), connect_timeout_s=7,
                                 ssh_options=("Compression=yes",)), "true")
    text = " ".join(cmd)
    assert cmd[0] == "ssh" and cmd[-3:] == ["--", "u@h", "true"]
    for part in ("BatchMode=yes", "ConnectTimeout=7", "-F /c", "-i /k", "-p 2200",
                 "-o Compression=yes"):
        assert part in text


def test_options_validated():
    with pytest.raises(ConfigError):
        SshOptions(ssh_options=("NoEquals",))
    with pytest.raises(ConfigError):
        SshOptions(connect_timeout_s=0)


def test_remote_python_from_environment(monkeypatch):
    monkeypatch.setenv("EDGEFER_REMOTE_PYTHON", "/opt/venv/bin/python")
    assert SshOptions().python == "/opt/venv/bin/python"


def test_probe_errors_say_what_to_install():
    with pytest.raises(RemoteError, match=r"python3 not found on ssh://pi"):
        parse_probe("EDGEFER_NO_PYTHON\n", "ssh://pi", "python3")
    probe = parse_probe('EDGEFER_PROBE {"python": "3.11.2", "edgefer": null, '
                        '"edgefer_error": "ModuleNotFoundError", "modules": []}\n',
                        "ssh://pi", "python3")
    with pytest.raises(RemoteError, match=r"pip install 'edgefer\[tflite\]'"):
        require_ready(probe, Path("m.tflite"), "ssh://pi", "python3")
    no_runtime = Probe(python="3.11", edgefer="0.1.0", modules=("onnxruntime",))
    with pytest.raises(RemoteError, match=r"no tflite runtime.*edgefer\[tflite\]"):
        require_ready(no_runtime, Path("m.tflite"), "ssh://pi", "python3")
    require_ready(no_runtime, Path("m.onnx"), "ssh://pi", "python3")
    ready = Probe(python="3.11", edgefer="0.1.0", modules=("tflite_runtime",))
    require_ready(ready, Path("m.tflite"), "ssh://pi", "python3")
    with pytest.raises(ConfigError):
        require_ready(ready, Path("m.pt"), "ssh://pi", "python3")


def test_classify_ssh_failures():
    t = SshTarget("pi", "u", 22)
    assert "cannot reach" in str(classify_ssh_failure(
        "ssh: connect to host pi port 22: Connection refused", t))
    assert "cannot reach" in str(classify_ssh_failure(
        "ssh: Could not resolve hostname pi: Name or service not known", t))
    assert "authentication" in str(classify_ssh_failure(
        "u@pi: Permission denied (publickey).", t))
    assert "host key" in str(classify_ssh_failure("Host key verification failed.", t))


def test_decode_throttled():
    assert decode_throttled("0x0") == "none"
    assert decode_throttled("0x50005") == ("under-voltage now, throttled now, "
                                           "under-voltage has occurred, throttling has occurred")
    assert decode_throttled("garbage") == ""


def test_context_and_merge():
    before = parse_context("noise\nctx.board=Raspberry Pi 5 Model B Rev 1.0\n"
                           "ctx.cpu=Cortex-A76\nctx.cores=4\nctx.governor=ondemand\n"
                           "ctx.temp_millic=48312\nctx.throttled=0x0\nctx.os=\n")
    after = DeviceState({"temp_millic": "61000", "throttled": "0x20002"})
    assert before.temperature_c == pytest.approx(48.312)
    stats = LatencyStats.from_samples([2.0, 2.1, 2.2])
    remote = BenchRun(results=(BenchResult(model="tiny", target="tflite", precision="fp32",
                                           engine="litert", device="cpu", threads=4, batch=1,
                                           latency_ms=stats, context=Context(cpu="")),),
                      context=Context(cores=0, extra={"loadavg_1m": "0.1"}))
    merged = merge_run(remote, before, after, SshTarget("pi5", "pi"),
                       {Path("m/tiny.tflite"): "/tmp/edgefer-bench.x/tiny.tflite"})
    result = merged.results[0]
    assert result.device == "ssh://pi5"
    ctx = result.context
    assert ctx.device_model == "Raspberry Pi 5 Model B Rev 1.0"
    assert ctx.cpu == "Cortex-A76" and ctx.cores == 4
    assert ctx.extra["governor"] == "ondemand"
    assert ctx.extra["temperature_before_c"] == "48.3"
    assert ctx.extra["temperature_after_c"] == "61.0"
    assert ctx.extra["throttling_after"] == "ARM frequency capped now, " \
                                            "ARM frequency capping has occurred"
    assert merged.context.extra["loadavg_1m"] == "0.1"
    assert "measured on ssh://pi5" in merged.notes[-1]
    # the schema round-trips with the device's context in it
    assert BenchRun.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


def test_missing_model_is_model_error(tmp_path):
    with pytest.raises(ModelError):
        remote_bench(tmp_path / "nope.tflite", SshTarget("h"))


# --- a real sshd on 127.0.0.1 ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgefer-test",
                    "-f", str(path)], check=True)
    return path


class Sshd:
    def __init__(self, root: Path, port: int, user: str, client_config: Path) -> None:
        self.root = root
        self.port = port
        self.user = user
        self.client_config = client_config
        self.target = SshTarget("127.0.0.1", user, port)

    def options(self, **kwargs) -> SshOptions:
        values = {"python": sys.executable, "config_file": self.client_config,
                  "remote_tmp": str(self.remote_tmp)}
        values.update(kwargs)
        return SshOptions(**values)

    @property
    def remote_tmp(self) -> Path:
        """The device's temporary space (the same disk here); empty between tests."""
        return self.root / "device-tmp"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip(NO_SSHD)
    root = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(root / "host_key")
    client_key = _keygen(root / "client_key")
    _keygen(root / "wrong_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = _free_port()
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    config = root / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers {user}
Subsystem sftp internal-sftp
SetEnv TMPDIR={root}/device-tmp
LogLevel VERBOSE
""")
    host_pub = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    client_config = root / "ssh_config"
    client_config.write_text(f"""\
Host 127.0.0.1
  IdentityFile {client_key}
  IdentitiesOnly yes
  UserKnownHostsFile {root}/known_hosts
  StrictHostKeyChecking yes
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(root / "sshd.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            log = root / "sshd.log"
            pytest.fail(f"sshd did not start: {proc.stderr.read().decode()}"
                        f"{log.read_text() if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.fail("sshd did not listen within 15 s")
        time.sleep(0.1)
    server = Sshd(root, port, user, client_config)
    server.remote_tmp.mkdir()
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def device(sshd):
    """The sshd, with a check that every test leaves the device's temp space empty."""
    yield sshd
    left = sorted(p.name for p in sshd.remote_tmp.iterdir())
    for name in left:
        shutil.rmtree(sshd.remote_tmp / name, ignore_errors=True)
    assert left == [], f"left behind on the device: {left}"


def test_remote_bench_end_to_end(device, tiny_tflite):
    run = remote_bench(tiny_tflite, device.target, ("--threads", "1", "--batch", "1"),
                       device.options())
    assert run.results, run
    ok = [r for r in run.results if r.status.value == "ok"]
    assert ok, [r.reason for r in run.results]
    for result in ok:
        assert result.device == f"ssh://127.0.0.1:{device.port}"
        assert result.latency_ms is not None and result.latency_ms.p50 > 0
        assert result.model == "tiny"
        assert result.context is not None
        assert result.context.cores > 0 and result.context.cpu
        assert result.context.extra["host"] == result.device
    assert run.context.extra["host"] == f"ssh://127.0.0.1:{device.port}"
    assert "measured on ssh://127.0.0.1" in run.notes[-1]


def test_remote_bench_failure_cleans_up(device, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer" * 10)
    # a model the device cannot load is a `failed` row in the report, not a crash; the
    # `device` fixture checks that the folder is gone all the same
    run = remote_bench(broken, device.target, ("--threads", "1", "--batch", "1"),
                       device.options())
    assert {r.status.value for r in run.results} == {"failed"}
    assert all(r.device.startswith("ssh://127.0.0.1") for r in run.results)


def test_remote_bench_error_exit_cleans_up(device, tiny_tflite):
    with pytest.raises(RemoteError, match=r"edgefer bench on ssh://127.0.0.1.* failed"):
        remote_bench(tiny_tflite, device.target, ("--threads", "zero"), device.options())


def test_unreachable_host(device, tiny_tflite):
    closed = SshTarget("127.0.0.1", device.user, _free_port())
    with pytest.raises(RemoteError, match=r"cannot reach .*Connection refused"):
        remote_bench(tiny_tflite, closed, (), device.options(connect_timeout_s=5))


def test_auth_failure(device, tiny_tflite):
    config = device.root / "ssh_config_wrong_key"
    config.write_text(device.client_config.read_text().replace(
        f"IdentityFile {device.root}/client_key", f"IdentityFile {device.root}/wrong_key"))
    with pytest.raises(RemoteError, match=r"authentication .* failed.*ssh-copy-id"):
        remote_bench(tiny_tflite, device.target, (), device.options(config_file=config))


def test_device_without_edgefer(device, tiny_tflite, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(RemoteError, match=r"edgefer is not installed .*pip install "
                                          r"'edgefer\[tflite\]'"):
        remote_bench(tiny_tflite, device.target, (),
                     device.options(python=str(venv / "bin" / "python")))


def test_device_without_python(device, tiny_tflite):
    with pytest.raises(RemoteError, match=r"not found on ssh://.*install Python"):
        remote_bench(tiny_tflite, device.target, (),
                     device.options(python="/nonexistent/python3"))


# A process inherits SIGINT ignored or blocked from a parent that had it so when it forked
# (glibc's system(), run by any thread of the pytest worker, ignores SIGINT process-wide
# while it waits). A user's shell starts edgefer with the default; so does the driver, and
# it says when it had to.
DRIVER = """\
import signal
import sys
from pathlib import Path
if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
    print(f"driver: SIGINT was {signal.getsignal(signal.SIGINT)} at start", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
if blocked & {signal.SIGINT, signal.SIGTERM}:
    print(f"driver: {sorted(blocked)} were blocked at start", flush=True)
from edgefer.edge.ssh import SshOptions, parse_ssh_target, remote_bench
target = parse_ssh_target(sys.argv[1])
options = SshOptions(python=sys.argv[3], config_file=Path(sys.argv[4]), remote_tmp=sys.argv[5])
try:
    remote_bench(sys.argv[2], target, ("--threads", "1"), options)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_nothing_behind(device, tiny_tflite, tmp_path, sig):
    # a device Python whose bench hangs, so the run is surely mid-way when interrupted
    slow = tmp_path / "slow-python"
    slow.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = bench ]; then sleep 600; fi
done
exec {sys.executable} "$@"
""")
    slow.chmod(0o755)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    target = f"ssh://{device.user}@127.0.0.1:{device.port}"
    proc = subprocess.Popen([sys.executable, str(driver), target, str(tiny_tflite), str(slow),
                             str(device.client_config), str(device.remote_tmp)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    pid_files: list[Path] = []
    while not pid_files:
        pid_files = list(device.remote_tmp.glob("edgefer-bench.*/pid"))
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the remote bench did not start within 60 s")
        time.sleep(0.1)
    time.sleep(0.3)  # the pid file is written; let the hang begin
    remote_pid = int(pid_files[0].read_text())
    assert _group_alive(remote_pid), "the remote bench should be running"
    proc.send_signal(sig)
    try:  # a hang guard: on an idle machine the run stops within seconds
        output = proc.communicate(timeout=180)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 180 s after {sig.name}: {proc.communicate()[0].decode()}")
    assert proc.returncode != 0, output
    assert list(device.remote_tmp.iterdir()) == [], output
    deadline = time.monotonic() + 5
    while _group_alive(remote_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_alive(remote_pid) == [], "the remote bench still runs"


def _cli(args: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "edgefer", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


def test_cli_bench_on_ssh_with_budget(device, tiny_tflite, tmp_path):
    env = {"EDGEFER_SSH_CONFIG": str(device.client_config),
           "EDGEFER_REMOTE_PYTHON": sys.executable}
    target = f"ssh://{device.user}@127.0.0.1:{device.port}"
    common = [str(tiny_tflite), "--on", target, "--profile", "rpi5", "--threads", "1",
              "--warmup", "2", "--min-runs", "10", "--min-time", "0.1"]
    out = tmp_path / "bench.json"
    done = _cli([*common, "--json", str(out), "--budget", "p90_ms<=10000,size_mb<=1"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "budget p90_ms<=10000,size_mb<=1 met" in done.stdout
    run = BenchRun.from_dict(json.loads(out.read_text()))
    assert {r.device for r in run.results} == {f"ssh://127.0.0.1:{device.port}"}
    assert {r.batch for r in run.results} == {1}  # the profile's batch
    # the same run against a budget it cannot meet: exit 1, the miss named
    missed = _cli([*common, "--budget", "p50_ms<=0.0000001"], env)
    assert missed.returncode == 1, missed.stdout + missed.stderr
    assert "budget p50_ms<=1e-07 missed" in missed.stderr
    assert "misses p50_ms<=1e-07" in missed.stderr


def test_cli_malformed_budget_fails_before_connecting(tiny_tflite):
    done = _cli([str(tiny_tflite), "--on", "ssh://nobody@127.0.0.1:1", "--budget", "p90<=3"],
                {}, timeout=60)
    assert done.returncode != 0
    assert "unknown metric 'p90'" in done.stderr
    assert "cannot reach" not in done.stderr


# --- bench --on: what it cannot carry is refused, bad numbers before any upload ----------

@pytest.mark.parametrize(("extra", "told"), [
    (["--data", "fer.csv"], "--data: not supported with --on"),
    (["--limit", "10"], "--limit: not supported with --on"),
    (["--reference", "m.tflite"], "--reference: not supported with --on"),
    (["--baseline", "m.tflite", "--baseline-name", "b"], "--baseline, --baseline-name: not"),
    (["--export", "all"], "--export: not supported with --on"),
    (["--threads", "0"], "threads must be at least 1"),
    (["--batch", "1,x"], "batch sizes must be whole numbers"),
    (["--min-time", "nan"], "min time must be 0 or more seconds, got nan"),
])
def test_bench_on_refuses_before_connecting(tmp_path, monkeypatch, extra, told):
    from click.testing import CliRunner

    from edgefer.cli import main

    def no_ssh(*args, **kwargs):
        raise AssertionError("ssh was called")

    monkeypatch.setattr("edgefer.edge.ssh.RemoteSession.call", no_ssh)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.tflite").write_bytes(b"model")
    (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n")
    result = CliRunner().invoke(main, ["bench", "m.tflite", "--on", "ssh://pi@pi.local",
                                       *extra])
    assert result.exit_code != 0
    assert told in result.output, result.output
    assert "ssh was called" not in repr(result.exception)
