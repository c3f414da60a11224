"""Request limits of the exported SavedModel (:mod:`prnet.serving.saved_model`) and their checks.

Plain Python, no TensorFlow: ``export.py`` shows these defaults in its ``--help`` without loading
TensorFlow. Sizes are in pixels of the image as displayed (after its EXIF orientation).
"""

from prnet.errors import ExportError

#: Default cap on the pixels (width x height) of one image a request may send.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: Smallest image side (pixels) a request may send.
MIN_IMAGE_SIDE = 16
#: Smallest box width / height (pixels) ``predict_images`` accepts.
MIN_BOX_SIDE = 8.0
#: Largest box width / height ``predict_images`` accepts, in multiples of the image width / height.
MAX_BOX_FACTOR = 4.0
#: Most steps a header walk takes before the image data: JPEG segments and fill bytes before the first
#: scan, PNG chunks before ``IDAT``, GIF blocks and data sub-blocks (runs of full 255-byte sub-blocks
#: count as one step) up to the end of the first frame. More is refused: each step costs the graph
#: tens of microseconds, and no ordinary encoder writes more than a few dozen.
MAX_HEADER_STEPS = 2048
#: Most scans (``SOS`` markers) a JPEG may have: a progressive decoder passes over every block of the
#: image once per scan, so a small file with thousands of scans costs minutes of CPU. Encoders write
#: 1-3 (baseline) or about 10 (progressive).
MAX_JPEG_SCANS = 64
#: Default number of faces per image ``predict_images_detect`` returns at most (``export.py --max_faces``).
DEFAULT_MAX_FACES = 8


def check_max_image_pixels(max_image_pixels) -> int:
    """``max_image_pixels`` as an int, or :class:`prnet.errors.ExportError` if it is not a sensible cap."""
    try:
        value = int(max_image_pixels)
    except (TypeError, ValueError):
        value = 0
    if value != max_image_pixels or value < MIN_IMAGE_SIDE ** 2 or value > 2 ** 40:
        raise ExportError(f"max_image_pixels must be a whole number of pixels from {MIN_IMAGE_SIDE ** 2} to "
                          f"2**40 (e.g. {DEFAULT_MAX_IMAGE_PIXELS} = 40 MP), got {max_image_pixels!r}")
    return value


def check_max_faces(max_faces) -> int:
    """``max_faces`` as an int, or :class:`prnet.errors.ExportError` unless it is a whole number 1-64."""
    try:
        value = int(max_faces)
    except (TypeError, ValueError):
        value = 0
    if value != max_faces or not 1 <= value <= 64:
        raise ExportError(f"max_faces must be a whole number of faces from 1 to 64, got {max_faces!r}")
    return value


# ----------------------------------------------------------------------------- NumPy twin of the graph's header check

#: Reasons :func:`read_request_header` (and the graph's ``checked_header``) refuse an image for, in the
#: order they are checked, with a phrase of the graph's message for each.
REFUSALS = {
    "not_image": "is not an encoded JPEG, PNG, GIF or BMP image",
    "steps": f"its header takes more than {MAX_HEADER_STEPS} segments",
    "scans": f"a JPEG with more than {MAX_JPEG_SCANS} scans",
    "broken": "its header is broken (JPEG",
    "truncated": "the file is truncated or damaged",
    "outside": "first frame lies outside its logical screen",
    "too_large": "limit on pixels per image",
    "too_small": f"smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}",
}

#: Full 255-byte GIF sub-blocks one step of the GIF walk skips at most (as the graph).
GIF_RUN = 1024


class RequestImageError(ValueError):
    """A request image refused from its header; ``reason`` is a key of :data:`REFUSALS`."""

    def __init__(self, reason: str):
        super().__init__(REFUSALS[reason])
        self.reason = reason


def _u(data: bytes, pos: int, size: int, little: bool) -> int:
    """Unsigned integer of ``size`` bytes at ``pos``; bytes past the end read as 0 (as the graph)."""
    chunk = bytes(data[max(pos, 0):max(pos, 0) + size]).ljust(size, b"\0") if pos >= 0 else b"\0" * size
    return int.from_bytes(chunk, "little" if little else "big")


def _jpeg(d: bytes):
    pos, steps, h, w, sof = 2, 0, 0, 0, False
    while steps < MAX_HEADER_STEPS and pos + 4 <= len(d):
        steps += 1
        marker = d[pos + 1]
        if d[pos] != 0xFF or marker == 0xD9:
            return None, "broken", 0
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = _u(d, pos + 2, 2, False)
        if length < 2:
            return None, "broken", 0
        if marker == 0xDA:
            return (h, w), ("broken" if not sof else None), pos
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and not sof:
            sof, h, w = True, _u(d, pos + 5, 2, False), _u(d, pos + 7, 2, False)
        pos += 2 + length
    return None, ("steps" if steps >= MAX_HEADER_STEPS else "broken"), 0


