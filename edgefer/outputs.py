"""Output paths: checked before long work starts, written whole or not at all.

The rule, in one place (``check_writable`` before the work, ``PartialFile`` when the file
is put in place): an output replaces nothing but a regular file, and never one of the
command's inputs. A device, FIFO or socket is refused; an output path that is a symlink
is written through to the regular file it points to (the link stays a link), and a link
to anything else, or to nothing, is refused.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgefer.errors import OutputError
from edgefer.interrupts import signals_held

# the inputs of the command that runs in this process: real path -> (device, inode)
_INPUTS: dict[str, tuple[int, int]] = {}
# what edgefer reads from a folder given as an input: an edgefer model's record and
# weights, the CSV of a Kaggle FER2013 folder (the exports a model folder may hold are not
# inputs: exporting into the model's own folder replaces them)
FOLDER_INPUTS = ("model.json", "weights.h5", "fer2013.csv", "fer2013.csv.gz")


def protect(inputs: Iterable[str | os.PathLike | None]) -> None:
    """Record the command's inputs, so that no output replaces them: files, the files a
    model needs beside it (the .bin of an OpenVINO .xml), and a folder's FOLDER_INPUTS."""
    from edgefer.formats import model_files

    for item in inputs:
        if item is None:
            continue
        path = Path(item)
        files = [path / name for name in FOLDER_INPUTS] if path.is_dir() else model_files(path)
        for file in files:
            try:
                st = os.stat(file)
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode):
                _INPUTS[os.path.realpath(file)] = (st.st_dev, st.st_ino)


def _is_input(st: os.stat_result) -> bool:
    ident = (st.st_dev, st.st_ino)
    for path, recorded in _INPUTS.items():
        if recorded != ident:
            continue
        try:
            now = os.stat(path)
        except OSError:
            continue  # that input is gone: the inode may belong to another file now
        if (now.st_dev, now.st_ino) == ident:
            return True
    return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a file")):
        if test(mode):
            return name
    return "not a regular file"


def output_file(path: str | os.PathLike) -> Path:
    """Where an output file at ``path`` really goes: ``path``, or the regular file a
    symlink there points to. OutputError if that is a device, FIFO, socket or folder,
    a dangling link, or one of the command's inputs."""
    path = Path(path)
    target = path
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            raise OutputError(f"cannot write {path}: it is a symlink to {target}, which does "
                              "not exist (an output is written through a link only to an "
                              "existing file)")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    link = f" (a symlink to {target})" if target != path else ""
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"cannot write {path}{link}: it is {_kind(st.st_mode)}; an output "
                          "replaces only a regular file")
    if _is_input(st):
        raise OutputError(f"cannot write {path}{link}: it is one of this command's inputs; "
                          "choose another output path")
    return target


def check_writable(path: str | os.PathLike, *, folder: bool,
                   inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Raise OutputError unless ``path`` (a folder, or a file) can be written.

    Called before minutes of work, so that a typo or a read-only place fails at once.
    ``inputs`` are the command's inputs: recorded (see ``protect``) so that neither this
    output nor any file written later replaces one of them. It probes with a real
    temporary file: permission bits do not tell root about read-only mounts or immutable
    folders.
    """
    protect(inputs)
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else _kind(path.stat().st_mode)
        raise OutputError(f"cannot write {path}: it is {kind}, expected "
                          f"{'a folder' if folder else 'a file'}")
    target = path if folder else output_file(path)
    nearest = target if folder else target.parent
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise OutputError(f"cannot write {path}: {nearest} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=nearest, prefix=".edgefer-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc} in {nearest}") from None
    return path


def temp_path(path: Path) -> Path:
    """A sibling of ``path`` to write first; it keeps the suffix (OpenCV picks the
    encoder by it) and starts with a dot so a half-written file is never mistaken."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class PartialFile:
    """Where every output file is written before it is whole: ``tmp`` (see temp_path),
    renamed onto ``path`` by ``commit()``, deleted by ``discard()``. As a context manager
    it commits when the block ends normally and discards on any exception, Ctrl-C's
    KeyboardInterrupt included, so no half-written file is ever left behind.

    ``path`` is checked by ``output_file`` when the PartialFile is made and again just
    before the rename: a symlink is written through, anything else refused."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.target = output_file(self.path)
        self.tmp = temp_path(self.target)

    def __enter__(self) -> PartialFile:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> Path:
        """Rename the temp file onto the target (it is removed if that fails); returns
        ``path``, the name the caller gave."""
        try:
            os.replace(self.tmp, output_file(self.path))
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    with PartialFile(path) as partial:
        partial.tmp.write_text(text, newline="")
    return Path(path)


def write_bytes(path: Path, data: bytes) -> None:
    with PartialFile(path) as partial:
        partial.tmp.write_bytes(data)


def publish(staged: list[Path], staging: Path, folder: Path,
            remove: Iterable[Path] = ()) -> list[Path]:
    """Move ``staged`` files (under ``staging``) to the same places under ``folder``, as one
    unit: every target is checked first (``output_file``), then all are renamed in quick
    succession with Ctrl-C and SIGTERM held back, and ``remove`` (an earlier run's files
    this one does not make) go in the same step. Returns the new paths, in order."""
    finals = [folder / file.relative_to(staging) for file in staged]
    targets = [output_file(final) for final in finals]
    removed = [output_file(old) for old in remove]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    with signals_held():
        for file, target in zip(staged, targets, strict=True):
            os.replace(file, target)
        for old in removed:
            old.unlink(missing_ok=True)
    return finals
