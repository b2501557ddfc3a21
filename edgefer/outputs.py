"""Output paths: checked before long work starts, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgefer.errors import OutputError


def check_writable(path: str | os.PathLike, *, folder: bool) -> Path:
    """Raise OutputError unless ``path`` (a folder, or a file) can be written.

    Called before minutes of work, so that a typo or a read-only place fails at once. It
    probes with a real temporary file: permission bits do not tell root about read-only
    mounts or immutable folders.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise OutputError(f"cannot write {path}: it is {kind}, expected "
                          f"{'a folder' if folder else 'a file'}")
    nearest = path if folder else path.parent
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
    KeyboardInterrupt included, so no half-written file is ever left behind."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = temp_path(self.path)

    def __enter__(self) -> PartialFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> Path:
        """Rename the temp file onto ``path`` (it is removed if that fails)."""
        try:
            os.replace(self.tmp, self.path)
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
