"""Tests of the synthetic generator (prnet.data.synthetic) and the ``prnet_synthetic`` TFDS builder."""

import dataclasses

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from scipy.spatial import cKDTree

from prnet.core.transforms import euler_to_rotation
from prnet.core.uv import UV_SIZE, landmarks_from_posmap, uv_triangles, vertices_from_posmap
from prnet.data.synthetic import SyntheticConfig, render_example

FRONTAL_FLAT = dict(yaw_range=(-15.0, 15.0), pitch_range=(-10.0, 10.0), roll_range=(-10.0, 10.0),
                    background="none", occluder_prob=0.0, glasses_prob=0.0, mask_prob=0.0,
                    flat_texture=(255, 0, 0))


def _face_pixels(uv_template):
    mask = np.zeros(UV_SIZE * UV_SIZE, bool)
    mask[uv_template.face_ind] = True
    return mask.reshape(UV_SIZE, UV_SIZE)


def test_deterministic_per_seed(uv_template):
    a = render_example(123, uv_template)
    b = render_example(123, uv_template)
    c = render_example(124, uv_template)
    assert a.keys() == b.keys() == {"image", "posmap", "landmarks_68", "pose"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["posmap"], c["posmap"])
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_shapes_dtypes_and_posmap_layout(uv_template, seed):
    ex = render_example(seed, uv_template)
    assert ex["image"].shape == (256, 256, 3) and ex["image"].dtype == np.uint8
    assert ex["posmap"].shape == (256, 256, 3) and ex["posmap"].dtype == np.float32
    assert ex["landmarks_68"].shape == (68, 3) and ex["landmarks_68"].dtype == np.float32
    assert ex["pose"].shape == (3,) and ex["pose"].dtype == np.float32
    pos = ex["posmap"]
    # Landmarks are the posmap at the landmark UV pixels; the map is 0 off the face.
    np.testing.assert_array_equal(ex["landmarks_68"], landmarks_from_posmap(pos, uv_template))
    assert np.all(pos[~_face_pixels(uv_template)] == 0)
    verts = vertices_from_posmap(pos, uv_template)
    assert verts[:, 2].min() == 0.0 and verts[:, 2].max() > 50
    # Original crop rule: landmark box side x1.5 (x0.9..1.1) = 255 crop pixels, centre jitter 10%.
    lm = ex["landmarks_68"][:, :2]
    side = np.ptp(lm, axis=0).mean()
    assert 255 / (1.5 * 1.1) - 1e-3 <= side <= 255 / (1.5 * 0.9) + 1e-3
    centre = (lm.min(0) + lm.max(0)) / 2
    assert np.all(np.abs(centre - 127.5) <= 0.1 * side + 1e-3)
    yaw, pitch, roll = ex["pose"]
    assert -90 <= yaw <= 90 and -30 <= pitch <= 30 and -30 <= roll <= 30


def test_config_ranges_are_respected_and_validated(uv_template):
    cfg = SyntheticConfig(yaw_range=(40.0, 50.0), pitch_range=(0.0, 0.0), roll_range=(-5.0, -5.0))
    poses = np.array([render_example(s, uv_template, cfg)["pose"] for s in range(3)])
    assert np.all((poses[:, 0] >= 40) & (poses[:, 0] <= 50))
    np.testing.assert_allclose(poses[:, 1:], [[0, -5]] * 3)
    with pytest.raises(ValueError, match="yaw_range"):
        SyntheticConfig(yaw_range=(10.0, -10.0))
    with pytest.raises(ValueError, match="background"):
        SyntheticConfig(background="photos")
    with pytest.raises(ValueError, match="glasses_prob"):
        SyntheticConfig(glasses_prob=1.5)
    with pytest.raises(ValueError, match="flat_texture"):
        SyntheticConfig(flat_texture=(255, 0))


def rotation_matrix(yaw, pitch, roll):
    """The generator's y-up head rotation for a pose label (degrees, yaw-pitch-roll order)."""
    return euler_to_rotation(*np.radians([pitch, yaw, roll]))


