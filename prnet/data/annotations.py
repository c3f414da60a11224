"""Read the 3DMM fit files (``.mat``) of 300W-LP and AFLW2000-3D.

Both datasets store one MATLAB file per image (``<name>.jpg`` + ``<name>.mat``, read with
:func:`scipy.io.loadmat`) with the same keys; what the real files hold:

==============  ===========  ========================================================================
key             shape        meaning
==============  ===========  ========================================================================
``Pose_Para``   (1, 7) f32   ``pitch, yaw, roll`` (radians, 3DDFA rotation, see :mod:`prnet.data.bfm`),
                             ``tx, ty, tz`` (pixels, model y up), ``scale`` (~1e-3, model units to px)
``Shape_Para``  (199, 1)     BFM identity coefficients (f64, f32 in the ``_Flip`` folders)
``Exp_Para``    (29, 1)      3DDFA expression coefficients (some AFLW files store uint8 zeros)
``Tex_Para``    (199, 1)     BFM texture coefficients (first 40 used)
``Illum_Para``  (1, 10)      illumination; ``Color_Para`` (1, 7) colour transform
``roi``         (1, 4) i16   a face box ``x0, y0, x1, y1`` (may extend outside the image)
``pt2d``        (2, 68)      300W-LP: the source 300W image's 68 landmarks (x; y), identical for all
                             pose variants ``_0 .. _N`` of one source image (so NOT the landmarks of
                             a rotated variant); AFLW2000-3D: the 21 AFLW landmarks, -1 = missing
``pt3d_68``     (3, 68) f32  AFLW2000-3D only: ground-truth 68 landmarks x; y; z in image pixels
                             (x right, y down, z toward the camera; produced by the fit itself)
==============  ===========  ========================================================================

(The full 300W-LP archive also has a separate ``landmarks/`` tree of ``<name>_pts.mat`` files with
``pts_2d`` / ``pts_3d`` per pose variant; they are not image annotations of this format, not in the
samples, and not used here.)

Pixel frame: the files use MATLAB's 1-based pixels (checked on the real data: the ``_Flip``
folders mirror ``pt2d`` as ``x' = W + 1 - x``, and the fits reproduce ``pt3d_68`` with
``y = H + 1 - y_model``). :func:`load_fit` returns ``pt2d`` and ``pt3d_68`` transposed to
``(68, 2|3)`` rows ``(x, y[, z])`` and shifted to this project's 0-based pixel centres
(``x - 1, y - 1``; z unchanged: toward the camera, the fit's origin). ``roi`` and the AFLW 21-point
``pt2d`` are returned as stored. :mod:`prnet.data.bfm` projects fits into the same 0-based frame.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prnet.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: The ``.mat`` files' pixel coordinates are 1-based (MATLAB); subtract this for 0-based pixels.
MATLAB_PIXEL_OFFSET = 1.0


@dataclass(frozen=True)
class Fit:
    """One sample's annotation.

    Attributes:
      pose_para: ``(7,)`` float64 ``pitch, yaw, roll`` (radians), ``tx, ty, tz``, ``scale``.
      shape_para: ``(199,)`` float64 identity coefficients.
      exp_para: ``(29,)`` float64 expression coefficients.
      pt2d: ``(68, 2)`` float64 ``(x, y)`` 0-based image pixels when the file holds 68 2D landmarks
        (300W-LP; note: the source image's points), else None.
      pt3d_68: ``(68, 3)`` float64 ``(x, y, z)`` 0-based image pixels (AFLW2000-3D), else None.
      roi: ``(4,)`` float64 ``x0, y0, x1, y1`` box as stored (1-based), or None.
      pt2d_other: the raw 2D points when they are not 68 (AFLW's ``(21, 2)``, -1 = missing), else None.
      path: the ``.mat`` file read.
    """

    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    pt2d: np.ndarray | None
    pt3d_68: np.ndarray | None
    roi: np.ndarray | None
    pt2d_other: np.ndarray | None = None
    path: Path | None = None


def _field(mat, key, path, size=None):
    if key not in mat:
        raise DatasetError(f"{path}: missing key '{key}' (expected a 300W-LP / AFLW2000-3D fit file)")
    value = np.asarray(mat[key])
    if not np.issubdtype(value.dtype, np.number):
        raise DatasetError(f"{path}: key '{key}' is not numeric (dtype {value.dtype})")
    value = value.astype(np.float64)
    if size is not None:
        if value.size != size:
            raise DatasetError(f"{path}: key '{key}' has {value.size} values, expected {size}")
        value = value.reshape(size)
    if not np.all(np.isfinite(value)):
        raise DatasetError(f"{path}: key '{key}' contains NaN or inf")
    return value


def load_fit(mat_path) -> Fit:
    """Read one fit file; raise :class:`DatasetError` (with the path) if missing or malformed."""
    import scipy.io

    path = Path(mat_path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError, ...
        raise DatasetError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}); "
                           "re-extract it from the dataset archive") from e
    pose = _field(mat, "Pose_Para", path, 7)
    shape = _field(mat, "Shape_Para", path, 199)
    exp = _field(mat, "Exp_Para", path, 29)
    pt2d = pt2d_other = pt3d = roi = None
    if "pt2d" in mat:
        raw = _field(mat, "pt2d", path)
        if raw.ndim != 2 or 2 not in raw.shape:
            raise DatasetError(f"{path}: 'pt2d' has shape {raw.shape}, expected (2, N)")
        pts = raw.T if raw.shape[0] == 2 else raw
        if pts.shape[0] == 68:
            pt2d = pts - MATLAB_PIXEL_OFFSET
        else:
            pt2d_other = pts
    if "pt3d_68" in mat:
        raw = _field(mat, "pt3d_68", path)
        if raw.shape not in ((3, 68), (68, 3)):
            raise DatasetError(f"{path}: 'pt3d_68' has shape {raw.shape}, expected (3, 68)")
        pt3d = (raw.T if raw.shape == (3, 68) else raw).copy()
        pt3d[:, :2] -= MATLAB_PIXEL_OFFSET
    if "roi" in mat:
        roi = _field(mat, "roi", path, 4)
    return Fit(pose_para=pose, shape_para=shape, exp_para=exp, pt2d=pt2d, pt3d_68=pt3d, roi=roi,
               pt2d_other=pt2d_other, path=path)


def pose_degrees(fit: Fit):
    """``(yaw, pitch, roll)`` in degrees from ``Pose_Para`` (stored as pitch, yaw, roll radians)."""
    pitch, yaw, roll = fit.pose_para[:3]
    return (math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


def list_samples(folder):
    """All ``(image_path, mat_path)`` pairs under ``folder`` (recursive), sorted by path.

    An image without its ``.mat`` (or the reverse) is ignored; raises :class:`DatasetError` if
    ``folder`` does not exist or holds no pair at all.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    pairs = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        names = set(files)
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTENSIONS and stem + ".mat" in names:
                pairs.append((Path(dirpath) / f, Path(dirpath) / (stem + ".mat")))
    if not pairs:
        raise DatasetError(f"{root}: no image + .mat pairs found (expected e.g. image00002.jpg + "
                           "image00002.mat)")
    return sorted(pairs)


#: menpo / iBUG ``.pts`` files are 1-based (a pixel of a W-wide image lies in [1, W]); subtract this.
PTS_PIXEL_OFFSET = 1.0


def load_pts(pts_path, n_points: int | None = 68) -> np.ndarray:
    """Read a menpo / iBUG ``.pts`` landmark file -> ``(N, 2)`` float64 ``(x, y)`` 0-based image pixels.

    Format (version 1): ``version: 1``, ``n_points: N``, then ``N`` lines ``x y`` between ``{`` and
    ``}``. The stored points are 1-based, as menpo's PTS importer assumes (``menpo.io`` subtracts 1
    on import; the iBUG 300-W annotations are MATLAB-style): returned as ``x - 1, y - 1`` so that pixel
    centres sit at integer coordinates (x right, y down). ``n_points`` (default 68) is the count
    required; None accepts any. Raises :class:`DatasetError` naming the file when it is missing or
    malformed.
    """
    path = Path(pts_path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the landmark file ({e.strerror or e})") from e
    header, brace, rest = text.partition("{")
    body, close, _ = rest.partition("}")
    if not brace or not close:
        raise DatasetError(f"{path}: not a .pts landmark file (expected 'version: 1', 'n_points: N' and "
                           "N lines 'x y' between '{' and '}')")
    declared = None
    for line in header.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "n_points":
            try:
                declared = int(value.strip())
            except ValueError:
                raise DatasetError(f"{path}: bad header line {line.strip()!r}") from None
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{path}: the points between '{{' and '}}' must be numbers 'x y'") from None
    if values.size % 2:
        raise DatasetError(f"{path}: odd number of coordinates ({values.size}); expected lines 'x y'")
    points = values.reshape(-1, 2)
    if declared is not None and declared != len(points):
        raise DatasetError(f"{path}: header says n_points: {declared} but the file holds {len(points)} points")
    if n_points is not None and len(points) != n_points:
        raise DatasetError(f"{path}: {len(points)} points, expected {n_points} (iBUG 68-point markup)")
    if not np.all(np.isfinite(points)):
        raise DatasetError(f"{path}: contains NaN or inf")
    return points - PTS_PIXEL_OFFSET


#: Sibling annotation files of an image, in the order :func:`sidecar_landmarks` looks for them.
SIDECAR_SUFFIXES = (".pts", ".mat")


def sidecar_landmarks(image_path):
    """The 68 landmarks annotated beside an image: ``(points, annotation_path)``, or None if there are none.

    ``points`` is ``(68, 2)`` float64 ``(x, y)`` 0-based image pixels (x right, y down, pixel
    centres at integer coordinates), read from ``<stem>.pts`` (menpo / iBUG, :func:`load_pts`), else
    from ``<stem>.mat`` (300W-LP / AFLW2000-3D fit, :func:`load_fit`: ``pt3d_68`` x, y if present,
    else the 68-point ``pt2d``; a ``.mat`` with neither is ignored). Both readers remove the files'
    1-based offset. ``annotation_path`` names the file for messages. A malformed file raises
    :class:`DatasetError`. Note: 300W-LP stores its source photo's ``pt2d`` for every pose
    variant, so on rotated variants (``_1`` ...) the points are only approximate.
    """
    image_path = Path(image_path)
    for suffix in SIDECAR_SUFFIXES:
        path = image_path.with_suffix(suffix)
        if not path.is_file():
            continue
        if suffix == ".pts":
            return load_pts(path), path
        fit = load_fit(path)
        points = fit.pt3d_68[:, :2] if fit.pt3d_68 is not None else fit.pt2d
        if points is not None:
            return points, path
    return None
