"""Detector boxes: the box -> landmark-box calibrations of every detector, IoU, suppression.

Boxes are ``(x0, y0, x1, y1)`` in image pixels (x = column, y = row). A calibration maps a
detector's box to an estimate of the bounding box of the face's 68 landmarks (see
:mod:`prnet.inference.detect` for how the constants were fitted on the real annotated samples).
:class:`BoxCalibration` lives in :mod:`prnet.core.crop` and BlazeFace's constants in
:mod:`prnet.model.blazeface` (the served graph uses them too); both are re-exported here.
"""

import numpy as np

from prnet.core.crop import BoxCalibration
from prnet.errors import ImageReadError
from prnet.model.blazeface import BLAZEFACE_CALIBRATION  # noqa: F401  (re-exported beside the other calibrations)

#: Haar ``frontalface_default`` box -> landmark box (medians over 16 real detections, see module doc).
HAAR_CALIBRATION = BoxCalibration(dx=0.008, dy=0.148, sx=0.926, sy=0.813)
#: dlib HOG box -> landmark box (medians over 16 real detections, see module doc).
DLIB_HOG_CALIBRATION = BoxCalibration(dx=0.040, dy=0.130, sx=0.966, sy=0.886)


def fit_box_calibration(boxes, landmarks) -> BoxCalibration:
    """Fit a :class:`BoxCalibration` from paired detector boxes ``(K, 4)`` and landmarks ``(K, 68, 2+)``.

    Robust (median) estimate of the landmark bounding box's centre offset and size, in units of
    the detector box width.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(landmarks, dtype=np.float64)[..., :2]
    if len(b) == 0 or len(b) != len(p):
        raise ValueError("need the same, non-zero number of boxes and landmark sets")
    w = b[:, 2] - b[:, 0]
    lo, hi = p.min(1), p.max(1)
    d = ((lo + hi) / 2 - (b[:, :2] + b[:, 2:]) / 2) / w[:, None]
    s = (hi - lo) / w[:, None]
    med_d, med_s = np.median(d, 0), np.median(s, 0)
    return BoxCalibration(float(med_d[0]), float(med_d[1]), float(med_s[0]), float(med_s[1]))


def box_iou(a, b) -> np.ndarray:
    """Pairwise intersection-over-union of ``(K, 4)`` and ``(L, 4)`` boxes -> ``(K, L)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def sort_and_suppress(boxes, iou: float = 0.3) -> np.ndarray:
    """Largest box first; drop boxes overlapping a larger kept one by more than ``iou``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = b[np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")]
    keep = []
    for i in range(len(b)):
        if not keep or box_iou(b[i], b[keep]).max() <= iou:
            keep.append(i)
    return b[keep]


def check_rgb(image) -> np.ndarray:
    """The detectors' input check: an RGB uint8 ``(H, W, 3)`` array, else :class:`ImageReadError`."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"a detector needs an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return image