def _kabsch(src, dst):
    """Rotation R minimising |R @ (src - mean) * s - (dst - mean)| (independent of the generator)."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1, 1, d]) @ vt


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_pose_label_matches_rendered_geometry(uv_template, seed):
    """Without deformation, the crop-space mesh is a similarity of the canonical mesh whose
    rotation (in the y-up model frame) is ``rotation_matrix(*pose)``."""
    ex = render_example(seed, uv_template, SyntheticConfig(deform=False))
    flip = np.array([1.0, -1.0, 1.0])
    src = uv_template.canonical_vertices.astype(np.float64) * flip
    dst = vertices_from_posmap(ex["posmap"], uv_template).astype(np.float64) * flip
    np.testing.assert_allclose(_kabsch(src, dst), rotation_matrix(*ex["pose"]), atol=1e-4)


def _similarity_residual(src, dst):
    """Mean distance after the best similarity (Umeyama) mapping src onto dst."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    r = _kabsch(a, b)
    s = np.sum(b * (a @ r.T)) / np.sum(a * a)
    return np.linalg.norm(s * a @ r.T - b, axis=1).mean()


def test_deformation_is_smooth_and_non_rigid(uv_template):
    src = uv_template.canonical_vertices.astype(np.float64)
    rigid = vertices_from_posmap(render_example(8, uv_template, SyntheticConfig(deform=False))["posmap"], uv_template)
    assert _similarity_residual(src, rigid.astype(np.float64)) < 1e-3
    bent = vertices_from_posmap(render_example(8, uv_template)["posmap"], uv_template).astype(np.float64)
    assert _similarity_residual(src, bent) > 1.0
    # Smooth: neighbouring UV pixels stay neighbours (no tearing): edge lengths change little.
    tris = np.asarray(uv_triangles(uv_template))
    edge = lambda v: np.linalg.norm(v[tris[:, 0]] - v[tris[:, 1]], axis=1)  # noqa: E731
    base = edge(rigid.astype(np.float64))
    ratio = edge(bent)[base > 0.5] / base[base > 0.5]
    ratio /= np.median(ratio)  # the two crops differ in scale
    assert 0.4 < ratio.min() and ratio.max() < 1.6, (ratio.min(), ratio.max())


def test_positive_yaw_turns_nose_to_image_left(uv_template):
    cfg = SyntheticConfig(pitch_range=(0.0, 0.0), roll_range=(0.0, 0.0), deform=False)
    for yaw_range, sign in [((40.0, 60.0), -1), ((-60.0, -40.0), 1)]:
        lm = render_example(9, uv_template, dataclasses.replace(cfg, yaw_range=yaw_range))["landmarks_68"]
        assert np.sign(lm[30, 0] - lm[:, 0].mean()) == sign


def test_rotation_convention_reproduces_real_aflw2000_landmarks(shared_dir, samples_dir):
    """Pin the pose convention to real data: BFM 68-landmark model + a sample's Pose_Para."""
    bases = np.load(shared_dir / "reference" / "bfm-mean" / "bfm_kpt68_bases.npz")
    for mat_path in sorted((samples_dir / "aflw2000-3d").glob("*.mat"))[:4]:
        m = scipy.io.loadmat(mat_path)
        height = cv2.imread(str(mat_path.with_suffix(".jpg"))).shape[0]
        model = (bases["mean"] + bases["shape_basis"] @ m["Shape_Para"][:40, 0]
                 + bases["exp_basis"] @ m["Exp_Para"][:10, 0]).reshape(68, 3)
        pitch, yaw, roll, tx, ty, tz, scale = m["Pose_Para"][0]
        world = scale * model @ rotation_matrix(*np.degrees([yaw, pitch, roll])).T + [tx, ty, tz]
        xy = np.stack([world[:, 0], height + 1 - world[:, 1]], axis=1)
        err = np.linalg.norm(xy - m["pt3d_68"][:2].T, axis=1).mean()
        assert err < 2.0, f"{mat_path.name}: {err:.2f} px"


