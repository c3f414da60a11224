"""Metric code checked against hand computations on the real 3DDFA AFLW2000-3D ground truth."""

import math

import numpy as np
import pytest
import scipy.io as sio
from scipy.spatial.transform import Rotation

from prnet.errors import MetricInputError
from prnet.evaluation import metrics


@pytest.fixture(scope="module")
def gt3ddfa(shared_dir):
    d = shared_dir / "reference" / "aflw2000-3d-3ddfa"
    if not (d / "AFLW2000-3D.pts68.npy").is_file():
        pytest.skip(f"3DDFA ground truth not found in {d}")
    return {
        "pts68": np.load(d / "AFLW2000-3D.pts68.npy"),                   # (2000, 3, 68)
        "reannotated": np.load(d / "AFLW2000-3D-Reannotated.pts68.npy"),  # (2000, 2, 68)
        "yaw": np.load(d / "AFLW2000-3D.pose.npy").reshape(2000, -1)[:, 0],
        "yaw_labels": np.load(d / "AFLW2000-3D-new.pose.npy").reshape(2000, -1)[:, 0],
    }


def _nme_by_hand(pred_3x68, gt_3x68, dims):
    """Independent per-image loop in the 3DDFA (3, 68) layout, plain Python arithmetic."""
    xs, ys = gt_3x68[0], gt_3x68[1]
    norm = math.sqrt((max(xs) - min(xs)) * (max(ys) - min(ys)))
    p, g = [list(map(float, r)) for r in pred_3x68[:dims]], [list(map(float, r)) for r in gt_3x68[:dims]]
    if dims == 3:
        p[2] = [z - min(p[2]) for z in p[2]]
        g[2] = [z - min(g[2]) for z in g[2]]
    dist = [math.sqrt(sum((p[c][i] - g[c][i]) ** 2 for c in range(dims))) for i in range(68)]
    return sum(dist) / 68 / norm


def test_ground_truth_against_itself_is_zero(gt3ddfa):
    gt = gt3ddfa["pts68"].transpose(0, 2, 1)
    assert metrics.landmark_nme(gt, gt, dims=2).shape == (2000,)
    np.testing.assert_array_equal(metrics.landmark_nme(gt, gt, dims=2), 0)
    np.testing.assert_array_equal(metrics.landmark_nme(gt, gt, dims=3), 0)


def test_translation_gives_known_nme(gt3ddfa):
    gt = gt3ddfa["pts68"].transpose(0, 2, 1).astype(np.float64)
    dx, dy = 3.0, -4.0  # 5 px per point
    nme = metrics.landmark_nme(gt + [dx, dy, 0.0], gt, dims=2)
    xs, ys = gt[..., 0], gt[..., 1]
    expected = 5.0 / np.sqrt((xs.max(1) - xs.min(1)) * (ys.max(1) - ys.min(1)))
    np.testing.assert_allclose(nme, expected, rtol=1e-12)
    # a diagonal shift of d px is d*sqrt(2) per point
    d = 2.5
    np.testing.assert_allclose(metrics.landmark_nme(gt + [d, d, 0], gt, dims=2), d * np.sqrt(2) * expected / 5,
                               rtol=1e-12)


def test_matches_independent_loop_on_perturbed_points(gt3ddfa):
    rng = np.random.default_rng(7)
    rows = rng.choice(2000, 12, replace=False)
    gt = gt3ddfa["pts68"][rows].astype(np.float64)          # (12, 3, 68)
    pred = gt + rng.normal(scale=[[3.0], [3.0], [6.0]], size=gt.shape) + np.array([[0], [0], [40.0]])
    for dims in (2, 3):
        ours = metrics.landmark_nme(pred.transpose(0, 2, 1), gt.transpose(0, 2, 1), dims=dims)
        hand = [_nme_by_hand(p, g, dims) for p, g in zip(pred, gt)]
        np.testing.assert_allclose(ours, hand, rtol=1e-10)


