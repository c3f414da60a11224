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

from typing import NamedTuple

import tensorflow as tf

from prnet.core.images import EXIF_HEADER, EXIF_ORIENTATION_TAG, ORIENTATION_STEPS
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_HEADER_STEPS, MAX_JPEG_SCANS, MIN_IMAGE_SIDE

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


def _substr(data, pos, length):
    """``data[pos:pos + length]`` (int64 scalars); positions past the end give fewer bytes, never an error."""
    n = tf.cast(tf.strings.length(data), tf.int64)
    pos = tf.clip_by_value(tf.cast(pos, tf.int64), 0, n)
    return tf.strings.substr(data, pos, tf.maximum(tf.cast(length, tf.int64), 0))


def _is_image(data):
    ok = tf.constant(False)
    for magic, n in _IMAGE_MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(data, 0, n), magic))
    return ok


class _Bytes:
    """Random access to the bytes of a tf.string: int64 values, reads past the end give 0."""

    def __init__(self, data):
        # uint8: one byte of memory per request byte (plus the zeros read past the end)
        self.vec8 = tf.io.decode_raw(data, tf.uint8)
        self.n = tf.size(self.vec8, out_type=tf.int64)
        self.padded8 = tf.concat([self.vec8, tf.zeros([1], tf.uint8)], 0)

    def at(self, pos):
        pos = tf.cast(pos, tf.int64)
        inside = tf.logical_and(pos >= 0, pos < self.n)
        return tf.cast(tf.gather(self.padded8, tf.where(inside, pos, self.n)), tf.int64)

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


def _found(v, pattern):
    """bool ``(len(v) - len(pattern) + 1,)``: ``pattern`` (bytes) starts at each position of the uint8 vector
    ``v`` (vectorised: a pass over the bytes, no walk)."""
    n, k = tf.size(v), len(pattern)
    hit = tf.constant(True)
    for i, want in enumerate(pattern):
        hit = tf.logical_and(hit, tf.equal(v[i:n - k + 1 + i], want))
    return hit


def _walk(cond, body, state):
    return tf.while_loop(cond, body, state, parallel_iterations=1)


def _jpeg_header(b):
    """Walk a JPEG's segments up to its first scan (at most :data:`MAX_HEADER_STEPS` segments and fill
    bytes; the walk of ``prnet.core.images._jpeg_exif``, continued to the first ``SOS``).

    Returns a dict of int64 / bool scalars: ``h``, ``w`` (the first ``SOFn``), ``orientation`` (the first
    APP1 ``Exif`` segment's tag, 1 if none), ``sos`` (position of the first scan marker), ``found`` (an
    ``SOS`` was reached after an ``SOFn``), ``steps_left`` (False when the walk ran out of steps).
    """
    zero = tf.zeros([], tf.int64)

    def step(i, pos, done, found, exif, h, w, sof):
        marker = b.at(pos + 1)
        fill = tf.equal(marker, 0xFF)
        bare = tf.logical_or(tf.logical_or(tf.equal(marker, 0xD8), tf.equal(marker, 0x01)),
                             tf.logical_and(marker >= 0xD0, marker <= 0xD7))
        length = b.uint(pos + 2, 2, False)
        broken = tf.logical_or(tf.not_equal(b.at(pos), 0xFF), tf.equal(marker, 0xD9))
        broken = tf.logical_or(broken, tf.logical_and(tf.logical_not(tf.logical_or(fill, bare)), length < 2))
        scan = tf.logical_and(tf.logical_not(broken), tf.equal(marker, 0xDA))
        segment = tf.logical_not(tf.logical_or(broken, tf.logical_or(fill, bare)))
        is_exif = tf.logical_and(tf.logical_and(segment, tf.equal(marker, 0xE1)), exif < 0)
        for k, want in enumerate(EXIF_HEADER):
            is_exif = tf.logical_and(is_exif, tf.equal(b.at(pos + 4 + k), want))
        is_sof = tf.logical_and(tf.logical_and(segment, sof < 0), tf.logical_and(marker >= 0xC0, marker <= 0xCF))
        is_sof = tf.logical_and(is_sof, tf.logical_not(tf.reduce_any(tf.equal(marker, [0xC4, 0xC8, 0xCC]))))
        nxt = tf.where(fill, pos + 1, tf.where(bare, pos + 2, pos + 2 + length))
        return (i + 1, tf.where(scan, pos, nxt), tf.logical_or(broken, scan), tf.logical_and(scan, sof >= 0),
                tf.where(is_exif, pos, exif), tf.where(is_sof, b.uint(pos + 5, 2, False), h),
                tf.where(is_sof, b.uint(pos + 7, 2, False), w), tf.where(is_sof, pos, sof))

    def more(i, pos, done, *_):
        return tf.logical_and(tf.logical_and(i < MAX_HEADER_STEPS, tf.logical_not(done)), pos + 4 <= b.n)

    out = _walk(more, step, (zero, 2 + zero, tf.constant(False), tf.constant(False), zero - 1, zero, zero,
                             zero - 1))
    i, pos, done, found, exif = out[:5]
    start = exif + 4 + len(EXIF_HEADER)
    orientation = tf.where(exif >= 0, _tiff_orientation(b, start, exif + 2 + b.uint(exif + 2, 2, False)), 1)
    return {"h": out[5], "w": out[6], "orientation": orientation, "sos": pos, "found": found,
            "steps_left": tf.logical_or(done, i < MAX_HEADER_STEPS)}


