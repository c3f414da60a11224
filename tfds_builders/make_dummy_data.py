"""Write the ``dummy_data/`` folders of the TFDS builders (fake samples in the real file formats).

Everything is synthetic (a seeded random 225-vertex face-like mesh standing in for the BFM, fits
and renders made from it); nothing is copied from the real datasets. Layouts, as the builders'
manual dirs expect them:

* ``prnet_300w_lp/dummy_data/``: ``300W_LP/{AFW,AFW_Flip,HELEN}/<name>.jpg + <name>.mat`` (keys
  ``pt2d`` (2, 68), ``Pose_Para`` (1, 7), ``Shape_Para`` (199, 1), ``Exp_Para`` (29, 1),
  ``Tex_Para``, ``Illum_Para``, ``Color_Para``, ``roi`` (1, 4)) + ``BFM.mat`` + ``BFM_UV.mat``:
  4 train and 2 validation examples (subjects picked by the builder's own split rule);
* ``prnet_aflw2000_3d/dummy_data/``: ``AFLW2000/imageNNNNN.jpg + .mat`` (as above, with
  ``pt3d_68`` (3, 68) and the 21-point AFLW ``pt2d``, -1 = missing) + ``BFM.mat`` + ``BFM_UV.mat``;
* ``prnet_synthetic/dummy_data/``: only a README (the builder downloads nothing; it reads the UV
  template).

Pixel conventions are the files' own: MATLAB 1-based pixels, ``Pose_Para`` ``ty`` with y up
(see :mod:`prnet.data.annotations`). Images are 120x120 JPEGs. Run from the repository root::

    python -m tfds_builders.make_dummy_data
"""

import shutil
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from prnet.data.annotations import MATLAB_PIXEL_OFFSET
from prnet.data.bfm import BFM, transform, write_bfm_mat
from tfds_builders.prnet_300w_lp.prnet_300w_lp_dataset_builder import split_of

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 120
GRID = 15                     # GRID x GRID mesh vertices
SHAPE_K, EXP_K = 8, 4         # basis sizes of the stand-in model (fits store 199 / 29 coefficients)


def stand_in_bfm(seed: int = 0) -> BFM:
    """A face-like height field on a UV grid: model units ~ the BFM's (width ~150,000; y up, z toward
    the viewer), random smooth-ish bases, 68 landmark vertices spread over the face, numbered top to
    bottom (so the eyes' indices lie above the mouth's, as in iBUG-68)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(0.1, 0.9, GRID), np.linspace(0.1, 0.9, GRID))
    uv = np.stack([u.ravel(), v.ravel()], 1)
    a, b = (uv[:, 0] - 0.5) * 2, (uv[:, 1] - 0.5) * 2
    mean = np.stack([a * 75000, b * 90000, 50000 * np.clip(1 - 0.6 * a ** 2 - 0.4 * b ** 2, 0, None)], 1)
    idx = np.arange(GRID * GRID).reshape(GRID, GRID)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    inner = idx[1:-1, 1:-1].ravel()
    kpt = rng.choice(inner, 68, replace=False)
    # Top to bottom (y up: decreasing b), so that the iBUG-68 roles hold where the fit checks look: the
    # eyes (36-47) above the mouth (48-67), an upright face (prnet.data.fit_checks).
    kpt = kpt[np.argsort(-b[kpt], kind="stable")]
    smooth = np.exp(-((a[:, None] - rng.uniform(-1, 1, SHAPE_K + EXP_K)) ** 2
                      + (b[:, None] - rng.uniform(-1, 1, SHAPE_K + EXP_K)) ** 2) * 2)   # (n, K) bumps
    direction = rng.normal(size=(1, 3, SHAPE_K + EXP_K))
    basis = (smooth[:, None, :] * direction).reshape(-1, SHAPE_K + EXP_K) * 8000
    return BFM(mean=mean.astype(np.float32), shape_basis=basis[:, :SHAPE_K].astype(np.float32),
               exp_basis=basis[:, SHAPE_K:].astype(np.float32), triangles=triangles.astype(np.int64),
               kpt_ind=kpt.astype(np.int64), uv_coords=uv.astype(np.float32))


def write_model(folder: Path, bfm: BFM):
    """``BFM.mat`` (face3d layout) and ``BFM_UV.mat`` (key ``UV``, (n, 2) in [0, 1]) in ``folder``."""
    write_bfm_mat(folder / "BFM.mat", bfm)
    scipy.io.savemat(folder / "BFM_UV.mat", {"UV": bfm.uv_coords.astype(np.float64)})


def random_fit(rng, *, yaw=None):
    """Coefficients and pose of one sample (radians; ``tx, ty`` 1-based pixels, y up)."""
    yaw = rng.uniform(-0.6, 0.6) if yaw is None else yaw
    pose = np.array([rng.uniform(-0.2, 0.2), yaw, rng.uniform(-0.2, 0.2),
                     IMAGE_SIZE / 2 + rng.uniform(-5, 5), IMAGE_SIZE / 2 + rng.uniform(-5, 5), 0.0,
                     rng.uniform(3.5e-4, 4.5e-4)])
    return {"Pose_Para": pose, "Shape_Para": rng.normal(size=199), "Exp_Para": rng.normal(size=29) * 0.5}


def mirrored(fit):
    """The ``_Flip`` folders' fit of the mirrored photo: yaw and roll negated, ``tx -> W + 1 - tx``."""
    pose = fit["Pose_Para"].copy()
    pose[[1, 2]] *= -1
    pose[3] = IMAGE_SIZE + 1 - pose[3]
    return {**fit, "Pose_Para": pose}


