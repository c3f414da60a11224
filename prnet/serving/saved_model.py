"""The SavedModel for TF Serving: the fast network plus in-graph decoding and cropping.

The exported graph is the BN-folded fast network of :mod:`prnet.model.fast`; the weights come
from any format :mod:`prnet.weights.formats` reads.

SavedModel signatures (crop conventions of :mod:`prnet.core.crop`; crop pixels: x = column, y = row,
z toward the camera on the x/y scale):

* ``serving_default``: ``images`` float32 ``[N, 256, 256, 3]`` RGB crops in ``[0, 1]`` ->
  ``posmap`` float32 ``[N, 256, 256, 3]`` UV position map in crop pixels.
* ``predict_images``: ``images`` tf.string ``[N]`` encoded JPEG/PNG/BMP/GIF bytes (any size,
  decoded to RGB) and ``boxes`` float32 ``[N, 4]`` face boxes ``(x0, y0, x1, y1)`` in image pixels
  -> ``posmap`` ``[N, 256, 256, 3]`` crop px, ``landmarks`` ``[N, 68, 3]`` image px (z / s), and
  ``tform`` ``[N, 3, 3]`` image -> crop. A box gives the crop square by the original's rule for a
  given box (centre of the box, side ``int(1.6 * (w + h) / 2)``). A row of four zeros means "no
  box": the whole image is taken as the face crop (its centred square of side
  ``min(W, H) - 1``, so a square image maps edge pixel to edge pixel, as the original does with
  pre-cropped 256x256 inputs).
* ``predict_images_nobox``: ``images`` only; every image as with a zero box.

Bad requests (empty batch, bytes that are not an image, a box count different from the image
count, a non-zero box with ``x1 <= x0`` or ``y1 <= y0``) fail with an ``InvalidArgumentError``
whose message says what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE, LANDMARK_SCALE
from prnet.core.files import atomic_path
from prnet.model.fast import IMAGES_SPEC, build_inference_model
from prnet.model.resfcn256 import to_posmap

_IMAGE_MAGIC = ((b"\xff\xd8\xff", 3), (b"\x89PNG\r\n\x1a\n", 8), (b"GIF8", 4), (b"BM", 2))


# ----------------------------------------------------------------------------- in-graph crop

def _checked(value, condition, message):
    """``value`` if ``condition`` holds, else fail with InvalidArgumentError(``message``).

    A ``tf.cond`` makes everything downstream data-dependent on the check, so graph optimisers
    cannot run (and fail in) a later op first.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [message])]):
            return tf.identity(value)

    return tf.cond(condition, lambda: tf.identity(value), fail)


def _is_image(data):
    ok = tf.constant(False)
    for magic, n in _IMAGE_MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(data, 0, n), magic))
    return ok


def crop_encoded(data, box):
    """Decode one image (tf.string) and crop it for the network, in TensorFlow ops.

    ``box`` float32 ``(4,)`` ``(x0, y0, x1, y1)`` image px, or zeros for the whole image.
    Returns ``(crop float32 (256, 256, 3) in [0, 1], tform float32 (3, 3) image -> crop px)``,
    the same crop as ``prnet.core.crop.warp_crop(image, crop_transform(*box_from_bbox(box)))``
    (bilinear, black outside the image).
    """
    data = _checked(data, _is_image(data), "predict_images: an element of `images` is not an encoded JPEG, "
                    "PNG, GIF or BMP image (send the raw file bytes; in REST JSON as {\"b64\": base64})")
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    h = tf.cast(tf.shape(image)[0], tf.float64)
    w = tf.cast(tf.shape(image)[1], tf.float64)
    b = tf.cast(box, tf.float64)
    has_box = tf.reduce_any(tf.not_equal(b, 0.0))
    valid = tf.logical_or(tf.logical_not(has_box), tf.logical_and(b[2] > b[0], b[3] > b[1]))
    b = _checked(b, valid, "predict_images: a box must be (x0, y0, x1, y1) image pixels with x1 > x0 "
                           "and y1 > y0, or four zeros for the whole image")
    old = (b[2] - b[0] + b[3] - b[1]) / 2.0
    size = tf.maximum(tf.where(has_box, tf.floor(old * LANDMARK_SCALE), tf.minimum(w, h) - 1.0), 1.0)
    cx = tf.where(has_box, (b[0] + b[2]) / 2.0, (w - 1.0) / 2.0)
    cy = tf.where(has_box, (b[1] + b[3]) / 2.0, (h - 1.0) / 2.0)
    s = (CROP_SIZE - 1) / size
    ox, oy = cx - size / 2.0, cy - size / 2.0
    zero = tf.zeros([], tf.float64)
    # ImageProjectiveTransform maps output (crop) pixel (x, y) to input (x / s + ox, y / s + oy).
    inverse = tf.stack([1.0 / s, zero, ox, zero, 1.0 / s, oy, zero, zero])
    crop = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=tf.cast(inverse, tf.float32)[None],
        output_shape=tf.constant([CROP_SIZE, CROP_SIZE]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0] / 255.0
    one = tf.ones([], tf.float64)
    tform = tf.reshape(tf.stack([s, zero, -s * ox, zero, s, -s * oy, zero, zero, one]), [3, 3])
    return crop, tf.cast(tform, tf.float32)


