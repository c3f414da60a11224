"""Make face3d's ``BFM.mat``, ``BFM_info.mat`` and ``BFM_UV.mat`` in Python (no MATLAB / Octave).

A re-implementation of face3d's ``examples/Data/BFM/generate.m`` (and of the UV fix it shares with
``add_tri_mouth.m``), written from reading the script: same inputs, same output files, fields,
shapes, dtypes and index bases, so that :mod:`prnet.data.bfm` and the TFDS builders read the
output unchanged. Inputs (face3d's folder layout under ``raw_dir``; each file is also found
directly in ``raw_dir``):

* ``raw/01_MorphableModel.mat`` -- the Basel Face Model 2009 (``shapeMU`` (3N, 1), ``shapePC``
  (3N, 199), ``shapeEV`` (199, 1), ``texMU``/``texPC``/``texEV`` likewise; N = 53,490 vertices;
  ``segbin`` (N, 4) where ``model_info.mat`` has none);
* ``3ddfa/model_info.mat`` -- 3DDFA: ``trimIndex`` (n, 1) 1-based full-model vertices of the
  neck-less topology (n = 53,215), ``tri`` (3, T) 1-based, ``keypoints`` (1, 68) 1-based,
  ``symlist``, ``symlist_tri``, ``segbin`` (N, k), ``segbin_tri`` (T', k);
* ``3ddfa/Model_Expression.mat`` -- ``mu_exp`` (3n, 1), ``w_exp`` (3n, 29), ``sigma_exp`` (29, 1);
* ``3ddfa/Model_tri_mouth.mat`` -- ``tri_mouth`` (3, M) 1-based (M = 114);
* ``3ddfa/Model_face_contour_trimed.mat`` -- ``face_contour``, ``face_contour_line``,
  ``face_contour_front``, ``face_contour_front_line`` (copied as they are);
* ``3ddfa/Modelplus_nose_hole.mat`` -- ``nose_hole``, ``nose_hole_right``, ``nose_hole_left``;
* ``3ddfa/Modelplus_parallel.mat`` -- ``parallel``, ``parallel_face_contour`` (cell arrays);
* ``3ddfa/pncc_code.mat`` or ``3ddfa/vertex_code.mat`` -- optional, copied to ``pncc_code.mat``;
* ``stn/BFM_UV.mat`` -- 3DMMasSTN: ``UV`` (N, 2) in [0, 1] on the full 53,490-vertex topology.

Outputs (MATLAB v5 files, uncompressed, written together into ``output_dir``):

* ``BFM.mat`` -- struct ``model``: ``shapeMU``, ``shapePC``, ``shapeEV``, ``texMU``, ``texPC``,
  ``texEV``, ``tri``, ``kpt_ind``, ``expMU``, ``expPC``, ``expEV``, ``tri_mouth`` (in this order);
* ``BFM_info.mat`` -- struct ``model_info``: ``kpt_ind``, ``trimIndex``, ``symlist``,
  ``symlist_tri``, ``segbin`` (k, n), ``segbin_tri`` (k, T'), ``tri_mouth``, the four contour
  fields, the three nose-hole fields, ``parallel``, ``parallel_face_contour``, ``uv_coords`` (n, 2);
* ``BFM_UV.mat`` -- ``UV`` (n, 2), equal to ``model_info.uv_coords``;
* ``pncc_code.mat`` -- a byte copy of 3DDFA's file, when one was found.

Every array keeps its input's dtype (MATLAB indexing keeps the class), index arrays stay 1-based,
and vectors stay 2-D as MATLAB stores them. The script's behaviour is reproduced as is, quirks
included (:data:`QUIRKS`):

1. Trim indexing: ``trimIndex_f = [3i-2, 3i-1, 3i]'`` then ``(:)``, i.e. rows ``x_i, y_i, z_i`` of
   each kept vertex, interleaved -- only because ``trimIndex`` is a column; a row vector would
   have given all x, then all y, then all z. A ``trimIndex`` that is not (n, 1) is refused.
2. Three UV vertices re-averaged (1-based trimmed indices): 10032 <- mean of 10033, 10158;
   10155 <- mean of 10534, 10157, 10661; 10280 <- mean of 10916, 10286 (3DMMasSTN's UVs of those
   three lie off the face; the 53,215-vertex ``BFM_UV.mat`` that 3DDFA_V2 ships differs from the
   trimmed 3DMMasSTN file exactly there).
3. Seven inner-mouth triangles appended to ``tri_mouth`` (1-based): (6420, 6542, 6664),
   (6420, 6294, 6167), (6167, 6297, 6420), (6167, 6297, 6296), (6167, 6296, 6295),
   (6167, 6295, 6039), (6168, 6295, 6039).
4. ``tm_inner(:, setdiff(all_ind, bad_ind))`` drops nothing: it removes the UV vertex list
   ``bad_ind`` (10032, 10155, 10280) from the triangle numbers 1..M, where ``ind_bad = 38`` was
   evidently meant. So triangle 38 is KEPT, as in every ``BFM.mat`` made by the script, and
   ``tri_mouth`` has M + 7 columns (121 for the real file).
5. ``segbin`` comes from ``model_info.mat`` when it has one (MATLAB's second ``load`` overwrites
   the BFM's variable of the same name), else from ``01_MorphableModel.mat``.
6. ``pncc_code.mat``: the script first copies ``vertex_code.mat`` to ``Out/pncc_code.mat`` and at
   its end overwrites it with ``pncc_code.mat``; here ``pncc_code.mat`` is copied when present,
   else ``vertex_code.mat``, else nothing (the script would stop with an error; the builders do
   not need the file).

MATLAB v7.3 inputs (HDF5) are read with ``h5py`` (installed with Keras), v4/v5/v7 with
``scipy.io.loadmat``. Every input's variables and shapes are checked before anything is written;
:class:`prnet.errors.DatasetError` names the file and the variable that is wrong.
"""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnet.core.files import staged_files
from prnet.errors import DatasetError

