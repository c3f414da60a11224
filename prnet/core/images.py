"""Image files and arrays: the one reader and writer of the project, EXIF orientation and the RGB normaliser.

Images are RGB uint8 ``(H, W, 3)`` arrays; x = column (right), y = row (down), pixel centres at
integer coordinates, **as displayed**: the EXIF Orientation tag of the file (phone photos store
the sensor's rows and say how to turn them) is applied, as image viewers and ``cv2.imread`` do.

The orientation rule has one home, here: :data:`ORIENTATION_STEPS` maps the tag (1-8) to the
steps that turn the stored pixels into the displayed image, named after the ``tf.image``
functions (``transpose``, ``flip_left_right``, ``flip_up_down``) so the serving graph applies the
same table; :func:`exif_orientation` finds the tag in the bytes of a JPEG (APP1 ``Exif``), PNG
(``eXIf``) or WebP (``EXIF`` chunk) file (OpenCV applies a TIFF file's own tag when decoding).
"""

import struct
from pathlib import Path

import cv2
import numpy as np

from prnet.core.files import atomic_path
from prnet.errors import ImageReadError

#: File suffixes (lower case) taken as photos when a folder is given (demo, calibration, frame
#: folders): the formats :func:`read_image` decodes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"})

#: EXIF tag number of Orientation (IFD0).
EXIF_ORIENTATION_TAG = 0x0112
#: The identifier that starts the EXIF payload of a JPEG APP1 segment (and sometimes a WebP chunk).
EXIF_HEADER = b"Exif\x00\x00"
#: EXIF Orientation tag -> the steps (applied in order) that turn the stored pixels into the image as
#: displayed. 1 upright; 2 mirrored left-right; 3 upside down; 4 mirrored top-bottom; 5 transposed
#: (mirrored about the main diagonal); 6 turn 90 degrees clockwise; 7 transverse (mirrored about the
#: anti-diagonal); 8 turn 90 degrees counter-clockwise. ``transpose`` swaps rows and columns;
#: ``flip_left_right`` reverses the columns, ``flip_up_down`` the rows. Other values: no change.
ORIENTATION_STEPS = {
    1: (),
    2: ("flip_left_right",),
    3: ("flip_left_right", "flip_up_down"),
    4: ("flip_up_down",),
    5: ("transpose",),
    6: ("transpose", "flip_left_right"),
    7: ("transpose", "flip_left_right", "flip_up_down"),
    8: ("transpose", "flip_up_down"),
}


def _tiff_orientation(tiff: bytes) -> int:
    """Orientation (1-8) from the TIFF structure of an EXIF payload (IFD0); 1 if absent or malformed."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return 1
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == EXIF_ORIENTATION_TAG:
            if kind != 3 or n < 1:  # SHORT
                return 1
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if value in ORIENTATION_STEPS else 1
    return 1


def _jpeg_exif(data: bytes) -> bytes:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return b""
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more headers
            return b""
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment.startswith(EXIF_HEADER):
            return segment[len(EXIF_HEADER):]
        pos += 2 + length
    return b""


def _png_exif(data: bytes) -> bytes:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"eXIf":
            return data[pos + 8:pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):  # eXIf must precede the image data
            return b""
        pos += 12 + length
    return b""


def _webp_exif(data: bytes) -> bytes:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        if kind == b"EXIF":
            chunk = data[pos + 8:pos + 8 + length]
            return chunk[len(EXIF_HEADER):] if chunk.startswith(EXIF_HEADER) else chunk
        pos += 8 + length + (length & 1)
    return b""


def exif_orientation(data) -> int:
    """The EXIF Orientation tag (1-8) of an encoded image, from its bytes; 1 when there is none.

    Looks in a JPEG's APP1 ``Exif`` segment, a PNG's ``eXIf`` chunk or a WebP ``EXIF`` chunk (the
    payload is a TIFF structure; the tag is read from its first IFD). Other formats give 1: a TIFF
    file's own Orientation tag is applied by OpenCV's TIFF decoder itself. Malformed or
    out-of-range values count as 1 (upright), never as an error.
    """
    data = bytes(data)
    try:
        if data[:2] == b"\xff\xd8":
            return _tiff_orientation(_jpeg_exif(data))
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _tiff_orientation(_png_exif(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _tiff_orientation(_webp_exif(data))
    except struct.error:
        pass
    return 1


def apply_orientation(image, orientation: int) -> np.ndarray:
    """``image`` (``(H, W)`` or ``(H, W, C)``, any dtype) as displayed for an EXIF ``orientation``
    (see :data:`ORIENTATION_STEPS`); returned unchanged for 1 or an unknown value."""
    image = np.asarray(image)
    for step in ORIENTATION_STEPS.get(int(orientation), ()):
        if step == "transpose":
            image = np.swapaxes(image, 0, 1)
        elif step == "flip_left_right":
            image = image[:, ::-1]
        else:
            image = image[::-1]
    return np.ascontiguousarray(image)


def decode_image(data, name: str = "image") -> np.ndarray:
    """Decode an encoded image (bytes) as RGB uint8 ``(H, W, 3)``, EXIF orientation applied (as
    :func:`read_image`; ``name`` is used in error messages)."""
    data = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    # IMREAD_UNCHANGED keeps 16 bits and alpha but ignores the orientation: applied below.
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"{name} is not a readable image (corrupt, empty or unsupported format)")
    image = apply_orientation(image, exif_orientation(data.tobytes()))
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return as_rgb(image, name=name)


def read_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)`` (grey -> RGB, alpha dropped, 16-bit -> 8-bit),
    turned as displayed by its EXIF orientation (:data:`ORIENTATION_STEPS`).

    Reads the bytes first and decodes with ``cv2.imdecode`` (:func:`decode_image`), so non-ASCII
    paths work. Raises :class:`ImageReadError` naming the file when it is missing, a broken
    symbolic link, unreadable or not an image.
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise ImageReadError(f"{path} is a broken symbolic link (to {path.readlink()}, which does not exist)")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read image file {path}: {e.strerror or e}") from e
    return decode_image(data, name=str(path))


def write_image(path, image) -> Path:
    """Write an RGB ``(H, W, 3)`` or grey ``(H, W)`` uint8 image to ``path`` atomically
    (:func:`prnet.core.files.atomic_path`: whole or not at all), in the format of its suffix
    (``.png``, ``.jpg``, ...; OpenCV's default encoder settings). Writes the encoded bytes itself, so
    non-ASCII paths work. Returns ``path``; raises ``OSError`` when the image cannot be encoded or written.
    """
    path = Path(path).expanduser()
    image = np.asarray(image)
    ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    with atomic_path(path) as tmp:
        data.tofile(str(tmp))
    return path


def as_rgb(image, name: str = "image") -> np.ndarray:
    """Normalise an image array to RGB uint8 ``(H, W, 3)``.

    Accepts ``(H, W)`` / ``(H, W, 1)`` grey (replicated), ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA
    (alpha dropped); uint8, uint16 (scaled by 1/257) or float in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 2:
        raise ImageReadError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return np.ascontiguousarray((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
            raise ImageReadError(f"{name}: float images must hold values in [0, 1]")
        return np.round(image * 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported image dtype {image.dtype} (use uint8 RGB)")
