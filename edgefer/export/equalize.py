"""Float-model rewrites that make post-training INT8 easier, applied to a Keras model
before the TFLite and ONNX conversions (NNCF does its own for OpenVINO).

- ``fold_batchnorm``: each convolution or dense layer followed by a batch norm becomes
  one layer with a bias (what every converter does anyway), so that the two below see
  the weights the engines quantize.
- ``equalize``: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"):
  for two layers in a row, output channel i of the first is divided by s_i and the
  matching input channel of the second multiplied by it, with
  s_i = sqrt(r1_i / r2_i) (r: the channel's largest absolute weight), so both end with
  the same range sqrt(r1_i r2_i). The function is unchanged where what lies between the
  two is positively homogeneous: nothing, ReLU, zero padding, or a clip (its bounds are divided by
  s_i per channel; a ReLU6 becomes ReLU and such a clip). Hard-swish and sigmoid are
  not, so no pair is equalized across them, nor across a tensor read by anything else
  (a residual add, a squeeze-excite multiply).
- ``correct_bias``: empirical bias correction: the mean output shift that quantizing a
  layer's weights causes, (Q(W) - W) E[x] with E[x] measured on the calibration images
  in the float model, subtracted from the layer's bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgefer.errors import ExportError

_CONV = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclass(frozen=True)
class Rewrite:
    """What the rewrites did, for the export's log and the tests."""

    folded: int = 0
    equalized: tuple[tuple[str, str], ...] = ()
    corrected: int = 0


# --- graph walking ----------------------------------------------------------------------

def _node(model, layer):
    """The call of ``layer`` that belongs to ``model`` (a layer called again in a rebuilt
    model has a call for each model; keys as tf-keras names them)."""
    nodes = [node for i, node in enumerate(layer._inbound_nodes)
             if f"{layer.name}_ib-{i}" in model._network_nodes]
    if len(nodes) != 1:
        raise ExportError(f"layer {layer.name} is called {len(nodes)} times in the model; "
                          "the INT8 rewrites need each layer called once")
    return nodes[0]


def _inputs(model, layer) -> list:
    from edgefer._tf import tf

    node = _node(model, layer)
    return [t for t in tf().nest.flatten((node.call_args, node.call_kwargs))
            if hasattr(t, "_keras_history")]


def _source(model, layer):
    """The layer whose output ``layer`` reads (its first tensor input)."""
    return _inputs(model, layer)[0]._keras_history.layer


def _consumers(model) -> dict[str, list]:
    """Layer name -> the layers that read its output."""
    found: dict[str, list] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        for tensor in _inputs(model, layer):
            found[tensor._keras_history.layer.name].append(layer)
    return found


def _rebuild(model, replace: Callable[[object, list], object | None]):
    """A Functional model calling ``model``'s layers in order, where
    ``replace(layer, inputs)`` may return a new output tensor for a layer (None: call the
    layer as it is)."""
    from edgefer._tf import keras, tf

    k = keras()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("the INT8 rewrites take a model with one input and one output")
    inputs = k.Input(model.input_shape[1:], name=model.layers[0].name)
    mapped = {id(model.input): inputs}
    for layer in model.layers[1:]:
        node = _node(model, layer)
        args, kwargs = tf().nest.map_structure(lambda t: mapped.get(id(t), t),
                                               (node.call_args, node.call_kwargs))
        new_inputs = [mapped[id(t)] for t in _inputs(model, layer)]
        out = replace(layer, new_inputs)
        if out is None:
            out = layer(*args, **kwargs)
        mapped[id(node.outputs)] = out
        for old, new in zip(tf().nest.flatten(node.outputs), tf().nest.flatten(out),
                            strict=True):
            mapped[id(old)] = new
    return k.Model(inputs, mapped[id(model.output)], name=model.name)


def _kind(layer) -> str:
    return layer.__class__.__name__


# --- batch-norm folding ------------------------------------------------------------------

def fold_batchnorm(model):
    """(model, count): ``model`` with every Conv2D / DepthwiseConv2D / Dense that feeds only
    a BatchNormalization (over the last axis) merged with it into one layer with a bias."""
    consumers = _consumers(model)
    pairs = {}
    for layer in model.layers:
        if _kind(layer) != "BatchNormalization" or len(_inputs(model, layer)) != 1:
            continue
        source = _source(model, layer)
        axis = np.ravel(layer.axis)
        if (_kind(source) in _CONV and len(consumers[source.name]) == 1
                and list(axis) in ([-1], [len(layer.input_shape) - 1])):
            pairs[layer.name] = source
    if not pairs:
        return model, 0
    folded_sources = {source.name for source in pairs.values()}

    def replace(layer, inputs):
        if layer.name in folded_sources:
            return inputs[0]  # stand-in, replaced by the batch norm's folded layer
        if layer.name not in pairs:
            return None
        source = pairs[layer.name]
        merged = _clone(source, use_bias=True)
        out = merged(inputs[0])  # the source's input: its stand-in output above
        merged.set_weights(list(_folded(source, layer)))
        return out

    return _rebuild(model, replace), len(pairs)


