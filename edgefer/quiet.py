"""Engines' log lines hidden unless ``-v``: TensorFlow, LiteRT, ONNX Runtime, NNCF, tf2onnx.

Two kinds of chatter. Python loggers and warnings (TensorFlow's AutoGraph notes, tfmot's
UserWarning, ONNX Runtime's "consider pre-processing", NNCF's INFO lines) are filtered
here once per process. Native code (absl's "All log messages before absl::InitializeLog()",
"Could not find cuda drivers", cuInit, LiteRT's "Created TensorFlow Lite XNNPACK delegate")
writes straight to file descriptor 2, before and outside Python logging: ``native_quiet``
points fd 2 elsewhere while an engine is imported or a model loaded, and keeps Python's own
``sys.stderr`` (progress bars, edgefer's messages) on the terminal.

``EDGEFER_VERBOSE=1`` (what ``edgefer -v`` sets) shows everything; spawned workers inherit it.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout, suppress

VERBOSE_ENV = "EDGEFER_VERBOSE"
# loggers whose records below WARNING (below ERROR for the chattiest) are dropped
_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "tf2onnx": logging.ERROR,
            "nncf": logging.WARNING, "openvino": logging.WARNING, "onnxruntime": logging.ERROR,
            "h5py": logging.WARNING}
_ENGINE_MODULES = (r"(tensorflow|tf_keras|keras|tf2onnx|onnxruntime|onnx|nncf|openvino"
                   r"|ai_edge_litert)")
_lock = threading.Lock()
_depth = 0


_KEEP_NATIVE = False


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def keep_native_output() -> None:
    """In a process whose fd 2 is a log (a bench worker): keep engines' native lines there,
    where a crash's last words are read back from."""
    global _KEEP_NATIVE
    _KEEP_NATIVE = True


def set_verbose(on: bool) -> None:
    """Choose for this process and the workers it starts; then filter Python chatter."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    if on:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    configure()


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or record.levelno >= self.level


class _EngineRootRecords(logging.Filter):
    """Engines that log through the root logger (ONNX Runtime's quantizer does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if verbose() or record.levelno >= logging.ERROR:
            return True
        path = record.pathname.replace("\\", "/")
        return not any(f"/{name}/" in path for name in
                       ("onnxruntime", "nncf", "tf2onnx", "tensorflow", "openvino"))


def configure() -> None:
    """Filter engines' Python log records and warnings (idempotent; a no-op with -v)."""
    for name, level in _LOGGERS.items():
        logger = logging.getLogger(name)
        # a filter on the logger object survives the library setting its level at import
        if not any(isinstance(f, _Below) for f in logger.filters):
            logger.addFilter(_Below(level))
        if not verbose() and logger.level < level:
            logger.setLevel(level)  # also quiets child loggers (tf2onnx.tfonnx, ...)
    root = logging.getLogger()
    if not any(isinstance(f, _EngineRootRecords) for f in root.filters):
        root.addFilter(_EngineRootRecords())
    if not verbose():
        warnings.filterwarnings("ignore", module=_ENGINE_MODULES)


@contextmanager
def native_quiet() -> Iterator[None]:
    """Hide what native code writes to fd 2 inside the block (nothing is hidden with -v).

    Python's ``sys.stderr`` stays on the terminal for the block's duration."""
    global _depth
    with _lock:
        _depth += 1
        outer = _depth == 1
    try:
        if outer and not verbose() and not _KEEP_NATIVE:
            with _fd2_hidden():
                yield
        else:  # -v, or already hidden by an outer block
            yield
    finally:
        with _lock:
            _depth -= 1


@contextmanager
def conversion_quiet() -> Iterator[None]:
    """``native_quiet``, and Python's stdout too: NNCF draws its progress bars there and
    tf2onnx prints; edgefer itself prints nothing on stdout while a model converts."""
    if verbose():
        yield
        return
    with native_quiet(), redirect_stdout(io.StringIO()):
        yield


@contextmanager
def _fd2_hidden() -> Iterator[None]:
    with suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a detached process): nothing to hide
        yield
        return
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 2)
            if _writes_to_fd2(python_stderr):
                sys.stderr = _terminal(saved, python_stderr)
            yield
        finally:
            with suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)


_TERMINAL = None


def _terminal(fd: int, like):
    """One stream on (a copy of) the real fd 2 for Python's writes while fd 2 is hidden.

    Kept open for good: a handler created inside the block may hold on to it."""
    global _TERMINAL
    if _TERMINAL is None:
        _TERMINAL = open(os.dup(fd), "w", buffering=1,  # noqa: SIM115
                         encoding=getattr(like, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    return _TERMINAL


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False  # pytest's capture, CliRunner: not the real fd 2
