"""Face crops as the original PRNet makes them: box rules, the crop transform, the warp.

Conventions: images are ``(H, W, C)`` arrays; pixel centres sit at integer coordinates,
``x`` = column (right), ``y`` = row (down). Boxes are ``(x0, y0, x1, y1)`` in image pixels.
A crop is the square of side ``size`` pixels centred on ``center = (cx, cy)``, resampled to
``out x out`` (256) pixels. Its transform ``tform`` is a 3x3 float64 matrix mapping homogeneous
image pixels ``(x, y, 1)`` to crop pixels: the corners ``center - size/2`` and
``center + size/2`` map to crop pixels ``0`` and ``out - 1`` (scale ``s = (out - 1) / size``,
no rotation), exactly the similarity the original estimates from three box corners.
z (toward the camera, same pixel units) is scaled by ``s`` between image and crop, its origin kept.

This module is the one home of the crop constants (crop side 256; box factors 1.58 / 0.14 for
detector boxes, 1.6 for landmarks and given boxes, 1.5 plus jitter for the training data); the
TensorFlow crop of the SavedModel (:mod:`prnet.serving.ops.crop`) and the augmentation import them.
"""

from dataclasses import dataclass

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
#: The original 300W-LP training data generation (face3d's ``8_generate_posmap_300WLP.py``): crop
#: side = 1.5 x the mean side of the landmarks' bounding box, then (training jitter) the centre
#: moves by U(-0.1, 0.1) x that mean side per axis and the side is multiplied by U(0.9, 1.1).
TRAIN_BOX_SCALE = 1.5
TRAIN_CENTER_JITTER = 0.1
TRAIN_SIZE_JITTER = (0.9, 1.1)


def _as_box(box) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"a box must be 4 finite numbers (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box!r}")
    return b


def _center_and_old(box):
    """Box ``(x0, y0, x1, y1)`` -> ``(centre (2,), old = (x1 - x0 + y1 - y0) / 2)``, the original's mean side."""
    x0, y0, x1, y1 = _as_box(box)
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), (x1 - x0 + y1 - y0) / 2.0


def box_from_detector(box):
    """Crop square from a face detector box, by the original's rule.

    ``old = (x1 - x0 + y1 - y0) / 2``; ``center = ((x0 + x1) / 2, (y0 + y1) / 2 + 0.14 * old)``;
    ``size = int(old * 1.58)``. Returns ``(center (2,) float64 image px, size float px)``.
    """
    center, old = _center_and_old(box)
    center[1] += DETECTOR_SHIFT * old
    return center, float(int(old * DETECTOR_SCALE))


def box_from_bbox(box, scale: float = LANDMARK_SCALE):
    """Crop square from a user-given face box (or a landmarks' bounding box), by the original's rule.

    ``old = (x1 - x0 + y1 - y0) / 2``; ``center`` = the box centre; ``size = int(old * scale)``
    (``scale`` 1.6 by default). Returns ``(center (2,) float64 image px, size float px)``.
    """
    center, old = _center_and_old(box)
    return center, float(int(old * scale))


def landmarks_bbox(points) -> np.ndarray:
    """``(K, 2+)`` landmark points (x, y image px; extra columns ignored) -> ``(x0, y0, x1, y1)``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 2 or not np.all(np.isfinite(p[:, :2])):
        raise ValueError(f"landmarks must be a (K >= 2, 2 or 3) array of finite x, y pixels, got shape {p.shape}")
    return np.concatenate([p[:, :2].min(0), p[:, :2].max(0)])


def box_from_landmarks(points, scale: float = LANDMARK_SCALE):
    """Crop square from ``(K, 2+)`` landmarks (x, y image px): :func:`box_from_bbox` of their bounding box."""
    return box_from_bbox(landmarks_bbox(points), scale)


@dataclass(frozen=True)
class BoxCalibration:
    """Maps a detector box of width ``w`` to an estimate of the 68 landmarks' bounding box.

    Landmark box centre = box centre + ``(dx, dy) * w``; its width, height = ``(sx, sy) * w``
    (image px, ``(x0, y0, x1, y1)``). The constants of each detector live beside it
    (:mod:`prnet.inference.boxes`, :mod:`prnet.model.blazeface`); the served graph applies the same rule in
    TensorFlow ops (:mod:`prnet.serving.ops.blazeface`).
    """

    dx: float
    dy: float
    sx: float
    sy: float

    def apply(self, boxes) -> np.ndarray:
        """``(K, 4)`` detector boxes -> ``(K, 4)`` landmark-like boxes, image px."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w = b[:, 2] - b[:, 0]
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * w
        hw, hh = self.sx * w / 2, self.sy * w / 2
        return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)


