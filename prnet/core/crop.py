"""Face crops as the original PRNet makes them: box rules, the crop transform, the warp.

Conventions: images are ``(H, W, C)`` arrays; pixel centres sit at integer coordinates,
``x`` = column (right), ``y`` = row (down). Boxes are ``(x0, y0, x1, y1)`` in image pixels.
A crop is the square of side ``size`` pixels centred on ``center = (cx, cy)``, resampled to
``out x out`` (256) pixels. Its transform ``tform`` is a 3x3 float64 matrix mapping homogeneous
image pixels ``(x, y, 1)`` to crop pixels: the corners ``center - size/2`` and
``center + size/2`` map to crop pixels ``0`` and ``out - 1`` (scale ``s = (out - 1) / size``,
no rotation), exactly the similarity the original estimates from three box corners.
"""

import cv2
import numpy as np

from prnet.errors import ImageReadError

#: Output side of a crop, in pixels (the network input size).
CROP_SIZE = 256
#: Original rule for a face detector box (tuned for dlib's CNN detector): crop side = 1.58 x the
#: mean box side, centre moved down by 0.14 x the mean box side.
DETECTOR_SCALE = 1.58
DETECTOR_SHIFT = 0.14
#: Original rule for landmarks or a user box: crop side = 1.6 x the mean side of their bounding box.
LANDMARK_SCALE = 1.6


def _as_box(box) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"a box must be 4 finite numbers (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box!r}")
    return b


def box_from_detector(box):
    """Crop square from a face detector box, by the original's rule.

    ``old = (x1 - x0 + y1 - y0) / 2``; ``center = ((x0 + x1) / 2, (y0 + y1) / 2 + 0.14 * old)``;
    ``size = int(old * 1.58)``. Returns ``(center (2,) float64 image px, size float px)``.
    """
    x0, y0, x1, y1 = _as_box(box)
    old = (x1 - x0 + y1 - y0) / 2.0
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 + DETECTOR_SHIFT * old])
    return center, float(int(old * DETECTOR_SCALE))


def box_from_bbox(box):
    """Crop square from a user-given face box (or a landmarks' bounding box), by the original's rule.

    ``old = (x1 - x0 + y1 - y0) / 2``; ``center`` = the box centre; ``size = int(old * 1.6)``.
    Returns ``(center (2,) float64 image px, size float px)``.
    """
    x0, y0, x1, y1 = _as_box(box)
    old = (x1 - x0 + y1 - y0) / 2.0
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), float(int(old * LANDMARK_SCALE))


def landmarks_bbox(points) -> np.ndarray:
    """``(K, 2+)`` landmark points (x, y image px; extra columns ignored) -> ``(x0, y0, x1, y1)``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 2 or not np.all(np.isfinite(p[:, :2])):
        raise ValueError(f"landmarks must be a (K >= 2, 2 or 3) array of finite x, y pixels, got shape {p.shape}")
    return np.concatenate([p[:, :2].min(0), p[:, :2].max(0)])


def box_from_landmarks(points):
    """Crop square from ``(K, 2+)`` landmarks (x, y image px): :func:`box_from_bbox` of their bounding box."""
    return box_from_bbox(landmarks_bbox(points))


def crop_transform(center, size, out: int = CROP_SIZE) -> np.ndarray:
    """3x3 float64 matrix mapping image pixels ``(x, y, 1)`` to crop pixels of an ``out x out`` crop.

    ``s = (out - 1) / size``; ``tform = [[s, 0, -s (cx - size/2)], [0, s, -s (cy - size/2)], [0, 0, 1]]``.
    """
    cx, cy = np.asarray(center, dtype=np.float64).reshape(2)
    size = float(size)
    if not size > 0 or not np.isfinite(size):
        raise ValueError(f"crop size must be a positive number of pixels, got {size!r}")
    s = (out - 1) / size
    return np.array([[s, 0.0, -s * (cx - size / 2.0)],
                     [0.0, s, -s * (cy - size / 2.0)],
                     [0.0, 0.0, 1.0]])


def warp_crop(image, tform, out: int = CROP_SIZE) -> np.ndarray:
    """Resample ``image`` (uint8 ``(H, W, C)`` or float in [0, 1]) into an ``out x out`` crop.

    Crop pixel ``p`` takes the image value at ``inv(tform) @ p`` by bilinear interpolation; outside
    the image is 0 (black). This is the original's ``skimage.transform.warp(image / 255,
    tform.inverse, output_shape=(256, 256))`` done with ``cv2.warpAffine`` (``INTER_LINEAR``,
    ``BORDER_CONSTANT`` 0; OpenCV quantises sub-pixel positions to 1/32 px). Returns float32 in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ImageReadError(f"expected an (H, W, C) image, got shape {image.shape}")
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    crop = cv2.warpAffine(img, np.asarray(tform, dtype=np.float64)[:2], (out, out),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop.reshape(out, out, image.shape[2])


def apply_transform(tform, points) -> np.ndarray:
    """Map ``(..., 2)`` points (x, y) through a 3x3 transform; extra columns are passed through."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(tform, dtype=np.float64)
    xy = p[..., :2] @ t[:2, :2].T + t[:2, 2]
    return np.concatenate([xy, p[..., 2:]], axis=-1)


def crop_to_image(points, tform) -> np.ndarray:
    """Crop pixels -> image pixels: ``(x, y)`` through ``inv(tform)``; ``z`` divided by the scale ``s``.

    ``points`` is ``(..., 2)`` or ``(..., 3)`` (x, y[, z]) in crop pixels. The z origin is kept
    (only rescaled), so image-space z is relative, toward the camera.
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(tform, dtype=np.float64)
    xy = apply_transform(np.linalg.inv(t), p[..., :2])
    if p.shape[-1] == 2:
        return xy
    scale = np.sqrt(abs(np.linalg.det(t[:2, :2])))
    return np.concatenate([xy, p[..., 2:3] / scale], axis=-1)