def _clone(layer, **changes):
    config = {**layer.get_config(), **changes}
    if changes.get("use_bias"):
        config["bias_initializer"] = "zeros"
    return layer.__class__.from_config(config)


def _folded(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    weights = dict(zip([w.name.split("/")[-1].split(":")[0] for w in bn.weights],
                       bn.get_weights(), strict=True))
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    factor = gamma / np.sqrt(var + bn.epsilon)
    params = conv.get_weights()
    kernel = params[0]
    bias = params[1] if conv.use_bias else np.zeros_like(mean)
    kernel = (kernel * _out_shape(conv, factor)).astype(np.float32)
    return kernel, ((bias - mean) * factor + beta).astype(np.float32)


def _out_shape(layer, per_channel: np.ndarray) -> np.ndarray:
    """``per_channel`` (one value per output channel) shaped to multiply the kernel."""
    if _kind(layer) == "DepthwiseConv2D":
        kernel = layer.get_weights()[0]
        return per_channel.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    return per_channel  # Conv2D (kh, kw, in, out) and Dense (in, out): the last axis


# --- cross-layer equalization ----------------------------------------------------------------

_BETWEEN = ("ReLU", "Clip", "Activation", "ZeroPadding2D")


def _output_range(layer) -> np.ndarray:
    kernel = layer.get_weights()[0]
    if _kind(layer) == "DepthwiseConv2D":
        return np.abs(kernel).max(axis=(0, 1)).reshape(-1)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _input_range(layer) -> np.ndarray:
    kernel = layer.get_weights()[0]
    if _kind(layer) == "DepthwiseConv2D":
        return np.abs(kernel).max(axis=(0, 1)).reshape(-1)
    if _kind(layer) == "Dense":
        return np.abs(kernel).max(axis=1)
    return np.abs(kernel).max(axis=(0, 1, 3))


def _positive_homogeneous(layer) -> bool:
    kind = _kind(layer)
    if kind == "ReLU":
        return not layer.negative_slope and not layer.threshold
    if kind == "Activation":
        return layer.get_config()["activation"] in ("relu", "linear")
    return kind in ("Clip", "ZeroPadding2D")


def _chains(model) -> list[tuple[object, list, object]]:
    """(first, between, second): two weight layers with only ReLU/clip layers between
    them, every tensor on the way read by the next layer alone."""
    consumers = _consumers(model)
    chains = []
    for first in model.layers:
        if _kind(first) not in ("Conv2D", "DepthwiseConv2D") or not first.use_bias:
            continue
        if _kind(first) == "Conv2D" and first.groups != 1:
            continue
        if first.get_config().get("activation", "linear") != "linear":
            continue
        between, layer = [], first
        while len(consumers[layer.name]) == 1:
            layer = consumers[layer.name][0]
            if _kind(layer) in _BETWEEN and _positive_homogeneous(layer):
                between.append(layer)
                continue
            if (_kind(layer) in ("Conv2D", "DepthwiseConv2D")
                    and (_kind(layer) != "Conv2D" or layer.groups == 1)):
                chains.append((first, between, layer))
            break
    return chains


def equalize(model, iterations: int = 4):
    """(model, pairs): ``model`` (batch norms folded) with cross-layer equalization of
    every chain ``_chains`` finds, ``iterations`` sweeps (the paper iterates to converge;
    chains share layers)."""
    if not _chains(model):
        return model, ()
    return _equalized(copy_model(model), iterations)


def copy_model(model):
    """``model`` with layers of its own (the rewrites change weights in place)."""
    from edgefer._tf import keras

    copy = keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _equalized(model, iterations: int):
    by_name = {layer.name: layer for layer in model.layers}
    chains = [(by_name[a.name], [by_name[b.name] for b in between], by_name[c.name])
              for a, between, c in _chains(model)]
    clips: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(iterations):
        for first, between, second in chains:
            r1, r2 = _output_range(first), _input_range(second)
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-12)), 1.0)
            _scale_output(first, 1.0 / s)
            _scale_input(second, s)
            for layer in between:
                low, high = clips.get(layer.name, _bounds(layer, len(s)))
                clips[layer.name] = (low / s, high / s)
    replaced = {name: bounds for name, bounds in clips.items()
                if _varies(bounds[0]) or _varies(bounds[1])
                or (_kind(by_name[name]) == "ReLU" and by_name[name].max_value is not None)}
    if replaced:
        model = _with_channel_clips(model, replaced)
    return model, tuple((a.name, c.name) for a, _, c in chains)


