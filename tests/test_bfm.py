"""prnet.data.bfm: face3d BFM.mat loading and the 300W-LP pose convention, pinned on real fits.

The real BFM bases are not available: the dense model here is a fixture made from the REAL mean
face and the REAL 68-landmark bases (spread to all vertices); conventions are checked with the
real 68-point model ``bfm_kpt68_bases.npz`` against the real annotation files.
"""

import cv2
import numpy as np
import pytest
import scipy.io

from prnet.data.annotations import list_samples, load_fit
from prnet.data.bfm import BFM, landmark_interpolated_model, load_bfm, load_uv_coords, transform, write_bfm_mat
from prnet.errors import DatasetError


@pytest.fixture(scope="module")
def bfm_ref(shared_dir):
    d = shared_dir / "reference" / "bfm-mean"
    return d / "bfm_mean_53215.npz", d / "bfm_kpt68_bases.npz"


@pytest.fixture(scope="module")
def kpt68(bfm_ref):
    return np.load(bfm_ref[1])


@pytest.fixture(scope="module")
def fixture_files(bfm_ref, shared_dir, tmp_path_factory):
    """A BFM.mat-format file (real mean, real landmark bases spread) + the real BFM_UV file."""
    model = landmark_interpolated_model(*bfm_ref)
    path = tmp_path_factory.mktemp("bfm") / "BFM.mat"
    write_bfm_mat(path, model, exp_mean=np.load(bfm_ref[0])["exp_mean"])
    return model, path, shared_dir / "reference" / "bfm-uv" / "BFM_UV_53215.mat"


def kpt68_vertices(kpt68, fit):
    v = kpt68["mean"] + kpt68["shape_basis"] @ fit.shape_para[:40] + kpt68["exp_basis"] @ fit.exp_para[:10]
    return v.reshape(68, 3)


def test_transform_reproduces_aflw_pt3d_68(samples_dir, kpt68):
    """The pinned conventions: x = p_x - 1, y = H - p_y, z = p_z (0-based pixels) reproduce the
    ground truth to ~1 px with the 40+10-basis landmark model; other y offsets are biased."""
    dys, errs = [], []
    for image_path, mat in list_samples(samples_dir / "aflw2000-3d"):
        fit = load_fit(mat)
        h = cv2.imread(str(image_path)).shape[0]
        p = transform(kpt68_vertices(kpt68, fit), fit.pose_para, h)
        d = p - fit.pt3d_68
        errs.append(np.linalg.norm(d[:, :2], axis=1).mean())
        dys.append(d[:, 1].mean())
        assert errs[-1] < 2.0, image_path
        assert np.abs(d[:, 2]).mean() < 1.5       # z: same origin and scale as pt3d_68
        assert abs(d[:, 0].mean()) < 0.5
    assert np.mean(errs) < 1.3
    assert abs(np.mean(dys)) < 0.3               # y = H - 1 - p_y (face3d) would give ~-1, H + 1 - p_y ~+1


def test_transform_explains_300wlp_source_landmarks(samples_dir, kpt68):
    # 300W-LP's pt2d are the source photo's annotations; the *_0 variant is the least rotated one.
    for image_path, mat in list_samples(samples_dir / "300w-lp"):
        if "_Flip" in str(mat) or not mat.stem.endswith("_0"):
            continue
        fit = load_fit(mat)
        p = transform(kpt68_vertices(kpt68, fit), fit.pose_para, cv2.imread(str(image_path)).shape[0])
        d = p[:, :2] - fit.pt2d
        assert np.linalg.norm(d, axis=1).mean() < 10.0
        assert np.all(np.abs(d.mean(axis=0)) < 2.5)


def test_load_bfm_round_trip_and_exp_mean(fixture_files, bfm_ref, kpt68):
    model, path, uv_path = fixture_files
    loaded = load_bfm(path, uv_path)
    ref = np.load(bfm_ref[0])
    assert loaded.n_vertices == 53215
    # expMU is stored separately in the file and folded in at load time.
    raw = scipy.io.loadmat(str(path))["model"][0, 0]
    np.testing.assert_allclose(raw["shapeMU"].reshape(-1, 3), ref["shape_mean"], atol=0.05)
    np.testing.assert_allclose(loaded.mean, ref["shape_mean"] + ref["exp_mean"], atol=0.05)
    np.testing.assert_array_equal(loaded.triangles, ref["triangles"])
    np.testing.assert_array_equal(loaded.kpt_ind, ref["kpt_ind"])
    np.testing.assert_allclose(loaded.uv_coords, ref["uv_coords"], atol=1e-6)
    # At the landmarks the fixture model IS the real 68-point model.
    rng = np.random.default_rng(0)
    sp, ep = rng.normal(0, 3e5, 199), rng.normal(0, 1, 29)
    dense = loaded.vertices(sp, ep)
    sparse = (kpt68["mean"] + kpt68["shape_basis"] @ sp[:40] + kpt68["exp_basis"] @ ep[:10]).reshape(68, 3)
    np.testing.assert_allclose(dense[loaded.kpt_ind], sparse, atol=2.0, rtol=1e-5)
    np.testing.assert_allclose(loaded.vertices(sp, ep, indices=loaded.kpt_ind), dense[loaded.kpt_ind],
                               atol=1.0, rtol=1e-5)


def test_load_bfm_errors(tmp_path, fixture_files):
    model, path, uv_path = fixture_files
    with pytest.raises(DatasetError, match="not found"):
        load_bfm(tmp_path / "BFM.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DatasetError, match="junk.mat"):
        load_bfm(tmp_path / "junk.mat")
    scipy.io.savemat(str(tmp_path / "nostruct.mat"), {"UV": np.zeros((4, 2))})
    with pytest.raises(DatasetError, match="'model'"):
        load_bfm(tmp_path / "nostruct.mat")
    small = BFM(mean=np.zeros((4, 3), np.float32), shape_basis=np.zeros((12, 2), np.float32),
                exp_basis=np.zeros((12, 1), np.float32), triangles=np.array([[0, 1, 2], [1, 2, 3]]),
                kpt_ind=np.zeros(68, np.int64))
    write_bfm_mat(tmp_path / "small.mat", small)
    assert load_bfm(tmp_path / "small.mat").n_vertices == 4
    raw = scipy.io.loadmat(str(tmp_path / "small.mat"))["model"][0, 0]
    partial = {k: raw[k] for k in raw.dtype.names if k != "shapePC"}
    scipy.io.savemat(str(tmp_path / "partial.mat"), {"model": partial})
    with pytest.raises(DatasetError, match="shapePC"):
        load_bfm(tmp_path / "partial.mat")
    bad_tri = {k: raw[k] for k in raw.dtype.names}
    bad_tri["tri"] = bad_tri["tri"] - 1          # 0-based by mistake -> index 0 present
    scipy.io.savemat(str(tmp_path / "badtri.mat"), {"model": bad_tri})
    with pytest.raises(DatasetError, match="1-based"):
        load_bfm(tmp_path / "badtri.mat")
    with pytest.raises(DatasetError, match="53215|53,215|UV"):
        load_bfm(tmp_path / "small.mat", uv_path)   # 53215 UVs for a 4-vertex model
    assert load_uv_coords(uv_path).shape == (53215, 2)
    with pytest.raises(DatasetError, match="7 values"):
        transform(np.zeros((3, 3)), np.zeros(6), 100)