def _png_header(b):
    """Walk a PNG's chunks up to ``IDAT`` (at most :data:`MAX_HEADER_STEPS`; the walk of
    ``prnet.core.images._png_exif``): ``orientation`` (its ``eXIf`` chunk, 1 if none), ``idat`` (position
    of the first ``IDAT`` chunk, -1 if not reached), ``steps_left``."""
    zero = tf.zeros([], tf.int64)

    def is_(pos, name):
        ok = tf.constant(True)
        for k, want in enumerate(name):
            ok = tf.logical_and(ok, tf.equal(b.at(pos + 4 + k), want))
        return ok

    def step(i, pos, done, exif, idat):
        exif_here = tf.logical_and(exif < 0, is_(pos, b"eXIf"))
        data = is_(pos, b"IDAT")
        stop = tf.logical_or(data, is_(pos, b"IEND"))
        return (i + 1, pos + 12 + b.uint(pos, 4, False), stop, tf.where(exif_here, pos, exif),
                tf.where(data, pos, idat))

    def more(i, pos, done, *_):
        return tf.logical_and(tf.logical_and(i < MAX_HEADER_STEPS, tf.logical_not(done)), pos + 8 <= b.n)

    i, pos, done, exif, idat = _walk(more, step, (zero, 8 + zero, tf.constant(False), zero - 1, zero - 1))
    orientation = tf.where(exif >= 0, _tiff_orientation(b, exif + 8, exif + 8 + b.uint(exif, 4, False)), 1)
    return {"orientation": orientation, "idat": idat, "steps_left": tf.logical_or(done, i < MAX_HEADER_STEPS)}


#: Full 255-byte GIF data sub-blocks skipped in one step of the GIF walk (up to 256 KiB).
_GIF_RUN = 1024


