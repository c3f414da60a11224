"""Evaluation metrics of the AFLW2000-3D protocol (PRNet / 3DDFA), in plain NumPy.

All errors are *normalised mean errors* (NME) returned as fractions (multiply by 100 for the
papers' %). Point sets are ``(N, P, k)`` arrays (``N`` faces, ``P`` points, ``k >= 2``
coordinates ``x, y[, z]``) in any common pixel unit (image or crop pixels: the NME is invariant to
the crop's similarity transform). ``x`` = column, ``y`` = row, ``z`` toward the camera with an
arbitrary origin. A single face ``(P, k)`` is treated as ``N = 1``.

Conventions (pinned by ``tests/test_metrics.py`` on the 3DDFA ground-truth arrays):

* Normaliser: ``sqrt(w * h)`` of the axis-aligned x,y bounding box of the *ground-truth* points
  (68 landmarks for landmark NME, all ground-truth vertices for the dense NMEs: "the bounding box
  size of the ground-truth 3D face", as in the PRNet paper), for 2D and 3D alike.
* 3D: each point set's own minimum z is subtracted before comparing (the prediction's z origin is
  arbitrary; published 3D numbers do not reproduce without this shift).
* Yaw buckets by ``|yaw|`` of the ground-truth pose in degrees, as 3DDFA's benchmark code:
  ``|yaw| <= 30``, ``30 < |yaw| <= 60``, ``|yaw| > 60``, labelled 0-30, 30-60, 60-90 as in the
  papers (the last one also holds the 7 AFLW2000-3D fits with ``|yaw| > 90``). "Mean" in the papers'
  tables is the mean of the three bucket means; the plain mean over all faces is reported too.
* 3D reconstruction: the prediction is rigidly aligned to the ground truth (least-squares
  rotation + translation with the known UV correspondences, i.e. Procrustes/Kabsch; optionally with
  scale) before the mean point distance is taken.
"""

import numpy as np

from prnet.core.transforms import umeyama
from prnet.errors import MetricInputError

#: ``(label, low, high)``: a face is in a bucket when ``low < |yaw| <= high`` (degrees; 0 and 30 are in "0-30").
YAW_BUCKETS = (("0-30", -np.inf, 30.0), ("30-60", 30.0, 60.0), ("60-90", 60.0, np.inf))