def training_box(points, rng=None, *, scale: float = TRAIN_BOX_SCALE, center_jitter: float = TRAIN_CENTER_JITTER,
                 size_jitter=TRAIN_SIZE_JITTER, whole_pixels: bool = True):
    """Crop square of the 300W-LP training data around ``(K, 2+)`` landmarks (x, y in any pixel unit).

    ``old`` = mean side of the landmarks' bounding box, ``center`` = its centre,
    ``size = int(old * scale)`` (``whole_pixels=False``: not truncated, for points that are not in
    image pixels). With an ``rng`` (``np.random.Generator``), the original's jitter, drawn in this
    order: ``center += U(-center_jitter * old, center_jitter * old)`` per axis, then
    ``size *= U(*size_jitter)``. Returns ``(center (2,) float64, size float)`` in the points' unit;
    raises ``ValueError`` for a degenerate (zero-area) landmark box.
    """
    center, old = _center_and_old(landmarks_bbox(points))
    size = float(int(old * scale)) if whole_pixels else old * scale
    if rng is not None:
        center = center + rng.uniform(-center_jitter * old, center_jitter * old, size=2)
        size = size * rng.uniform(*size_jitter)
    if not size > 0:
        raise ValueError(f"degenerate landmark box (crop side {size}): the points nearly coincide")
    return center, float(size)


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


def warp_crop(image, tform, out: int = CROP_SIZE, *, as_float: bool = True) -> np.ndarray:
    """Resample ``image`` (uint8 ``(H, W, C)`` or float in [0, 1]) into an ``out x out`` crop.

    Crop pixel ``p`` takes the image value at ``inv(tform) @ p`` by bilinear interpolation; outside
    the image is 0 (black). This is the original's ``skimage.transform.warp(image / 255,
    tform.inverse, output_shape=(256, 256))`` done with ``cv2.warpAffine`` (``INTER_LINEAR``,
    ``BORDER_CONSTANT`` 0; OpenCV quantises sub-pixel positions to 1/32 px). Returns float32 in
    [0, 1]; with ``as_float=False`` the input's dtype is kept (uint8 in, uint8 out: OpenCV's
    fixed-point interpolation, as the stored training crops).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ImageReadError(f"expected an (H, W, C) image, got shape {image.shape}")
    if not as_float:
        img = np.ascontiguousarray(image)
    elif image.dtype == np.uint8:
        img = image.astype(np.float32) / 255.0
    else:
        img = image.astype(np.float32)
    crop = cv2.warpAffine(img, np.asarray(tform, dtype=np.float64)[:2], (out, out),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop.reshape(out, out, image.shape[2])


def apply_transform(tform, points) -> np.ndarray:
    """Map ``(..., 2)`` points (x, y) through a 3x3 transform; extra columns are passed through."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(tform, dtype=np.float64)
    xy = p[..., :2] @ t[:2, :2].T + t[:2, 2]
    return np.concatenate([xy, p[..., 2:]], axis=-1)


def crop_scale(tform) -> float:
    """Scale ``s`` (crop pixels per image pixel) of a 3x3 crop transform: ``sqrt(|det(tform[:2, :2])|)``."""
    t = np.asarray(tform, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(t[:2, :2]))))


def _check_points_and_tform(points, tform):
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(tform, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] not in (2, 3):
        raise ValueError(f"expected points with a last axis of 2 or 3 (x, y[, z]), got shape {p.shape}")
    if t.shape != (3, 3):
        raise ValueError(f"tform must be a 3x3 matrix, got shape {t.shape}")
    return p, t


def image_to_crop(points, tform) -> np.ndarray:
    """Image pixels -> crop pixels: ``(x, y)`` through ``tform``; ``z`` multiplied by the scale ``s``.

    ``points`` is ``(..., 2)`` or ``(..., 3)`` (x, y[, z]) in image pixels; z keeps its origin
    (only rescaled). Inverse of :func:`crop_to_image`. Returns float64.
    """
    p, t = _check_points_and_tform(points, tform)
    out = apply_transform(t, p)
    if p.shape[-1] == 3:
        out[..., 2] *= crop_scale(t)
    return out


def crop_to_image(points, tform) -> np.ndarray:
    """Crop pixels -> image pixels: ``(x, y)`` through ``inv(tform)``; ``z`` divided by the scale ``s``.

    ``points`` is ``(..., 2)`` or ``(..., 3)`` (x, y[, z]) in crop pixels, e.g. a ``(256, 256, 3)``
    position map. The z origin is kept (only rescaled), so image-space z is relative, toward the
    camera. Returns float64.
    """
    p, t = _check_points_and_tform(points, tform)
    xy = apply_transform(np.linalg.inv(t), p[..., :2])
    if p.shape[-1] == 2:
        return xy
    return np.concatenate([xy, p[..., 2:3] / crop_scale(t)], axis=-1)