def _gif_header(b):
    """Walk a GIF's blocks to the end of its first frame (at most :data:`MAX_HEADER_STEPS` steps; a run of
    full 255-byte data sub-blocks is one step).

    Returns ``frame`` (position of the first image descriptor), ``end`` (just past its image data),
    ``left``, ``top``, ``fw``, ``fh`` (its place and size on the logical screen), ``found`` (the frame's
    data ends inside the bytes), ``steps_left``.
    """
    zero = tf.zeros([], tf.int64)
    one = tf.ones([], tf.int64)
    packed = b.at(10)
    table = tf.where(packed >= 128, 3 * tf.bitwise.left_shift(one, (packed % 8) + 1), 0)
    run = 256 * tf.range(_GIF_RUN, dtype=tf.int64)

    # mode 0: at a block (0x21 extension, 0x2C image descriptor); 1: extension data sub-blocks;
    # 2: the first frame's data sub-blocks.
    def step(i, pos, mode, done, bad, frame):
        head = b.at(pos)
        # sub-blocks: skip the run of full ones, then one more
        full = tf.cast(tf.equal(b.at(pos + run), 255), tf.int64)
        p = pos + 256 * tf.reduce_sum(tf.math.cumprod(full))
        size = b.at(p)
        chain_end = tf.logical_and(tf.equal(size, 0), p < b.n)
        sub_next = p + 1 + size
        # blocks
        ext = tf.equal(head, 0x21)
        desc = tf.equal(head, 0x2C)
        local = b.at(pos + 9)
        desc_next = pos + 10 + tf.where(local >= 128, 3 * tf.bitwise.left_shift(one, (local % 8) + 1), 0) + 1
        in_block = tf.equal(mode, 0)
        nxt = tf.where(in_block, tf.where(desc, desc_next, pos + 2), sub_next)
        new_mode = tf.where(in_block, tf.where(desc, 2 + zero, one), tf.where(chain_end, zero, mode))
        bad = tf.where(in_block, tf.logical_or(tf.logical_not(tf.logical_or(ext, desc)), nxt >= b.n),
                       sub_next > b.n)
        done = tf.logical_and(tf.equal(mode, 2), chain_end)
        frame = tf.where(tf.logical_and(in_block, desc), pos, frame)
        return i + 1, nxt, new_mode, done, bad, frame

    def more(i, pos, mode, done, bad, frame):
        return tf.logical_and(i < MAX_HEADER_STEPS, tf.logical_not(tf.logical_or(done, bad)))

    i, end, _, done, _, frame = _walk(more, step, (zero, 13 + table, zero, tf.constant(False),
                                                   tf.constant(False), zero - 1))
    return {"frame": frame, "end": end, "left": b.uint(frame + 1, 2, True), "top": b.uint(frame + 3, 2, True),
            "fw": b.uint(frame + 5, 2, True), "fh": b.uint(frame + 7, 2, True), "found": done,
            "steps_left": tf.logical_or(done, i < MAX_HEADER_STEPS)}


class Header(NamedTuple):
    """One request image as read from its header by :func:`checked_header` (int64 scalars)."""

    #: The bytes to decode: the request's, made dependent on every check; for a GIF, its first frame
    #: only (the other frames cut off, the frame moved to (0, 0)), so the decoder never reads more.
    data: tf.Tensor
    stored_h: tf.Tensor
    stored_w: tf.Tensor
    orientation: tf.Tensor
    #: Size as displayed (EXIF orientation applied).
    h: tf.Tensor
    w: tf.Tensor
    #: Place of the decoded pixels in the stored image (a GIF's first frame on its logical screen; else 0).
    top: tf.Tensor
    left: tf.Tensor
    #: True for a GIF (the decoded frame is placed at (top, left) on a stored_h x stored_w screen of ``fill``).
    gif: tf.Tensor
    #: uint8 (3,) RGB colour around a GIF's first frame: its background colour (black without a colour table).
    fill: tf.Tensor


def _where_label(signature, index):
    """``"predict_images: images[3]"`` (string tensor) for the messages of request element ``index``."""
    if index is None:
        return tf.constant(f"{signature}: an image")
    return tf.strings.join([f"{signature}: images[", tf.strings.as_string(index), "]"])


