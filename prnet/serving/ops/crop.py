"""Twin of :func:`prnet.core.crop.box_from_bbox`, :func:`prnet.core.crop.crop_transform` and
:func:`prnet.core.crop.warp_crop`; pinned by tests/test_graph_twins.py.

The network crop in graph ops, for the SavedModel's image signatures: the square of a face box by
the original's rule (:func:`landmark_square`, the one graph home of the 1.6 x box rule), its
transform and its bilinear resampling to 256 x 256, black outside the image. Boxes are
``(x0, y0, x1, y1)`` image px (x = column, y = row, pixel centres at integers), in the pixels of the
image as displayed (EXIF orientation applied). The constants (crop side, 1.6) are those of
:mod:`prnet.core.crop`, imported.
"""

from __future__ import annotations

import tensorflow as tf

from prnet.core.crop import CROP_SIZE, LANDMARK_SCALE
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_BOX_FACTOR, MIN_BOX_SIDE
from prnet.serving.ops.image_bytes import checked, checked_header, decode_oriented


def landmark_square(box):
    """The crop square of a face box by the original's rule (:func:`prnet.core.crop.box_from_bbox`).

    ``box`` float64 ``(4,)`` ``(x0, y0, x1, y1)`` image px -> ``(cx, cy, size)`` float64 scalars: the box
    centre and ``size = floor(1.6 x (x1 - x0 + y1 - y0) / 2)`` (at least 1 px).
    """
    old = (box[2] - box[0] + box[3] - box[1]) / 2.0
    size = tf.maximum(tf.floor(old * LANDMARK_SCALE), 1.0)
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, size


def crop_square(image, cx, cy, size):
    """The network crop of the square of side ``size`` centred on ``(cx, cy)`` (float64 scalars, image px)
    of an RGB uint8 ``image`` ``(H, W, 3)``, in TensorFlow ops.

    Returns ``(crop float32 (256, 256, 3) in [0, 1], tform float32 (3, 3) image -> crop px)``, the
    same as ``prnet.core.crop.warp_crop(image, crop_transform((cx, cy), size))`` (bilinear, black
    outside the image). Only the window the crop samples is converted to float.
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    s = (CROP_SIZE - 1) / size
    ox, oy = cx - size / 2.0, cy - size / 2.0
    # Only the window the crop samples (with the bilinear neighbours) is converted to float.
    x_lo = tf.clip_by_value(tf.floor(ox) - 1.0, 0.0, w - 1.0)
    x_hi = tf.clip_by_value(tf.floor(ox + size) + 3.0, x_lo + 1.0, w)
    y_lo = tf.clip_by_value(tf.floor(oy) - 1.0, 0.0, h - 1.0)
    y_hi = tf.clip_by_value(tf.floor(oy + size) + 3.0, y_lo + 1.0, h)
    window = image[tf.cast(y_lo, tf.int32):tf.cast(y_hi, tf.int32), tf.cast(x_lo, tf.int32):tf.cast(x_hi, tf.int32)]
    zero = tf.zeros([], tf.float64)
    # ImageProjectiveTransform maps output (crop) pixel (x, y) to input (x / s + ox, y / s + oy).
    inverse = tf.stack([1.0 / s, zero, ox - x_lo, zero, 1.0 / s, oy - y_lo, zero, zero])
    crop = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(window, tf.float32)[None], transforms=tf.cast(inverse, tf.float32)[None],
        output_shape=tf.constant([CROP_SIZE, CROP_SIZE]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0] / 255.0
    one = tf.ones([], tf.float64)
    tform = tf.reshape(tf.stack([s, zero, -s * ox, zero, s, -s * oy, zero, zero, one]), [3, 3])
    return crop, tf.cast(tform, tf.float32)


def crop_encoded(data, box, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, index=None):
    """Check, decode, turn upright (EXIF) and crop one image (tf.string) for the network, in TensorFlow ops.

    ``box`` float32 ``(4,)`` ``(x0, y0, x1, y1)`` image px, or zeros for the whole image.
    Returns ``(crop float32 (256, 256, 3) in [0, 1], tform float32 (3, 3) image -> crop px)``,
    the same crop as ``prnet.core.crop.warp_crop(image, crop_transform(*box_from_bbox(box)))``
    (bilinear, black outside the image). Requests outside the limits (the image's: :func:`checked_header`;
    the box's: :mod:`prnet.serving.limits`, overlapping the image) fail with
    ``InvalidArgumentError`` before the image is decoded; ``index`` (int tensor), the element's place in the
    request, is named in the messages.
    """
    header = checked_header(data, max_image_pixels, index=index)
    hi, wi = header.h, header.w
    h = tf.cast(hi, tf.float64)
    w = tf.cast(wi, tf.float64)
    b = tf.cast(box, tf.float64)
    where = "predict_images: boxes" if index is None else tf.strings.join(
        ["predict_images: boxes[", tf.strings.as_string(index), "]"])
    b = checked(b, tf.reduce_all(tf.math.is_finite(b)), tf.strings.join(
        [where, " has a NaN or infinite coordinate; send (x0, y0, x1, y1) image pixels, or four zeros for the "
         "whole image. Box:"]), box)
    has_box = tf.reduce_any(tf.not_equal(b, 0.0))
    bw, bh = b[2] - b[0], b[3] - b[1]
    rules = [
        (tf.logical_and(bw > 0, bh > 0), "a box must be (x0, y0, x1, y1) image pixels with x1 > x0 and y1 > y0, "
         "or four zeros for the whole image"),
        (tf.logical_and(bw >= MIN_BOX_SIDE, bh >= MIN_BOX_SIDE),
         f"a box must be at least {MIN_BOX_SIDE:g} pixels wide and high (a face that small cannot be "
         "reconstructed)"),
        (tf.logical_and(bw <= MAX_BOX_FACTOR * w, bh <= MAX_BOX_FACTOR * h),
         f"a box may be at most {MAX_BOX_FACTOR:g} times the image's width and height (boxes are in the "
         "pixels of the image as displayed)"),
        (tf.logical_and(tf.logical_and(b[0] < w - 1, b[2] > 0), tf.logical_and(b[1] < h - 1, b[3] > 0)),
         "a box must overlap the image (boxes are in the pixels of the image as displayed, EXIF orientation "
         "applied)"),
    ]
    for ok, message in rules:
        b = checked(b, tf.logical_or(tf.logical_not(has_box), ok),
                    tf.strings.join([where, f": {message}. Box, image width, height:"]), box, wi, hi)
    image = decode_oriented(header, index=index)
    cx, cy, size = landmark_square(b)
    whole = tf.maximum(tf.minimum(w, h) - 1.0, 1.0)  # no box: the centred square of the whole image
    return crop_square(image, tf.where(has_box, cx, (w - 1.0) / 2.0), tf.where(has_box, cy, (h - 1.0) / 2.0),
                       tf.where(has_box, size, whole))

