"""Hard-swish as a real layer, with the QuantizeConfig tfmot needs.

The stock ``keras.applications`` MobileNetV3 builds hard-swish from ``TFOpLambda``
ops, which ``tfmot.quantization.keras.quantize_model`` cannot wrap. This layer computes
the same function, and its QuantizeConfig puts one 8-bit fake-quant on the output:
the TFLite converter fuses the pattern into one int8 HARD_SWISH op. (The hard-sigmoid
gate of squeeze-and-excitation is folded into a ReLU6, see ``mobilenetv3``.)
"""

from __future__ import annotations

from edgefer._tf import keras, tf, tfmot

_keras = keras()
_tf = tf()
_quantizers = tfmot().quantization.keras.quantizers


class HardSwish(_keras.layers.Layer):
    """x * relu6(x + 3) / 6 (Howard et al. 2019)."""

    def call(self, inputs):
        return inputs * _tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


class Clip(_keras.layers.Layer):
    """Clip to [low, high]: a QAT fake-quant's range, kept when the fake-quant is removed.

    The bounds are numbers, or one per channel (the last axis): cross-layer equalization
    scales a clip's channels apart.
    """

    def __init__(self, low, high, **kwargs) -> None:
        super().__init__(**kwargs)
        self.low, self.high = _bound(low), _bound(high)

    def call(self, inputs):
        return _tf.clip_by_value(inputs, self.low, self.high)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        def plain(bound):
            return bound if isinstance(bound, float) else [float(b) for b in bound]

        return {**super().get_config(), "low": plain(self.low), "high": plain(self.high)}


def _bound(value):
    """A float, or a float32 vector for per-channel bounds."""
    import numpy as np

    array = np.asarray(value, dtype=np.float32)
    return float(array) if array.ndim == 0 else array


class OutputQuantizeConfig(tfmot().quantization.keras.QuantizeConfig):
    """No weights to quantize; one asymmetric 8-bit fake-quant on the output."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


CUSTOM_LAYERS = {"HardSwish": HardSwish, "Clip": Clip}
CUSTOM_OBJECTS = {**CUSTOM_LAYERS, "OutputQuantizeConfig": OutputQuantizeConfig}


def custom_object_scope():
    """The one scope that building, QAT and loading all use."""
    return tfmot().quantization.keras.quantize_scope(CUSTOM_OBJECTS)
