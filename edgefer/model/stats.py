"""Parameter, MAC and sparsity counts of a tf-keras model (for model cards)."""

from __future__ import annotations

import numpy as np


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    from edgefer._tf import keras

    layers = keras().layers
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, layers.DepthwiseConv2D):
            _, h, w, c = inner.output.shape
            total += h * w * c * int(np.prod(inner.kernel_size))
        elif isinstance(inner, layers.Conv2D):
            _, h, w, c = inner.output.shape
            total += h * w * c * int(np.prod(inner.kernel_size)) * inner.input.shape[-1]
        elif isinstance(inner, layers.Dense):
            total += inner.input.shape[-1] * inner.units
    return int(total)


def kernel_sparsity(model) -> float:
    """Share of exactly-zero values among conv and dense kernels (depthwise excluded)."""
    kernels = [w.numpy() for w in model.weights
               if w.name.endswith("kernel:0") and "depthwise" not in w.name]
    total = sum(k.size for k in kernels)
    return float(sum(int(np.count_nonzero(k == 0)) for k in kernels) / total) if total else 0.0
