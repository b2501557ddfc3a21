"""Model architectures by name, as timm's ``register_model`` keeps them.

A backbone is one module whose builder is decorated with ``@register_model(NAME,
CONFIG)`` (``CONFIG``: a frozen dataclass of its options, with ``input_size`` and
``channels``), plus one entry in ``BUILTIN``, so that a model folder naming it can be
loaded without anyone importing that module first. ``model.json`` records the name
under ``architecture``; a record without it is from before the registry: MobileNetV3.

Nothing here imports TensorFlow: the architecture modules are imported when a model is
built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from edgefer.errors import ModelError

# name -> the module that registers it
BUILTIN: dict[str, str] = {
    "mobilenetv3": "edgefer.model.mobilenetv3",
    "minixception": "edgefer.model.minixception",
}
# what a model.json without an ``architecture`` holds
DEFAULT_ARCHITECTURE = "mobilenetv3"


@dataclass(frozen=True)
class Architecture:
    name: str
    config: type  # the builder's options: a frozen dataclass
    build: Callable  # (config) -> an uncompiled Keras model with fresh weights


_REGISTERED: dict[str, Architecture] = {}


def register_model(name: str, config: type) -> Callable[[Callable], Callable]:
    """Decorator: register the builder it decorates under ``name``, with its ``config``."""
    def decorate(build: Callable) -> Callable:
        _REGISTERED[name] = Architecture(name, config, build)
        return build
    return decorate


def architecture(name: str) -> Architecture:
    """The architecture registered as ``name`` (importing its module); ModelError if none."""
    if name not in _REGISTERED and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTERED:
        known = ", ".join(sorted({*BUILTIN, *_REGISTERED}))
        raise ModelError(f"unknown model architecture {name!r}; edgefer knows {known}")
    return _REGISTERED[name]


def architecture_of(config: object) -> Architecture:
    """The architecture whose config class ``config`` is an instance of."""
    for found in _REGISTERED.values():
        if type(config) is found.config:
            return found
    raise ModelError(f"{type(config).__name__} is the config of no registered architecture")


def recorded_architecture(record: dict) -> str:
    """The architecture a model.json record names (MobileNetV3 for records without one)."""
    name = record.get("architecture", DEFAULT_ARCHITECTURE)
    if not isinstance(name, str):
        raise ModelError(f"invalid architecture name {name!r} (not a string)")
    return name


def config_from_record(record: dict, path: object) -> object:
    """The architecture's config from the model.json record of the model at ``path``."""
    chosen = architecture(recorded_architecture(record))
    try:
        return chosen.config(**record["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid model record ({exc})") from exc


def build_model(config: object):
    """The network ``config`` describes, with fresh weights, by its architecture."""
    return architecture_of(config).build(config)
