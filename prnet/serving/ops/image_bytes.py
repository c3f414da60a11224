"""Twin of :func:`prnet.core.images.exif_orientation`, :func:`prnet.core.images.apply_orientation` and
:func:`prnet.core.images.decode_image`; pinned by tests/test_graph_twins.py.

Encoded image bytes (a scalar tf.string) in graph ops, for the SavedModel's image signatures: the
stored size from the header (PNG ``IHDR``, JPEG ``SOFn``, GIF frame descriptors, BMP info header),
the EXIF Orientation tag (JPEG APP1 ``Exif``, PNG ``eXIf``) read from the bytes without decoding,
the request-limit checks on that header (:mod:`prnet.serving.limits`), then the decode turned as
displayed by the one orientation table, :data:`prnet.core.images.ORIENTATION_STEPS`. Images are RGB
uint8 ``(H, W, 3)``, x = column, y = row. A failed check is an ``InvalidArgumentError`` whose message
says what to send instead.
"""

from __future__ import annotations

import tensorflow as tf

from prnet.core.images import EXIF_HEADER, EXIF_ORIENTATION_TAG, ORIENTATION_STEPS
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

#: Leading bytes of the accepted formats (JPEG, PNG, GIF, BMP) and how many to compare.
_IMAGE_MAGIC = ((b"\xff\xd8\xff", 3), (b"\x89PNG\r\n\x1a\n", 8), (b"GIF8", 4), (b"BM", 2))
#: Header blocks (JPEG segments, PNG chunks, GIF blocks and sub-blocks) read at most per image.
_MAX_BLOCKS = 1 << 20


def checked(value, condition, message, *data):
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
    """Orientation 1-8 from the TIFF structure of an EXIF payload at bytes ``[start, end)``; 1 if none
    (as ``prnet.core.images._tiff_orientation``)."""
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
    """EXIF orientation of a JPEG: the first APP1 ``Exif`` segment before the scan (1 if none; the segment
    walk of ``prnet.core.images._jpeg_exif``)."""
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
    """EXIF orientation of a PNG: its ``eXIf`` chunk before the image data (1 if none; the chunk walk of
    ``prnet.core.images._png_exif``)."""
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
    orientation is the EXIF tag (1-8, 1 when absent; JPEG and PNG), as
    :func:`prnet.core.images.exif_orientation` reads it. Non-images give zeros.
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
    by :data:`prnet.core.images.ORIENTATION_STEPS` (as :func:`prnet.core.images.apply_orientation`)."""
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
    data = checked(data, _is_image(data), f"{signature}: an element of `images` is not an encoded JPEG, "
                   "PNG, GIF or BMP image (send the raw file bytes; in REST JSON as {\"b64\": base64})")
    stored_h, stored_w, orientation = image_header(data)
    turned = orientation >= 5
    hi = tf.where(turned, stored_w, stored_h)
    wi = tf.where(turned, stored_h, stored_w)
    limit = tf.cast(max_image_pixels, tf.int64)
    pixels = tf.cast(hi, tf.float64) * tf.cast(wi, tf.float64)  # no int64 overflow on 4e9 x 4e9 headers
    data = checked(data, pixels <= tf.cast(limit, tf.float64),
                   f"{signature}: an image is larger than this model's limit on pixels per image "
                   "(set at export: export.py --max_image_pixels); downscale it before sending. "
                   "Width, height, limit:", wi, hi, limit)
    data = checked(data, tf.minimum(hi, wi) >= MIN_IMAGE_SIDE,
                   f"{signature}: an image is smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels (or its "
                   "header is broken); send the photo the face was found in. Width, height:", wi, hi)
    return data, stored_h, stored_w, orientation, hi, wi


def decode_oriented(data, stored_h, stored_w, orientation, signature="predict_images"):
    """Decode a :func:`checked_header` element to RGB uint8 ``(H, W, 3)`` as displayed (EXIF applied; as
    :func:`prnet.core.images.decode_image`); ``InvalidArgumentError`` when the pixel data does not match the header."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    image = checked(image, tf.reduce_all(tf.equal(tf.shape(image, out_type=tf.int64)[:2], [stored_h, stored_w])),
                    f"{signature}: an image's header does not match its pixel data (damaged file); "
                    "re-encode it")
    return orient_image(image, orientation)