#: Input file -> the folders of face3d's layout where generate.m reads it (then ``raw_dir`` itself).
INPUTS = {
    "01_MorphableModel.mat": "raw",
    "model_info.mat": "3ddfa",
    "Model_Expression.mat": "3ddfa",
    "Model_tri_mouth.mat": "3ddfa",
    "Model_face_contour_trimed.mat": "3ddfa",
    "Modelplus_nose_hole.mat": "3ddfa",
    "Modelplus_parallel.mat": "3ddfa",
    "BFM_UV.mat": "stn",
}
#: Optional inputs, in order of preference, copied to ``pncc_code.mat``.
PNCC_INPUTS = ("pncc_code.mat", "vertex_code.mat")
OUTPUTS = ("BFM.mat", "BFM_info.mat", "BFM_UV.mat")

#: generate.m's UV fix: 1-based trimmed vertex -> the 1-based vertices whose mean replaces its UV.
UV_FIX = {10032: (10033, 10158), 10155: (10534, 10157, 10661), 10280: (10916, 10286)}
#: generate.m's ``bad_ind`` (the UV-fixed vertices), which its ``setdiff`` removes from 1..M.
BAD_IND = (10032, 10155, 10280)
#: The triangle generate.m evidently meant to drop (``ind_bad = 38``) and keeps.
IND_BAD = 38
#: generate.m's ``tm_inner_add``: inner-mouth triangles, 1-based, one row per triangle.
TRI_MOUTH_ADD = ((6420, 6542, 6664), (6420, 6294, 6167), (6167, 6297, 6420), (6167, 6297, 6296),
                 (6167, 6296, 6295), (6167, 6295, 6039), (6168, 6295, 6039))

QUIRKS = (
    "trim indexing [3i-2, 3i-1, 3i] of a column trimIndex: x, y, z of each kept vertex interleaved",
    "UV of vertices 10032, 10155, 10280 replaced by the mean of neighbours (10033, 10158), "
    "(10534, 10157, 10661), (10916, 10286)",
    "7 inner-mouth triangles appended to tri_mouth",
    "setdiff(all_ind, bad_ind) removes the UV vertex list from the triangle numbers: nothing is "
    "dropped, triangle 38 (ind_bad) is kept",
    "segbin from model_info.mat when present (MATLAB's second load wins), else from the BFM",
    "pncc_code.mat copied from 3ddfa/pncc_code.mat, else vertex_code.mat",
)

MODEL_FIELDS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tri", "kpt_ind",
                "expMU", "expPC", "expEV", "tri_mouth")
INFO_FIELDS = ("kpt_ind", "trimIndex", "symlist", "symlist_tri", "segbin", "segbin_tri", "tri_mouth",
               "face_contour", "face_contour_line", "face_contour_front", "face_contour_front_line",
               "nose_hole", "nose_hole_right", "nose_hole_left", "parallel", "parallel_face_contour",
               "uv_coords")

