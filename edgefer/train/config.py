"""Training options: one dataclass, read from TOML and overridden from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path

import tomllib

from edgefer.errors import ConfigError, ModelError
from edgefer.model.mobilenetv3 import ModelConfig
from edgefer.model.registry import DEFAULT_ARCHITECTURE, architecture


class Optimizer(str, Enum):
    ADAMW = "adamw"
    SGD = "sgd"


class Schedule(str, Enum):
    COSINE = "cosine"
    PLATEAU = "plateau"


class Loss(str, Enum):
    CROSSENTROPY = "crossentropy"
    FOCAL = "focal"


class ClassWeights(str, Enum):
    NONE = "none"
    BALANCED = "balanced"
    SQRT = "sqrt"  # square root of balanced: helps disgust without wrecking happy


class Strategy(str, Enum):
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTIWORKER = "multiworker"


@dataclass(frozen=True)
class Augment:
    flip: bool = True
    shift: float = 0.1
    rotation_deg: float = 10.0
    zoom: float = 0.1
    erasing: float = 0.25
    mixup: float = 0.0


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation: a trained model's predictions as part of every training
    target, ``(1 - weight) * one-hot label + weight * teacher probabilities``. Several
    teachers (a list of folders) are an ensemble: their probabilities are averaged."""

    # an edgefer model folder, or a list of them; empty: no distillation
    teacher: str | tuple[str, ...] = ""
    weight: float = 0.5  # the teacher's share of each target
    temperature: float = 1.0  # above 1 softens the teacher's probabilities
    flip: bool = True  # the teacher's prediction averaged with its mirror image's

    def __post_init__(self) -> None:
        if isinstance(self.teacher, (list, tuple)):
            folders = tuple(str(folder) for folder in self.teacher)
            # one teacher stays a plain string, as configs have always recorded it
            object.__setattr__(self, "teacher", folders[0] if len(folders) == 1
                               else folders or "")
        elif not isinstance(self.teacher, str):
            raise ConfigError(f"distill teacher must be a model folder or a list of them, "
                              f"got {self.teacher!r}")
        if isinstance(self.teacher, tuple) and not all(self.teacher):
            raise ConfigError("distill teacher: an empty folder name in the list")
        if not 0.0 < self.weight <= 1.0:
            raise ConfigError(f"distill weight must be in (0, 1], got {self.weight}")
        if not self.temperature > 0.0:
            raise ConfigError(f"distill temperature must be above 0, got {self.temperature}")

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher folders, () without distillation."""
        if isinstance(self.teacher, tuple):
            return self.teacher
        return (self.teacher,) if self.teacher else ()


@dataclass(frozen=True)
class LowRes:
    """Progressive resizing: the float stage's first ``epochs`` epochs train on images
    scaled down to ``size`` px, the rest at the model's input size. A step at 32 px costs
    about half of one at 48 px (docs/training.md); validation always runs at full size."""

    size: int = 0  # 0: off
    epochs: int = 0

    def __post_init__(self) -> None:
        if self.size < 0 or self.epochs < 0:
            raise ConfigError("[low_res] size and epochs must be at least 0")
        if bool(self.size) != bool(self.epochs):
            raise ConfigError("[low_res] needs both size and epochs (or neither)")
        if self.size and self.size < 16:
            raise ConfigError(f"[low_res] size must be at least 16 px, got {self.size}")


@dataclass(frozen=True)
class TrainConfig:
    name: str = ""  # the run's folder under ``out``; default: edgefer-<architecture>
    data: str = ""
    out: str = "runs"
    # a name in edgefer.model.registry; [model] holds that architecture's options
    architecture: str = DEFAULT_ARCHITECTURE
    model: object = field(default_factory=ModelConfig)
    augment: Augment = field(default_factory=Augment)
    distill: Distill = field(default_factory=Distill)
    low_res: LowRes = field(default_factory=LowRes)
    epochs: int = 30
    prune: bool = True
    prune_epochs: int = 4
    target_sparsity: float = 0.5
    # layers with fewer weights stay dense: pruning the stem or a small squeeze-excite
    # costs accuracy out of proportion to the bytes it saves
    prune_min_weights: int = 20000
    qat_epochs: int = 3
    batch_size: int = 128
    optimizer: Optimizer = Optimizer.ADAMW
    lr: float = 3e-3
    qat_lr: float = 1e-4
    # AdamW's decoupled decay: each step shrinks a weight by weight_decay x lr, so 5e-4
    # at lr 2e-3 is 1e-6 per step, next to none; batch-norm scales/offsets and biases
    # are never decayed
    weight_decay: float = 5e-4
    schedule: Schedule = Schedule.COSINE
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    # float, QAT and PQAT stages (not pruning): validate, checkpoint and save an
    # exponential moving average of the weights with this momentum (0: off; 0.998
    # remembers about 500 steps)
    ema: float = 0.0
    # at each stage's end, recompute the batch-norm statistics for the final (averaged)
    # weights over the clean training images, kept when validation is no worse
    # (edgefer/train/batchnorm.py)
    recompute_bn: bool = False
    loss: Loss = Loss.CROSSENTROPY
    focal_gamma: float = 2.0
    class_weights: ClassWeights = ClassWeights.SQRT
    val_fraction: float = 0.1
    early_stopping: int = 8
    seed: int = 0
    # the validation slice's seed (None: seed), so runs that differ only in seed are
    # selected and compared on the same images
    val_seed: int | None = None
    limit: int | None = None
    init_from: str = ""
    strategy: Strategy = Strategy.DEFAULT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.type, str) and f.type in _ENUMS and not isinstance(value, Enum):
                try:
                    object.__setattr__(self, f.name, _ENUMS[f.type](value))
                except ValueError:
                    choices = ", ".join(e.value for e in _ENUMS[f.type])
                    raise ConfigError(f"{f.name} must be one of {choices}, got {value!r}") from None
        self._check_architecture()
        if not self.name:
            short = "mnv3s" if self.architecture == DEFAULT_ARCHITECTURE else self.architecture
            object.__setattr__(self, "name", f"edgefer-{short}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError("epochs must be at least 0 and batch_size at least 1")
        if self.epochs == 0 and not self.init_from:
            raise ConfigError("epochs = 0 needs init_from: the float model that QAT and "
                              "pruning start from")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ConfigError(f"target_sparsity must be in [0, 1), got {self.target_sparsity}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        self._check_low_res()
        if self.recompute_bn and self.strategy is not Strategy.DEFAULT:
            raise ConfigError("recompute_bn runs with the default strategy only: train "
                              "without --strategy, or set recompute_bn = false")
        if self.distill.teacher and self.strategy is Strategy.MULTIWORKER:
            raise ConfigError("distillation (a [distill] teacher) does not run with "
                              "--strategy multiworker yet: train with one worker")

    def _check_architecture(self) -> None:
        try:
            chosen = architecture(self.architecture)
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        if type(self.model) is chosen.config:
            return
        if self.model == ModelConfig():  # the default: this architecture's defaults
            object.__setattr__(self, "model", chosen.config())
            return
        raise ConfigError(f"the model options are a {type(self.model).__name__}, not the "
                          f"options of {self.architecture} ({chosen.config.__name__})")

    def _check_low_res(self) -> None:
        low = self.low_res
        if not low.size:
            return
        full = getattr(self.model, "input_size", None)
        if full is not None and low.size >= full:
            raise ConfigError(f"[low_res] size must be below the model's input size ({full} "
                              f"px), got {low.size}")
        if low.epochs >= self.epochs:
            raise ConfigError(f"[low_res] epochs ({low.epochs}) must be fewer than the float "
                              f"stage's ({self.epochs}): the last epochs train at full size")
        if self.strategy is Strategy.MULTIWORKER:
            raise ConfigError("[low_res] does not run with --strategy multiworker yet: train "
                              "with one worker")

    def to_dict(self) -> dict:
        """Every option as JSON-able values: sections as dicts, enums as their values."""
        def plain(value):
            return value.value if isinstance(value, Enum) else value

        record = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECTIONS:
                value = {g.name: plain(getattr(value, g.name)) for g in fields(value)}
            record[f.name] = plain(value)
        return record

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def data_path(self) -> Path:
        from edgefer.datasets import default_data_path

        path = Path(self.data) if self.data else default_data_path()
        if path is None:
            raise ConfigError("no FER2013 found: give data = PATH in the config or --data, "
                              "or set EDGEFER_FER2013")
        return path


_ENUMS = {"Optimizer": Optimizer, "Schedule": Schedule, "Loss": Loss,
          "ClassWeights": ClassWeights, "Strategy": Strategy}
# TOML sections: [model] (the architecture's options), [augment], [distill], [low_res]
_SECTIONS = ("model", "augment", "distill", "low_res")


def load_config(path: str | os.PathLike | None, **overrides) -> TrainConfig:
    """A TrainConfig from a TOML file (sections [model], [augment], [distill], [low_res])
    and overrides.

    Overrides use flat names; ``model.width=0.75`` style keys reach nested sections.
    """
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    return _from_dict(raw)


def _from_dict(raw: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    values = dict(raw)
    for name, cls in (("augment", Augment), ("distill", Distill), ("low_res", LowRes)):
        if name in values:
            values[name] = _section(cls, values[name], f"[{name}]")
    if "model" in values:
        name = values.get("architecture", DEFAULT_ARCHITECTURE)
        try:
            options = architecture(name).config
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
        values["model"] = _section(options, values["model"], f"[model] of {name}")
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid training option: {exc}") from exc


def _section(cls: type, values: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) in {where}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid option in {where}: {exc}") from exc

