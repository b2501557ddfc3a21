"""Named device profiles: the threads, delegate and batch an app on that device would use."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgefer.errors import ConfigError


class Delegate(str, Enum):
    NONE = "none"  # CPU kernels (with XNNPACK when ``xnnpack`` is on)
    GPU = "gpu"  # TFLite GPU delegate (OpenCL/OpenGL), Android
    NNAPI = "nnapi"  # Android Neural Networks API (DSP/NPU where the vendor ships a driver)


@dataclass(frozen=True)
class DeviceProfile:
    """How to run a model on one kind of device."""

    name: str
    threads: int
    xnnpack: bool = True
    delegate: Delegate = Delegate.NONE
    batch: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "delegate", Delegate(self.delegate))
        except ValueError:
            choices = ", ".join(d.value for d in Delegate)
            raise ConfigError(f"profile {self.name!r}: unknown delegate {self.delegate!r} "
                              f"(choose from {choices})") from None
        if self.threads < 1:
            raise ConfigError(f"profile {self.name!r}: threads must be at least 1, "
                              f"got {self.threads}")
        if self.batch < 1:
            raise ConfigError(f"profile {self.name!r}: batch must be at least 1, got {self.batch}")


PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile("rpi4", threads=4, description="Raspberry Pi 4 (4x Cortex-A72), XNNPACK"),
    DeviceProfile("rpi5", threads=4, description="Raspberry Pi 5 (4x Cortex-A76), XNNPACK"),
    DeviceProfile("rpi-zero2", threads=4,
                  description="Raspberry Pi Zero 2 W (4x Cortex-A53, 512 MB), XNNPACK"),
    DeviceProfile("android-low", threads=2,
                  description="Entry-level phone: 2 threads on the CPU, XNNPACK"),
    DeviceProfile("android-midrange", threads=4,
                  description="Mid-range phone: 4 threads on the big cores, XNNPACK"),
    DeviceProfile("android-flagship", threads=4, delegate=Delegate.GPU,
                  description="Flagship phone: GPU delegate, 4 CPU threads for the rest"),
    DeviceProfile("android-nnapi", threads=4, delegate=Delegate.NNAPI,
                  description="Phone with an NNAPI driver (DSP/NPU), 4 CPU threads for the rest"),
)}


def get_profile(name: str) -> DeviceProfile:
    """The named profile, or a ConfigError listing the ones there are."""
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown device profile {name!r}; choose from "
                          f"{', '.join(sorted(PROFILES))}") from None