SOURCES_HELP = (
    "01_MorphableModel.mat: Basel Face Model 2009 (register at https://faces.dmi.unibas.ch/bfm/); "
    "model_info.mat, Model_Expression.mat, Model_tri_mouth.mat, Model_face_contour_trimed.mat: 3DDFA "
    "(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm, 'Face Profiling' and '3DDFA' code); "
    "Modelplus_nose_hole.mat, Modelplus_parallel.mat: HPEN "
    "(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/HPEN/main.htm); BFM_UV.mat: 3DMMasSTN "
    "(https://github.com/anilbas/3DMMasSTN/blob/master/util/BFM_UV.mat). See docs/datasets.md."
)


# ------------------------------------------------------------------------------------------ reading

def read_mat(path) -> dict:
    """``{name: value}`` of a MATLAB file, v4/v5/v7 (scipy) or v7.3 (HDF5, h5py).

    Values as ``scipy.io.loadmat`` gives them (``squeeze_me=False``): numeric arrays keep their
    MATLAB shape (at least 2-D) and class, cell arrays are object arrays of arrays, strings are
    ``str``. :class:`DatasetError` names the file when it cannot be read.
    """
    import scipy.io
    from scipy.io.matlab import matfile_version

    path = Path(path)
    try:
        with open(path, "rb") as f:
            major, _ = matfile_version(f)
    except Exception as e:
        raise DatasetError(f"{path}: not a MATLAB file ({type(e).__name__}: {e})") from e
    if major == 2:
        return _read_mat73(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    return {k: v for k, v in mat.items() if not k.startswith("__")}


_H5_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}


def _read_mat73(path: Path) -> dict:
    """A minimal MATLAB v7.3 reader: numeric, logical, char and cell variables (and structs of them).

    MATLAB writes column-major arrays, so HDF5 holds each array with its dimensions reversed: each
    one is transposed back to MATLAB's shape."""
    try:
        import h5py
    except ImportError as e:  # a dependency of Keras, so normally present
        raise DatasetError(f"{path}: a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py)") from e

    def convert(f, obj):
        cls = obj.attrs.get("MATLAB_class", b"")
        cls = cls.decode() if isinstance(cls, bytes) else str(cls)
        if isinstance(obj, h5py.Group):
            return {k: convert(f, obj[k]) for k in obj if not k.startswith("#")}
        if obj.attrs.get("MATLAB_empty", 0):
            return np.zeros((0, 0))
        data = obj[()]
        if cls == "cell":
            refs = np.asarray(data).T
            out = np.empty(refs.shape, dtype=object)
            for idx in np.ndindex(refs.shape):
                out[idx] = convert(f, f[refs[idx]])
            return out
        if cls == "char":
            return "".join(map(chr, np.asarray(data).ravel()))
        arr = np.asarray(data)
        if cls == "logical":
            arr = arr.astype(bool)
        elif cls not in _H5_NUMERIC and arr.dtype.names:  # complex: compound (real, imag)
            arr = arr["real"] + 1j * arr["imag"]
        return arr.T if arr.ndim >= 2 else arr.reshape(1, -1)

    try:
        with h5py.File(path, "r") as f:
            return {k: convert(f, f[k]) for k in f if not k.startswith("#")}
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB v7.3 file ({type(e).__name__}: {e})") from e


def find_inputs(raw_dir) -> dict:
    """``{input name: path}`` of every input under ``raw_dir`` (face3d's ``raw/``, ``3ddfa/``, ``stn/``
    subfolders, or ``raw_dir`` itself), plus ``"pncc"`` when a pncc/vertex code file is there.

    Raises :class:`DatasetError` listing every missing file and where to get it."""
    raw = Path(raw_dir).expanduser()
    if not raw.is_dir():
        raise DatasetError(f"{raw}: --raw_dir is not a folder. {SOURCES_HELP}")
    found, missing = {}, []
    for name, sub in INPUTS.items():
        for candidate in (raw / sub / name, raw / name):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(f"{sub}/{name}")
    if missing:
        raise DatasetError(f"{raw}: missing {', '.join(missing)} (face3d's layout; each may also sit directly "
                           f"in {raw}). {SOURCES_HELP}")
    for name in PNCC_INPUTS:
        for candidate in (raw / "3ddfa" / name, raw / name):
            if "pncc" not in found and candidate.is_file():
                found["pncc"] = candidate
    return found


