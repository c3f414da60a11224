"""Image files and arrays: the one reader of the project and the RGB normaliser.

Images are RGB uint8 ``(H, W, 3)`` arrays; x = column (right), y = row (down), pixel centres at
integer coordinates.
"""

from pathlib import Path

import cv2
import numpy as np

from prnet.errors import ImageReadError


def read_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)`` (grey -> RGB, alpha dropped, 16-bit -> 8-bit).

    Reads the bytes first and decodes with ``cv2.imdecode``, so non-ASCII paths work. Raises
    :class:`ImageReadError` naming the file when it is missing, unreadable or not an image.
    """
    path = Path(path).expanduser()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read image file {path}: {e.strerror or e}") from e
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"{path} is not a readable image (corrupt, empty or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return as_rgb(image, name=str(path))


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
