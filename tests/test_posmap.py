"""prnet.data.posmap: UV rasteriser, crop conventions, and agreement with the real template and fits."""

import cv2
import numpy as np
import pytest

from prnet.core.crop import crop_transform, training_box, warp_crop
from prnet.core.uv import landmarks_from_posmap, vertices_from_posmap
from prnet.data.annotations import load_fit
from prnet.data.bfm import landmark_interpolated_model
from prnet.data.posmap import UVRasterizer, fit_similarity_yflip, make_example, vertices_to_crop
from prnet.errors import DatasetError


@pytest.fixture(scope="module")
def mean_npz(shared_dir):
    return np.load(shared_dir / "reference" / "bfm-mean" / "bfm_mean_53215.npz")


@pytest.fixture(scope="module")
def model(shared_dir):
    d = shared_dir / "reference" / "bfm-mean"
    return landmark_interpolated_model(d / "bfm_mean_53215.npz", d / "bfm_kpt68_bases.npz")


@pytest.fixture(scope="module")
def rasterizer(model):
    return UVRasterizer(model.uv_coords, model.triangles, fill_mask="holes")


def test_rasterizer_interpolates_linear_attributes_exactly():
    # Two triangles covering the unit UV square; a linear attribute must be reproduced exactly.
    uv = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    r = UVRasterizer(uv, tris, size=16)
    col = 15 * uv[:, 0]
    row = 15 * (1 - uv[:, 1])          # v flipped: v = 1 is the top row
    attr = np.stack([2 * col + 1, -3 * row + 0.5 * col, np.full(4, 7.0)], axis=1)
    out = r(attr)
    rr, cc = np.mgrid[0:16, 0:16]
    np.testing.assert_allclose(out[..., 0], 2 * cc + 1, atol=1e-4)
    np.testing.assert_allclose(out[..., 1], -3 * rr + 0.5 * cc, atol=1e-4)
    np.testing.assert_allclose(out[..., 2], 7.0, atol=1e-5)
    assert r.mask.all()
    with pytest.raises(DatasetError):
        r(np.zeros((5, 3)))


def test_rasterizer_fills_enclosed_holes_by_extrapolation():
    # A square ring of 8 triangles around a hole; "holes" fills it with the linear function.
    g = np.array([[x, y] for y in (0, 1, 2, 3) for x in (0, 1, 2, 3)], np.float64) / 3
    tris = []
    for y in range(3):
        for x in range(3):
            if (x, y) == (1, 1):
                continue
            a, b, c, d = 4 * y + x, 4 * y + x + 1, 4 * (y + 1) + x, 4 * (y + 1) + x + 1
            tris += [[a, b, c], [b, d, c]]
    attr = np.stack([31 * g[:, 0], 31 * (1 - g[:, 1])], axis=1)
    plain = UVRasterizer(g, np.array(tris), size=32)
    filled = UVRasterizer(g, np.array(tris), size=32, fill_mask="holes")
    assert not plain.mask[16, 16] and filled.mask.all()
    rr, cc = np.mgrid[0:32, 0:32]
    out = filled(attr)
    np.testing.assert_allclose(out[..., 0], cc, atol=1e-3)
    np.testing.assert_allclose(out[..., 1], rr, atol=1e-3)


def test_mean_face_matches_canonical_vertices(mean_npz, rasterizer, uv_template):
    """The mean face rasterised into UV and sampled at face_ind is canonical_vertices.npy up to
    x' = a x, y' = ty - a y, z' = a z + tz (README: a = 0.0012, ty = 255.016, tz = 18.336)."""
    pos = rasterizer(mean_npz["shape_mean"] + mean_npz["exp_mean"])
    sampled = vertices_from_posmap(pos, uv_template)
    a, offset, res = fit_similarity_yflip(sampled, uv_template.canonical_vertices)
    assert a == pytest.approx(0.0012, rel=2e-3)
    np.testing.assert_allclose(offset, [0.0, 255.016, 18.336], atol=0.1)
    assert res.mean() < 0.6          # measured 0.44 px (nearest-vertex sampling: 0.88 px)
    assert np.median(res) < 0.5 and res.max() < 6.0
    # Without the expression mean the fit is clearly worse: canonical includes it.
    _, _, res_noexp = fit_similarity_yflip(vertices_from_posmap(rasterizer(mean_npz["shape_mean"]), uv_template),
                                           uv_template.canonical_vertices)
    assert res_noexp.mean() > res.mean() + 0.05


def test_uv_kpt_ind_matches_landmark_vertices(model, uv_template, rasterizer):
    uv_px = rasterizer.uv_pixels[model.kpt_ind]
    d = np.abs(uv_px - uv_template.kpt_ind)
    assert d.max() <= 0.5 + 1e-6
    # Rasterising the vertex index field, the landmark pixel's triangle touches its vertex's neighbourhood.
    pos = rasterizer(np.asarray(model.mean))
    lm = landmarks_from_posmap(pos, uv_template)
    assert np.linalg.norm(lm - model.mean[model.kpt_ind], axis=1).mean() < 2500  # < 2.5 mm (BFM units: um)


