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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
