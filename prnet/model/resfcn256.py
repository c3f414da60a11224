"""The PRNet encoder-decoder (ResFCN256), layer for layer as the original TF1 ``predictor.py``.

Input: an RGB face crop, float32, shape ``[N, 256, 256, 3]``, values in ``[0, 1]``.
Output: the sigmoid map ``[N, 256, 256, 3]`` in ``[0, 1]``; multiply by :data:`POSMAP_SCALE` to
get the UV position map in *crop pixels*: x = column (right), y = row (down), z toward the camera
in the same pixel units, its origin arbitrary (training maps have min z = 0 over the face); see
:func:`to_posmap` and the README's "Coordinate conventions".

Layer names mirror the original checkpoint: the Keras layer ``resBlock_3.Conv_1.BatchNorm``
holds the TF1 variables ``resfcn256/resBlock_3/Conv_1/BatchNorm/*``; use
:func:`checkpoint_name` for the exact mapping.
"""

from pathlib import Path

import keras
import numpy as np
from keras import layers

from prnet.core.crop import CROP_SIZE
from prnet.core.files import atomic_path

#: The network's sigmoid output times this is the position map in crop pixels (original: 256 * 1.1).
POSMAP_SCALE = CROP_SIZE * 1.1
#: L2 weight decay of every convolution kernel (original: ``tcl.l2_regularizer(0.0002)``, i.e. the
#: loss term is ``2e-4 * sum(w**2) / 2`` per kernel).
WEIGHT_DECAY = 2e-4
#: ``tf.contrib.layers.batch_norm`` defaults.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999
#: Scope of all variables in the official checkpoint.
CHECKPOINT_SCOPE = "resfcn256"

#: The original's base width (``size = 16`` in ``predictor.py``); channel counts are multiples of it.
BASE_SIZE = 16
# (channels / size, stride) of the ten residual blocks and of the 17 transposed convolutions;
# the decoder's last three layers always have 3 channels.
ENCODER_BLOCKS = ((2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2), (32, 1))
DECODER_LAYERS = (
    (32, 1), (16, 2), (16, 1), (16, 1), (8, 2), (8, 1), (8, 1), (4, 2), (4, 1),
    (4, 1), (2, 2), (2, 1), (1, 2), (1, 1), (None, 1), (None, 1), (None, 1),
)

_KERAS_TO_TF_WEIGHT = {
    "kernel": "weights",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
}


def _tf1_suffix(index: int) -> str:
    """tf.contrib naming: the first layer of a kind is ``Conv``, then ``Conv_1``, ``Conv_2``, ..."""
    return "" if index == 0 else f"_{index}"


def _regularizer(weight_decay):
    # tf.contrib's l2_regularizer(scale) is scale * sum(w**2) / 2; Keras' L2(l2) is l2 * sum(w**2).
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _conv_bn_relu(x, filters, kernel, stride, name, weight_decay, norm=True, activation="relu"):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_regularizer=_regularizer(weight_decay), name=name)(x)
    if norm:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}.BatchNorm")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}.{activation}")(x)
    return x