def checked_header(data, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, signature="predict_images", index=None):
    """Check one request element (tf.string) from its header, before anything is decoded.

    Returns a :class:`Header`. Every check is a walk of at most :data:`MAX_HEADER_STEPS` steps or a
    vectorised pass over the bytes, so the check itself costs at most a few milliseconds per step and
    a few bytes of memory per request byte. Fails with ``InvalidArgumentError`` (message
    ``"<signature>: images[<index>] ..."``, what is wrong and what to send instead) for: bytes that
    are not JPEG, PNG, GIF or BMP; a header that cannot be read within the step limit, or a file that
    ends before its image data does (truncated); a JPEG with more than :data:`MAX_JPEG_SCANS` scans;
    a GIF whose first frame lies outside its logical screen; an image under :data:`MIN_IMAGE_SIDE`
    or over ``max_image_pixels`` pixels (as displayed; a GIF's logical screen).
    """
    where = _where_label(signature, index)

    def check(value, condition, text, *values):
        return checked(value, condition, tf.strings.join([where, text]), *values)

    data = check(data, _is_image(data), " is not an encoded JPEG, PNG, GIF or BMP image (send the raw file bytes; "
                 "in REST JSON as {\"b64\": base64})")
    b = _Bytes(data)
    one, zero, no, yes = tf.ones([], tf.int64), tf.zeros([], tf.int64), tf.constant(False), tf.constant(True)
    kinds = ("jpeg", "png", "gif", "bmp")

    def result(kind, h=zero, w=zero, orientation=one, ok=yes, steps=yes, truncated=no, scans=zero, outside=no,
               top=zero, left=zero, cut=None, fill=None):
        # [h, w, orientation, top, left, kind, ok, steps, truncated, scans, outside, cut_frame, cut_end, fill RGB]
        cut = cut if cut is not None else (zero - 1, zero)
        fill = fill if fill is not None else (zero, zero, zero)
        return tf.stack([h, w, orientation, top, left, kinds.index(kind) + zero, tf.cast(ok, tf.int64),
                         tf.cast(steps, tf.int64), tf.cast(truncated, tf.int64), scans, tf.cast(outside, tf.int64),
                         cut[0], cut[1], *fill])

    def jpeg():
        j = _jpeg_header(b)
        eoi = tf.reduce_any(_found(b.padded8[j["sos"] + 2:], b"\xff\xd9"))  # an end marker after the first scan
        scans = tf.reduce_sum(tf.cast(_found(b.padded8, b"\xff\xda"), tf.int64))
        return result("jpeg", j["h"], j["w"], j["orientation"], ok=j["found"], steps=j["steps_left"],
                      truncated=tf.logical_and(j["found"], tf.logical_not(eoi)), scans=scans)

    def png():
        p = _png_header(b)
        ihdr = tf.equal(_substr(data, 12, 4), "IHDR")
        # a whole IEND chunk (type and CRC) after the data
        iend = tf.reduce_any(_found(b.vec8[tf.maximum(p["idat"], 0) + 8:tf.maximum(b.n - 4, 0)], b"IEND"))
        truncated = tf.logical_or(p["idat"] < 0, tf.logical_not(iend))
        return result("png", b.uint(20, 4, False), b.uint(16, 4, False), p["orientation"], ok=ihdr,
                      steps=p["steps_left"], truncated=tf.logical_and(p["steps_left"], truncated))

    def gif():
        g = _gif_header(b)
        sw, sh = b.uint(6, 2, True), b.uint(8, 2, True)
        outside = tf.logical_or(g["left"] + g["fw"] > sw, g["top"] + g["fh"] > sh)
        outside = tf.logical_and(g["found"], tf.logical_or(outside, tf.minimum(g["fw"], g["fh"]) < 1))
        # around the first frame: the background colour of the global colour table (as OpenCV), else black
        packed, background = b.at(10), b.at(11)
        has = tf.logical_and(packed >= 128, background < tf.bitwise.left_shift(one, (packed % 8) + 1))
        fill = [tf.where(has, b.at(13 + 3 * background + k), 0) for k in range(3)]
        return result("gif", sh, sw, steps=g["steps_left"], truncated=tf.logical_and(g["steps_left"],
                      tf.logical_not(g["found"])), outside=outside, top=g["top"], left=g["left"],
                      cut=(g["frame"], g["end"]), fill=fill)

    def bmp():
        def signed(v):
            return tf.where(v >= 2 ** 31, v - 2 ** 32, v)

        w, h = signed(b.uint(18, 4, True)), tf.abs(signed(b.uint(22, 4, True)))
        channels = b.uint(28, 2, True) // 8
        # TensorFlow's BMP decoder reads exactly the header and height rows of width x channels bytes
        # (rows padded to 4 bytes), at 8, 24 or 32 bits per pixel.
        size = b.uint(10, 4, True) + (channels * w + 3) // 4 * 4 * h
        depth = tf.reduce_any(tf.equal(channels, [1, 3, 4]))
        return result("bmp", h, tf.abs(w), ok=tf.logical_or(depth, tf.minimum(w, h) < 1),
                      truncated=tf.logical_and(tf.logical_and(depth, tf.minimum(w, h) >= 1),
                                               tf.not_equal(size, b.n)))

    def kind(magic):
        return tf.equal(tf.strings.substr(data, 0, len(magic)), magic)

    r = tf.case([(kind(b"\xff\xd8\xff"), jpeg), (kind(b"\x89PNG\r\n\x1a\n"), png), (kind(b"GIF8"), gif)],
                default=bmp, exclusive=True)
    stored_h, stored_w, orientation, top, left, format_ = r[0], r[1], r[2], r[3], r[4], r[5]
    data = check(data, tf.cast(r[7], tf.bool), f": its header takes more than {MAX_HEADER_STEPS} segments, chunks "
                 "or blocks to reach the image data (not a file an ordinary encoder writes); re-encode it as a "
                 "plain JPEG or PNG")
    data = check(data, tf.logical_or(tf.not_equal(format_, 0), r[9] <= MAX_JPEG_SCANS),
                 f": a JPEG with more than {MAX_JPEG_SCANS} scans (a progressive file that would take minutes "
                 "to decode); re-encode it as a baseline or ordinary progressive JPEG. Scans:", r[9])
    data = check(data, tf.cast(r[6], tf.bool), ": its header is broken (JPEG without a frame header before its "
                 "first scan, PNG not starting with IHDR, or a BMP bit depth other than 8, 24 or 32); re-encode it "
                 "as a plain JPEG or PNG")
    data = check(data, tf.logical_not(tf.cast(r[8], tf.bool)), ": the file is truncated or damaged (it ends "
                 "before its image data does, or a BMP's size does not match its header); send the whole file, "
                 "or re-encode it")
    data = check(data, tf.logical_not(tf.cast(r[10], tf.bool)), ": a GIF whose first frame lies outside its "
                 "logical screen (damaged file); re-encode it")
    turned = orientation >= 5
    hi = tf.where(turned, stored_w, stored_h)
    wi = tf.where(turned, stored_h, stored_w)
    limit = tf.cast(max_image_pixels, tf.int64)
    pixels = tf.cast(hi, tf.float64) * tf.cast(wi, tf.float64)  # no int64 overflow on 4e9 x 4e9 headers
    data = check(data, pixels <= tf.cast(limit, tf.float64),
                 " is larger than this model's limit on pixels per image (set at export: export.py "
                 "--max_image_pixels); downscale it before sending. Width, height, limit:", wi, hi, limit)
    data = check(data, tf.minimum(hi, wi) >= MIN_IMAGE_SIDE,
                 f" is smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels (or its header is broken); send the "
                 "photo the face was found in. Width, height:", wi, hi)
    gif_ = tf.equal(format_, 2)
    # A GIF is decoded from its first frame alone (TensorFlow's decoder would decode every frame):
    # the bytes up to the end of that frame's data, its position zeroed, and the trailer.
    frame, end = r[11], r[12]
    cut = tf.strings.join([_substr(data, 0, frame + 1), b"\0\0\0\0", _substr(data, frame + 5, end - frame - 5), b";"])
    data = tf.where(gif_, cut, data)
    return Header(data, stored_h, stored_w, orientation, hi, wi, top, left, gif_, tf.cast(r[13:16], tf.uint8))