def render(bfm: BFM, fit, rng) -> tuple:
    """``(uint8 BGR image, (n, 3) 0-based pixel vertices)``: the mesh drawn over a noisy backdrop,
    triangles shaded by depth and painted far to near."""
    verts = transform(bfm.vertices(fit["Shape_Para"], fit["Exp_Para"]), fit["Pose_Para"], IMAGE_SIZE)
    image = rng.integers(40, 90, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    tri_z = verts[bfm.triangles, 2].mean(1)
    lo, hi = tri_z.min(), tri_z.max()
    for t in np.argsort(tri_z):
        shade = int(120 + 120 * (tri_z[t] - lo) / max(hi - lo, 1e-6))
        pts = np.round(verts[bfm.triangles[t], :2] * 16).astype(np.int32)   # 4 fractional bits
        cv2.fillConvexPoly(image, pts, (shade - 40, shade - 10, shade), lineType=cv2.LINE_AA, shift=4)
    return image, verts


def write_sample(folder: Path, name: str, bfm: BFM, fit, rng, *, aflw: bool):
    """``name.jpg`` + ``name.mat`` in the dataset's format (1-based pixel landmarks)."""
    image, verts = render(bfm, fit, rng)
    lm = verts[bfm.kpt_ind].copy()
    lm[:, :2] += MATLAB_PIXEL_OFFSET
    x0, y0 = lm[:, :2].min(0) - 5
    x1, y1 = lm[:, :2].max(0) + 5
    mat = {
        "Pose_Para": fit["Pose_Para"][None].astype(np.float32),
        "Shape_Para": fit["Shape_Para"][:, None],
        "Exp_Para": fit["Exp_Para"][:, None],
        "Tex_Para": rng.normal(size=(199, 1)),
        "Illum_Para": rng.normal(size=(1, 10)),
        "Color_Para": np.array([[1, 1, 1, 0, 0, 0, 1]], np.float64),
        "roi": np.array([[x0, y0, x1, y1]], np.int16),
    }
    if aflw:
        pt2d = np.full((2, 21), -1.0)
        pt2d[:, ::2] = lm[np.linspace(0, 67, 11).astype(int), :2].T
        mat.update(pt2d=pt2d, pt3d_68=lm.T.astype(np.float32))
    else:
        mat["pt2d"] = lm[:, :2].T
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    scipy.io.savemat(folder / f"{name}.mat", mat)


def _subject(prefix: str, split: str, start: int) -> str:
    """The first ``f'{prefix}_{i}_1'`` (i >= start) that the 300W-LP builder puts in ``split``."""
    i = start
    while split_of(f"{prefix}_{i}_1") != split:
        i += 1
    return f"{prefix}_{i}_1"


def make_300w_lp(out: Path, bfm: BFM, rng):
    train, val, helen = _subject("AFW", "train", 134212), _subject("AFW", "validation", 134212), \
        _subject("HELEN", "train", 1269874180)
    root = out / "300W_LP"
    for name in (f"{train}_0", f"{train}_1", f"{val}_0"):
        fit = random_fit(rng)
        write_sample(root / "AFW", name, bfm, fit, rng, aflw=False)
        if name.endswith("_0"):
            write_sample(root / "AFW_Flip", name, bfm, mirrored(fit), rng, aflw=False)
    write_sample(root / "HELEN", f"{helen}_0", bfm, random_fit(rng), rng, aflw=False)
    write_model(out, bfm)


def make_aflw2000(out: Path, bfm: BFM, rng):
    for number, yaw in ((2, -0.3), (4, 0.7), (6, 1.2)):    # one per yaw bucket (0-30, 30-60, 60-90 degrees)
        write_sample(out / "AFLW2000", f"image{number:05d}", bfm, random_fit(rng, yaw=yaw), rng, aflw=True)
    write_model(out, bfm)


SYNTHETIC_README = """\
`prnet_synthetic` downloads nothing and has no manual files: it renders examples from the UV
template (`uv-data`, found via the `assets_dir` builder kwarg or `PRNET_ASSETS_DIR`). This folder
only exists because `tfds.testing.DatasetBuilderTestCase` requires a `dummy_data/` directory.
"""


def main():
    bfm = stand_in_bfm()
    for name, make in (("prnet_300w_lp", make_300w_lp), ("prnet_aflw2000_3d", make_aflw2000)):
        out = HERE / name / "dummy_data"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        make(out, bfm, np.random.default_rng(sum(map(ord, name))))
    out = HERE / "prnet_synthetic" / "dummy_data"
    out.mkdir(exist_ok=True)
    (out / "README.md").write_text(SYNTHETIC_README)
    for folder in sorted(HERE.glob("*/dummy_data")):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder.relative_to(HERE.parent)}: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
