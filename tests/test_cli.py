"""Every command explains itself, and the CLI never shows a traceback for user errors."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgefer import __version__
from edgefer.cli import main


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL = list(_commands(main))


def test_the_expected_commands_exist():
    names = {" ".join(path) for path, _ in ALL}
    assert {"train", "export", "bench", "benchmark", "calibrate build", "predict", "data info",
            "inspect"} <= names


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    command = dict(ALL)[path]
    assert command.help and len(command.help.strip()) > 20, f"{path} has no help text"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_core_cli_imports_no_heavy_engine():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from edgefer.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "heavy = [m for m in ('tensorflow', 'onnxruntime', 'openvino') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
