"""The Basel Face Model (BFM) in face3d's ``BFM.mat`` form, and the 300W-LP / AFLW2000-3D pose.

Files a user needs (not redistributable, so never bundled):

* ``BFM.mat`` -- made by ``prnet-prepare-bfm`` (:mod:`prnet.data.bfm_prepare`, a Python replacement
  of face3d's ``examples/Data/BFM/generate.m``) from the Basel registration's
  ``01_MorphableModel.mat`` (https://faces.dmi.unibas.ch/bfm/, 53,490 vertices, 199 shape PCs)
  and 3DDFA's ``model_info.mat`` / ``Model_Expression.mat`` / ``Model_tri_mouth.mat``
  (http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm), trimmed to the
  neck-less 53,215-vertex topology the 300W-LP fits use. One MATLAB struct ``model`` with
  ``shapeMU`` (3n, 1), ``shapePC`` (3n, 199), ``shapeEV`` (199, 1), ``expMU`` (3n, 1),
  ``expPC`` (3n, 29), ``expEV`` (29, 1), ``texMU``/``texPC``/``texEV``, ``tri`` (3, T) 1-based,
  ``tri_mouth`` (3, 114) 1-based, ``kpt_ind`` (1, 68) 1-based. Coordinates are interleaved
  ``x1, y1, z1, x2, ...`` (MATLAB column-major reshape to (3, n)); units are micrometres, y up.
* ``BFM_UV.mat`` -- ``UV`` (n, 2) in [0, 1]; face3d's output (3DMMasSTN's coordinates trimmed to
  the 53,215 vertices). Its vertex count must match ``BFM.mat`` (3DMMasSTN's untrimmed
  53,490-vertex file is rejected with a message).

Expression mean: ``generate.m`` stores 3DDFA's ``mu_exp`` separately as ``expMU``; it is NOT
folded into ``shapeMU`` in the file (face3d's Python loader adds it at load time). So the mesh of
a fit is ``shapeMU + expMU + shapePC @ Shape_Para + expPC @ Exp_Para``; this module does the same
(``expMU`` missing -> treated as already folded, zeros). This agrees with 3DDFA's
``bfm_mean_53215.npz`` (``shape_mean + exp_mean``) whose 68 landmark rows equal the mean of the
68-point model ``bfm_kpt68_bases.npz``.

Pose (``Pose_Para`` = pitch, yaw, roll [radians], tx, ty, tz, scale), 3DDFA convention::

    R = Rx(pitch) @ Ry(yaw) @ Rz(roll)     (:func:`prnet.core.transforms.euler_to_rotation`)
    p = scale * R @ v + t                  (model frame: y up, z toward the camera)
    x_img = p_x - 1,  y_img = H - p_y,  z_img = p_z

The fits were made in MATLAB's 1-based pixel frame (``x_1 = p_x``, ``y_1 = H + 1 - p_y``, which
reproduces AFLW2000-3D's ``pt3d_68`` with the 68-point bases to ~1 px, and the ``_Flip`` folders
mirror annotations by ``x' = W + 1 - x``); we subtract 1 to get this project's 0-based pixel
centres (x right, y down). :func:`prnet.data.annotations.load_fit` applies the same shift to ``pt2d`` /
``pt3d_68``, so everything is in one frame. (face3d's 300W-LP script uses ``y = H - 1 - p_y`` and no
x shift, i.e. it is off by (+1, -1) px from the annotations; we follow the annotations.)
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prnet.core.files import atomic_path
from prnet.core.transforms import euler_to_rotation
from prnet.data.annotations import MATLAB_PIXEL_OFFSET
from prnet.errors import DatasetError

#: Vertices of the neck-trimmed topology used by 300W-LP / AFLW2000-3D fits.
NUM_BFM_VERTICES = 53215

OBTAIN_HELP = (
    "Make BFM.mat and BFM_UV.mat with `prnet-prepare-bfm --raw_dir DIR --output_dir OUT` (a Python "
    "replacement of face3d's examples/Data/BFM/generate.m, no MATLAB needed) from the Basel Face Model's "
    "01_MorphableModel.mat (register at https://faces.dmi.unibas.ch/bfm/), 3DDFA's model_info.mat, "
    "Model_Expression.mat, Model_tri_mouth.mat, Model_face_contour_trimed.mat, HPEN's Modelplus_*.mat and "
    "3DMMasSTN's util/BFM_UV.mat; sources and layout in docs/datasets.md."
)


@dataclass(frozen=True)
class BFM:
    """A linear face model on ``n`` vertices (units: BFM micrometres, y up, z toward the viewer).

    Attributes:
      mean: ``(n, 3)`` float32 mean shape including the expression mean.
      shape_basis: ``(3n, Ks)`` float32 identity PCs, rows interleaved x, y, z per vertex.
      exp_basis: ``(3n, Ke)`` float32 expression PCs, same row layout.
      triangles: ``(T, 3)`` int64 0-based vertex indices (``tri`` plus ``tri_mouth`` if present).
      kpt_ind: ``(68,)`` int64 0-based indices of the 68 landmark vertices.
      uv_coords: ``(n, 2)`` float32 UV in [0, 1] (u right, v up), or None.
    """

    mean: np.ndarray
    shape_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    kpt_ind: np.ndarray
    uv_coords: np.ndarray | None = None

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    def vertices_batch(self, shape_paras, exp_paras) -> np.ndarray:
        """``(B, n, 3)`` float32 meshes for ``(B, >=Ks)`` / ``(B, >=Ke)`` coefficients in one matrix
        product (reads the large bases once for the whole batch: much faster than B calls)."""
        sp = np.asarray(shape_paras, np.float32)
        ep = np.asarray(exp_paras, np.float32)
        ks, ke = self.shape_basis.shape[1], self.exp_basis.shape[1]
        if sp.ndim != 2 or ep.ndim != 2 or sp.shape[0] != ep.shape[0] or sp.shape[1] < ks or ep.shape[1] < ke:
            raise DatasetError(f"need (B, >={ks}) shape and (B, >={ke}) expression coefficients, got "
                               f"{sp.shape} and {ep.shape}")
        offset = self.shape_basis @ sp[:, :ks].T + self.exp_basis @ ep[:, :ke].T   # (3n, B)
        return self.mean[None] + offset.T.reshape(len(sp), -1, 3)

    def vertices(self, shape_para, exp_para, indices=None) -> np.ndarray:
        """Model-frame vertices ``(n, 3)`` float32 (or only ``indices``) for the given coefficients.

        The leading ``Ks`` / ``Ke`` coefficients are used (the real file has 199 / 29, as the fits).
        """
        shape_para = np.asarray(shape_para, np.float32).ravel()
        exp_para = np.asarray(exp_para, np.float32).ravel()
        ks, ke = self.shape_basis.shape[1], self.exp_basis.shape[1]
        if shape_para.size < ks or exp_para.size < ke:
            raise DatasetError(f"need at least {ks} shape and {ke} expression coefficients, got "
                               f"{shape_para.size} and {exp_para.size}")
        if indices is None:
            offset = self.shape_basis @ shape_para[:ks] + self.exp_basis @ exp_para[:ke]
            return self.mean + offset.reshape(-1, 3)
        idx = np.asarray(indices, np.int64)
        rows = (3 * idx[:, None] + np.arange(3)).ravel()
        offset = self.shape_basis[rows] @ shape_para[:ks] + self.exp_basis[rows] @ exp_para[:ke]
        return self.mean[idx] + offset.reshape(-1, 3)


def transform(vertices, pose_para, image_height: int) -> np.ndarray:
    """Model vertices ``(n, 3)`` + ``Pose_Para`` (7,) -> 0-based image pixels ``(n, 3)`` float64.

    ``x = p_x - 1``, ``y = image_height - p_y``, ``z = p_z`` with ``p = s R v + t`` (module doc);
    z grows toward the camera in pixel units (origin: the fit's, arbitrary).
    """
    pose = np.asarray(pose_para, np.float64).ravel()
    if pose.size != 7:
        raise DatasetError(f"Pose_Para must have 7 values (pitch, yaw, roll, tx, ty, tz, scale), got {pose.size}")
    v = np.asarray(vertices, np.float64)
    p = pose[6] * v @ euler_to_rotation(*pose[:3]).T + pose[3:6]
    out = np.empty_like(p)
    out[:, 0] = p[:, 0] - MATLAB_PIXEL_OFFSET
    out[:, 1] = image_height + 1 - p[:, 1] - MATLAB_PIXEL_OFFSET
    out[:, 2] = p[:, 2]
    return out


# ----------------------------------------------------------------------------- loading

def _struct_fields(mat, path):
    if "model" not in mat:
        raise DatasetError(f"{path}: no 'model' struct; this is not face3d's BFM.mat. {OBTAIN_HELP}")
    model = mat["model"]
    try:
        model = model[0, 0]
        names = model.dtype.names
    except (IndexError, TypeError, AttributeError):
        raise DatasetError(f"{path}: 'model' is not a MATLAB struct. {OBTAIN_HELP}") from None
    if not names:
        raise DatasetError(f"{path}: 'model' is not a MATLAB struct. {OBTAIN_HELP}")
    return {name: np.asarray(model[name]) for name in names}


def _index_array(value, path, key, n_vertices, cols=None):
    a = np.asarray(value)
    if cols is not None:
        if a.ndim != 2 or cols not in a.shape:
            raise DatasetError(f"{path}: model.{key} has shape {a.shape}, expected (3, T) or (T, 3)")
        if a.shape[1] != cols:
            a = a.T
    a = a.astype(np.int64) - 1  # MATLAB is 1-based
    if a.size and (a.min() < 0 or a.max() >= n_vertices):
        raise DatasetError(f"{path}: model.{key} has indices outside 1..{n_vertices} (1-based expected)")
    return a


def _read_mat(path: Path, what: str) -> dict:
    """``scipy.io.loadmat`` with a :class:`DatasetError` naming the file and how to obtain it."""
    import scipy.io

    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found. {OBTAIN_HELP}")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}). {OBTAIN_HELP}") from e


def load_bfm(bfm_path, uv_path=None) -> BFM:
    """Load face3d's ``BFM.mat`` (+ optional ``BFM_UV.mat``); :class:`DatasetError` if wrong/partial."""
    path = Path(bfm_path)
    mat = _read_mat(path, "BFM model file")
    f = _struct_fields(mat, path)
    missing = [k for k in ("shapeMU", "shapePC", "expPC", "tri", "kpt_ind") if k not in f]
    if missing:
        raise DatasetError(f"{path}: model struct lacks {', '.join(missing)} (partial file?). {OBTAIN_HELP}")
    mu = f["shapeMU"].astype(np.float32).ravel()
    if mu.size % 3:
        raise DatasetError(f"{path}: model.shapeMU has {mu.size} values, not a multiple of 3")
    n = mu.size // 3
    if "expMU" in f and f["expMU"].size:
        if f["expMU"].size != mu.size:
            raise DatasetError(f"{path}: model.expMU has {f['expMU'].size} values, expected {mu.size}")
        mu = mu + f["expMU"].astype(np.float32).ravel()
    shape_pc = f["shapePC"].astype(np.float32)
    exp_pc = f["expPC"].astype(np.float32)
    for key, pc in (("shapePC", shape_pc), ("expPC", exp_pc)):
        if pc.ndim != 2 or pc.shape[0] != 3 * n:
            raise DatasetError(f"{path}: model.{key} has shape {pc.shape}, expected ({3 * n}, K)")
    tri = _index_array(f["tri"], path, "tri", n, cols=3)
    if "tri_mouth" in f and f["tri_mouth"].size:
        tri = np.concatenate([tri, _index_array(f["tri_mouth"], path, "tri_mouth", n, cols=3)])
    kpt = _index_array(f["kpt_ind"], path, "kpt_ind", n).ravel()
    if kpt.size != 68:
        raise DatasetError(f"{path}: model.kpt_ind has {kpt.size} entries, expected 68")
    uv = load_uv_coords(uv_path, n) if uv_path is not None else None
    return BFM(mean=mu.reshape(n, 3), shape_basis=shape_pc, exp_basis=exp_pc, triangles=tri,
               kpt_ind=kpt, uv_coords=uv)


def load_uv_coords(uv_path, n_vertices: int | None = None) -> np.ndarray:
    """Read ``BFM_UV.mat`` (key ``UV``, (n, 2) in [0, 1]) -> float32 (n, 2); checks the count."""
    path = Path(uv_path)
    mat = _read_mat(path, "BFM_UV.mat")
    if "UV" not in mat:
        raise DatasetError(f"{path}: no 'UV' array (expected face3d's BFM_UV.mat)")
    uv = np.asarray(mat["UV"], np.float32)
    if uv.ndim == 2 and uv.shape[0] == 2 and uv.shape[1] != 2:
        uv = uv.T
    if uv.ndim != 2 or uv.shape[1] != 2 or (n_vertices is not None and uv.shape[0] != n_vertices):
        raise DatasetError(f"{path}: UV has shape {uv.shape}, expected ({n_vertices or 'n'}, 2) "
                           "(use the 53,215-vertex file that matches BFM.mat)")
    if not np.all(np.isfinite(uv)) or uv.min() < -1e-3 or uv.max() > 1 + 1e-3:
        raise DatasetError(f"{path}: UV coordinates must lie in [0, 1]")
    return uv


def write_bfm_mat(path, model: BFM, *, exp_mean=None):
    """Write ``model`` in face3d's ``BFM.mat`` layout (1-based indices), atomically.

    ``exp_mean`` ``(n, 3)``: stored as ``expMU`` (and subtracted from ``shapeMU``) to mimic the
    real file. Used to make test fixtures; it does not make a model real.
    """
    import scipy.io

    n = model.n_vertices
    exp_mu = np.zeros((n, 3), np.float32) if exp_mean is None else np.asarray(exp_mean, np.float32)
    struct = {
        "shapeMU": (model.mean - exp_mu).reshape(-1, 1).astype(np.float64),
        "shapePC": model.shape_basis,
        "shapeEV": np.ones((model.shape_basis.shape[1], 1)),
        "expMU": exp_mu.reshape(-1, 1).astype(np.float64),
        "expPC": model.exp_basis,
        "expEV": np.ones((model.exp_basis.shape[1], 1)),
        "tri": (model.triangles.T + 1).astype(np.float64),
        "kpt_ind": (model.kpt_ind[None] + 1).astype(np.float64),
    }
    with atomic_path(path) as tmp:
        scipy.io.savemat(str(tmp), {"model": struct})
    return Path(path)


def landmark_interpolated_model(mean_npz, kpt68_npz, power: float = 2.0) -> BFM:
    """A stand-in dense model for tests: the REAL mean face (3DDFA's ``bfm_mean_53215.npz``) with
    the REAL 68-landmark bases (``bfm_kpt68_bases.npz``, 40 shape + 10 expression) spread to all
    vertices by inverse-distance weighting (exact at the 68 landmark vertices, smooth between).

    Only the mean and the landmark vertices behave like the real BFM; the rest of the deformation
    is invented. It lets tests compare generated position maps with real annotations at the
    landmarks without the (non-redistributable) BFM bases.
    """
    d = np.load(mean_npz)
    k = np.load(kpt68_npz)
    mean = (d["shape_mean"] + d["exp_mean"]).astype(np.float32)
    kpt = d["kpt_ind"].astype(np.int64)
    dist = np.linalg.norm(mean[:, None, :] - mean[kpt][None], axis=2)  # (n, 68)
    w = 1.0 / np.maximum(dist, 1e-3) ** power
    w[kpt, :] = 0.0
    w[kpt, np.arange(68)] = 1.0
    w /= w.sum(1, keepdims=True)

    def spread(basis):
        b = basis.reshape(68, 3, -1)                       # (68, 3, K)
        return np.einsum("nk,kcj->ncj", w, b).reshape(-1, basis.shape[1]).astype(np.float32)

    return BFM(mean=mean, shape_basis=spread(k["shape_basis"]), exp_basis=spread(k["exp_basis"]),
               triangles=d["triangles"].astype(np.int64), kpt_ind=kpt,
               uv_coords=d["uv_coords"].astype(np.float32))
