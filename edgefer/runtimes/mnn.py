"""MNN (Alibaba), through its Python package ``MNN`` (pip install MNN). CPU.

An MNN model is one ``.mnn`` file (a FlatBuffer); edgefer's exports keep the edgefer record
in its ``bizCode`` string (edgefer.export.mnn). The runtime uses MNN's session API
(``Interpreter``, ``createSession``, ``runSession``), which MNN's own benchmark tool times.
An export has a static batch of 1: a batch runs one ``runSession`` per image, as ncnn's
extractor calls do.

MNN prints on file descriptor 1 (stdout), not 2: what the CPU supports when the module is
imported, and why a model did not load. ``stdout_captured`` keeps that off edgefer's
output (``edgefer predict --json`` writes there) unless ``-v``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.engines import require
from edgefer.errors import DeviceUnavailableError, ModelError
from edgefer.preprocess import ModelInfo
from edgefer.quiet import verbose
from edgefer.runtimes.base import Runtime, RuntimeOptions, resolve_info


@dataclass
class Captured:
    """What native code printed on stdout inside a ``stdout_captured`` block."""

    text: str = ""

    def last_lines(self, count: int = 3) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return " | ".join(line for line in lines[-count:] if "device supports" not in line)


@contextlib.contextmanager
def stdout_captured() -> Iterator[Captured]:
    """Point fd 1 at a temporary file inside the block; afterwards ``.text`` holds what was
    printed there (shown on stderr too with -v). Python's ``sys.stdout`` stays on the
    terminal meanwhile."""
    said = Captured()
    _flush_all()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (a detached process): nothing to capture
        yield said
        return
    python_stdout, terminal = sys.stdout, None
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            if _writes_to_fd1(python_stdout):
                terminal = open(os.dup(saved), "w", buffering=1,  # noqa: SIM115
                                encoding=getattr(python_stdout, "encoding", None) or "utf-8")
                sys.stdout = terminal
            yield said
        finally:
            _flush_all()
            sys.stdout = python_stdout
            if terminal is not None:
                terminal.close()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            said.text = sink.read().decode("utf-8", "replace")
    if verbose() and said.text:
        sys.stderr.write(said.text)


def _flush_all() -> None:
    """Python's and C's stdout buffers: C's is a full buffer while fd 1 is a file."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(AttributeError, OSError, TypeError):
        ctypes.CDLL(None).fflush(None)


def _writes_to_fd1(stream: object) -> bool:
    try:
        return stream.fileno() == 1  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False  # pytest's capture, CliRunner: not the real fd 1


def mnn_module():
    """``import MNN``, its CPU report kept off stdout."""
    if sys.modules.get("MNN") is not None:
        return sys.modules["MNN"]
    with stdout_captured():
        return require("MNN", "mnn", "MNN")


class MnnRuntime(Runtime):
    engine = "mnn"

    def __init__(self, path: Path, info: ModelInfo, options: RuntimeOptions, interpreter,
                 session) -> None:
        super().__init__(path, info, options)
        self._interpreter = interpreter
        self._session = session
        self._input = interpreter.getSessionInput(session)
        self._output = interpreter.getSessionOutput(session)
        self._in_shape = tuple(self._input.getShape())
        self._out_shape = tuple(self._output.getShape())

    @classmethod
    def load(cls, path: str | os.PathLike, options: RuntimeOptions = RuntimeOptions(),
             info: ModelInfo | None = None) -> MnnRuntime:
        path = Path(path)
        mnn = mnn_module()
        if options.device.accelerator:
            raise DeviceUnavailableError(
                f"edgefer runs MNN on the CPU only (MNN's OpenCL, Vulkan and Metal backends "
                f"are not wired in); run it with --device cpu, not {options.device.value}")
        config = {"numThread": options.threads} if options.threads else {}
        with stdout_captured() as said:
            try:
                interpreter = mnn.Interpreter(str(path))
                session = interpreter.createSession(config)
            except Exception as exc:  # MNN raises plain Exception
                failed = exc
            else:
                failed = None
        if failed is not None:
            why = said.last_lines() or str(failed)
            raise ModelError(f"{path}: not a whole MNN model (truncated, or another kind of "
                             f"file; MNN: {why})") from failed
        return cls(path, resolve_info(path, info), options, interpreter, session)

    @property
    def ran_on(self) -> str:
        return "MNN CPU"

    def _host_input(self, image: np.ndarray):
        """One NHWC image as a host tensor laid out as the session's input already is
        (MNN keeps the ONNX model's NHWC input; no layout conversion on copy)."""
        mnn = mnn_module()
        data = np.ascontiguousarray(image.reshape(self._in_shape), dtype=np.float32)
        return mnn.Tensor(self._in_shape, mnn.Halide_Type_Float, data,
                          self._input.getDimensionType())

    def _run_one(self, image: np.ndarray) -> np.ndarray:
        mnn = mnn_module()
        self._input.copyFrom(self._host_input(image))
        status = self._interpreter.runSession(self._session)
        if status != 0:
            raise ModelError(f"{self.path}: MNN failed to run it (status {status})")
        host = mnn.Tensor(self._out_shape, mnn.Halide_Type_Float,
                          np.zeros(self._out_shape, np.float32),
                          self._output.getDimensionType())
        self._output.copyToHostTensor(host)
        return np.array(host.getNumpyData(), np.float32).reshape(-1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._run_one(image) for image in batch])

    def bound_run(self, batch: np.ndarray) -> Callable[[], object]:
        """``runSession`` once per image on an input copied in before timing (the first
        image: a batch-1 model runs each image alike)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._input.copyFrom(self._host_input(batch[0]))
        run, session, count = self._interpreter.runSession, self._session, len(batch)

        def engine_call() -> None:
            for _ in range(count):
                run(session)
        return engine_call
