"""edgefer's Keras model files: ``model.json`` (architecture name and options, stage,
metadata) beside ``weights.h5``. Loading rebuilds the network from edgefer's own code
(``model.registry``) and reads weights only, so a model file can never execute code."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from enum import Enum
from pathlib import Path

from edgefer.errors import ModelError
from edgefer.preprocess import ModelInfo

CONFIG_NAME = "model.json"
# Keras' legacy HDF5 weights (layer by layer): the newer ``.weights.h5`` format also
# stores the optimizer's slots and, for QAT models, every wrapped variable twice.
WEIGHTS_NAME = "weights.h5"


class Stage(str, Enum):
    FLOAT = "float"
    PRUNE = "prune"
    QAT = "qat"
    PQAT = "pqat"

    @property
    def quantized(self) -> bool:
        return self in (Stage.QAT, Stage.PQAT)


def model_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    folder = path.parent if path.name == CONFIG_NAME else path
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ModelError(f"{path} is not an edgefer Keras model (a folder with "
                         f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    return folder


def is_model_dir(path: str | os.PathLike) -> bool:
    try:
        model_dir(path)
    except ModelError:
        return False
    return True


def read_record(path: str | os.PathLike) -> dict:
    file = model_dir(path) / CONFIG_NAME
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{file}: unreadable model record ({exc})") from exc
    except RecursionError:
        raise ModelError(f"{file}: unreadable model record (nested too deeply)") from None
    if not isinstance(record, dict):
        raise ModelError(f"{file}: unreadable model record (not a JSON object)")
    return record


def weights_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with (model_dir(path) / WEIGHTS_NAME).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_for_stage(config, stage: Stage, prune_kwargs: dict | None = None):
    """The network of ``config`` wrapped as ``stage`` wants (weights fresh)."""
    from edgefer.model import qat
    from edgefer.model.registry import build_model

    model = build_model(config)
    if stage is Stage.PRUNE:
        return qat.prune(model, **(prune_kwargs or {"target_sparsity": 0.5,
                                                   "begin_step": 0, "end_step": 1}))
    if stage.quantized:
        return qat.quantize(model, preserve_sparsity=stage is Stage.PQAT)
    return model


def with_any_input_size(model):
    """The same functional network, holding the same weights, taking images of any height
    and width (for training at a lower resolution; edgefer's model files record the
    architecture's own input size, so a saved model is the fixed-size network again)."""
    from edgefer._tf import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_input_shape"])
            layer["config"]["batch_input_shape"] = (shape[0], None, None, *shape[3:])
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    any_size = keras().Model.from_config(config, custom_objects=custom)
    any_size.set_weights(model.get_weights())
    return any_size


def save_model(model, folder: str | os.PathLike, config, stage: Stage, info: ModelInfo,
               extra: dict | None = None) -> Path:
    """Write weights and record to ``folder`` atomically (a temp folder, then rename)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(tmp / WEIGHTS_NAME))
    from edgefer.model.registry import architecture_of

    record = {"format": "edgefer-keras", "architecture": architecture_of(config).name,
              "stage": stage.value,
              "model": {k: (v.value if isinstance(v, Enum) else v)
                        for k, v in asdict(config).items()},
              "info": info.to_dict(), **(extra or {})}
    (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=1) + "\n")
    if folder.exists():
        for child in folder.iterdir():
            if child.name in (CONFIG_NAME, WEIGHTS_NAME):
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for child in tmp.iterdir():
        os.replace(child, folder / child.name)
    tmp.rmdir()
    return folder


def check_record(path: str | os.PathLike) -> tuple[Stage, ModelInfo]:
    """A model folder's stage and ModelInfo, checked without TensorFlow (so that a wrong
    --model fails before minutes of loading): ModelError naming what is wrong."""
    from edgefer.artifacts import info_from_record

    record = read_record(path)
    try:
        stage = Stage(record["stage"])
        if not isinstance(record["model"], dict):  # the architecture's options
            raise TypeError("'model' is not an object")
        if not isinstance(record.get("architecture", ""), str):
            raise TypeError("'architecture' is not a name")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid model record ({exc})") from exc
    return stage, info_from_record(path, record.get("info"))


def load_model(path: str | os.PathLike):
    """(keras model, stage, ModelInfo) from an edgefer model folder."""
    stage, info = check_record(path)  # before TensorFlow loads
    from edgefer.model.registry import config_from_record

    config = config_from_record(read_record(path), path)
    model = build_for_stage(config, stage)
    try:
        model.load_weights(str(model_dir(path) / WEIGHTS_NAME))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: weights do not load ({exc})") from exc
    return model, stage, info


def float_twin(model, config, keep_qat_ranges: bool = False):
    """The float network holding a QAT (or pruned) model's float weights.

    Wrappers keep their inner layer's variables under the inner layer's name
    (``stem_conv/kernel:0``), so weights are matched by layer and variable name.

    ``keep_qat_ranges``: clip each layer's output to its QAT fake-quant range. QAT trains
    a network whose every activation is clipped there; without the clips activations
    grow block after block, so the bare twin is a different function (measured on the
    shipped model: 83% top-1 agreement with its QAT model, and min/max post-training
    INT8 of it 13% top-1). Use it for exports, not as a start for training.
    """
    from edgefer.model.registry import build_model

    twin = build_model(config)
    by_name = {"/".join(w.name.split("/")[-2:]): w for w in model.weights}
    for weight in twin.weights:
        key = "/".join(weight.name.split("/")[-2:])
        if key not in by_name:
            raise ModelError(f"cannot find weight {key} in the wrapped model")
        weight.assign(by_name[key], read_value=False)  # a read would be a collective
    ranges = qat_output_ranges(model) if keep_qat_ranges else {}
    return with_output_clips(twin, ranges) if ranges else twin


def qat_output_ranges(model) -> dict[str, tuple[float, float]]:
    """Layer name -> (min, max) of its output fake-quant, for a QAT model's wrappers."""
    found: dict[str, dict[str, float]] = {}
    for weight in model.weights:
        scope, variable = weight.name.split("/")[-2:]
        bound = variable.split(":")[0]
        if scope.startswith("quant_") and bound in ("output_min", "output_max"):
            found.setdefault(scope[len("quant_"):], {})[bound] = float(weight.numpy())
    return {name: (r["output_min"], r["output_max"]) for name, r in found.items()
            if len(r) == 2}


def with_output_clips(model, ranges: dict[str, tuple[float, float]]):
    """A Functional model calling ``model``'s layers (sharing their weights) with a Clip
    after each layer named in ``ranges``."""
    from edgefer._tf import keras, tf
    from edgefer.model.layers import Clip

    k = keras()
    outputs = {layer.name: layer._inbound_nodes[0].outputs for layer in model.layers}
    inputs = k.Input(model.input_shape[1:], name=model.layers[0].name)
    replaced = {id(model.input): inputs}
    for layer in model.layers[1:]:
        node = layer._inbound_nodes[0]
        args, kwargs = tf().nest.map_structure(lambda t: replaced.get(id(t), t),
                                               (node.call_args, node.call_kwargs))
        out = layer(*args, **kwargs)
        if layer.name in ranges:
            out = Clip(*ranges[layer.name], name=f"{layer.name}_qat_range")(out)
        replaced[id(outputs[layer.name])] = out
    return k.Model(inputs, replaced[id(model.output)], name=model.name)