def _png_idat(d: bytes):
    pos, steps = 8, 0
    while steps < MAX_HEADER_STEPS and pos + 8 <= len(d):
        steps += 1
        kind = d[pos + 4:pos + 8]
        if kind == b"IDAT":
            return pos
        if kind == b"IEND":
            return -1
        pos += 12 + _u(d, pos, 4, False)
    return "steps" if steps >= MAX_HEADER_STEPS else -1


def _gif_first_frame(d: bytes):
    """(frame position, end of its data) or a refusal reason."""
    n = len(d)
    packed = d[10] if n > 10 else 0
    pos = 13 + (3 * (2 << (packed % 8)) if packed >= 128 else 0)
    mode, frame, steps = 0, -1, 0
    while steps < MAX_HEADER_STEPS:
        steps += 1
        if mode == 0:
            head = d[pos] if pos < n else 0
            if head == 0x21:
                pos, mode = pos + 2, 1
            elif head == 0x2C:
                local = _u(d, pos + 9, 1, True)
                frame, pos, mode = pos, pos + 10 + (3 * (2 << (local % 8)) if local >= 128 else 0) + 1, 2
            else:
                return "truncated"
            if pos >= n:
                return "truncated"
            continue
        k = 0
        while k < GIF_RUN and pos + 256 * k < n and d[pos + 256 * k] == 255:
            k += 1
        p = pos + 256 * k
        size = d[p] if p < n else 0
        if size == 0 and p < n:
            if mode == 2:
                return frame, p + 1
            pos, mode = p + 1, 0
            continue
        pos = p + 1 + size
        if pos > n:
            return "truncated"
    return "steps"


def read_request_header(data: bytes, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
    """The serving graph's header check (``prnet.serving.ops.image_bytes.checked_header``) in plain
    Python, pinned to it by tests/test_graph_twins.py: the same walks, limits and refusals.

    Returns ``{"stored": (h, w), "displayed": (h, w), "orientation", "top", "left", "cut"}`` (``cut``: the
    bytes the decoder is given, a GIF's first frame alone) or raises :class:`RequestImageError`.
    """
    from prnet.core.images import exif_orientation

    d = bytes(data)
    n = len(d)
    top = left = 0
    cut = d
    if d[:3] == b"\xff\xd8\xff":
        size, reason, sos = _jpeg(d)
        if reason == "steps":
            raise RequestImageError("steps")
        if d.count(b"\xff\xda") > MAX_JPEG_SCANS:
            raise RequestImageError("scans")
        if reason:
            raise RequestImageError(reason)
        if d.find(b"\xff\xd9", sos + 2) < 0:
            raise RequestImageError("truncated")
        (h, w), orientation = size, exif_orientation(d)
    elif d[:8] == b"\x89PNG\r\n\x1a\n":
        idat = _png_idat(d)
        if idat == "steps":
            raise RequestImageError("steps")
        if d[12:16] != b"IHDR":
            raise RequestImageError("broken")
        if idat < 0 or d.find(b"IEND", idat + 8, max(n - 4, 0)) < 0:
            raise RequestImageError("truncated")
        h, w, orientation = _u(d, 20, 4, False), _u(d, 16, 4, False), exif_orientation(d)
    elif d[:4] == b"GIF8":
        found = _gif_first_frame(d)
        if isinstance(found, str):
            raise RequestImageError(found)
        frame, end = found
        w, h, orientation = _u(d, 6, 2, True), _u(d, 8, 2, True), 1
        left, top, fw, fh = (_u(d, frame + k, 2, True) for k in (1, 3, 5, 7))
        if left + fw > w or top + fh > h or min(fw, fh) < 1:
            raise RequestImageError("outside")
        cut = d[:frame + 1] + b"\0\0\0\0" + d[frame + 5:end] + b";"
    elif d[:2] == b"BM":
        sw, sh = _u(d, 18, 4, True), _u(d, 22, 4, True)
        sw, sh = sw - 2 ** 32 if sw >= 2 ** 31 else sw, abs(sh - 2 ** 32 if sh >= 2 ** 31 else sh)
        channels = _u(d, 28, 2, True) // 8
        if min(sw, sh) >= 1:
            if channels not in (1, 3, 4):
                raise RequestImageError("broken")
            if _u(d, 10, 4, True) + (channels * sw + 3) // 4 * 4 * sh != n:
                raise RequestImageError("truncated")
        h, w, orientation = sh, abs(sw), 1
    else:
        raise RequestImageError("not_image")
    dh, dw = (w, h) if orientation >= 5 else (h, w)
    if dh * dw > max_image_pixels:
        raise RequestImageError("too_large")
    if min(dh, dw) < MIN_IMAGE_SIDE:
        raise RequestImageError("too_small")
    return {"stored": (h, w), "displayed": (dh, dw), "orientation": orientation, "top": top, "left": left,
            "cut": cut}
