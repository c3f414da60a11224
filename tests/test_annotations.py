"""prnet.annotations on the real 300W-LP / AFLW2000-3D sample files."""

import shutil

import numpy as np
import pytest

from prnet.annotations import MATLAB_PIXEL_OFFSET, list_samples, load_fit, pose_degrees
from prnet.errors import DatasetError


@pytest.fixture(scope="module")
def aflw(samples_dir):
    return list_samples(samples_dir / "aflw2000-3d")


@pytest.fixture(scope="module")
def lp(samples_dir):
    return list_samples(samples_dir / "300w-lp")


def test_list_samples_pairs_sorted(aflw, lp):
    assert len(aflw) == 8 and len(lp) == 8
    for pairs in (aflw, lp):
        assert pairs == sorted(pairs)
        for image, mat in pairs:
            assert image.suffix == ".jpg" and mat.suffix == ".mat" and image.stem == mat.stem


def test_aflw_fit_fields_and_reference_ground_truth(aflw, shared_dir):
    ref_dir = shared_dir / "reference" / "aflw2000-3d-3ddfa"
    pts68 = np.load(ref_dir / "AFLW2000-3D.pts68.npy")        # (2000, 3, 68), as stored in the .mat
    yaw = np.load(ref_dir / "AFLW2000-3D.pose.npy").reshape(len(pts68), -1)[:, 0]
    for _, mat in aflw:
        fit = load_fit(mat)
        assert fit.pose_para.shape == (7,) and fit.shape_para.shape == (199,) and fit.exp_para.shape == (29,)
        assert fit.pt3d_68.shape == (68, 3) and fit.pt2d is None
        assert fit.pt2d_other.shape == (21, 2)  # AFLW's own 21 points
        stored = fit.pt3d_68.copy()
        stored[:, :2] += MATLAB_PIXEL_OFFSET     # back to the file's 1-based values
        i = int(np.argmin(np.abs(pts68 - stored.T).sum(axis=(1, 2))))
        np.testing.assert_allclose(pts68[i], stored.T, atol=1e-4)
        # Pose_Para is (pitch, yaw, roll); 3DDFA's reference yaw is in degrees.
        assert pose_degrees(fit)[0] == pytest.approx(float(yaw[i]), abs=1e-3)


def test_uint8_exp_para_is_read_as_float(samples_dir):
    fit = load_fit(samples_dir / "aflw2000-3d" / "image00516.mat")  # stored as uint8 zeros
    assert fit.exp_para.dtype == np.float64 and np.all(fit.exp_para == 0)


def test_300wlp_pt2d_is_source_annotation_and_flip_mirrors_one_based(lp):
    fits = {(m.parent.name, m.stem): load_fit(m) for _, m in lp}
    import cv2

    for (folder, stem), fit in fits.items():
        assert fit.pt2d.shape == (68, 2) and fit.pt3d_68 is None and fit.roi.shape == (4,)
        if folder.endswith("_Flip"):
            continue
        # All pose variants of one source photo carry the same pt2d.
        other = fits[(folder, stem[:-1] + ("1" if stem.endswith("0") else "0"))]
        np.testing.assert_array_equal(fit.pt2d, other.pt2d)
        # _Flip mirrors the image; with 0-based pixels the mirror is x' = (W - 1) - x exactly.
        width = cv2.imread(str(lp[0][0])).shape[1]
        flipped = fits[(folder + "_Flip", stem)]
        np.testing.assert_allclose(flipped.pt2d[:, 0], width - 1 - fit.pt2d[:, 0], atol=1e-6)
        np.testing.assert_allclose(flipped.pt2d[:, 1], fit.pt2d[:, 1], atol=1e-6)
        # Flipping negates yaw and roll (independent refit: approximately).
        y, p, r = pose_degrees(fit)
        yf, pf, rf = pose_degrees(flipped)
        assert abs(y + yf) < 1.5 and abs(r + rf) < 1.5 and abs(p - pf) < 1.5


def test_pose_degrees_order():
    from prnet.annotations import Fit

    fit = Fit(pose_para=np.array([0.1, 0.2, 0.3, 0, 0, 0, 1.0]), shape_para=np.zeros(199),
              exp_para=np.zeros(29), pt2d=None, pt3d_68=None, roi=None)
    np.testing.assert_allclose(pose_degrees(fit), np.degrees([0.2, 0.1, 0.3]))


def test_corrupt_partial_and_missing_files(tmp_path, samples_dir):
    src = samples_dir / "aflw2000-3d" / "image00050.mat"
    bad = tmp_path / "bad.mat"
    bad.write_bytes(src.read_bytes()[:300])
    with pytest.raises(DatasetError, match="bad.mat"):
        load_fit(bad)
    with pytest.raises(DatasetError, match="not found"):
        load_fit(tmp_path / "nope.mat")
    import scipy.io

    m = {k: v for k, v in scipy.io.loadmat(str(src)).items() if not k.startswith("__")}
    del m["Shape_Para"]
    scipy.io.savemat(str(tmp_path / "partial.mat"), m)
    with pytest.raises(DatasetError, match="Shape_Para"):
        load_fit(tmp_path / "partial.mat")
    m = {k: v for k, v in scipy.io.loadmat(str(src)).items() if not k.startswith("__")}
    m["Pose_Para"] = np.zeros((1, 5))
    scipy.io.savemat(str(tmp_path / "short.mat"), m)
    with pytest.raises(DatasetError, match="Pose_Para"):
        load_fit(tmp_path / "short.mat")


def test_list_samples_ignores_orphans_and_rejects_empty(tmp_path, samples_dir):
    with pytest.raises(DatasetError):
        list_samples(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no image"):
        list_samples(tmp_path)
    shutil.copy(samples_dir / "aflw2000-3d" / "image00050.jpg", tmp_path / "a.jpg")
    shutil.copy(samples_dir / "aflw2000-3d" / "image00050.mat", tmp_path / "a.mat")
    shutil.copy(samples_dir / "aflw2000-3d" / "image00251.jpg", tmp_path / "orphan.jpg")
    assert list_samples(tmp_path) == [(tmp_path / "a.jpg", tmp_path / "a.mat")]