def _as_batch(points, name: str, min_dims: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[-1] < min_dims:
        raise MetricInputError(
            f"{name}: expected shape (N, P, k) or (P, k) with k >= {min_dims} coordinates (x, y[, z]), "
            f"got {points.shape}. Transpose (N, 3, 68) arrays such as 3DDFA's to (N, 68, 3) first.")
    return points


def _pair(pred, gt, dims: int):
    if dims not in (2, 3):
        raise MetricInputError(f"dims must be 2 or 3, got {dims!r}")
    pred = _as_batch(pred, "pred", dims)
    gt = _as_batch(gt, "gt", dims)
    if pred.shape[:2] != gt.shape[:2]:
        raise MetricInputError(f"pred {pred.shape} and gt {gt.shape} must hold the same faces and points")
    return pred[..., :dims], gt[..., :dims]


def bbox_size(points) -> np.ndarray:
    """``(N,)`` ``sqrt(w * h)`` of each set's x,y bounding box (same unit as the points)."""
    points = _as_batch(points, "points", 2)
    span = points[..., :2].max(axis=1) - points[..., :2].min(axis=1)
    return np.sqrt(span[:, 0] * span[:, 1])


def shift_min_z(points) -> np.ndarray:
    """Subtract each set's own minimum z (the 3D NME rule); ``(N, P, 3)`` float64."""
    points = _as_batch(points, "points", 3)[..., :3].copy()
    points[..., 2] -= points[..., 2].min(axis=1, keepdims=True)
    return points


def point_nme(pred, gt, dims: int = 2, normalizer=None) -> np.ndarray:
    """``(N,)`` mean point-to-point distance over ``dims`` coordinates divided by ``normalizer``.

    ``normalizer``: ``(N,)`` or scalar, default :func:`bbox_size` of ``gt``. For ``dims=3`` each
    set's minimum z is subtracted first.
    """
    pred, gt = _pair(pred, gt, dims)
    norm = bbox_size(gt) if normalizer is None else np.broadcast_to(np.asarray(normalizer, np.float64),
                                                                     (gt.shape[0],))
    if np.any(norm <= 0):
        raise MetricInputError("normaliser must be positive: the ground-truth points span no area")
    if dims == 3:
        pred, gt = shift_min_z(pred), shift_min_z(gt)
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / norm


def landmark_nme(pred, gt, dims: int = 2) -> np.ndarray:
    """68-landmark NME ``(N,)`` (fraction): pred/gt ``(N, 68, k)``, normalised by ``sqrt(w*h)`` of gt's x,y box.

    ``dims=2`` compares x, y; ``dims=3`` compares x, y, z after subtracting each set's own min z.
    """
    return point_nme(pred, gt, dims)


def dense_nme(pred_vertices, gt_vertices, dims: int = 3, normalizer=None) -> np.ndarray:
    """Dense alignment NME ``(N,)``: vertices vs ground truth on the same UV points ``(N, V, k)``.

    Normalised by ``sqrt(w*h)`` of the ground-truth face's x,y bounding box unless ``normalizer``
    is given (e.g. :func:`bbox_size` of the 68 gt landmarks for 3DDFA-style numbers).
    """
    return point_nme(pred_vertices, gt_vertices, dims, normalizer)


def reconstruction_nme(pred_vertices, gt_vertices, normalizer=None, scale: bool = False) -> np.ndarray:
    """3D reconstruction NME ``(N,)``: mean 3D distance after rigid alignment of pred onto gt.

    ``pred_vertices``, ``gt_vertices``: ``(N, V, 3)`` on the same UV points. Normalised by
    ``sqrt(w*h)`` of the ground-truth face's x,y box unless ``normalizer`` is given. The alignment
    (:func:`prnet.core.transforms.umeyama`: rotation + translation, plus scale if ``scale``)
    removes pose and z origin.
    """
    pred, gt = _pair(pred_vertices, gt_vertices, 3)
    norm = bbox_size(gt) if normalizer is None else np.broadcast_to(np.asarray(normalizer, np.float64),
                                                                     (gt.shape[0],))
    errors = np.empty(gt.shape[0])
    for i in range(gt.shape[0]):
        s, rot, t = umeyama(pred[i], gt[i], scale=scale)
        aligned = s * pred[i] @ rot.T + t
        errors[i] = np.linalg.norm(aligned - gt[i], axis=-1).mean()
    return errors / norm


def yaw_bucket(yaw_degrees) -> np.ndarray:
    """Index (0, 1, 2) of the :data:`YAW_BUCKETS` bucket of each ``|yaw|`` (degrees)."""
    yaw = np.abs(np.asarray(yaw_degrees, np.float64))
    if np.any(~np.isfinite(yaw)):
        raise MetricInputError("yaw angles must be finite (degrees)")
    return np.where(yaw <= 30.0, 0, np.where(yaw <= 60.0, 1, 2))


def bucket_summary(errors, yaw_degrees) -> dict:
    """Summarise per-face errors by yaw bucket, the papers' way.

    Returns ``{"buckets": {label: mean or None}, "counts": {label: n}, "mean_of_buckets": mean of
    the non-empty bucket means, "mean": plain mean, "median": median, "count": N}`` (fractions;
    ``None`` where there is nothing to average).
    """
    errors = np.asarray(errors, np.float64).ravel()
    yaw = np.asarray(yaw_degrees, np.float64).ravel()
    if errors.shape != yaw.shape:
        raise MetricInputError(f"{errors.size} errors but {yaw.size} yaw angles")
    index = yaw_bucket(yaw)
    buckets, counts = {}, {}
    for b, (label, _, _) in enumerate(YAW_BUCKETS):
        sel = errors[index == b]
        counts[label] = int(sel.size)
        buckets[label] = float(sel.mean()) if sel.size else None
    present = [v for v in buckets.values() if v is not None]
    return {
        "buckets": buckets,
        "counts": counts,
        "mean_of_buckets": float(np.mean(present)) if present else None,
        "mean": float(errors.mean()) if errors.size else None,
        "median": float(np.median(errors)) if errors.size else None,
        "count": int(errors.size),
    }


def ced_curve(errors, thresholds=None):
    """Cumulative error distribution: ``(thresholds, fraction of faces with error <= threshold)``.

    ``thresholds`` default: 201 points from 0 to ``max(0.1, max error)``.
    """
    errors = np.sort(np.asarray(errors, np.float64).ravel())
    if thresholds is None:
        top = max(0.1, float(errors.max()) if errors.size else 0.1)
        thresholds = np.linspace(0.0, top, 201)
    thresholds = np.asarray(thresholds, np.float64)
    if errors.size == 0:
        return thresholds, np.zeros_like(thresholds)
    return thresholds, np.searchsorted(errors, thresholds, side="right") / errors.size


def match_rows(points, reference, tolerance: float = 1e-3) -> np.ndarray:
    """Row of ``reference`` ``(M, P, k)`` equal to each set in ``points`` ``(N, P, k)`` (max abs diff).

    Used to find an image's row in the 3DDFA arrays from its ``.mat`` ``pt3d_68``. Raises
    :class:`MetricInputError` when a set has no row within ``tolerance`` pixels.
    """
    pts = _as_batch(points, "points", 2)
    ref = _as_batch(reference, "reference", 2)
    if pts.shape[1:] != ref.shape[1:]:
        raise MetricInputError(f"points {pts.shape} and reference {ref.shape} differ in layout")
    flat_ref = ref.reshape(ref.shape[0], -1)
    rows = np.empty(pts.shape[0], np.int64)
    for i, p in enumerate(pts.reshape(pts.shape[0], -1)):
        with np.errstate(invalid="ignore"):
            diff = np.abs(flat_ref - p).max(axis=1)
        diff[np.isnan(diff)] = np.inf  # a NaN row matches nothing (argmin would pick it first)
        rows[i] = int(diff.argmin())
        if diff[rows[i]] > tolerance:
            raise MetricInputError(
                f"set {i} matches no reference row (closest row {rows[i]} differs by {diff[rows[i]]:.3g} px); "
                "are the ground-truth arrays from the same dataset?")
    return rows