# ----------------------------------------------------------------------------------------- checking

def _need(mat: dict, path, names) -> None:
    missing = [n for n in names if n not in mat]
    if missing:
        have = ", ".join(sorted(mat)) or "nothing"
        raise DatasetError(f"{path}: no variable {', '.join(missing)} (it holds {have})")


def _shape(mat, path, name, shape, what="") -> np.ndarray:
    """Check ``mat[name]`` is a numeric array of ``shape`` (``None`` = any size in that dimension)."""
    a = mat[name]
    ok = (isinstance(a, np.ndarray) and a.dtype.kind in "fiub" and a.ndim == len(shape)
          and all(s is None or s == d for s, d in zip(shape, a.shape)))
    if not ok:
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        got = a.shape if isinstance(a, np.ndarray) else type(a).__name__
        raise DatasetError(f"{path}: {name} has shape {got} ({getattr(a, 'dtype', '?')}), expected {want}{what}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise DatasetError(f"{path}: {name} holds non-finite values")
    return a


def _vector(mat, path, name, length, what="") -> np.ndarray:
    """Check ``mat[name]`` is a numeric vector of ``length`` stored as MATLAB does, (length, 1) or (1, length)."""
    a = mat[name]
    if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape in ((length, 1), (1, length)):
        return _shape(mat, path, name, a.shape)
    return _shape(mat, path, name, (length, 1), what + f" (or (1, {length}))")


def _indices(mat, path, name, low, high, what) -> np.ndarray:
    a = mat[name]
    if a.size and (np.any(a != np.round(a)) or a.min() < low or a.max() > high):
        raise DatasetError(f"{path}: {name} must hold whole numbers in {low}..{high} ({what}), "
                           f"found {a.min():g}..{a.max():g}")
    return a.astype(np.int64)


@dataclass
class RawBFM:
    """The loaded inputs: ``mats[input name] = {variable: value}``, ``paths[input name] = Path``."""

    mats: dict
    paths: dict
    pncc: Path | None = None
    n_full: int = 0
    n_trim: int = 0
    notes: list = field(default_factory=list)


def check_inputs(mats: dict, paths: dict) -> tuple:
    """Check every input's variables and shapes; returns ``(n_full, n_trim)``.

    :class:`DatasetError` names the file and variable that is wrong."""
    p = paths
    bfm = mats["01_MorphableModel.mat"]
    _need(bfm, p["01_MorphableModel.mat"], ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"))
    mu = _shape(bfm, p["01_MorphableModel.mat"], "shapeMU", (None, 1))
    if mu.shape[0] % 3:
        raise DatasetError(f"{p['01_MorphableModel.mat']}: shapeMU has {mu.shape[0]} rows, not 3 per vertex")
    n_full = mu.shape[0] // 3
    for kind in ("shape", "tex"):
        pc = _shape(bfm, p["01_MorphableModel.mat"], f"{kind}PC", (3 * n_full, None))
        _vector(bfm, p["01_MorphableModel.mat"], f"{kind}EV", pc.shape[1])
    _shape(bfm, p["01_MorphableModel.mat"], "texMU", (3 * n_full, 1))

    info = mats["model_info.mat"]
    ip = p["model_info.mat"]
    _need(info, ip, ("trimIndex", "tri", "keypoints", "symlist", "symlist_tri", "segbin_tri"))
    trim = _shape(info, ip, "trimIndex", (None, 1),
                  " (a column: generate.m's [3i-2, 3i-1, 3i]' interleaving relies on it)")
    trim = _indices(info, ip, "trimIndex", 1, n_full, f"1-based vertices of the {n_full}-vertex BFM")
    if len(np.unique(trim)) != len(trim):
        raise DatasetError(f"{ip}: trimIndex lists a vertex more than once")
    n_trim = trim.shape[0]
    _shape(info, ip, "tri", (3, None))
    _indices(info, ip, "tri", 1, n_trim, f"1-based vertices of the {n_trim}-vertex trimmed model")
    _vector(info, ip, "keypoints", 68)
    _indices(info, ip, "keypoints", 1, n_trim, "1-based trimmed vertices")
    if "segbin" in info:
        _shape(info, ip, "segbin", (n_full, None), " (one row per vertex of the full BFM)")
    elif "segbin" in bfm:
        _shape(bfm, p["01_MorphableModel.mat"], "segbin", (n_full, None))
    else:
        raise DatasetError(f"{ip}: no variable segbin (nor has {p['01_MorphableModel.mat']})")
    _shape(info, ip, "segbin_tri", (None, None))

    ep = p["Model_Expression.mat"]
    exp = mats["Model_Expression.mat"]
    _need(exp, ep, ("mu_exp", "w_exp", "sigma_exp"))
    _shape(exp, ep, "mu_exp", (3 * n_trim, 1), f" (3 x the {n_trim} trimmed vertices)")
    w = _shape(exp, ep, "w_exp", (3 * n_trim, None), f" (3 x the {n_trim} trimmed vertices)")
    _vector(exp, ep, "sigma_exp", w.shape[1])

    mp = p["Model_tri_mouth.mat"]
    mouth = mats["Model_tri_mouth.mat"]
    _need(mouth, mp, ("tri_mouth",))
    _shape(mouth, mp, "tri_mouth", (3, None))
    _indices(mouth, mp, "tri_mouth", 1, n_trim, "1-based trimmed vertices")

    for name, fields in (("Model_face_contour_trimed.mat", ("face_contour", "face_contour_line", "face_contour_front",
                                                            "face_contour_front_line")),
                         ("Modelplus_nose_hole.mat", ("nose_hole", "nose_hole_right", "nose_hole_left")),
                         ("Modelplus_parallel.mat", ("parallel", "parallel_face_contour"))):
        _need(mats[name], p[name], fields)

    up = p["BFM_UV.mat"]
    uv = mats["BFM_UV.mat"]
    _need(uv, up, ("UV",))
    if isinstance(uv["UV"], np.ndarray) and uv["UV"].shape == (n_trim, 2) and n_trim != n_full:
        raise DatasetError(f"{up}: UV has {n_trim} rows: this is the already trimmed (output) BFM_UV.mat; "
                           f"generate.m needs 3DMMasSTN's {n_full}-vertex util/BFM_UV.mat")
    a = _shape(uv, up, "UV", (n_full, 2), " (3DMMasSTN's util/BFM_UV.mat, one row per BFM vertex)")
    if a.min() < -1e-3 or a.max() > 1 + 1e-3:
        raise DatasetError(f"{up}: UV must lie in [0, 1], found {a.min():g}..{a.max():g}")

    need = max(max(UV_FIX), max(max(v) for v in UV_FIX.values()), max(max(t) for t in TRI_MOUTH_ADD))
    if n_trim < need:
        raise DatasetError(f"{ip}: trimIndex has {n_trim} vertices; generate.m's UV fix and inner-mouth "
                           f"triangles address vertices up to {need} (the real topology has 53,215)")
    return n_full, n_trim


def load_inputs(raw_dir) -> RawBFM:
    """Find, read and check every input under ``raw_dir`` (:class:`DatasetError` on the first problem)."""
    paths = find_inputs(raw_dir)
    pncc = paths.pop("pncc", None)
    mats = {name: read_mat(path) for name, path in paths.items()}
    n_full, n_trim = check_inputs(mats, paths)
    return RawBFM(mats=mats, paths=paths, pncc=pncc, n_full=n_full, n_trim=n_trim)


# --------------------------------------------------------------------------------------- generating

def trim_rows(trim_index) -> np.ndarray:
    """0-based rows of an interleaved (3N, .) array kept by a (n, 1) 1-based ``trimIndex``:
    ``[3i-2, 3i-1, 3i]`` (1-based) per vertex, in vertex order -- ``x_i, y_i, z_i`` interleaved."""
    t = np.asarray(trim_index, np.int64).reshape(-1)
    return (3 * (t[:, None] - 1) + np.arange(3)).reshape(-1)


def fix_uv(uv) -> np.ndarray:
    """generate.m's UV fix on trimmed ``(n, 2)`` UVs (a copy, same dtype): :data:`UV_FIX`."""
    out = np.array(uv, copy=True)
    for bad, around in UV_FIX.items():
        out[bad - 1] = np.mean(np.asarray(uv, np.float64)[np.asarray(around) - 1], axis=0).astype(out.dtype)
    return out


def fix_tri_mouth(tri_mouth) -> np.ndarray:
    """generate.m's ``tri_mouth``: the (3, M) input minus columns ``setdiff(1:M, bad_ind)`` leaves out
    (none: :data:`BAD_IND` are vertex numbers > M), plus :data:`TRI_MOUTH_ADD`; (3, M + 7), input dtype."""
    tm = np.asarray(tri_mouth)
    keep = np.setdiff1d(np.arange(1, tm.shape[1] + 1), BAD_IND)   # the script's quirk, reproduced
    added = np.asarray(TRI_MOUTH_ADD).T.astype(tm.dtype)
    return np.concatenate([tm[:, keep - 1], added], axis=1)


def generate(raw: RawBFM) -> tuple:
    """``(model, model_info, UV)``: the three structures generate.m saves (dicts in field order)."""
    bfm = raw.mats["01_MorphableModel.mat"]
    info = raw.mats["model_info.mat"]
    exp = raw.mats["Model_Expression.mat"]
    trim = info["trimIndex"]
    rows = trim_rows(trim)
    vertices = np.asarray(trim, np.int64).reshape(-1) - 1
    segbin = info["segbin"] if "segbin" in info else bfm["segbin"]
    tri_mouth = fix_tri_mouth(raw.mats["Model_tri_mouth.mat"]["tri_mouth"])
    uv = fix_uv(raw.mats["BFM_UV.mat"]["UV"][vertices])
    model = {
        "shapeMU": bfm["shapeMU"][rows], "shapePC": bfm["shapePC"][rows], "shapeEV": bfm["shapeEV"],
        "texMU": bfm["texMU"][rows], "texPC": bfm["texPC"][rows], "texEV": bfm["texEV"],
        "tri": info["tri"], "kpt_ind": info["keypoints"],
        "expMU": exp["mu_exp"], "expPC": exp["w_exp"], "expEV": exp["sigma_exp"],
        "tri_mouth": tri_mouth,
    }
    contour = raw.mats["Model_face_contour_trimed.mat"]
    nose = raw.mats["Modelplus_nose_hole.mat"]
    parallel = raw.mats["Modelplus_parallel.mat"]
    model_info = {
        "kpt_ind": info["keypoints"], "trimIndex": trim, "symlist": info["symlist"],
        "symlist_tri": info["symlist_tri"], "segbin": segbin[vertices].T, "segbin_tri": info["segbin_tri"].T,
        "tri_mouth": tri_mouth,
        **{k: contour[k] for k in INFO_FIELDS[7:11]},
        **{k: nose[k] for k in INFO_FIELDS[11:14]},
        **{k: parallel[k] for k in INFO_FIELDS[14:16]},
        "uv_coords": uv,
    }
    assert tuple(model) == MODEL_FIELDS and tuple(model_info) == INFO_FIELDS
    return model, model_info, uv


@dataclass(frozen=True)
class PreparedBFM:
    """What :func:`prepare_bfm` wrote: ``files`` (name -> path), vertex counts, triangle counts."""

    files: dict
    n_full: int
    n_trim: int
    n_tri: int
    n_tri_mouth: int
    pncc_source: Path | None


def prepare_bfm(raw_dir, output_dir, *, overwrite: bool = False) -> PreparedBFM:
    """Read and check the inputs under ``raw_dir``, then write ``BFM.mat``, ``BFM_info.mat``,
    ``BFM_UV.mat`` (+ ``pncc_code.mat``) into ``output_dir`` together (all or none).

    ``overwrite=False``: :class:`prnet.errors.OutputExistsError` when an output exists (checked
    before reading anything)."""
    import scipy.io

    from prnet.errors import OutputExistsError

    out = Path(output_dir).expanduser()
    if not overwrite:
        existing = [n for n in (*OUTPUTS, "pncc_code.mat") if (out / n).exists()]
        if existing:
            raise OutputExistsError(f"{out}: {', '.join(existing)} already exist; pass --overwrite to replace them")
    raw = load_inputs(raw_dir)
    model, model_info, uv = generate(raw)
    files = {name: out / name for name in OUTPUTS}
    with staged_files(out) as staging:
        scipy.io.savemat(str(staging / "BFM.mat"), {"model": model})
        scipy.io.savemat(str(staging / "BFM_info.mat"), {"model_info": model_info})
        scipy.io.savemat(str(staging / "BFM_UV.mat"), {"UV": uv})
        if raw.pncc is not None:
            shutil.copyfile(raw.pncc, staging / "pncc_code.mat")
            files["pncc_code.mat"] = out / "pncc_code.mat"
    return PreparedBFM(files=files, n_full=raw.n_full, n_trim=raw.n_trim, n_tri=model["tri"].shape[1],
                       n_tri_mouth=model["tri_mouth"].shape[1], pncc_source=raw.pncc)
