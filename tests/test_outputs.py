"""Output paths are checked before work starts and written whole or not at all."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest
from click.testing import CliRunner

from edgefer.cli import main
from edgefer.errors import OutputError
from edgefer.outputs import check_writable, write_text_atomic


def test_writable_places_pass(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper", folder=True) == tmp_path / "new" / "deeper"
    check_writable(tmp_path / "run.json", folder=False)
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


def test_wrong_kinds_are_refused(tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    with pytest.raises(OutputError, match="it is a file, expected a folder"):
        check_writable(tmp_path / "file.txt", folder=True)
    with pytest.raises(OutputError, match="it is a folder, expected a file"):
        check_writable(tmp_path, folder=False)
    with pytest.raises(OutputError, match=r"file\.txt is a file, not a folder"):
        check_writable(tmp_path / "file.txt" / "out", folder=True)


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(OutputError, match="Permission denied"):
        check_writable(tmp_path / "out", folder=True)


def test_atomic_write_keeps_the_old_file_when_it_fails(tmp_path, monkeypatch):
    target = write_text_atomic(tmp_path / "a" / "report.md", "first\n")
    assert target.read_text() == "first\n"
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, like any output

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_text_atomic(target, "second\n")
    assert target.read_text() == "first\n"
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]  # no temp file left


def test_bench_refuses_an_unwritable_json_before_measuring(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"never loaded")
    result = CliRunner().invoke(main, ["bench", str(model), "--json",
                                       str(tmp_path / "taken" / "run.json")])
    assert result.exit_code == 1
    assert "cannot write" in result.output and "Traceback" not in result.output
    assert "model.onnx" not in result.output  # failed before benchmarking it


def test_an_unforeseen_os_error_is_one_line(tmp_path, monkeypatch):
    import edgefer.calibration as calibration

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "c.json"))

    monkeypatch.setattr(calibration, "build_manifest", full)
    result = CliRunner().invoke(main, ["calibrate", "build", "--data", str(tmp_path),
                                       "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "Traceback" not in result.output