def test_vertices_to_crop_z_shift():
    pts = np.array([[10.0, 20.0], [110.0, 220.0], [60.0, 100.0]])
    center, size = training_box(pts)
    t = crop_transform(center, size)
    v = np.array([[60.0, 120.0, 10.0], [0.0, 0.0, 30.0]])
    c = vertices_to_crop(v, t)
    np.testing.assert_allclose(c[:, :2], [[127.5, 127.5], [127.5 - 60 * 255 / size, 127.5 - 120 * 255 / size]])
    np.testing.assert_allclose(c[:, 2], [0.0, 20 * 255 / size])
    np.testing.assert_allclose(vertices_to_crop(v, t, z_shift=1.0)[:, 2], v[:, 2] * 255 / size - 1.0)


def test_make_example_degenerate_box_is_a_dataset_error(model, rasterizer):
    """A fit whose landmarks collapse to one point (scale 0) is a bad sample, not a crash."""
    fit = type("Fit", (), {"shape_para": np.zeros(199), "exp_para": np.zeros(29),
                           "pose_para": np.array([0, 0, 0, 50.0, 50.0, 0, 0.0])})()
    with pytest.raises(DatasetError):
        make_example(np.zeros((100, 100, 3), np.uint8), fit, model, rasterizer)


def test_warp_image_is_bilinear_sampling():
    # Smooth image (gradient <= ~12 levels/px): OpenCV's 1/32-px position quantisation stays < 0.5 level.
    yy, xx = np.mgrid[0:120, 0:100]
    image = np.stack([120 + 80 * np.sin(xx / 7.0), 120 + 80 * np.cos(yy / 9.0), (xx + yy)], axis=2).astype(np.uint8)
    t = crop_transform((50.3, 61.7), 90.0)
    crop = warp_crop(image, t, as_float=False)
    assert crop.dtype == np.uint8
    inv = np.linalg.inv(t)
    for (r, c) in [(0, 0), (128, 77), (200, 255), (37, 190)]:
        x, y, _ = inv @ (c, r, 1)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        p = image.astype(np.float64)
        want = ((1 - fx) * (1 - fy) * p[y0, x0] + fx * (1 - fy) * p[y0, x0 + 1]
                + (1 - fx) * fy * p[y0 + 1, x0] + fx * fy * p[y0 + 1, x0 + 1])
        np.testing.assert_allclose(crop[r, c], want, atol=1.01)


def test_real_aflw_sample_posmap_agrees_with_ground_truth(samples_dir, model, rasterizer, uv_template):
    """Posmap at uv_kpt_ind vs the file's own pt3d_68 (independently mapped into the crop)."""
    errors = []
    for name in ("image00050", "image02420", "image00251"):
        fit = load_fit(samples_dir / "aflw2000-3d" / f"{name}.mat")
        image = cv2.cvtColor(cv2.imread(str(samples_dir / "aflw2000-3d" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        ex = make_example(image, fit, model, rasterizer)
        assert ex.image.shape == (256, 256, 3) and ex.image.dtype == np.uint8
        assert ex.posmap.shape == (256, 256, 3) and ex.posmap.dtype == np.float32
        face = vertices_from_posmap(ex.posmap, uv_template)
        assert face[:, 2].min() >= -1e-3        # min z over the mesh is 0
        assert -40 < face[:, :2].min() and face[:, :2].max() < 296  # face ~ inside the 1.5x crop
        s = 255.0 / ex.size
        gt = np.c_[fit.pt3d_68[:, :2] @ ex.tform[:2, :2].T + ex.tform[:2, 2], fit.pt3d_68[:, 2] * s - ex.z_shift]
        lm = landmarks_from_posmap(ex.posmap, uv_template)
        errors.append(np.linalg.norm(lm[:, :2] - gt[:, :2], axis=1).mean())
        assert errors[-1] < 2.5, name
        assert np.abs(lm[:, 2] - gt[:, 2]).mean() < 2.0
        assert np.linalg.norm(lm - ex.landmarks_68, axis=1).mean() < 1.0
    assert np.mean(errors) < 2.0


def test_uint8_training_crops_match_float_inference_crops():
    """Training crops (uint8 kept) and the predictor's float crops differ only by rounding."""
    t = crop_transform((123.4, 98.7), 211.0)
    image = np.random.default_rng(1).integers(0, 256, (240, 260, 3), dtype=np.uint8)
    ours = warp_crop(image, t, as_float=False).astype(np.float64)
    theirs = warp_crop(image, t) * 255.0
    assert np.abs(ours - theirs).max() <= 1.5   # uint8 fixed-point vs float32 interpolation
