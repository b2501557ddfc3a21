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


# --- what an output may replace: a regular file that is not an input (issue 16, item 1) ---

def _special_files(tmp_path):
    import socket

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.json"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    specials = {"a FIFO": fifo, "a socket": sock_path}
    try:  # a private twin of /dev/null (root only): the real one is never put at risk
        os.mknod(tmp_path / "null.json", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        specials["a character device"] = tmp_path / "null.json"
    except PermissionError:
        pass
    return specials, sock


def test_devices_fifos_and_sockets_are_never_replaced(tmp_path):
    specials, sock = _special_files(tmp_path)
    try:
        for kind, path in specials.items():
            before = os.stat(path).st_mode
            with pytest.raises(OutputError, match=f"it is {kind}; an output replaces only"):
                check_writable(path, folder=False)
            with pytest.raises(OutputError, match=kind):
                write_text_atomic(path, "{}\n")
            assert os.stat(path).st_mode == before  # still the device, FIFO or socket
        assert not list(tmp_path.glob(".*partial*"))
    finally:
        sock.close()


def test_a_symlink_is_written_through_to_its_file(tmp_path):
    real = tmp_path / "results" / "latest.json"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert check_writable(link, folder=False) == link
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["latest.json"]


def test_a_symlink_to_nothing_or_to_a_device_is_refused(tmp_path):
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "missing.json")
    os.mkfifo(tmp_path / "fifo")
    to_fifo = tmp_path / "fifo.json"
    to_fifo.symlink_to(tmp_path / "fifo")
    with pytest.raises(OutputError, match=r"symlink to .*missing\.json, which does not exist"):
        check_writable(dangling, folder=False)
    with pytest.raises(OutputError, match=r"a symlink to .*fifo.*it is a FIFO"):
        write_text_atomic(to_fifo, "x")
    assert not (tmp_path / "missing.json").exists() and to_fifo.is_symlink()
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


def test_bench_refuses_to_write_its_json_over_its_model(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model bytes")
    hard = tmp_path / "hard.json"
    os.link(model, hard)
    for out in (model, hard):
        result = CliRunner().invoke(main, ["bench", str(model), "--json", str(out)])
        assert result.exit_code == 1, result.output
        assert "one of this command's inputs" in result.output
    assert model.read_bytes() == b"model bytes"


def test_calibrate_build_refuses_to_write_over_its_data(tmp_path):
    data = tmp_path / "fer.csv"
    data.write_text("emotion,pixels,Usage\n")
    result = CliRunner().invoke(main, ["calibrate", "build", "--data", str(data),
                                       "--out", str(data)])
    assert result.exit_code == 1
    assert "one of this command's inputs" in result.output
    assert data.read_text() == "emotion,pixels,Usage\n"


def test_files_written_later_never_replace_an_input(tmp_path):
    """A report folder's files are checked when they are written, not only up front."""
    from edgefer.outputs import protect

    folder = tmp_path / "report"
    folder.mkdir()
    model = folder / "bench.json"
    model.write_text("an input that happens to sit where the report goes\n")
    protect([model])
    with pytest.raises(OutputError, match="one of this command's inputs"):
        write_text_atomic(model, "report\n")
    assert model.read_text().startswith("an input")


def test_a_model_folder_protects_its_record_and_weights_not_its_exports(tmp_path):
    from edgefer.outputs import protect

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.json", "weights.h5", "model-int8.tflite"):
        (folder / name).write_text(name)
    result = CliRunner().invoke(main, ["bench", str(folder), "--json",
                                       str(folder / "model.json")])
    assert result.exit_code == 1 and "one of this command's inputs" in result.output
    protect([folder])
    with pytest.raises(OutputError, match="inputs"):
        write_text_atomic(folder / "weights.h5", "x")
    write_text_atomic(folder / "model-int8.tflite", "a new export")  # exports are outputs
    assert (folder / "model.json").read_text() == "model.json"
