"""Named device profiles."""

from __future__ import annotations

import pytest

from edgefer.edge.profiles import PROFILES, Delegate, DeviceProfile, get_profile
from edgefer.errors import ConfigError


def test_named_profiles():
    for name in ("rpi4", "rpi5", "android-midrange", "android-flagship"):
        assert get_profile(name).name == name
    assert get_profile("RPI5 ").threads == 4
    assert get_profile("android-flagship").delegate is Delegate.GPU
    assert get_profile("android-nnapi").delegate is Delegate.NNAPI
    assert get_profile("rpi4").delegate is Delegate.NONE and get_profile("rpi4").xnnpack
    assert all(p.description for p in PROFILES.values())


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown device profile 'pi9'.*rpi4"):
        get_profile("pi9")


def test_validation():
    assert DeviceProfile("x", threads=2, delegate="gpu").delegate is Delegate.GPU
    with pytest.raises(ConfigError, match=r"unknown delegate 'tpu'"):
        DeviceProfile("x", threads=2, delegate="tpu")
    with pytest.raises(ConfigError, match=r"threads"):
        DeviceProfile("x", threads=0)
    with pytest.raises(ConfigError, match=r"batch"):
        DeviceProfile("x", threads=1, batch=0)
