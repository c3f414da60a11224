"""The prnet_300w_lp and prnet_aflw2000_3d TFDS builders, built from the real samples in shared/.

manual_dir is a temp tree of symlinks to the shared sample folders, plus a BFM.mat-format fixture
(the REAL mean face + REAL 68-landmark bases spread to all vertices -- not the real BFM) and the
real BFM_UV file. Dense checks are made where the fixture equals the real model: the landmarks.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from prnet.core.uv import landmarks_from_posmap, vertices_from_posmap
from prnet.data import posmap_codec
from prnet.data.annotations import load_fit
from prnet.data.bfm import transform
from prnet.errors import DatasetError

# iBUG-68 left/right mirror permutation.
MIRROR_68 = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40],
                  54:47:-1, 59:54:-1, 64:59:-1, 67:64:-1]


def _link_bfm(manual, bfm_files):
    for name in ("BFM.mat", "BFM_UV.mat"):
        os.symlink(bfm_files / name, manual / name)


def _config(manual):
    return tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False)


def _build(builder_cls, manual, data_dir, **kwargs):
    b = builder_cls(data_dir=str(data_dir), **kwargs)
    b.download_and_prepare(download_config=_config(manual))
    return b


def _examples(builder, split):
    return {ex["source"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


@pytest.fixture(scope="module")
def lp_built(lp_manual_dir, tmp_path_factory):
    from tfds_builders.prnet_300w_lp import Builder

    b = _build(Builder, lp_manual_dir, tmp_path_factory.mktemp("data_lp"), validation_percent=50.0)
    return b, {**_examples(b, "train"), **_examples(b, "validation")}


def test_300wlp_features(lp_built, uv_template):
    b, examples = lp_built
    assert b.skipped == []
    assert len(examples) == 8
    for ex in examples.values():
        assert ex["image"].shape == (256, 256, 3) and ex["image"].dtype == np.uint8
        assert ex["posmap"].shape == (256, 256, 3) and ex["posmap"].dtype == np.float32
        assert ex["landmarks_68"].shape == (68, 3) and ex["landmarks_68"].dtype == np.float32
        assert ex["pose"].shape == (3,) and ex["tform"].shape == (3, 3)
        assert ex["image"].std() > 20                            # a real photo, not blank
        # stored compactly: re-encoding the decoded map gives its stored size, at most 1/4 of float32
        assert len(posmap_codec.encode(ex["posmap"])) <= ex["posmap"].nbytes / 4
        assert vertices_from_posmap(ex["posmap"], uv_template)[:, 2].min() >= -1e-3
        # posmap at uv_kpt_ind <-> landmark vertices of the fit
        lm = landmarks_from_posmap(ex["posmap"], uv_template)
        assert np.linalg.norm(lm - ex["landmarks_68"], axis=1).mean() < 1.0
        # landmarks inside the crop with the 1.5x box margin
        assert ex["landmarks_68"][:, :2].min() > 20 and ex["landmarks_68"][:, :2].max() < 236


def test_300wlp_landmarks_equal_independent_projection(lp_built, samples_dir, shared_dir):
    """landmarks_68 = the real 68-point model (40+10 bases) projected with Pose_Para, then tform."""
    _, examples = lp_built
    k = np.load(shared_dir / "reference" / "bfm-mean" / "bfm_kpt68_bases.npz")
    for source, ex in examples.items():
        fit = load_fit(samples_dir / "300w-lp" / f"{source}.mat")
        v = (k["mean"] + k["shape_basis"] @ fit.shape_para[:40] + k["exp_basis"] @ fit.exp_para[:10]).reshape(68, 3)
        p = transform(v, fit.pose_para, 450)
        t = ex["tform"].astype(np.float64)
        xy = p[:, :2] @ t[:2, :2].T + t[:2, 2]
        np.testing.assert_allclose(ex["landmarks_68"][:, :2], xy, atol=0.05)
        # the crop box is 1.5x the landmarks' box: their extent spans 255 / 1.5 crop px on average
        ext = ex["landmarks_68"][:, :2].max(0) - ex["landmarks_68"][:, :2].min(0)
        assert ext.mean() == pytest.approx(255 / 1.5, rel=0.01)
        np.testing.assert_allclose(ex["pose"], np.degrees(fit.pose_para[[1, 0, 2]]), atol=1e-3)


def test_300wlp_flip_consistency(lp_built, uv_template):
    _, examples = lp_built
    face = uv_template.face_mask > 0
    for source, ex in examples.items():
        if "_Flip" in source:
            continue
        flip = examples[source.replace("/", "_Flip/", 1)]
        # Images: the crop of the mirrored photo is the mirrored crop (boxes from independent refits).
        assert np.abs(flip["image"].astype(float) - ex["image"][:, ::-1]).mean() < 12
        assert np.abs(flip["image"].astype(float) - ex["image"]).mean() > 15
        # Landmarks: x -> 255 - x with left/right landmarks swapped.
        a, f = ex["landmarks_68"], flip["landmarks_68"][MIRROR_68]
        assert np.abs(f[:, 0] - (255 - a[:, 0])).mean() < 2.0
        assert np.abs(f[:, 1] - a[:, 1]).mean() < 2.0
        # Posmaps: the UV layout is left/right symmetric, so the maps mirror in UV as well.
        pa, pf = ex["posmap"], flip["posmap"][:, ::-1]
        assert np.abs(pf[..., 0] - (255 - pa[..., 0]))[face].mean() < 3.0
        assert np.abs(pf[..., 1] - pa[..., 1])[face].mean() < 3.0


def test_300wlp_subject_split(lp_built):
    from tfds_builders.prnet_300w_lp import split_of, subject_id

    b, _ = lp_built
    assert subject_id("AFW_134212_1_0") == "AFW_134212_1"
    assert subject_id("AFW_Flip/AFW_134212_1_3.jpg") == "AFW_134212_1"
    assert subject_id("IBUG_image_003_1_10") == "IBUG_image_003_1"
    splits = {s: set(_examples(b, s)) for s in ("train", "validation")}
    assert not splits["train"] & splits["validation"]
    for split, sources in splits.items():
        for source in sources:
            assert split_of(subject_id(source), 50.0) == split
    subjects = {s: {subject_id(x) for x in v} for s, v in splits.items()}
    assert not subjects["train"] & subjects["validation"]  # no subject in both splits
    # The hash split approaches the requested fraction over many subjects and is stable.
    names = [f"HELEN_{i}_1" for i in range(4000)]
    frac = np.mean([split_of(n, 5.0) == "validation" for n in names])
    assert 0.04 < frac < 0.06
    assert [split_of(n) for n in names[:50]] == [split_of(n) for n in names[:50]]


def test_300wlp_corrupt_sample_skipped_or_strict(samples_dir, bfm_files, tmp_path):
    from tfds_builders.prnet_300w_lp import Builder

    manual = tmp_path / "manual"
    afw = manual / "300W_LP" / "AFW"
    afw.mkdir(parents=True)
    src = samples_dir / "300w-lp" / "AFW"
    for name in ("AFW_134212_1_0.jpg", "AFW_134212_1_0.mat", "AFW_134212_1_1.jpg"):
        os.symlink(src / name, afw / name)
    (afw / "AFW_134212_1_1.mat").write_bytes((src / "AFW_134212_1_1.mat").read_bytes()[:200])  # damaged copy
    shutil.copy(src / "AFW_134212_1_0.jpg", afw / "AFW_999_1_0.jpg")                             # no .mat
    _link_bfm(manual, bfm_files)
    b = _build(Builder, manual, tmp_path / "data", validation_percent=0.0)
    assert b.info.splits["train"].num_examples == 1
    reported = {os.path.basename(p) for p, _ in b.skipped}
    assert reported == {"AFW_134212_1_1.mat", "AFW_999_1_0.jpg"}
    with pytest.raises(Exception, match="AFW_"):
        _build(Builder, manual, tmp_path / "data_strict", validation_percent=0.0, strict=True)


def _kpt68(fit, bases):
    """The fit's 68 landmark vertices from the real 68-point BFM bases (independent of the builder's dense model)."""
    return (bases["mean"] + bases["shape_basis"] @ fit.shape_para[:40]
            + bases["exp_basis"] @ fit.exp_para[:10]).reshape(68, 3)


#: Pose_Para edits of the reliability review (row 10) and the reason each must be skipped for.
IMPLAUSIBLE_EDITS = {
    "face outside the photo": lambda p: p + np.array([0, 0, 0, 1e5, 0, 0, 0]),
    "non-positive scale": lambda p: p * np.array([1, 1, 1, 1, 1, 1, -1]),
    "implausible face size": lambda p: p * np.array([1, 1, 1, 1, 1, 1, 1e4]),
    "upside-down face": lambda p: p + np.array([0, 0, np.pi, 0, 0, 0, 0]),
}


def test_fit_checks_pass_real_fits_and_name_implausible_ones(samples_dir, shared_dir):
    """Every real 300W-LP and AFLW2000-3D sample passes; each edit of the review is named by its reason."""
    import cv2

    from prnet.data.fit_checks import REASONS, fit_problem

    bases = np.load(shared_dir / "reference" / "bfm-mean" / "bfm_kpt68_bases.npz")
    mats = sorted((samples_dir / "300w-lp").rglob("*.mat")) + sorted((samples_dir / "aflw2000-3d").glob("*.mat"))
    assert len(mats) == 16
    for mat in mats:
        fit = load_fit(mat)
        shape = cv2.imread(str(mat.with_suffix(".jpg"))).shape
        assert fit_problem(fit.pose_para, transform(_kpt68(fit, bases), fit.pose_para, shape[0]), shape) is None, mat
        for reason, edit in IMPLAUSIBLE_EDITS.items():
            pose = edit(fit.pose_para)
            problem = fit_problem(pose, transform(_kpt68(fit, bases), pose, shape[0]), shape)
            assert problem is not None and problem[0] == reason, (mat.name, reason, problem)
    assert set(IMPLAUSIBLE_EDITS) == set(REASONS)


class _Kpt68Model:
    """Stand-in for the builder's (BFM, UV rasteriser): the real 68-point BFM bases as the whole mesh
    (kpt_ind = 0..67) and a rasteriser that returns an empty map, so that ``batch_examples`` runs in
    milliseconds (the dense path is ``lp_built``'s)."""

    def __init__(self, bases):
        self.bases, self.kpt_ind = bases, np.arange(68)

    def vertices_batch(self, shape_para, exp_para):
        return np.stack([_kpt68(type("Fit", (), {"shape_para": s, "exp_para": e}), self.bases)
                         for s, e in zip(shape_para, exp_para)])

    @staticmethod
    def rasterize(vertices):
        return np.zeros((256, 256, 3), np.float32)


def test_300wlp_implausible_fits_are_skipped_with_counted_reasons(samples_dir, shared_dir, tmp_path):
    """Before: written as normal training pairs (an all-black crop with a normal map; an upside-down map).
    Real samples, the .mat edited as in the review; skipped through the builder's bad-sample handler."""
    import scipy.io

    from prnet.data.fit_checks import reason_of
    from tfds_builders.prnet_300w_lp.prnet_300w_lp_dataset_builder import batch_examples

    src = samples_dir / "300w-lp" / "AFW"
    mat = {k: v for k, v in scipy.io.loadmat(src / "AFW_134212_1_1.mat").items() if not k.startswith("__")}
    batch = [(src / "AFW_134212_1_0.jpg", src / "AFW_134212_1_0.mat")]
    for i, edit in enumerate(IMPLAUSIBLE_EDITS.values()):
        path = tmp_path / f"AFW_9{i}_1_1.mat"
        scipy.io.savemat(path, {**mat, "Pose_Para": edit(mat["Pose_Para"].astype(np.float64))})
        batch.append((src / "AFW_134212_1_1.jpg", path))
    model = _Kpt68Model(np.load(shared_dir / "reference" / "bfm-mean" / "bfm_kpt68_bases.npz"))
    skipped = []
    examples = list(batch_examples(batch, samples_dir / "300w-lp", (model, model.rasterize), False,
                                   lambda path, why: skipped.append((path, why))))
    assert [key for key, _ in examples] == ["AFW/AFW_134212_1_0"]
    assert {p.name: reason_of(why) for p, why in skipped} == \
        {f"AFW_9{i}_1_1.mat": reason for i, reason in enumerate(IMPLAUSIBLE_EDITS)}


def test_300wlp_missing_manual_files(tmp_path, bfm_files, samples_dir):
    from tfds_builders.prnet_300w_lp import Builder

    with pytest.raises(Exception, match="300W"):
        _build(Builder, tmp_path, tmp_path / "data")
    (tmp_path / "300W_LP").mkdir()
    os.symlink(samples_dir / "300w-lp" / "AFW", tmp_path / "300W_LP" / "AFW")
    with pytest.raises(Exception, match="BFM.mat"):
        _build(Builder, tmp_path, tmp_path / "data2")


@pytest.fixture(scope="module")
def aflw_built(samples_dir, bfm_files, tmp_path_factory):
    from tfds_builders.prnet_aflw2000_3d import Builder

    manual = tmp_path_factory.mktemp("manual_aflw")
    os.symlink(samples_dir / "aflw2000-3d", manual / "AFLW2000")
    _link_bfm(manual, bfm_files)
    data = tmp_path_factory.mktemp("data_aflw")
    plain = _build(Builder, manual, data, config="default")
    dense = _build(Builder, manual, data, config="posmap")
    return _examples(plain, "test"), _examples(dense, "test")


def test_aflw_features_and_protocol_crop(aflw_built, samples_dir):
    plain, dense = aflw_built
    assert len(plain) == 8 and set(plain) == set(dense)
    assert "posmap" not in next(iter(plain.values())) and "posmap" in next(iter(dense.values()))
    for source, ex in plain.items():
        fit = load_fit(samples_dir / "aflw2000-3d" / f"{source}.mat")
        assert ex["full_image"].shape == (450, 450, 3) and ex["image"].shape == (256, 256, 3)
        np.testing.assert_allclose(ex["landmarks_68_3d"], fit.pt3d_68, atol=1e-3)
        np.testing.assert_allclose(ex["pose"], np.degrees(fit.pose_para[[1, 0, 2]]), atol=1e-3)
        lo, hi = fit.pt3d_68[:, :2].min(0), fit.pt3d_68[:, :2].max(0)
        size = int(((hi - lo).sum() / 2) * 1.6)
        c = (lo + hi) / 2
        np.testing.assert_allclose(ex["crop_box"], [c[0] - size / 2, c[1] - size / 2, c[0] + size / 2, c[1] + size / 2],
                                   atol=1e-3)
        t = ex["tform"].astype(np.float64)
        np.testing.assert_allclose(ex["landmarks_68"][:, :2], fit.pt3d_68[:, :2] @ t[:2, :2].T + t[:2, 2], atol=1e-2)
        assert ex["landmarks_68"][:, 2].min() == pytest.approx(0.0, abs=1e-4)
        # the crop is the full image warped by tform (JPEG-level differences only)
        import cv2

        want = cv2.warpAffine(ex["full_image"], t[:2], (256, 256), flags=cv2.INTER_LINEAR)
        assert np.abs(want.astype(float) - ex["image"]).mean() < 4


def test_aflw_posmap_agrees_with_ground_truth(aflw_built, uv_template):
    plain, dense = aflw_built
    errs = []
    for source, ex in dense.items():
        lm = landmarks_from_posmap(ex["posmap"], uv_template)
        gt = ex["landmarks_68"]                         # pt3d_68 in crop px, posmap's z shift
        np.testing.assert_allclose(gt[:, :2], plain[source]["landmarks_68"][:, :2], atol=1e-3)
        errs.append(np.linalg.norm(lm[:, :2] - gt[:, :2], axis=1).mean())
        assert errs[-1] < 2.5, source
        assert np.abs(lm[:, 2] - gt[:, 2]).mean() < 2.0, source
    assert np.mean(errs) < 1.8     # measured ~1.2 px: 40+10-basis fixture vs the 199+29-basis fit


def test_show_examples_draws_real_examples(lp_built, aflw_built):
    from prnet.data.visualize import show_examples, show_posmap_example

    _, examples = lp_built
    img = show_posmap_example(next(iter(examples.values())))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > img.shape[0]
    assert img.std() > 10
    grid = show_examples(list(examples.values())[:2])
    assert grid.shape[0] > img.shape[0] * 1.5
    plain, _ = aflw_built
    single = show_posmap_example(next(iter(plain.values())))  # no posmap: image panel only
    assert single.shape[1] < img.shape[1]
    with pytest.raises(DatasetError):
        show_examples([])


def test_aflw_bad_samples_skipped_or_strict(samples_dir, tmp_path):
    from tfds_builders.prnet_aflw2000_3d import Builder

    manual = tmp_path / "AFLW2000"
    manual.mkdir()
    for name in ("image00050.jpg", "image00050.mat"):
        os.symlink(samples_dir / "aflw2000-3d" / name, manual / name)
    # A 300W-LP annotation (no pt3d_68) and an unreadable image, under AFLW names.
    os.symlink(samples_dir / "300w-lp" / "AFW" / "AFW_134212_1_0.mat", manual / "image00002.mat")
    os.symlink(samples_dir / "aflw2000-3d" / "image00251.jpg", manual / "image00002.jpg")
    (manual / "image00004.jpg").write_bytes(b"\xff\xd8 truncated")
    os.symlink(samples_dir / "aflw2000-3d" / "image00251.mat", manual / "image00004.mat")
    b = _build(Builder, tmp_path, tmp_path / "data")
    assert b.info.splits["test"].num_examples == 1
    reasons = dict(b.skipped)
    assert {os.path.basename(p) for p in reasons} == {"image00002.mat", "image00004.jpg"}
    assert "pt3d_68" in reasons[str(manual / "image00002.mat")]
    with pytest.raises(Exception, match="image0000"):
        _build(Builder, tmp_path, tmp_path / "data_strict", strict=True)
    with pytest.raises(Exception, match="BFM.mat"):
        _build(Builder, tmp_path, tmp_path / "data_posmap", config="posmap")