def image_header(data):
    """``(height, width, orientation)`` int64 of one encoded image from its header, without decoding it
    (stored, not yet turned, size; a GIF's logical screen). Fails as :func:`checked_header` does."""
    header = checked_header(data, max_image_pixels=2 ** 62)
    return header.stored_h, header.stored_w, header.orientation


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


def decode_oriented(header, signature="predict_images", index=None):
    """Decode a :class:`Header` (from :func:`checked_header`) to RGB uint8 ``(H, W, 3)`` as displayed (EXIF
    applied; as :func:`prnet.core.images.decode_image`); a GIF is its first frame on its logical screen
    (the background colour elsewhere). ``InvalidArgumentError`` when the pixel data does not match the header."""
    image = tf.io.decode_image(header.data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    shape = tf.shape(image, out_type=tf.int64)[:2]
    bottom = header.stored_h - header.top - shape[0]
    right = header.stored_w - header.left - shape[1]
    fits = tf.logical_and(tf.logical_and(bottom >= 0, right >= 0),
                          tf.logical_or(header.gif, tf.reduce_all(tf.equal(shape, [header.stored_h, header.stored_w]))))
    message = tf.strings.join([_where_label(signature, index), "'s header does not match its pixel data "
                               "(damaged file); re-encode it"])
    image = checked(image, fits, message)
    pads = [[header.top, tf.maximum(bottom, 0)], [header.left, tf.maximum(right, 0)], [0, 0]]
    inside = tf.pad(tf.ones(tf.concat([shape, [1]], 0), tf.bool), pads)
    image = tf.where(inside, tf.pad(image, pads), header.fill)
    return orient_image(image, header.orientation)
