"""Small helpers shared by several test modules (import as ``from helpers import ...``)."""

import keras
import numpy as np


def randomize_bn(model, seed=0):
    """Give every BatchNorm non-trivial moving statistics and affine parameters (as after training)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return model