@pytest.mark.parametrize("seed", [11, 12])
def test_rendered_face_is_where_the_posmap_says(uv_template, seed):
    """Flat red face on black: visible vertices land on red pixels and red pixels lie on the mesh."""
    ex = render_example(seed, uv_template, SyntheticConfig(**FRONTAL_FLAT))
    red = np.all(ex["image"] == [255, 0, 0], axis=-1)
    other = np.any(ex["image"] != 0, axis=-1) & ~red
    assert not other.any()  # no blur, noise or occluder in this variant
    verts = vertices_from_posmap(ex["posmap"], uv_template)
    # Every vertex projects onto the face or right beside its outline (silhouette vertices round
    # to a pixel centre just outside; back-facing slivers are culled), and almost all land on
    # face pixels themselves.
    px = np.round(verts[:, :2]).astype(int)
    ok = (px >= 0).all(1) & (px <= 255).all(1)
    assert ok.mean() > 0.9
    for k, frac in ((3, 0.999), (5, 1.0)):  # within 1 px (almost all), within 2 px (all)
        near = cv2.dilate(red.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        assert near[px[ok, 1], px[ok, 0]].mean() >= frac
    assert red[px[ok, 1], px[ok, 0]].mean() > 0.95
    # Every red pixel lies on the projected mesh: close to some vertex (vertex spacing ~1-2 px).
    ry, rx = np.nonzero(red)
    dist, _ = cKDTree(verts[:, :2]).query(np.stack([rx, ry], 1))
    assert dist.max() < 3.0 and np.percentile(dist, 99) < 1.5 and np.median(dist) < 0.7
    assert red.sum() > 0.25 * 256 * 256


def test_texture_orientation_eyes_dark_lips_red(uv_template):
    """Real texture, frontal, no lighting/clutter: the texture is not mirrored or flipped."""
    cfg = SyntheticConfig(yaw_range=(0.0, 0.0), pitch_range=(0.0, 0.0), roll_range=(0.0, 0.0), deform=False,
                          lighting=False, background="none", occluder_prob=0.0, noise_std=0.0, blur_prob=0.0,
                          glasses_prob=0.0, mask_prob=0.0, texture_noise=0.0)
    ex = render_example(1, uv_template, cfg)
    img, lm = ex["image"].astype(float), ex["landmarks_68"]

    def at(p):
        x, y = np.round(p[:2]).astype(int)
        return img[y, x]

    assert lm[36, 0] < lm[45, 0]  # subject's right eye at image left (not mirrored)
    assert lm[19, 1] < lm[30, 1] < lm[8, 1]  # brows above nose above chin (upright)
    assert lm[30, 2] > lm[[0, 8, 16], 2].max() + 20  # z toward the camera: nose tip nearest
    cheek = at((lm[2] + lm[31]) / 2)
    for eye in ([37, 38, 40, 41], [43, 44, 46, 47]):
        assert at(lm[eye].mean(0)).sum() < 0.5 * cheek.sum()
    lip = at(lm[[51, 57]].mean(0))
    assert lip[0] - lip[1] > cheek[0] - cheek[1] + 20  # lips redder than skin


def test_occluders_do_not_change_the_posmap(uv_template):
    frontal = dict(yaw_range=(-30.0, 30.0))  # accessories are drawn for |yaw| < 60 only
    clean = render_example(21, uv_template, SyntheticConfig(**frontal, occluder_prob=0.0, glasses_prob=0.0,
                                                            mask_prob=0.0))
    occluded = render_example(21, uv_template, SyntheticConfig(**frontal, occluder_prob=1.0, max_occluders=3,
                                                               glasses_prob=1.0, mask_prob=1.0))
    for key in ("posmap", "landmarks_68", "pose"):
        np.testing.assert_array_equal(clean[key], occluded[key])
    assert not np.array_equal(clean["image"], occluded["image"])


def test_background_variants(uv_template):
    flat = render_example(3, uv_template, SyntheticConfig(background="flat", noise_std=0.0, blur_prob=0.0,
                                                          occluder_prob=0.0, head_prob=0.0))["image"]
    assert np.all(flat[0, 0] == flat[0, 255]) and np.all(flat[255, 0] == flat[0, 0])
    clutter = render_example(3, uv_template, SyntheticConfig())["image"]
    corners = clutter[:24, :24].reshape(-1, 3).astype(float)
    assert corners.std(0).max() > 1.0  # clutter is not a flat colour


def test_inside_of_the_shell_is_never_drawn(uv_template):
    """The template is an open shell: seen from the side, pixels whose nearest surface is its inside
    (back-facing) must show the background, not the face."""
    from prnet.mesh.raster import rasterize

    cfg = SyntheticConfig(**{**FRONTAL_FLAT, "yaw_range": (80.0, 85.0), "pitch_range": (20.0, 25.0)})
    ex = render_example(4, uv_template, cfg)
    red = np.all(ex["image"] == [255, 0, 0], axis=-1)
    verts = vertices_from_posmap(ex["posmap"], uv_template).astype(np.float64)
    tris = np.asarray(uv_triangles(uv_template))

    def facing_z(v):  # z of the (unnormalised) triangle normals, in the winding's orientation
        a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
        return np.cross(b - a, c - a)[:, 2]

    outward = np.sign(facing_z(uv_template.canonical_vertices.astype(np.float64)).sum())  # frontal: +z
    tri_index, _ = rasterize(verts, tris, 256, 256)  # all triangles, nearest wins
    covered = tri_index >= 0
    back = np.zeros_like(covered)
    back[covered] = facing_z(verts)[tri_index[covered]] * outward < 0
    assert back.sum() > 200  # this pose does look into the shell
    # Behind the inside of the shell there is (almost always) nothing else of the face.
    assert red[back].mean() < 0.05
    assert red[covered & ~back].mean() > 0.99


# --- TFDS builder -----------------------------------------------------------------------------

def _build(tmp_path, name, assets_dir, num_workers=1):
    from tfds_builders.prnet_synthetic import Builder, SyntheticBuilderConfig

    config = SyntheticBuilderConfig(name="test", num_train=3, num_validation=2, base_seed=7)
    builder = Builder(config=config, data_dir=str(tmp_path / name), assets_dir=assets_dir, num_workers=num_workers)
    builder.download_and_prepare()
    records = {}
    for split in ("train", "validation"):
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            records[(split, int(ex["seed"]))] = ex
    return builder, records


@pytest.mark.slow  # builds a TFDS dataset twice
def test_builder_builds_reproducibly(tmp_path, assets_dir, uv_template, monkeypatch):
    from tfds_builders.prnet_synthetic.prnet_synthetic_dataset_builder import example_seed

    builder, first = _build(tmp_path, "a", assets_dir)
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 2
    assert sorted(first) == sorted([("train", example_seed(7, "train", i)) for i in range(3)]
                                   + [("validation", example_seed(7, "validation", i)) for i in range(2)])
    # Second build: template found through PRNET_ASSETS_DIR, rendered by 2 worker processes.
    monkeypatch.setenv("PRNET_ASSETS_DIR", str(assets_dir))
    _, second = _build(tmp_path, "b", None, num_workers=2)
    assert first.keys() == second.keys()
    for key, ex in first.items():
        assert ex["image"].shape == (256, 256, 3) and ex["image"].dtype == np.uint8
        assert ex["posmap"].shape == (256, 256, 3) and ex["posmap"].dtype == np.float32
        assert ex["landmarks_68"].shape == (68, 3) and ex["pose"].shape == (3,)
        for feature in ("image", "posmap", "landmarks_68", "pose"):
            np.testing.assert_array_equal(ex[feature], second[key][feature])
        # Records are exactly the generator's output for their seed (the posmap to the storage's 1/128 px).
        direct = render_example(key[1], uv_template, builder.builder_config.render)
        for feature in ("image", "landmarks_68", "pose"):
            np.testing.assert_array_equal(ex[feature], direct[feature])
        assert np.abs(ex["posmap"] - direct["posmap"]).max() <= 1 / 128 + 1e-6


def test_builder_reports_missing_template(tmp_path):
    from prnet.errors import AssetsNotFoundError
    from tfds_builders.prnet_synthetic import Builder

    builder = Builder(config="tiny", data_dir=str(tmp_path), assets_dir=tmp_path / "nowhere")
    with pytest.raises(AssetsNotFoundError, match="nowhere"):
        builder.download_and_prepare()


def test_example_seeds_are_distinct_across_splits():
    from tfds_builders.prnet_synthetic.prnet_synthetic_dataset_builder import example_seed

    seeds = {example_seed(b, s, i) for b in (0, 1) for s in ("train", "validation") for i in range(50)}
    assert len(seeds) == 200 and all(0 <= x < 2 ** 63 for x in seeds)
    with pytest.raises(ValueError, match="split"):
        example_seed(0, "test", 0)