def test_3d_nme_ignores_z_origin_but_not_z_shape(gt3ddfa):
    gt = gt3ddfa["pts68"][:50].transpose(0, 2, 1).astype(np.float64)
    np.testing.assert_allclose(metrics.landmark_nme(gt + [0, 0, -123.4], gt, dims=3), 0, atol=1e-12)
    # xy shift only: 3D NME equals the 2D one
    np.testing.assert_allclose(metrics.landmark_nme(gt + [1, 2, 77], gt, dims=3),
                               metrics.landmark_nme(gt + [1, 2, 77], gt, dims=2), rtol=1e-12)
    # doubling the depth relief: per-point error is (z - min z), the depth above the lowest point
    pred = gt.copy()
    pred[..., 2] = 2 * gt[..., 2] + 5
    zrel = gt[..., 2] - gt[..., 2].min(axis=1, keepdims=True)
    expected = zrel.mean(axis=1) / metrics.bbox_size(gt)
    np.testing.assert_allclose(metrics.landmark_nme(pred, gt, dims=3), expected, rtol=1e-12)
    assert np.all(expected > 0)


def test_yaw_bucket_boundaries_and_both_published_splits(gt3ddfa):
    np.testing.assert_array_equal(metrics.yaw_bucket([0, 30, 30.0001, -45, 60, -60.5, 95, -351]),
                                  [0, 0, 1, 1, 1, 2, 2, 2])
    # The two published AFLW2000-3D splits by |yaw| (3DDFA's two pose files): the fitted pose's yaw
    # (AFLW2000-3D.pose.npy, 3DDFA's "current version") gives 1312 / 383 / 305; the AFLW labels'
    # yaw (AFLW2000-3D-new.pose.npy, the split 3DDFA's benchmark code calls "same as paper") 1306 / 462 / 232.
    for key, expected in (("yaw", [1312, 383, 305]), ("yaw_labels", [1306, 462, 232])):
        counts = np.bincount(metrics.yaw_bucket(gt3ddfa[key]), minlength=3)
        assert counts.tolist() == expected, key
        summary = metrics.bucket_summary(np.zeros(2000), gt3ddfa[key])
        assert list(summary["counts"].values()) == expected, key
    # two different lists of the same faces: most images agree on the bucket, many do not
    same = metrics.yaw_bucket(gt3ddfa["yaw"]) == metrics.yaw_bucket(gt3ddfa["yaw_labels"])
    assert 0.5 < same.mean() < 1.0


def test_bucket_means_by_hand():
    errors = [0.01, 0.03, 0.02, 0.10, 0.05, 0.07]
    yaws = [10, -29, 45, 80, -31, 61]
    s = metrics.bucket_summary(errors, yaws)
    assert s["buckets"]["0-30"] == pytest.approx(0.02)
    assert s["buckets"]["30-60"] == pytest.approx(0.035)
    assert s["buckets"]["60-90"] == pytest.approx(0.085)
    assert s["mean_of_buckets"] == pytest.approx((0.02 + 0.035 + 0.085) / 3)
    assert s["mean"] == pytest.approx(0.28 / 6)
    assert s["count"] == 6
    empty = metrics.bucket_summary([0.02, 0.04], [5, 10])
    assert empty["buckets"]["60-90"] is None and empty["mean_of_buckets"] == pytest.approx(0.03)


def test_mean_of_bucket_means_on_real_subset(gt3ddfa):
    rows = np.arange(0, 2000, 37)
    gt = gt3ddfa["pts68"][rows].transpose(0, 2, 1)
    pred = gt + np.linspace(0.5, 6, len(rows))[:, None, None] * [1, 0, 0]
    nme = metrics.landmark_nme(pred, gt)
    yaw = np.abs(gt3ddfa["yaw"][rows])
    means = [nme[yaw <= 30].mean(), nme[(yaw > 30) & (yaw <= 60)].mean(), nme[yaw > 60].mean()]
    s = metrics.bucket_summary(nme, gt3ddfa["yaw"][rows])
    assert s["mean_of_buckets"] == pytest.approx(sum(means) / 3, rel=1e-12)
    assert s["mean"] == pytest.approx(nme.mean(), rel=1e-12)