class ServingModule(tf.Module):
    """What the SavedModel holds: the fast network, the landmark UV pixels and the signatures."""

    def __init__(self, net, kpt_ind):
        super().__init__(name="prnet")
        self.net = net
        # (68, 2) UV pixels as (row, col) for gather_nd.
        self.kpt_rowcol = tf.constant(np.asarray(kpt_ind, np.int32)[:, ::-1].copy(), name="kpt_rowcol")

    @tf.function(input_signature=[IMAGES_SPEC])
    def serving_default(self, images):
        """Float32 RGB crops [N, 256, 256, 3] in [0, 1] -> {"posmap": [N, 256, 256, 3] crop pixels}."""
        return {"posmap": self.net(images)}

    def _predict(self, images, boxes):
        n = tf.shape(images)[0]
        n = _checked(n, n > 0, "predict_images: empty batch; send at least one image")
        boxes = _checked(boxes, tf.equal(tf.size(boxes), 4 * n),
                         "predict_images: `boxes` must have shape [N, 4] (x0, y0, x1, y1), one row per image")
        boxes = tf.reshape(boxes, [n, 4])
        crops, tforms = tf.map_fn(
            lambda args: crop_encoded(*args), (images, boxes),
            fn_output_signature=(tf.TensorSpec([CROP_SIZE, CROP_SIZE, 3], tf.float32),
                                 tf.TensorSpec([3, 3], tf.float32)))
        posmap = self.net(crops)
        kpt = tf.gather_nd(posmap, tf.tile(self.kpt_rowcol[None], [n, 1, 1]), batch_dims=1)  # (N, 68, 3)
        s = tforms[:, 0, 0][:, None]
        landmarks = tf.stack([(kpt[..., 0] - tforms[:, 0, 2][:, None]) / s,
                              (kpt[..., 1] - tforms[:, 1, 2][:, None]) / s,
                              kpt[..., 2] / s], axis=-1)
        return {"posmap": posmap, "landmarks": landmarks, "tform": tforms}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images"),
                                  tf.TensorSpec([None, 4], tf.float32, name="boxes")])
    def predict_images(self, images, boxes):
        """Encoded images [N] + face boxes [N, 4] (x0, y0, x1, y1 image px; zeros = whole image) ->
        posmap [N,256,256,3] crop px, landmarks [N,68,3] image px, tform [N,3,3] image->crop."""
        return self._predict(images, boxes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def predict_images_nobox(self, images):
        """Encoded images [N], each taken whole as the face crop -> as predict_images."""
        return self._predict(images, tf.zeros([tf.shape(images)[0], 4], tf.float32))


# ----------------------------------------------------------------------------- writing


def _as_net(model_or_net, optimize=True):
    if isinstance(model_or_net, tf.Module) and hasattr(model_or_net, "weights_list"):
        return model_or_net
    if optimize:
        return build_inference_model(model_or_net)
    model = model_or_net

    class _KerasNet(tf.Module):
        def __init__(self):
            super().__init__(name="resfcn256_training_graph")
            self.model = model
            self.weights_list = list(model.weights)

        @tf.function(input_signature=[IMAGES_SPEC])
        def __call__(self, images):
            return to_posmap(model(images, training=False))

    return _KerasNet()


def export_saved_model(model_or_net, export_dir, *, kpt_ind=None, optimize: bool = True,
                       overwrite: bool = False) -> Path:
    """Write the SavedModel (signatures in the module docstring) to ``export_dir``, atomically.

    Args:
      model_or_net: a Keras ResFCN256 or an :class:`prnet.model.fast.InferenceNet`.
      kpt_ind: ``(68, 2)`` UV pixels (col, row) of the landmarks; default: the UV template's
        (:func:`prnet.core.uv.load_uv_template`, needs the assets).
      optimize: export the BN-folded graph (default) rather than the Keras training graph.
      overwrite: replace an existing ``export_dir`` (else :class:`prnet.errors.OutputExistsError`).
    """
    if kpt_ind is None:
        from prnet.core.uv import load_uv_template

        kpt_ind = load_uv_template().kpt_ind
    module = ServingModule(_as_net(model_or_net, optimize), kpt_ind)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "predict_images": module.predict_images.get_concrete_function(),
        "predict_images_nobox": module.predict_images_nobox.get_concrete_function(),
    }

    with atomic_path(export_dir, overwrite=overwrite, directory=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
    return Path(export_dir).expanduser().resolve()
