"""MobileNetV3 Small/Large for 48x48 gray faces, as a Functional tf-keras model.

The stock network (stem stride 2, total stride 32) ends at a 2x2 map on a 48 px face.
For inputs up to 64 px the stem uses stride 1 by default (total stride 16): a 48 px face
ends at 3x3, and the compute equals the stock network on a 96 px image (about 10 MMACs
for Small). ``stem_stride = 2`` with the Large variant trades that resolution for width
(docs/training.md compares them); ``head`` shrinks the dense layer before the classifier,
which holds most of the parameters of a 7-class model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgefer._tf import keras
from edgefer.errors import ConfigError
from edgefer.labels import NUM_CLASSES
from edgefer.model.layers import HardSwish
from edgefer.model.registry import register_model

_keras = keras()
_layers = _keras.layers


class Variant(str, Enum):
    SMALL = "small"
    LARGE = "large"


# (kernel, expansion, out channels, squeeze-excite, hard-swish, stride)
_BLOCKS = {
    Variant.SMALL: [
        (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2),
        (3, 88, 24, False, False, 1), (5, 96, 40, True, True, 2),
        (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1),
        (5, 576, 96, True, True, 1),
    ],
    Variant.LARGE: [
        (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2),
        (3, 72, 24, False, False, 1), (5, 72, 40, True, False, 2),
        (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
        (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1),
        (3, 184, 80, False, True, 1), (3, 184, 80, False, True, 1),
        (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
        (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1),
        (5, 960, 160, True, True, 1),
    ],
}
_LAST = {Variant.SMALL: (576, 1024), Variant.LARGE: (960, 1280)}


@dataclass(frozen=True)
class ModelConfig:
    variant: Variant = Variant.SMALL
    width: float = 1.0
    input_size: int = 48
    channels: int = 1
    num_classes: int = NUM_CLASSES
    dropout: float = 0.2
    stem_stride: int = 0  # 0: 1 for inputs up to 64 px, else 2
    # units of the dense layer between pooling and the classifier: -1 the stock width
    # (1024 Small, 1280 Large: most of the parameters of a 7-class model), 0 none
    head: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        if not 48 <= self.input_size <= 96:
            raise ConfigError(f"input_size must be 48..96, got {self.input_size}")
        if not 0.25 <= self.width <= 2.0:
            raise ConfigError(f"width must be 0.25..2.0, got {self.width}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.stem_stride not in (0, 1, 2):
            raise ConfigError(f"stem_stride must be 0 (auto), 1 or 2, got {self.stem_stride}")
        if self.head < -1:
            raise ConfigError(f"head must be -1 (stock), 0 (none) or a unit count, got {self.head}")

    @property
    def effective_stem_stride(self) -> int:
        return self.stem_stride or (1 if self.input_size <= 64 else 2)


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _activation(hard_swish: bool, name: str):
    return HardSwish(name=name) if hard_swish else _layers.ReLU(name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    if depthwise:
        x = _layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                    name=f"{name}_dw")(x)
    else:
        x = _layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                           name=f"{name}_conv")(x)
    return _layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(x)


def _squeeze_excite(x, channels: int, name: str):
    """Squeeze-and-excitation with a hard-sigmoid gate, relu6(z + 3) / 6, in int8-friendly form.

    The +3 lives in the expand convolution's bias (initialised to 3) and the 1/6 in the
    batch norm of the projection that follows (batch norm is scale-invariant), which
    leaves a plain ReLU6 that TFLite fuses into the int8 convolution. Written literally,
    the add and multiply inside the gate stay float in a full-INT8 TFLite graph.
    """
    s = _layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = _layers.Conv2D(_divisible(channels / 4), 1, name=f"{name}_reduce")(s)
    s = _layers.ReLU(name=f"{name}_relu")(s)
    s = _layers.Conv2D(channels, 1, bias_initializer=_keras.initializers.Constant(3.0),
                       name=f"{name}_expand")(s)
    s = _layers.ReLU(6.0, name=f"{name}_gate")(s)
    return _layers.Multiply(name=f"{name}_scale")([x, s])


def _inverted_residual(x, spec: tuple, width: float, index: int):
    kernel, expansion, out, se, hs, stride = spec
    name = f"block{index}"
    in_channels = x.shape[-1]
    expanded, out = _divisible(expansion * width), _divisible(out * width)
    shortcut = x
    if expanded != in_channels:
        x = _activation(hs, f"{name}_expand_act")(_conv_bn(x, expanded, 1, 1, f"{name}_expand"))
    x = _activation(hs, f"{name}_dw_act")(_conv_bn(x, 0, kernel, stride, name, depthwise=True))
    if se:
        x = _squeeze_excite(x, expanded, f"{name}_se")
    x = _conv_bn(x, out, 1, 1, f"{name}_project")
    if stride == 1 and in_channels == out:
        x = _layers.Add(name=f"{name}_add")([shortcut, x])
    return x


@register_model("mobilenetv3", ModelConfig)
def build_model(config: ModelConfig = ModelConfig()):
    """A fresh MobileNetV3 for ``config``; softmax probabilities out."""
    inputs = _layers.Input((config.input_size, config.input_size, config.channels),
                           name="face")
    x = _conv_bn(inputs, _divisible(16 * config.width), 3, config.effective_stem_stride, "stem")
    x = HardSwish(name="stem_act")(x)
    for index, spec in enumerate(_BLOCKS[config.variant]):
        x = _inverted_residual(x, spec, config.width, index)
    last_conv, stock_head = _LAST[config.variant]
    x = _conv_bn(x, _divisible(last_conv * config.width), 1, 1, "last")
    x = HardSwish(name="last_act")(x)
    x = _layers.GlobalAveragePooling2D(name="pool")(x)
    head = stock_head if config.head == -1 else config.head
    if head:
        x = _layers.Dense(head, name="head")(x)
        x = HardSwish(name="head_act")(x)
    x = _layers.Dropout(config.dropout, name="dropout")(x)
    x = _layers.Dense(config.num_classes, name="logits")(x)
    outputs = _layers.Softmax(name="probabilities")(x)
    return _keras.Model(inputs, outputs, name=f"mobilenetv3_{config.variant.value}")
