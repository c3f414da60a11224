"""The training loss: masked, weighted MSE on the UV position map (paper Sec. 3.3).

Units: both maps are *normalised* position maps, i.e. crop-pixel maps divided by
:data:`prnet.model.resfcn256.POSMAP_SCALE` (``256 * 1.1``) -- exactly the network's sigmoid range. Per example

    loss_i = mean over (u, v, c) of  W[u, v] * (pred_i[u, v, c] - true_i[u, v, c]) ** 2

i.e. the sum of the weighted squared errors divided by ``256 * 256 * 3`` (NOT by the sum of the
weights), as ``tf.reduce_mean(tf.square(pred - gt) * weight)`` of the public re-implementations
(the authors' training script was never released). With ``W = 1`` everywhere this is the plain MSE.

Weight maps ``W`` (``(256, 256)``, UV pixels, see :func:`loss_weights`):

* ``paper``: ``UVTemplate.weight_mask`` as is: 68 landmarks 1.0, eyes/nose/mouth 64/255,
  rest of the face 48/255, neck and background 0 (the paper's 16:4:3:0);
* ``uniform``: the face mask (1:1:1:0);
* ``none``: 1 on every pixel (face, neck and background alike).

Weight decay is not computed here: ``build_resfcn256(weight_decay=2e-4)`` gives every convolution
kernel TF1's ``tcl.l2_regularizer(0.0002)`` (``2e-4 * sum(w ** 2) / 2``, as the original network
definition), and the trainer passes ``model.losses`` to :func:`total_loss`.

Distribution: :func:`posmap_loss` returns one loss per example; :func:`total_loss` averages them
over the GLOBAL batch (``tf.nn.compute_average_loss``) and adds the L2 weight decay scaled by the
number of replicas (``tf.nn.scale_regularization_loss``), so that summing the per-replica
gradients -- what the optimizer does under ``tf.distribute`` -- gives the gradient of the
single-device loss ``mean_i loss_i + weight_decay_terms``.
"""

import numpy as np
import tensorflow as tf

from prnet.errors import LossConfigError
from prnet.model.resfcn256 import from_posmap

WEIGHT_MASK_MODES = ("paper", "uniform", "none")


def loss_weights(mode: str, template=None) -> np.ndarray:
    """The ``(256, 256)`` float32 UV weight map of ``mode`` (``paper``, ``uniform`` or ``none``).

    ``template`` (a :class:`prnet.core.uv.UVTemplate`) is needed for ``paper`` and ``uniform``; when
    omitted it is loaded with :func:`prnet.core.uv.load_uv_template` (``PRNET_ASSETS_DIR`` or the cache).
    """
    if mode not in WEIGHT_MASK_MODES:
        raise LossConfigError(f"unknown weight mask {mode!r}; choose one of {', '.join(WEIGHT_MASK_MODES)}")
    if mode == "none":
        return np.ones((256, 256), np.float32)
    if template is None:
        from prnet.core.uv import load_uv_template

        template = load_uv_template()
    mask = template.weight_mask if mode == "paper" else template.face_mask
    return np.asarray(mask, np.float32)


def _loss_dtype(dtype):
    """float64 stays float64 (numerical checks); everything else is evaluated in float32."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def normalize_posmap(posmap_pixels):
    """Position map in crop pixels -> normalised units (divide by ``POSMAP_SCALE``)."""
    return from_posmap(tf.cast(posmap_pixels, tf.float32))


def posmap_loss(y_true, y_pred, weights):
    """Per-example weighted MSE, shape ``[N]`` float32.

    Args:
      y_true: ``[N, 256, 256, 3]`` target map in normalised units (crop pixels / POSMAP_SCALE).
      y_pred: ``[N, 256, 256, 3]`` predicted map, same units (the network's sigmoid output);
        float16/bfloat16 predictions are cast to float32 first (float64 ones stay float64).
      weights: ``[256, 256]`` UV weight map (see :func:`loss_weights`), or ``[N, 256, 256]``.
    """
    y_pred = tf.convert_to_tensor(y_pred)
    dtype = _loss_dtype(y_pred.dtype)
    y_pred = tf.cast(y_pred, dtype)
    y_true = tf.cast(y_true, dtype)
    weights = tf.cast(weights, dtype)
    if weights.shape.rank not in (2, 3) or tuple(weights.shape[-2:]) != (256, 256):
        raise LossConfigError(f"weights must have shape [256, 256] or [N, 256, 256], got {weights.shape}")
    if weights.shape.rank == 2:
        weights = weights[tf.newaxis]
    weighted = tf.square(y_pred - y_true) * weights[..., tf.newaxis]
    return tf.reduce_mean(weighted, axis=[1, 2, 3])


def total_loss(per_example_loss, global_batch_size: int, regularization_losses=()):
    """This replica's share of the training loss: ``sum(per_example) / global_batch_size`` plus
    ``sum(regularization_losses) / num_replicas_in_sync`` (e.g. ``model.losses``: each replica's
    model holds the same weights). Summed over replicas it equals the single-device loss; under the
    default strategy it *is* the single-device loss. float32 (float64 for float64 inputs)."""
    loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
    regularization_losses = list(regularization_losses)
    if regularization_losses:
        reg = tf.add_n([tf.cast(r, loss.dtype) for r in regularization_losses])
        loss = loss + tf.nn.scale_regularization_loss(reg)
    return loss
