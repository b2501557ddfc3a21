"""The training recipe: float -> QAT, and float -> pruning -> pruning-preserving QAT.

Every stage checkpoints each epoch (``BackupAndRestore``) and writes its model and a
``done.json`` when it ends, so a killed run resumes where it stopped. The run folder
records the settings it was made with (``settings.json``); a later run into the same folder
with other settings stops before training instead of reusing stages. Model selection
uses a stratified validation slice of the training split; PublicTest is read once, at
the end, for the report.

With ``--strategy multiworker`` every worker runs this same code; only the chief writes
the run folder (the others write to a temporary folder they remove), and the chief's
settings, decisions and variables reach the others over collectives (see cluster.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefer import __version__
from edgefer._tf import keras, tf
from edgefer.calibration import choose_subset
from edgefer.data import FerSplit, load_split
from edgefer.errors import ClusterError, ConfigError
from edgefer.labels import NUM_CLASSES
from edgefer.model import qat
from edgefer.model.store import (
    Stage,
    build_for_stage,
    check_record,
    float_twin,
    load_model,
    save_model,
    with_any_input_size,
)
from edgefer.outputs import write_text_atomic
from edgefer.preprocess import ModelInfo, Preprocess
from edgefer.train.batchnorm import recompute_if_better
from edgefer.train.cluster import (
    Cluster,
    broadcast_from_chief,
    cluster_error,
    cluster_from_env,
    gather_json,
    quiet_pool_teardown,
)
from edgefer.train.config import ClassWeights, Loss, Optimizer, Schedule, Strategy, TrainConfig
from edgefer.train.distill import mixed_targets, teacher_predictions
from edgefer.train.pipeline import make_dataset

_tf = tf()
_keras = keras()


# TensorFlow's checkpoint format: HDF5 weights cannot be read back into mirrored variables
_BEST = "best.ckpt"
_SETTINGS = "settings.json"
# Options that only say where the run folder is may differ on resume. Every other option
# shapes the trained model (hyperparameters, stage epochs, seed, limit, init_from, even the
# strategy, whose replicas keep their own batch-norm statistics), so none may change: to
# train with other settings, start a new run. The data path is not compared either: the
# data is compared by content, so a moved copy of the same images is the same run.
_FREE_ON_RESUME = frozenset({"name", "out", "data"})


def split_train_val(train: FerSplit, fraction: float, seed: int) -> tuple[FerSplit, FerSplit]:
    val_index = choose_subset(train, max(NUM_CLASSES, round(len(train) * fraction)), seed)
    keep = np.setdiff1d(np.arange(len(train)), val_index)
    return train.subset(keep), train.subset(val_index)


def train_val_split(config: TrainConfig, full: FerSplit | None = None
                    ) -> tuple[FerSplit, FerSplit]:
    """The training images and the validation slice a run with ``config`` uses (its
    model selection's data); ``full``: the training split, if already loaded."""
    if full is None:
        full = load_split(config.data_path(), "train", skip_bad=True)
    data = _without_blanks(full).limit(config.limit)
    val_seed = config.seed if config.val_seed is None else config.val_seed
    return split_train_val(data, config.val_fraction, val_seed)


def _without_blanks(split: FerSplit) -> FerSplit:
    """FER2013 has a few all-black training images: they teach nothing."""
    blank = {p.where for p in split.problems if p.kind == "blank"}
    return split.subset(np.array([i for i, name in enumerate(split.ids) if name not in blank]))


def _flat(section: dict, prefix: str = "") -> dict:
    """{"model": {"width": 1.0}} -> {"model.width": 1.0}"""
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def setting_changes(old: dict, new: dict) -> list[str]:
    """``"epochs 1 -> 2"`` for each result-shaping setting that differs between two records.

    Options only one side knows (another edgefer version's) are not compared.
    """
    changes = []
    old_data, new_data = old.get("data") or {}, new.get("data") or {}
    if old_data.get("train_sha256", new_data.get("train_sha256")) != new_data.get("train_sha256"):
        before, after = old_data.get("path"), new_data.get("path")
        changes.append(f"data {before} -> {after}" if before != after
                       else f"data at {after} has changed")
    before, after = _flat(old.get("config") or {}), _flat(new.get("config") or {})
    for key, value in after.items():
        if key in before and key not in _FREE_ON_RESUME and before[key] != value:
            changes.append(f"{key} {before[key]!r} -> {value!r}")
    return changes


def worker_changes(chief: dict, worker: dict) -> list[str]:
    """What a worker's settings record has that the chief's has not: its options (the
    folder options aside), its edgefer version and its training data (by content)."""
    changes = setting_changes({**chief, "data": {}}, {**worker, "data": {}})
    if chief.get("edgefer_version") != worker.get("edgefer_version"):
        changes.insert(0, f"edgefer {chief.get('edgefer_version')} -> "
                          f"{worker.get('edgefer_version')}")
    ours, theirs = ((r.get("data") or {}).get("train_sha256") for r in (chief, worker))
    if ours != theirs:
        changes.append(f"training data differs (sha256 {str(ours)[:12]} -> {str(theirs)[:12]})")
    return changes


def class_weights(labels: np.ndarray, mode: ClassWeights) -> np.ndarray:
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    balanced = counts.sum() / (NUM_CLASSES * np.maximum(counts, 1))
    weights = {ClassWeights.NONE: np.ones(NUM_CLASSES), ClassWeights.BALANCED: balanced,
               ClassWeights.SQRT: np.sqrt(balanced)}[mode]
    return weights / (weights[labels].mean())


def _strategy(kind: Strategy):
    if kind is Strategy.MIRRORED:
        gpus = _tf.config.list_logical_devices("GPU")
        # without GPUs, mirror over the logical CPUs the user configured (tests use two)
        devices = [d.name for d in gpus or _tf.config.list_logical_devices("CPU")]
        return _tf.distribute.MirroredStrategy(devices=devices)
    if kind is Strategy.MULTIWORKER:
        quiet_pool_teardown()
        return _tf.distribute.MultiWorkerMirroredStrategy()
    return _tf.distribute.get_strategy()


def _by_worker(ds):
    """Multi-worker: each worker keeps its share of every global batch (no effect otherwise)."""
    options = _tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        _tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def _cluster_failure(exc: Exception) -> bool:
    """A collective that failed because another worker died, left or cannot be reached."""
    lost = (_tf.errors.UnavailableError, _tf.errors.AbortedError, _tf.errors.CancelledError,
            _tf.errors.DeadlineExceededError)
    return isinstance(exc, lost) or "Collective ops is aborted" in str(exc)


def weights_digest(model) -> str:
    """sha256 of a model's variables in order, as this worker's first replica holds them."""
    strategy = _tf.distribute.get_strategy()
    h = hashlib.sha256()
    for weight in model.weights:
        h.update(np.ascontiguousarray(strategy.experimental_local_results(weight)[0].numpy())
                 .tobytes())
    return h.hexdigest()


def _loss(config: TrainConfig):
    if config.loss is Loss.FOCAL:
        return _keras.losses.CategoricalFocalCrossentropy(
            gamma=config.focal_gamma, label_smoothing=config.label_smoothing)
    return _keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


# batch-norm scales and offsets and biases: decaying them pulls activations to zero
# and regularises nothing (timm's and torchvision's recipes leave them out as well)
NOT_DECAYED = (r"/gamma:", r"/beta:", r"/bias:")


def _optimizer(config: TrainConfig, lr: float, epochs: int, steps_per_epoch: int):
    if config.schedule is Schedule.COSINE:
        warmup = min(config.warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch
        lr = _keras.optimizers.schedules.CosineDecay(
            lr / 10 if warmup else lr, max(1, epochs * steps_per_epoch - warmup), alpha=0.01,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    if config.optimizer is Optimizer.SGD:
        return _keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    optimizer = _keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    return optimizer


def build_for_fit(model) -> None:
    """Make the optimizer's, loss's and metrics' variables of a compiled model now.

    Made inside the first call of ``fit``'s step function, they make TensorFlow trace it
    twice (once to create them, once without): a whole stage's graph traced again (about
    15 of a stage's 80 s in a profile of the two-worker test).
    """
    model.optimizer.build(model.trainable_variables)
    outputs = _tf.zeros((1, *model.output_shape[1:]))
    model.compiled_loss.build(outputs)
    model.compiled_metrics.build(outputs, outputs)


class Throughput(_keras.callbacks.Callback):
    """Adds ``images_per_s`` (training images per second) to each epoch's logs."""

    def __init__(self, images_per_epoch: int) -> None:
        super().__init__()
        self.images = images_per_epoch
        self.rates: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rate = self.images / max(time.perf_counter() - self._start, 1e-9)
        self.rates.append(rate)
        if logs is not None:
            logs["images_per_s"] = rate


class LowResolutionEpochs(_keras.callbacks.Callback):
    """Sets the size the training batches are scaled to: ``size`` px for the first
    ``epochs`` epochs, then full size (0).

    Keras makes an epoch's iterator, and starts prefetching from it, before
    ``on_epoch_begin``; so the size is set when training begins (from the optimizer's step
    count, which a resumed run has restored by then) and at the end of each epoch.
    """

    def __init__(self, variable, size: int, epochs: int, steps_per_epoch: int,
                 log=print) -> None:
        super().__init__()
        self.variable, self.size, self.epochs = variable, size, epochs
        self.steps_per_epoch, self.log = steps_per_epoch, log

    def size_for(self, epoch: int) -> int:
        return self.size if epoch < self.epochs else 0

    def on_train_begin(self, logs=None):
        epoch = int(self.model.optimizer.iterations.numpy()) // self.steps_per_epoch
        self._set(epoch)
        if self.size_for(epoch):
            self.log(f"epochs {epoch + 1}-{self.epochs}: training images at {self.size} px")

    def on_epoch_end(self, epoch, logs=None):
        if self.size_for(epoch) and not self.size_for(epoch + 1):
            self.log(f"from epoch {epoch + 2}: training images at full size")
        self._set(epoch + 1)

    def _set(self, epoch: int) -> None:
        self.variable.assign(self.size_for(epoch))


class WeightAverage(_keras.callbacks.Callback):
    """An exponential moving average of the weights (Polyak averaging) for validation, the
    best checkpoint and the saved model: at a high learning rate the raw weights'
    validation accuracy swings by points from one epoch to the next.

    The average goes in when validation starts and stays until the next epoch starts, so
    the callbacks that act on an epoch's end (checkpoints, early stopping) see it too;
    ``BackupAndRestore`` backs it up as well, so a resumed run goes on from the average.
    Given ``raw_validation`` data, each epoch's logs also hold ``raw_val_accuracy``: the
    raw weights' accuracy, the average's ablation in the same run.
    """

    def __init__(self, momentum: float, raw_validation=None) -> None:
        super().__init__()
        self.momentum = momentum
        self.raw_validation = raw_validation
        self.average: list[np.ndarray] = []
        self.raw: list[np.ndarray] | None = None
        self.steps = 0

    def _weights(self) -> list:
        """The trained weights and batch-norm statistics: not a QAT model's quantizer
        ranges, which fake-quantization keeps as its own moving averages."""
        return [w for w in self.model.weights if w.dtype.is_floating
                and (w.trainable or _is_batchnorm_statistic(w))]

    def on_train_begin(self, logs=None):
        self.average = [w.numpy() for w in self._weights()]
        self.raw, self.steps = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.raw is not None:
            self._hold(self.raw)
            self.raw = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        # early on a shorter memory, so that the average soon leaves the initial weights
        momentum = min(self.momentum, (1 + self.steps) / (10 + self.steps))
        for average, weight in zip(self.average, self._weights(), strict=True):
            average *= momentum
            average += (1 - momentum) * weight.numpy()

    def on_test_begin(self, logs=None):
        if self.raw is None:
            self.raw = [w.numpy() for w in self._weights()]
            self._hold(self.average)

    def on_epoch_end(self, epoch, logs=None):
        if self.raw is None or self.raw_validation is None or logs is None:
            return
        self._hold(self.raw)
        scores = self.model.evaluate(self.raw_validation, verbose=0, return_dict=True)
        logs["raw_val_accuracy"] = scores["accuracy"]
        self._hold(self.average)

    def _hold(self, values: list[np.ndarray]) -> None:
        for weight, value in zip(self._weights(), values, strict=True):
            weight.assign(value)


def _is_batchnorm_statistic(weight) -> bool:
    return weight.name.split("/")[-1].startswith(("moving_mean", "moving_variance"))


class FromChief(_keras.callbacks.Callback):
    """Multi-worker: when fit starts (after ``BackupAndRestore`` restored the chief's
    checkpoint), every worker takes the chief's model, optimizer and epoch counters, so
    workers need no copy of the run folder to start a stage or to resume one."""

    def __init__(self, strategy, chief_restored: bool = False) -> None:
        super().__init__()
        self.strategy = strategy
        self.chief_restored = chief_restored

    def on_train_begin(self, logs=None):
        # the epoch counters BackupAndRestore restored (tf-keras keeps them on the model)
        state = getattr(self.model, "_training_state", None)
        if self.chief_restored and not self.strategy.extended.should_checkpoint:
            # Restoring made the chief's checkpoint its save counter, a variable, and making
            # a variable is a collective: make ours now, as the chief's next step was that.
            _ = state.read_checkpoint_manager.checkpoint.save_counter
        counters = [getattr(state, name) for name in ("_ckpt_saved_epoch", "_ckpt_saved_batch")
                    if hasattr(state, name)]
        broadcast_from_chief(self.strategy, [*self.model.weights,
                                             *self.model.optimizer.variables, *counters])


class Trainer:
    """Runs the stages of one TrainConfig under ``config.run_dir``."""

    def __init__(self, config: TrainConfig, log=print) -> None:
        self.config = config
        self.log = log
        self.dir = config.run_dir
        self.preprocess = Preprocess(size=config.model.input_size, channels=config.model.channels)
        self.cluster: Cluster | None = None
        if config.strategy is Strategy.MULTIWORKER:
            self.cluster = cluster_from_env()
            name = self.cluster.name()
            self.log = lambda message: log(f"{name}: {message}")
            self.log(f"waiting for all {self.cluster.size} workers "
                     f"({', '.join(self.cluster.names())})")
        self.chief = self.cluster is None or self.cluster.is_chief
        self.done: set[str] | None = None  # multi-worker: the stages the chief had done
        self.backed_up: set[str] = set()  # multi-worker: the chief's stages in progress
        for teacher in config.distill.teachers:  # a wrong one fails now, not after loading
            check_record(teacher)
        self.strategy = _strategy(config.strategy)
        _keras.utils.set_random_seed(config.seed)
        data_path = config.data_path()
        full = load_split(data_path, "train", skip_bad=True)
        self.data_identity = {"path": str(Path(data_path).resolve()),
                              "train_sha256": full.content_sha256()}
        self.train, self.val = train_val_split(config, full)
        self.log(f"train {len(self.train)} images, validation {len(self.val)} "
                 f"(stratified {config.val_fraction:.0%} of the training split)")
        self._targets: np.ndarray | None = None  # distillation's, made when first needed

    def plan(self) -> list[tuple[Stage, Stage | None, int]]:
        """(stage, parent, epochs) in the order they run."""
        c = self.config
        stages = [(Stage.FLOAT, None, c.epochs)]
        if c.qat_epochs:
            stages.append((Stage.QAT, Stage.FLOAT, c.qat_epochs))
        if c.prune and c.prune_epochs:
            stages.append((Stage.PRUNE, Stage.FLOAT, c.prune_epochs))
            if c.qat_epochs:
                stages.append((Stage.PQAT, Stage.PRUNE, c.qat_epochs))
        return stages

    def run(self) -> dict | None:
        """The summary (None on a worker that is not the chief: the chief writes it)."""
        if self.cluster is None:
            self.check_settings()
            return self._run()
        try:
            if self.chief:
                return self._run()
            # the same files as the chief's, written where they bother no one, then removed
            with tempfile.TemporaryDirectory(prefix=f"edgefer-{self.cluster.task_type}"
                                                    f"{self.cluster.task_index}-") as scratch:
                self.dir = Path(scratch)
                return self._run()
        except _tf.errors.OpError as exc:
            if not _cluster_failure(exc):
                raise
            raise cluster_error(exc, self.cluster) from exc

    def _run(self) -> dict | None:
        self.done = self.agree() if self.cluster else None
        results = {}
        for stage, parent, epochs in self.plan():
            results[stage.value] = self.run_stage(stage, parent, epochs)
        if not self.chief:
            self.log("finished; the chief writes the run folder")
            return None
        final = self.choose_final()
        return self.report(results, final)

    def agree(self) -> set[str]:
        """Multi-worker: every worker checks its settings against the chief's, and learns
        which stages the chief has done. All of them stop if one differs."""
        assert self.cluster is not None
        problem, done, backed_up = None, [], []
        if self.chief:
            problem = self.settings_conflict()
            done = [s.value for s, _, _ in self.plan()
                    if (self.stage_dir(s) / "done.json").is_file()]
            # what BackupAndRestore will restore (it asks TensorFlow the same way)
            backed_up = [s.value for s, _, _ in self.plan() if _tf.train.latest_checkpoint(
                str(self.stage_dir(s) / "backup" / "chief"))]
        records = gather_json(self.strategy, {"settings": self.settings(), "problem": problem,
                                              "done": done, "backed_up": backed_up},
                              self.cluster.size)
        chief, names = records[0], self.cluster.names()
        if chief["problem"]:
            raise ConfigError(chief["problem"] if self.chief
                              else f"the chief, {names[0]}, refused: {chief['problem']}")
        differences = []
        for name, record in zip(names, records, strict=True):
            changes = worker_changes(chief["settings"], record["settings"])
            if changes:
                differences.append(f"{name} ({', '.join(changes)})")
        if differences:
            raise ConfigError(f"workers started with other settings than the chief, "
                              f"{names[0]}: {'; '.join(differences)}; start every worker "
                              "with the same options and the same data")
        if self.chief:
            self.record_settings()
        self.backed_up = set(chief["backed_up"])
        return set(chief["done"])

    def settings(self) -> dict:
        """What ``settings.json`` records: the options and the training data's identity."""
        record = {"edgefer_version": __version__, "config": self.config.to_dict(),
                  "data": self.data_identity}
        return json.loads(json.dumps(record))  # as it reads back: lists, floats, None

    def check_settings(self) -> None:
        """Record the settings in a new run folder; refuse one made with other settings.

        A folder from before settings were recorded resumes unchecked and records the
        settings of this run from then on.
        """
        problem = self.settings_conflict()
        if problem:
            raise ConfigError(problem)
        self.record_settings()

    def settings_conflict(self) -> str | None:
        """Why this run may not go on in its folder (other settings made it), or None."""
        file = self.dir / _SETTINGS
        try:
            theirs = json.loads(file.read_text())
            if not isinstance(theirs, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return (f"cannot read {file} ({exc}); pass --name NEW to start a new run, or "
                    f"delete {self.dir} to start over")
        changes = setting_changes(theirs, self.settings())
        if not changes:
            return None
        shown = ", ".join(changes[:4]) + (f" and {len(changes) - 4} more"
                                          if len(changes) > 4 else "")
        return (f"{self.dir} was made with other settings ({shown}); pass --name NEW to "
                f"start a new run, or delete {self.dir} to start over")

    def record_settings(self) -> None:
        file = self.dir / _SETTINGS
        if file.is_file():
            return
        if self.dir.is_dir() and any(self.dir.iterdir()):
            self.log(f"note: {self.dir} records no settings (an older edgefer made it): "
                     "resuming without checking them")
        write_text_atomic(file, json.dumps(self.settings(), indent=1) + "\n")

    def stage_dir(self, stage: Stage) -> Path:
        return self.dir / stage.value

    def _is_done(self, stage: Stage) -> bool:
        """Done in the run folder (multi-worker: in the chief's, when the run started)."""
        if self.done is not None:
            return stage.value in self.done
        return (self.stage_dir(stage) / "done.json").is_file()

    def run_stage(self, stage: Stage, parent: Stage | None, epochs: int) -> dict:
        done = self.stage_dir(stage) / "done.json"
        if self._is_done(stage):
            self.log(f"stage {stage.value}: already done, skipped")
            return json.loads(done.read_text()) if self.chief else {}
        self.log(f"stage {stage.value}: {epochs} epoch(s)")
        steps = max(1, len(self.train) // self.config.batch_size)
        model = self._initial_model(stage, parent, epochs * steps)
        with self.strategy.scope():
            lr = self.config.qat_lr if stage.quantized else self.config.lr
            if stage is Stage.PRUNE:
                lr = self.config.lr / 10
            model.compile(_optimizer(self.config, lr, epochs, steps), _loss(self.config),
                          metrics=["accuracy"])
            build_for_fit(model)
        started = time.perf_counter()
        throughput = Throughput(steps * self.config.batch_size)
        epochs_run = 0  # epochs = 0: the float stage is init_from as it is
        self.stage_dir(stage).mkdir(parents=True, exist_ok=True)
        if epochs:
            # the size low-resolution epochs scale the training batches to (0: full size)
            train_size = (_tf.Variable(0, trainable=False, dtype=_tf.int32)
                          if self._low_res(stage) else None)
            history = model.fit(self._train_ds(train_size), validation_data=self._val_ds(),
                                epochs=epochs,
                                callbacks=self._callbacks(stage, throughput, train_size, steps),
                                verbose=1 if sys.stdout.isatty() else 2)
            epochs_run = len(history.epoch)
        best = self.stage_dir(stage) / _BEST
        with self.strategy.scope():
            if best.with_suffix(".ckpt.index").is_file():  # only the chief's folder has it
                model.load_weights(str(best))
            if self.cluster:
                broadcast_from_chief(self.strategy, model.weights)
        val_acc = self._val_accuracy(model)
        recomputed = {}
        if self.config.recompute_bn:
            val_acc, recomputed = self._recompute_bn(stage, model, val_acc)
        if stage is Stage.PRUNE:
            model = qat.strip_pruning(model)
        save_model(model, self.stage_dir(stage) / "model", self.config.model,
                   Stage.FLOAT if stage is Stage.PRUNE else stage, self._info(stage))
        result = {"stage": stage.value, "val_accuracy": float(val_acc),
                  "epochs_run": epochs_run, "seconds": time.perf_counter() - started,
                  **recomputed,
                  "images_per_s": float(np.median(throughput.rates)) if throughput.rates else 0.0}
        write_text_atomic(done, json.dumps(result, indent=1) + "\n")
        self.log(f"stage {stage.value}: validation accuracy {val_acc:.4f}")
        if self.cluster:
            self._check_same_weights(stage, model)
        return result

    def _val_accuracy(self, model) -> float:
        return float(model.evaluate(self._val_ds(), verbose=0)[1])

    def _recompute_bn(self, stage: Stage, model, before: float) -> tuple[float, dict]:
        """The stage's final weights with batch-norm statistics of their own, when that
        is no worse on validation; returns the validation accuracy and done.json's record."""
        started = time.perf_counter()
        after, kept = recompute_if_better(model, self.preprocess(self.train.images),
                                          lambda: self._val_accuracy(model), before)
        self.log(f"stage {stage.value}: batch-norm statistics recomputed on "
                 f"{len(self.train)} training images in {time.perf_counter() - started:.0f} s:"
                 f" validation {before:.4f} -> {after:.4f}, "
                 + ("kept" if kept else "the trained ones kept"))
        return (after if kept else before), {"val_accuracy_trained_bn": before,
                                             "val_accuracy_recomputed_bn": after,
                                             "recomputed_bn": kept}

    def _check_same_weights(self, stage: Stage, model) -> None:
        """Every worker must end a stage holding the model the chief saved."""
        with self.strategy.scope():
            digests = gather_json(self.strategy, weights_digest(model), self.cluster.size)
        if len(set(digests)) != 1:
            raise ClusterError(f"stage {stage.value}: the workers' weights differ after "
                               f"training ({', '.join(d[:12] for d in digests)})")
        self.log(f"stage {stage.value}: all {len(digests)} workers hold the same weights "
                 f"(sha256 {digests[0][:12]})")

    def _initial_model(self, stage: Stage, parent: Stage | None, total_steps: int):
        start = self.stage_dir(parent) / "model" if parent else self.config.init_from
        # Loaded outside the strategy: under MultiWorkerMirroredStrategy making a variable
        # is a collective, and only the chief reads the run folder (the others get its
        # weights when fit starts, see FromChief).
        trained = load_model(start)[0] if start and self.chief else None
        with self.strategy.scope():
            model = (build_for_stage(self.config.model, Stage.FLOAT) if trained is None
                     else float_twin(trained, self.config.model))
            if stage is Stage.PRUNE:
                end = max(1, int(total_steps * 0.75))
                return qat.prune(model, self.config.target_sparsity, 0, end,
                                 frequency=max(1, min(100, end // 10)),
                                 min_weights=self.config.prune_min_weights)
            if stage.quantized:
                return qat.quantize(model, preserve_sparsity=stage is Stage.PQAT)
            return with_any_input_size(model) if self._low_res(stage) else model

    def _low_res(self, stage: Stage) -> bool:
        return stage is Stage.FLOAT and bool(self.config.low_res.epochs)

    def _callbacks(self, stage: Stage, throughput: Throughput, train_size=None,
                   steps_per_epoch: int = 1) -> list:
        folder = self.stage_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        if stage is Stage.PRUNE:
            # magnitudes keep changing until the schedule ends: keep the last epoch's
            best = _keras.callbacks.ModelCheckpoint(str(folder / _BEST), save_weights_only=True)
        else:
            best = _keras.callbacks.ModelCheckpoint(str(folder / _BEST), monitor="val_accuracy",
                                                    save_best_only=True, save_weights_only=True,
                                                    mode="max")
        callbacks = [
            _keras.callbacks.BackupAndRestore(str(folder / "backup")),
            # after the restore: it reads the restored step count
            *([LowResolutionEpochs(train_size, self.config.low_res.size,
                                   self.config.low_res.epochs, steps_per_epoch, log=self.log)]
              if train_size is not None else []),
            # right after the restore, before anything reads the weights (KeepZeros)
            *([FromChief(self.strategy, stage.value in self.backed_up)] if self.cluster
              else []),
            # not while pruning: an average of kernels blurs the masks pruning computes
            *([WeightAverage(self.config.ema, raw_validation=self._val_ds())]
              if self.config.ema and stage is not Stage.PRUNE else []),
            # an epoch backed up is logged before anything else can fail (a save is a
            # collective when several workers train): a resumed run's log misses no epoch
            throughput,
            _keras.callbacks.CSVLogger(str(folder / "log.csv"), append=True),
            best,
            _keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                           patience=self.config.early_stopping),
        ]
        if stage is Stage.PQAT:
            callbacks.append(qat.KeepZeros())
        if stage is Stage.PRUNE:
            callbacks += qat.pruning_callbacks()
        if self.config.schedule is Schedule.PLATEAU:
            callbacks.append(_keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", mode="max", factor=0.3, patience=3))
        return callbacks

    def _train_ds(self, train_size=None):
        weights = class_weights(self.train.labels, self.config.class_weights)
        ds = make_dataset(self.train.images, self.train.labels, self.preprocess,
                          self.config.batch_size, training=True, augment=self.config.augment,
                          seed=self.config.seed, sample_weights=weights[self.train.labels],
                          targets=self.distill_targets(), train_size=train_size)
        return _by_worker(ds)

    def distill_targets(self) -> np.ndarray | None:
        """The training targets with the teacher's predictions mixed in (None without a
        teacher); the class weights stay those of the images' own labels."""
        distill = self.config.distill
        if not distill.teacher or self._targets is not None:
            return self._targets
        started = time.perf_counter()
        teacher = teacher_predictions(distill, self.train.images)
        self._targets = mixed_targets(self.train.labels, teacher, distill.weight)
        agree = float(np.mean(teacher.argmax(axis=1) == self.train.labels))
        self.log(f"distillation: {', '.join(distill.teachers)} labelled {len(self.train)} "
                 f"training images in {time.perf_counter() - started:.0f} s (its top class "
                 f"is the label for {agree:.1%})")
        return self._targets

    def _val_ds(self):
        return _by_worker(make_dataset(self.val.images, self.val.labels, self.preprocess, 256,
                                       training=False))

    def _info(self, stage: Stage) -> ModelInfo:
        return ModelInfo(preprocess=self.preprocess, precision="int8-qat" if stage.quantized
                         else "fp32", edgefer_version=__version__, name=self.config.name)

    def choose_final(self) -> Stage:
        """PQAT when it is within 0.5 points of QAT on validation, else the best stage."""
        scores = {}
        for stage in (Stage.QAT, Stage.PQAT, Stage.FLOAT):
            done = self.stage_dir(stage) / "done.json"
            if done.is_file():
                scores[stage] = json.loads(done.read_text())["val_accuracy"]
        if Stage.PQAT in scores and scores[Stage.PQAT] >= scores.get(Stage.QAT, 0) - 0.005:
            return Stage.PQAT
        return Stage.QAT if Stage.QAT in scores else Stage.FLOAT

    def report(self, results: dict, final: Stage) -> dict:
        test = load_split(self.config.data_path(), "test", skip_bad=True)
        test_ds = make_dataset(test.images, test.labels, self.preprocess, 256, training=False)
        tested = {}
        for stage in {Stage.FLOAT, final}:
            model, _, _ = load_model(self.stage_dir(stage) / "model")
            model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
            tested[stage.value] = float(model.evaluate(test_ds, verbose=0)[1])
        summary = {"final_stage": final.value, "stages": results,
                   "publictest_accuracy_keras": tested,
                   "train_images": len(self.train), "val_images": len(self.val),
                   "total_seconds": sum(r["seconds"] for r in results.values())}
        write_text_atomic(self.dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        final_dir = self.stage_dir(final) / "model"
        self.log(f"final model: {final_dir} ({final.value}); PublicTest accuracy (Keras): "
                 + ", ".join(f"{k} {v:.4f}" for k, v in tested.items()))
        return summary