def _varies(values: np.ndarray) -> bool:
    return bool(np.any(values != values[0]))


def _bounds(layer, channels: int) -> tuple[np.ndarray, np.ndarray]:
    if _kind(layer) == "Clip":
        low, high = np.ravel(layer.low), np.ravel(layer.high)
    elif _kind(layer) == "ReLU" and layer.max_value is not None:
        low, high = np.zeros(1), np.full(1, float(layer.max_value))
    else:
        low, high = np.zeros(1), np.full(1, np.inf)
    return (np.broadcast_to(low, (channels,)).astype(np.float64),
            np.broadcast_to(high, (channels,)).astype(np.float64))


def _scale_output(layer, factor: np.ndarray) -> None:
    kernel, bias = layer.get_weights()[:2]
    layer.set_weights([kernel * _out_shape(layer, factor), bias * factor])


def _scale_input(layer, factor: np.ndarray) -> None:
    weights = layer.get_weights()
    kernel = weights[0]
    if _kind(layer) == "DepthwiseConv2D":
        kernel = kernel * factor.reshape(1, 1, -1, 1)
    elif _kind(layer) == "Dense":
        kernel = kernel * factor.reshape(-1, 1)
    else:
        kernel = kernel * factor.reshape(1, 1, -1, 1)
    layer.set_weights([kernel, *weights[1:]])
    if _kind(layer) == "DepthwiseConv2D" and not layer.use_bias:
        raise ExportError(f"{layer.name}: equalizing into a depthwise layer needs its bias")


def _with_channel_clips(model, bounds: dict[str, tuple[np.ndarray, np.ndarray]]):
    """``model`` with the ReLU6/clip layers named in ``bounds`` replaced by per-channel clips
    (after a plain ReLU where there was one)."""
    from edgefer._tf import keras
    from edgefer.model.layers import Clip

    relu = keras().layers.ReLU

    def replace(layer, inputs):
        if layer.name not in bounds:
            return None
        low, high = bounds[layer.name]
        x = inputs[0]
        if _kind(layer) == "ReLU":
            x = relu(name=f"{layer.name}_relu")(x)
        return Clip(low.astype(np.float32), high.astype(np.float32), name=layer.name)(x)

    return _rebuild(model, replace)


# --- bias correction ----------------------------------------------------------------------------

def weight_grid(kernel: np.ndarray, layer_kind: str) -> np.ndarray:
    """``kernel`` on the symmetric per-output-channel 8-bit grid (-127..127) every engine
    here uses for weights."""
    if layer_kind == "DepthwiseConv2D":
        peak = np.abs(kernel).max(axis=(0, 1), keepdims=True)
    else:
        peak = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)
    scale = np.where(peak > 0, peak, 1.0) / 127.0
    return (np.clip(np.round(kernel / scale), -127, 127) * scale).astype(np.float32)


def correct_bias(model, images: np.ndarray) -> tuple[object, int]:
    """(model, count): ``model``'s weights changed in place (give it a copy): each
    Conv2D/DepthwiseConv2D/Dense with a bias gets b - (Q(W) - W) E[x], E[x] the
    per-channel mean of its input over ``images`` in ``model`` (float). Border zeros of
    'same' padding are ignored (E[x] is the mean over the whole map)."""
    from edgefer._tf import keras

    layers = [layer for layer in model.layers if _kind(layer) in _CONV
              and layer.use_bias and len(_inputs(model, layer)) == 1]
    if not layers:
        return model, 0
    probe = keras().Model(model.input, [_inputs(model, layer)[0] for layer in layers])
    totals: list = [0.0] * len(layers)
    counts = [0] * len(layers)
    for start in range(0, len(images), 50):
        outs = probe(images[start:start + 50], training=False)
        for k, out in enumerate(outs if isinstance(outs, list | tuple) else [outs]):
            x = np.asarray(out, np.float64)
            x = x.reshape(-1, x.shape[-1])
            totals[k] = totals[k] + x.sum(axis=0)
            counts[k] += len(x)
    for k, layer in enumerate(layers):
        kernel, bias, *rest = layer.get_weights()
        error = weight_grid(kernel, _kind(layer)) - kernel
        shift = _shift(error, totals[k] / counts[k], _kind(layer))
        layer.set_weights([kernel, bias - shift, *rest])
    return model, len(layers)


def _shift(error: np.ndarray, mean: np.ndarray, kind: str) -> np.ndarray:
    """The mean output change (Q(W) - W) E[x] per output channel."""
    if kind == "DepthwiseConv2D":
        return (error.sum(axis=(0, 1)) * mean[:, None]).reshape(-1).astype(np.float32)
    if kind == "Dense":
        return (mean @ error).astype(np.float32)
    return np.einsum("hwio,i->o", error, mean).astype(np.float32)