def test_sample_mats_are_rows_of_3ddfa_arrays(gt3ddfa, samples_dir):
    mats = sorted((samples_dir / "aflw2000-3d").glob("*.mat"))
    assert len(mats) == 8
    pts = np.stack([sio.loadmat(m)["pt3d_68"] for m in mats])
    rows = metrics.match_rows(pts.transpose(0, 2, 1), gt3ddfa["pts68"].transpose(0, 2, 1))
    np.testing.assert_array_equal(gt3ddfa["pts68"][rows], pts)
    assert np.all(np.diff(rows) > 0)  # file-name order is kept
    for m, row in zip(mats, rows):
        yaw = np.degrees(sio.loadmat(m)["Pose_Para"][0, 1])
        assert yaw == pytest.approx(gt3ddfa["yaw"][row], abs=1e-3)
    with pytest.raises(MetricInputError, match="matches no reference row"):
        metrics.match_rows(pts[:1].transpose(0, 2, 1) + 1.0, gt3ddfa["pts68"].transpose(0, 2, 1))


def test_reannotated_landmarks_are_close_to_original(gt3ddfa):
    orig = gt3ddfa["pts68"].transpose(0, 2, 1)[..., :2]
    re = gt3ddfa["reannotated"].transpose(0, 2, 1)
    nme = metrics.landmark_nme(orig, re)
    # the same faces, re-labelled by hand: a few % apart on average; all but a couple changed
    assert 0.005 < np.median(nme) < 0.06
    assert np.count_nonzero(nme == 0) < 10


def test_dense_and_reconstruction_nme():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 100, size=(2, 500, 3))
    rot = Rotation.from_euler("xyz", [10, 25, -5], degrees=True).as_matrix()
    pred = gt @ rot.T + [4, -2, 9]
    # a rigid motion is removed by the alignment but not by the dense NME
    np.testing.assert_allclose(metrics.reconstruction_nme(pred, gt), 0, atol=1e-12)
    assert np.all(metrics.dense_nme(pred, gt, dims=3) > 0.01)
    # dense NME by hand: normalised by the gt face's x,y box
    shifted = gt + [0, 3, 0]
    box = [np.sqrt(np.ptp(g[:, 0]) * np.ptp(g[:, 1])) for g in gt]
    np.testing.assert_allclose(metrics.dense_nme(shifted, gt, dims=2), 3 / np.array(box), rtol=1e-12)
    np.testing.assert_allclose(metrics.dense_nme(shifted, gt, dims=2, normalizer=10.0), 0.3, rtol=1e-12)
    # scaling is an error unless scale=True
    assert np.all(metrics.reconstruction_nme(1.2 * pred, gt) > 1e-3)
    np.testing.assert_allclose(metrics.reconstruction_nme(1.2 * pred, gt, scale=True), 0, atol=1e-12)
    # noise that rigid alignment cannot remove: error is at least the residual of the best fit
    noisy = gt + rng.normal(scale=1.0, size=gt.shape)
    rec = metrics.reconstruction_nme(noisy, gt)
    assert np.all(rec > 0) and np.all(rec <= metrics.dense_nme(noisy, gt, dims=3) + 1e-12)


def test_ced_curve():
    x, y = metrics.ced_curve([0.01, 0.02, 0.02, 0.05], thresholds=[0, 0.01, 0.02, 0.04, 0.05, 1])
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 0.75, 1, 1])
    x, y = metrics.ced_curve([0.3])
    assert x[0] == 0 and x[-1] == pytest.approx(0.3) and y[-1] == 1 and np.all(np.diff(y) >= 0)


def test_bad_input_is_a_clear_error():
    with pytest.raises(MetricInputError, match="same faces"):
        metrics.landmark_nme(np.zeros((2, 68, 2)), np.zeros((3, 68, 2)))
    with pytest.raises(MetricInputError, match="k >= 3"):
        metrics.landmark_nme(np.zeros((2, 68, 2)), np.zeros((2, 68, 2)), dims=3)
    with pytest.raises(MetricInputError, match="dims"):
        metrics.landmark_nme(np.zeros((68, 2)), np.zeros((68, 2)), dims=4)
    with pytest.raises(MetricInputError, match="positive"):
        metrics.landmark_nme(np.ones((1, 68, 2)), np.ones((1, 68, 2)))
    with pytest.raises(MetricInputError, match="yaw"):
        metrics.bucket_summary([0.1, 0.2], [0.0])
