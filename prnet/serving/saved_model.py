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
* ``predict_images_detect`` (unless exported with ``detector=None``): ``images`` tf.string ``[N]``
  only. Per image, in the graph: decode (same checks and EXIF rule), the default face detector
  (BlazeFace "back": :mod:`prnet.serving.detect_graph`, constants from :mod:`prnet.model.blazeface`),
  its weighted NMS, the calibrated box -> the 1.6 x crop rule (``prnet.core.crop.box_from_bbox``),
  the network. Returns, padded to ``M = max_faces`` rows per image (largest face first, rows past
  ``num_faces`` are zeros): ``boxes`` ``[N, M, 4]`` the calibrated face boxes (estimates of the 68
  landmarks' bounding box, image px), ``scores`` ``[N, M]`` (detector score 0-1), ``keypoints``
  ``[N, M, 6, 2]`` (BlazeFace's eyes, nose, mouth, ears; image px), ``landmarks`` ``[N, M, 68, 3]``
  (image px, z / s), ``tform`` ``[N, M, 3, 3]`` (image -> crop) and ``num_faces`` int32 ``[N]``.
  This equals :class:`prnet.inference.predictor.Predictor` with the default detector and
  ``refine=False`` (no landmark re-cropping in the graph).

Images are taken **as displayed**: the EXIF Orientation tag of a JPEG (APP1 ``Exif``) or PNG
(``eXIf``) is applied before cropping (the table :data:`prnet.core.images.ORIENTATION_STEPS`, the
same rule as the Python reader), and boxes are in the pixels of the turned image, so a phone photo
gives the same result here as through :class:`prnet.inference.predictor.Predictor`.

Limits. A request is checked before anything is decoded or run, from the image headers (PNG
``IHDR``, JPEG ``SOFn``, GIF frame descriptors, BMP info header), so an oversized image costs no
memory; a failure is an ``InvalidArgumentError`` (HTTP 400 ``INVALID_ARGUMENT``) whose message
says what is wrong and what to send instead:

* the batch is not empty, and ``boxes`` has one row of 4 per image;
* each element is JPEG, PNG, GIF or BMP bytes, of at least :data:`MIN_IMAGE_SIDE` pixels on each
  side and at most ``max_image_pixels`` pixels (width x height; chosen at export,
  ``export.py --max_image_pixels``, default :data:`DEFAULT_MAX_IMAGE_PIXELS`; the exported value
  is the SavedModel's variable ``max_image_pixels``). At most 10 images of a batch are decoded at
  once (``tf.map_fn``), so a request holds at most ~10 x 3 bytes x ``max_image_pixels`` of decoded
  pixels plus one float copy of each crop window;
* a box (other than four zeros) has finite coordinates, ``x1 > x0`` and ``y1 > y0``, a width and
  height of at least :data:`MIN_BOX_SIDE` pixels and at most :data:`MAX_BOX_FACTOR` times the
  image width / height, and overlaps the image (``x0 < W - 1``, ``x1 > 0``, ``y0 < H - 1``,
  ``y1 > 0`` for pixel centres ``0 .. W - 1`` / ``0 .. H - 1`` of the image as displayed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE, LANDMARK_SCALE
from prnet.core.files import _umask, atomic_path
from prnet.core.images import EXIF_HEADER, EXIF_ORIENTATION_TAG, ORIENTATION_STEPS
from prnet.errors import ExportError
from prnet.model.fast import IMAGES_SPEC, build_inference_model
from prnet.model.resfcn256 import to_posmap
from prnet.serving.detect_graph import BlazeFaceGraph, pose_angles
from prnet.serving.limits import (
    DEFAULT_MAX_FACES,
    DEFAULT_MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    check_max_faces,
    check_max_image_pixels,
)

_IMAGE_MAGIC = ((b"\xff\xd8\xff", 3), (b"\x89PNG\r\n\x1a\n", 8), (b"GIF8", 4), (b"BM", 2))

#: Smallest box width / height (pixels).
MIN_BOX_SIDE = 8.0
#: Largest box width / height, in multiples of the image width / height.
MAX_BOX_FACTOR = 4.0
#: Header blocks (JPEG segments, PNG chunks, GIF blocks and sub-blocks) read at most per image.
_MAX_BLOCKS = 1 << 20


# ----------------------------------------------------------------------------- in-graph checks

def _checked(value, condition, message, *data):
    """``value`` if ``condition`` holds, else fail with InvalidArgumentError(``message``, ``data``...).

    A ``tf.cond`` makes everything downstream data-dependent on the check, so graph optimisers
    cannot run (and fail in) a later op first.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [message, *data])]):
            return tf.identity(value)

    return tf.cond(condition, lambda: tf.identity(value), fail)


def _is_image(data):
    ok = tf.constant(False)
    for magic, n in _IMAGE_MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(data, 0, n), magic))
    return ok


class _Bytes:
    """Random access to the bytes of a tf.string: int64 values, reads past the end give 0."""

    def __init__(self, data):
        self.vec = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
        self.n = tf.size(self.vec, out_type=tf.int64)
        self.padded = tf.concat([self.vec, tf.zeros([1], tf.int64)], 0)

    def at(self, pos):
        pos = tf.cast(pos, tf.int64)
        inside = tf.logical_and(pos >= 0, pos < self.n)
        return tf.gather(self.padded, tf.where(inside, pos, self.n))

    def uint(self, pos, size, little):
        """Unsigned integer of ``size`` bytes at ``pos``; ``little``: bool (tensor) byte order."""
        le = be = tf.zeros_like(tf.cast(pos, tf.int64))
        for i in range(size):
            b = self.at(pos + i)
            le += b * (256 ** i)
            be += b * (256 ** (size - 1 - i))
        return tf.where(little, le, be)


def _tiff_orientation(b, start, end):
    """Orientation 1-8 from the TIFF structure of an EXIF payload at bytes ``[start, end)``; 1 if none."""
    little = tf.logical_and(tf.equal(b.at(start), 0x49), tf.equal(b.at(start + 1), 0x49))
    big = tf.logical_and(tf.equal(b.at(start), 0x4D), tf.equal(b.at(start + 1), 0x4D))
    ifd = start + b.uint(start + 4, 4, little)
    count = tf.clip_by_value(b.uint(ifd, 2, little), 0, tf.maximum((end - ifd - 2) // 12, 0))
    entries = ifd + 2 + 12 * tf.range(count)
    hit = tf.logical_and(tf.equal(b.uint(entries, 2, little), EXIF_ORIENTATION_TAG),
                         tf.equal(b.uint(entries + 2, 2, little), 3))  # type SHORT
    value = tf.reduce_sum(tf.where(tf.logical_and(hit, tf.cumsum(tf.cast(hit, tf.int64)) == 1),
                                   b.uint(entries + 8, 2, little), 0))
    ok = tf.logical_and(tf.logical_or(little, big), tf.logical_and(value >= 1, value <= 8))
    return tf.where(ok, value, 1)


def _jpeg_orientation(b):
    """EXIF orientation of a JPEG: the first APP1 ``Exif`` segment before the scan (1 if none)."""
    def step(i, pos, done, orientation):
        marker = b.at(pos + 1)
        fill = tf.equal(marker, 0xFF)
        bare = tf.logical_or(tf.logical_or(tf.equal(marker, 0xD8), tf.equal(marker, 0x01)),
                             tf.logical_and(marker >= 0xD0, marker <= 0xD7))
        length = b.uint(pos + 2, 2, False)
        stop = tf.logical_or(tf.not_equal(b.at(pos), 0xFF),
                             tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9)))
        stop = tf.logical_or(stop, tf.logical_and(tf.logical_not(tf.logical_or(fill, bare)), length < 2))
        header = [b.at(pos + 4 + k) for k in range(len(EXIF_HEADER))]
        exif = tf.logical_and(tf.logical_not(stop), tf.equal(marker, 0xE1))
        for got, want in zip(header, EXIF_HEADER):
            exif = tf.logical_and(exif, tf.equal(got, want))
        value = _tiff_orientation(b, pos + 4 + len(EXIF_HEADER), pos + 2 + length)
        nxt = tf.where(fill, pos + 1, tf.where(bare, pos + 2, pos + 2 + length))
        return i + 1, nxt, tf.logical_or(stop, exif), tf.where(exif, value, orientation)

    def more(i, pos, done, orientation):
        return tf.logical_and(tf.logical_and(i < _MAX_BLOCKS, tf.logical_not(done)), pos + 4 <= b.n)

    one = tf.ones([], tf.int64)
    return tf.while_loop(more, step, (tf.zeros([], tf.int64), 2 * one, tf.constant(False), one))[3]


def _png_orientation(b):
    """EXIF orientation of a PNG: its ``eXIf`` chunk before the image data (1 if none)."""
    def step(i, pos, done, orientation):
        length = b.uint(pos, 4, False)
        kind = [b.at(pos + 4 + k) for k in range(4)]

        def is_(name):
            ok = tf.constant(True)
            for got, want in zip(kind, name):
                ok = tf.logical_and(ok, tf.equal(got, want))
            return ok

        exif = is_(b"eXIf")
        value = _tiff_orientation(b, pos + 8, pos + 8 + length)
        stop = tf.logical_or(exif, tf.logical_or(is_(b"IDAT"), is_(b"IEND")))
        return i + 1, pos + 12 + length, stop, tf.where(exif, value, orientation)

    def more(i, pos, done, orientation):
        return tf.logical_and(tf.logical_and(i < _MAX_BLOCKS, tf.logical_not(done)), pos + 8 <= b.n)

    one = tf.ones([], tf.int64)
    return tf.while_loop(more, step, (tf.zeros([], tf.int64), 8 * one, tf.constant(False), one))[3]


def _gif_size(b):
    """(height, width) TensorFlow decodes a GIF to: the largest frame (image descriptor) sizes."""
    packed = b.at(10)
    table = tf.where(packed >= 128, 3 * tf.bitwise.left_shift(tf.ones([], tf.int64), (packed % 8) + 1), 0)

    def step(i, pos, sub, done, h, w):
        # sub: inside a run of data sub-blocks (a size byte, that many bytes; 0 ends the run).
        head = b.at(pos)
        frame = tf.logical_and(tf.logical_not(sub), tf.equal(head, 0x2C))
        extension = tf.logical_and(tf.logical_not(sub), tf.equal(head, 0x21))
        local = b.at(pos + 9)
        frame_end = pos + 10 + tf.where(local >= 128, 3 * tf.bitwise.left_shift(
            tf.ones([], tf.int64), (local % 8) + 1), 0) + 1  # + the LZW minimum code size byte
        nxt = tf.where(sub, pos + 1 + head, tf.where(frame, frame_end, pos + 2))
        sub_next = tf.where(sub, tf.not_equal(head, 0), tf.logical_or(frame, extension))
        stop = tf.logical_and(tf.logical_not(sub), tf.logical_not(tf.logical_or(frame, extension)))
        h = tf.where(frame, tf.maximum(h, b.uint(pos + 7, 2, True)), h)
        w = tf.where(frame, tf.maximum(w, b.uint(pos + 5, 2, True)), w)
        return i + 1, nxt, sub_next, stop, h, w

    def more(i, pos, sub, done, h, w):
        return tf.logical_and(tf.logical_and(i < _MAX_BLOCKS, tf.logical_not(done)), pos < b.n)

    zero = tf.zeros([], tf.int64)
    out = tf.while_loop(more, step, (zero, 13 + table, tf.constant(False), tf.constant(False), zero, zero))
    return out[4], out[5]


def image_header(data):
    """``(height, width, orientation)`` int64 of one encoded image from its header, without decoding it.

    Height and width are the stored (not yet turned) pixels TensorFlow's decoder will produce;
    orientation is the EXIF tag (1-8, 1 when absent; JPEG and PNG). Non-images give zeros.
    """
    b = _Bytes(data)
    one, zero = tf.ones([], tf.int64), tf.zeros([], tf.int64)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data, output_type=tf.int64)
        return tf.stack([shape[0], shape[1], _jpeg_orientation(b)])

    def png():
        return tf.stack([b.uint(20, 4, False), b.uint(16, 4, False), _png_orientation(b)])

    def gif():
        h, w = _gif_size(b)
        return tf.stack([h, w, one])

    def bmp():
        def signed(v):
            return tf.where(v >= 2 ** 31, v - 2 ** 32, v)

        return tf.stack([tf.abs(signed(b.uint(22, 4, True))), tf.abs(signed(b.uint(18, 4, True))), one])

    def kind(magic):
        return tf.equal(tf.strings.substr(data, 0, len(magic)), magic)

    hwo = tf.case([(kind(b"\xff\xd8\xff"), jpeg), (kind(b"\x89PNG\r\n\x1a\n"), png), (kind(b"GIF8"), gif),
                   (kind(b"BM"), bmp)], default=lambda: tf.stack([zero, zero, one]), exclusive=True)
    return hwo[0], hwo[1], hwo[2]


def orient_image(image, orientation):
    """``image`` ``(H, W, C)`` as displayed for an EXIF ``orientation`` (int tensor; other values: unchanged),
    by :data:`prnet.core.images.ORIENTATION_STEPS`."""
    ops = {"transpose": lambda x: tf.transpose(x, [1, 0, 2]), "flip_left_right": lambda x: tf.reverse(x, [1]),
           "flip_up_down": lambda x: tf.reverse(x, [0])}

    def turned(steps):
        def run():
            out = image
            for name in steps:
                out = ops[name](out)
            return out
        return run

    branches = [turned(ORIENTATION_STEPS.get(k, ())) for k in range(9)]
    index = tf.where(tf.logical_and(orientation >= 1, orientation <= 8), orientation, 1)
    return tf.switch_case(tf.cast(index, tf.int32), branches)


def checked_header(data, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, signature="predict_images"):
    """Check one request element (tf.string) from its header, before decoding it.

    Returns ``(data, stored_h, stored_w, orientation, h, w)``: ``data`` made dependent on the checks,
    the stored size (int64, as the decoder produces it), the EXIF orientation and the size of the
    image as displayed (int64). Fails with ``InvalidArgumentError`` (message prefixed with
    ``signature``) for non-image bytes, an image under :data:`MIN_IMAGE_SIDE` or over
    ``max_image_pixels`` pixels.
    """
    data = _checked(data, _is_image(data), f"{signature}: an element of `images` is not an encoded JPEG, "
                    "PNG, GIF or BMP image (send the raw file bytes; in REST JSON as {\"b64\": base64})")
    stored_h, stored_w, orientation = image_header(data)
    turned = orientation >= 5
    hi = tf.where(turned, stored_w, stored_h)
    wi = tf.where(turned, stored_h, stored_w)
    limit = tf.cast(max_image_pixels, tf.int64)
    pixels = tf.cast(hi, tf.float64) * tf.cast(wi, tf.float64)  # no int64 overflow on 4e9 x 4e9 headers
    data = _checked(data, pixels <= tf.cast(limit, tf.float64),
                    f"{signature}: an image is larger than this model's limit on pixels per image "
                    "(set at export: export.py --max_image_pixels); downscale it before sending. "
                    "Width, height, limit:", wi, hi, limit)
    data = _checked(data, tf.minimum(hi, wi) >= MIN_IMAGE_SIDE,
                    f"{signature}: an image is smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels (or its "
                    "header is broken); send the photo the face was found in. Width, height:", wi, hi)
    return data, stored_h, stored_w, orientation, hi, wi


def decode_oriented(data, stored_h, stored_w, orientation, signature="predict_images"):
    """Decode a :func:`checked_header` element to RGB uint8 ``(H, W, 3)`` as displayed (EXIF applied);
    ``InvalidArgumentError`` when the pixel data does not match the header."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    image = _checked(image, tf.reduce_all(tf.equal(tf.shape(image, out_type=tf.int64)[:2], [stored_h, stored_w])),
                     f"{signature}: an image's header does not match its pixel data (damaged file); "
                     "re-encode it")
    return orient_image(image, orientation)


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


def crop_encoded(data, box, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Check, decode, turn upright (EXIF) and crop one image (tf.string) for the network, in TensorFlow ops.

    ``box`` float32 ``(4,)`` ``(x0, y0, x1, y1)`` image px, or zeros for the whole image.
    Returns ``(crop float32 (256, 256, 3) in [0, 1], tform float32 (3, 3) image -> crop px)``,
    the same crop as ``prnet.core.crop.warp_crop(image, crop_transform(*box_from_bbox(box)))``
    (bilinear, black outside the image). Requests outside the limits of the module docstring fail
    with ``InvalidArgumentError`` before the image is decoded.
    """
    data, stored_h, stored_w, orientation, hi, wi = checked_header(data, max_image_pixels)
    h = tf.cast(hi, tf.float64)
    w = tf.cast(wi, tf.float64)
    b = tf.cast(box, tf.float64)
    b = _checked(b, tf.reduce_all(tf.math.is_finite(b)),
                 "predict_images: a box has a NaN or infinite coordinate; send (x0, y0, x1, y1) image pixels, "
                 "or four zeros for the whole image. Box:", box)
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
        b = _checked(b, tf.logical_or(tf.logical_not(has_box), ok),
                     f"predict_images: {message}. Box, image width, height:", box, wi, hi)
    image = decode_oriented(data, stored_h, stored_w, orientation)
    old = (bw + bh) / 2.0
    size = tf.maximum(tf.where(has_box, tf.floor(old * LANDMARK_SCALE), tf.minimum(w, h) - 1.0), 1.0)
    cx = tf.where(has_box, (b[0] + b[2]) / 2.0, (w - 1.0) / 2.0)
    cy = tf.where(has_box, (b[1] + b[3]) / 2.0, (h - 1.0) / 2.0)
    return crop_square(image, cx, cy, size)


class ServingModule(tf.Module):
    """What the SavedModel holds: the fast network, the landmark UV pixels and the signatures."""

    def __init__(self, net, kpt_ind, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, detector=None,
                 max_faces: int = DEFAULT_MAX_FACES, pose_points=None):
        super().__init__(name="prnet")
        self.net = net
        #: The cap on pixels per image of predict_images (read it back: ``loaded.max_image_pixels``).
        self.max_image_pixels = tf.Variable(int(max_image_pixels), dtype=tf.int64, trainable=False,
                                            name="max_image_pixels")
        # (68, 2) UV pixels as (row, col) for gather_nd.
        self.kpt_rowcol = tf.constant(np.asarray(kpt_ind, np.int32)[:, ::-1].copy(), name="kpt_rowcol")
        if detector is not None:
            #: The face detector graph of predict_images_detect (:class:`prnet.serving.detect_graph.BlazeFaceGraph`).
            self.detector = detector
            self._max_faces = int(max_faces)
            #: Faces per image predict_images_detect returns at most (read it back: ``loaded.max_faces``).
            self.max_faces = tf.Variable(self._max_faces, dtype=tf.int64, trainable=False, name="max_faces")
            self._pose = pose_points is not None
            if self._pose:  # (face_ind (P,) flat UV pixels, canonical_vertices (P, 3)) of the UV template
                self.face_ind = tf.constant(np.asarray(pose_points[0], np.int32), name="face_ind")
                self.canonical_vertices = tf.constant(np.asarray(pose_points[1], np.float32),
                                                      name="canonical_vertices")
            self.predict_images_detect = tf.function(
                self._predict_detect, input_signature=[tf.TensorSpec([None], tf.string, name="images")])

    @tf.function(input_signature=[IMAGES_SPEC])
    def serving_default(self, images):
        """Float32 RGB crops [N, 256, 256, 3] in [0, 1] -> {"posmap": [N, 256, 256, 3] crop pixels}."""
        return {"posmap": self.net(images)}

    def _predict(self, images, boxes):
        n = tf.shape(images)[0]
        # gate the images themselves: map_fn's trip count and its (empty) output come from them, so the
        # network cannot run on an empty batch before the check fails
        images = _checked(images, n > 0, "predict_images: empty batch; send at least one image")
        n = tf.shape(images)[0]
        boxes = _checked(boxes, tf.equal(tf.size(boxes), 4 * n),
                         "predict_images: `boxes` must have shape [N, 4] (x0, y0, x1, y1), one row per image")
        boxes = tf.reshape(boxes, [n, 4])
        crops, tforms = tf.map_fn(
            lambda args: crop_encoded(*args, max_image_pixels=self.max_image_pixels), (images, boxes),
            fn_output_signature=(tf.TensorSpec([CROP_SIZE, CROP_SIZE, 3], tf.float32),
                                 tf.TensorSpec([3, 3], tf.float32)))
        posmap = self.net(crops)
        return {"posmap": posmap, "landmarks": self._landmarks(posmap, tforms), "tform": tforms}

    def _landmarks(self, posmap, tforms):
        """Position maps [N, 256, 256, 3] crop px + tforms [N, 3, 3] -> landmarks [N, 68, 3] image px (z / s)."""
        n = tf.shape(posmap)[0]
        kpt = tf.gather_nd(posmap, tf.tile(self.kpt_rowcol[None], [n, 1, 1]), batch_dims=1)  # (N, 68, 3)
        s = tforms[:, 0, 0][:, None]
        return tf.stack([(kpt[..., 0] - tforms[:, 0, 2][:, None]) / s,
                         (kpt[..., 1] - tforms[:, 1, 2][:, None]) / s,
                         kpt[..., 2] / s], axis=-1)

    def _detect_one(self, data):
        """One encoded image -> its faces, padded to ``max_faces`` (see ``predict_images_detect``)."""
        name = "predict_images_detect"
        data, stored_h, stored_w, orientation, _, _ = checked_header(data, self.max_image_pixels, name)
        image = decode_oriented(data, stored_h, stored_w, orientation, name)
        boxes, scores, keypoints = self.detector(image)
        m = self._max_faces
        boxes, scores, keypoints = boxes[:m], scores[:m], keypoints[:m]
        k = tf.shape(boxes)[0]

        def crop(box):  # prnet.core.crop.box_from_bbox: the box centre, side int(1.6 x mean side)
            size = tf.maximum(tf.floor((box[2] - box[0] + box[3] - box[1]) / 2.0 * LANDMARK_SCALE), 1.0)
            return crop_square(image, (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, size)

        crops, tforms = tf.map_fn(crop, boxes, fn_output_signature=(
            tf.TensorSpec([CROP_SIZE, CROP_SIZE, 3], tf.float32), tf.TensorSpec([3, 3], tf.float32)))
        def faces():
            posmap = self.net(crops)
            if not self._pose:
                return self._landmarks(posmap, tforms), tf.zeros([k, 3], tf.float32)
            vertices = tf.gather(tf.reshape(posmap, [k, CROP_SIZE * CROP_SIZE, 3]), self.face_ind, axis=1)
            pose = tf.map_fn(lambda v: pose_angles(v, self.canonical_vertices), vertices,
                             fn_output_signature=tf.TensorSpec([3], tf.float64))
            return self._landmarks(posmap, tforms), tf.cast(pose, tf.float32)

        landmarks, pose = tf.cond(k > 0, faces, lambda: (tf.zeros([0, 68, 3], tf.float32), tf.zeros([0, 3])))
        pad = m - k

        def padded(x, dtype=tf.float32):
            x = tf.cast(x, dtype)
            return tf.pad(x, tf.concat([[[0, pad]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], 0))

        out = {"boxes": padded(boxes), "scores": padded(scores), "keypoints": padded(keypoints),
               "landmarks": padded(landmarks), "tform": padded(tforms), "num_faces": k}
        if self._pose:
            out["pose"] = padded(pose)
        return out

    def _predict_detect(self, images):
        """Encoded images [N] -> every face the detector finds (at most max_faces per image, largest first):
        boxes [N,M,4], scores [N,M], keypoints [N,M,6,2], landmarks [N,M,68,3] (image px), tform [N,M,3,3],
        num_faces [N]; rows past num_faces are zeros."""
        n = tf.shape(images)[0]
        images = _checked(images, n > 0, "predict_images_detect: empty batch; send at least one image")
        m = self._max_faces
        spec = {"boxes": tf.TensorSpec([m, 4], tf.float32), "scores": tf.TensorSpec([m], tf.float32),
                "keypoints": tf.TensorSpec([m, 6, 2], tf.float32), "landmarks": tf.TensorSpec([m, 68, 3], tf.float32),
                "tform": tf.TensorSpec([m, 3, 3], tf.float32), "num_faces": tf.TensorSpec([], tf.int32)}
        if self._pose:
            spec["pose"] = tf.TensorSpec([m, 3], tf.float32)
        return tf.map_fn(self._detect_one, images, fn_output_signature=spec)

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


def make_detector_graph(detector):
    """``"blazeface"`` -> a new :class:`prnet.serving.detect_graph.BlazeFaceGraph` ("back" model); None or
    ``"none"`` -> None; a detector graph is returned as is. :class:`ExportError` for other names."""
    if detector is None or (isinstance(detector, str) and detector == "none"):
        return None
    if isinstance(detector, str):
        if detector != "blazeface":
            raise ExportError(f"unknown detector {detector!r} for predict_images_detect; choose blazeface or none")
        return BlazeFaceGraph("back")
    return detector


def export_saved_model(model_or_net, export_dir, *, kpt_ind=None, optimize: bool = True,
                       overwrite: bool = False, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                       detector="blazeface", max_faces: int = DEFAULT_MAX_FACES, template=None) -> Path:
    """Write the SavedModel (signatures in the module docstring) to ``export_dir``, atomically.

    Args:
      model_or_net: a Keras ResFCN256 or an :class:`prnet.model.fast.InferenceNet`.
      kpt_ind: ``(68, 2)`` UV pixels (col, row) of the landmarks; default: the UV template's
        (:func:`prnet.core.uv.load_uv_template`, needs the assets).
      optimize: export the BN-folded graph (default) rather than the Keras training graph.
      overwrite: replace an existing ``export_dir`` (else :class:`prnet.errors.OutputExistsError`).
      max_image_pixels: the largest image (width x height) ``predict_images`` accepts; larger ones
        are rejected from their header, before decoding (see the module docstring).
      detector: ``"blazeface"`` (default: adds ``predict_images_detect`` with BlazeFace "back" from the
        installed model files), a :class:`prnet.serving.detect_graph.BlazeFaceGraph`, or None (no
        detection signature). Raises :class:`prnet.errors.DetectorUnavailableError` when the model
        files are missing.
      max_faces: faces per image ``predict_images_detect`` returns at most (1-64).
      template: the :class:`prnet.core.uv.UVTemplate` (its ``kpt_ind``, ``face_ind`` and
        ``canonical_vertices``): with it, or when neither it nor ``kpt_ind`` is given (the default
        template is loaded), ``predict_images_detect`` also returns each face's ``pose``.
    """
    max_image_pixels = check_max_image_pixels(max_image_pixels)
    max_faces = check_max_faces(max_faces)
    if template is None and kpt_ind is None:
        from prnet.core.uv import load_uv_template

        template = load_uv_template()
    kpt_ind = template.kpt_ind if kpt_ind is None else kpt_ind
    pose_points = None if template is None else (template.face_ind, template.canonical_vertices)
    detector = make_detector_graph(detector)
    module = ServingModule(_as_net(model_or_net, optimize), kpt_ind, max_image_pixels, detector, max_faces,
                           pose_points)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "predict_images": module.predict_images.get_concrete_function(),
        "predict_images_nobox": module.predict_images_nobox.get_concrete_function(),
    }
    if detector is not None:
        signatures["predict_images_detect"] = module.predict_images_detect.get_concrete_function()

    with atomic_path(export_dir, overwrite=overwrite, directory=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        # TensorFlow makes its folders (variables/, assets/) 0o755 whatever the umask: the usual modes instead.
        mask = _umask()
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    return Path(export_dir).expanduser().resolve()
