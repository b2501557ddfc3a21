"""Every error edgefer raises on purpose; the CLI turns them into clean messages."""

from __future__ import annotations


class EdgeferError(Exception):
    """Base class: a problem the user can act on, with a message that says how."""


class DataError(EdgeferError):
    """The data set is missing, malformed or does not match what was expected."""


class ConfigError(EdgeferError):
    """An option, config file or expression is invalid."""


class ModelError(EdgeferError):
    """A model file is missing, corrupt, or not what an operation needs."""


class ExportError(EdgeferError):
    """A conversion failed or its result did not pass the parity gate."""


class EngineMissingError(EdgeferError):
    """An optional inference or training engine is not installed."""

    def __init__(self, engine: str, extra: str, detail: str = "") -> None:
        self.engine = engine
        self.extra = extra
        hint = f"pip install 'edgefer[{extra}]'"
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"{engine} is not installed{suffix}; install it with: {hint}")


class DeviceUnavailableError(EdgeferError):
    """A device, execution provider or delegate that was asked for is not present."""


class RemoteError(EdgeferError):
    """A remote device (SSH or adb) could not be reached or used."""


class ClusterError(EdgeferError):
    """Another worker of a multi-worker training stopped, or could not be reached."""


class BenchFailedError(EdgeferError):
    """A model or export could not be benchmarked (its row in the report says why)."""


class BudgetError(EdgeferError):
    """A benchmark result missed a release budget."""


class OutputError(EdgeferError):
    """An output file or folder cannot be written where the user asked."""


class EmulationError(EdgeferError):
    """The emulated arm64 device (QEMU user-mode rootfs) cannot be built or run."""