def _res_block(x, filters, stride, name, weight_decay):
    """Bottleneck block of the original: [1x1 C/2] -> [4x4 C/2, stride] -> [1x1 C] + shortcut, then BN, ReLU."""
    shortcut = x
    if stride != 1:
        # A 1x1 conv with stride s and SAME padding reads pixels (0, s, 2s, ...): subsample first and
        # apply the 1x1 conv at stride 1. Same result and kernel; it also avoids a heap corruption in
        # TF 2.21's oneDNN CPU kernel for the gradient of strided 1x1 convolutions.
        shortcut = layers.MaxPooling2D(1, strides=stride, padding="same", name=f"{name}.shortcut_subsample")(x)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=1, padding="same", use_bias=False,
                                 kernel_regularizer=_regularizer(weight_decay), name=f"{name}.shortcut")(shortcut)
    x = _conv_bn_relu(x, filters // 2, 1, 1, f"{name}.Conv", weight_decay)
    x = _conv_bn_relu(x, filters // 2, 4, stride, f"{name}.Conv_1", weight_decay)
    x = _conv_bn_relu(x, filters, 1, 1, f"{name}.Conv_2", weight_decay, norm=False, activation=None)
    x = layers.Add(name=f"{name}.add")([x, shortcut])
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}.BatchNorm")(x)
    return layers.Activation("relu", name=f"{name}.relu")(x)


def build_resfcn256(weight_decay: float = WEIGHT_DECAY, size: int = BASE_SIZE,
                    name: str = CHECKPOINT_SCOPE) -> keras.Model:
    """Build ResFCN256 (13,353,618 trainable parameters, 4.13 G multiply-adds per 256x256 image).

    The model maps ``[N, 256, 256, 3]`` float crops in ``[0, 1]`` to the sigmoid position map in
    ``[0, 1]``; it has no conv biases and uses BatchNorm (epsilon 1e-3) with scale, as the original.
    Pass ``weight_decay=0`` for an inference-only graph without regularisation losses. ``size`` is
    the original's base width (16); only tests and smoke runs use a smaller one (e.g. 4) to train
    fast on a CPU: such a model cannot load the official weights.
    """
    inputs = keras.Input((CROP_SIZE, CROP_SIZE, 3), name="image")
    x = _conv_bn_relu(inputs, size, 4, 1, "Conv", weight_decay)
    for i, (mult, stride) in enumerate(ENCODER_BLOCKS):
        x = _res_block(x, mult * size, stride, f"resBlock{_tf1_suffix(i)}", weight_decay)
    for i, (mult, stride) in enumerate(DECODER_LAYERS):
        filters = 3 if mult is None else mult * size
        last = i == len(DECODER_LAYERS) - 1
        lname = f"Conv2d_transpose{_tf1_suffix(i)}"
        x = layers.Conv2DTranspose(filters, 4, strides=stride, padding="same", use_bias=False,
                                   kernel_regularizer=_regularizer(weight_decay), name=lname)(x)
        # The original keeps BatchNorm on the last layer too (its arg_scope applies batch_norm), then sigmoid.
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{lname}.BatchNorm")(x)
        x = layers.Activation("sigmoid" if last else "relu", name=f"{lname}.{'sigmoid' if last else 'relu'}",
                              dtype="float32" if last else None)(x)
    return keras.Model(inputs, x, name=name)


def checkpoint_name(variable) -> str:
    """Name of the official TF1 checkpoint variable that corresponds to a Keras weight.

    ``resBlock_3.Conv_1.BatchNorm/gamma`` -> ``resfcn256/resBlock_3/Conv_1/BatchNorm/gamma``;
    ``Conv2d_transpose_2/kernel`` -> ``resfcn256/Conv2d_transpose_2/weights``.
    """
    layer_name, weight = variable.path.rsplit("/", 1)
    return f"{CHECKPOINT_SCOPE}/{layer_name.replace('.', '/')}/{_KERAS_TO_TF_WEIGHT[weight]}"


def to_posmap(sigmoid_output):
    """Sigmoid network output (``[0, 1]``) -> position map in crop pixels."""
    return sigmoid_output * POSMAP_SCALE


def from_posmap(posmap_pixels):
    """Position map in crop pixels -> the network's ``[0, 1]`` target."""
    return posmap_pixels / POSMAP_SCALE


def save_weights_atomic(model: keras.Model, path) -> Path:
    """``model.save_weights`` (Keras ``.weights.h5``; ``path`` must end so) through
    :func:`prnet.core.files.atomic_path`: ``path`` is either the complete new file or untouched.
    Returns ``path`` (user folder expanded)."""
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))
    return Path(path).expanduser()


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization layer non-trivial statistics, as after training; returns ``model``.

    For tests and benchmarks of untrained networks: a fresh model's BN layers are identities
    (gamma 1, beta 0, mean 0, variance 1), which hides errors in BN folding or weight conversion.
    Draws gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), moving mean ~ N(0, 0.1), moving variance
    ~ U(0.5, 2.0) from ``numpy.random.default_rng(seed)``, layer by layer in model order.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    return model
