"""Augmentation: the image warp and the position-map transform agree, toggles, determinism."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from prnet.data import augment as aug

GEOMETRY_ONLY = aug.AugmentConfig(color=False, occlude=False)


def _dots_example(seed=0, radius=4.5):
    """A crop with 68 distinctly coloured discs, and a position map whose 68 'landmark' UV pixels
    hold the disc centres (x, y) and a depth z; other map pixels hold a smooth random field."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.linspace(50, 205, 9), np.linspace(50, 205, 8))
    centres = np.stack([gx.ravel(), gy.ravel()], 1)[:68] + rng.uniform(-2, 2, (68, 2))
    colours = np.stack([rng.permutation(np.linspace(0.1, 0.9, 68)) for _ in range(3)], 1)
    yy, xx = np.mgrid[0:256, 0:256]
    image = np.full((256, 256, 3), 0.5, np.float32)
    for (cx, cy), colour in zip(centres, colours):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = colour
    posmap = rng.uniform(0, 250, (256, 256, 3)).astype(np.float32)
    uv = rng.choice(256 * 256, 68, replace=False)
    rows, cols = np.divmod(uv, 256)
    posmap[rows, cols, :2] = centres
    posmap[rows, cols, 2] = rng.uniform(10, 60, 68)
    landmarks = posmap[rows, cols].copy()
    return image, posmap, landmarks, (rows, cols), colours


def _centroid_errors(image, points, colours, tol=0.005, window=7):
    """Offsets ``(K, 2)`` from each point to the centroid of the pixels near it that have exactly its
    colour, and whether the pixel at each (rounded) point has that colour."""
    errors, centre_ok = [], []
    inside = np.all((points[:, :2] > window + 1) & (points[:, :2] < 254 - window), axis=1)
    assert inside.sum() >= 40
    for (x, y), colour in zip(points[inside, :2], colours[inside]):
        x0, y0 = int(round(x)) - window, int(round(y)) - window
        patch = image[y0:y0 + 2 * window + 1, x0:x0 + 2 * window + 1]
        match = np.all(np.abs(patch - colour) < tol, axis=-1)
        assert match.sum() >= 9, "disc not found near its transformed landmark"
        ry, rx = np.nonzero(match)
        errors.append((rx.mean() + x0 - x, ry.mean() + y0 - y))
        centre_ok.append(np.all(np.abs(image[int(round(y)), int(round(x))] - colour) < tol))
    return np.array(errors), np.array(centre_ok)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_landmarks_from_augmented_map_land_on_same_content(seed):
    image, posmap, landmarks, (rows, cols), colours = _dots_example(seed)
    out_image, out_map, out_lm = aug.augment(image, posmap, tf.constant([7, seed]), GEOMETRY_ONLY,
                                             landmarks=landmarks)
    out_image, out_map, out_lm = out_image.numpy(), out_map.numpy(), out_lm.numpy()
    read = out_map[rows, cols]  # landmarks read from the augmented map
    np.testing.assert_allclose(out_lm, read, atol=1e-4)  # the landmark feature moves with the map
    assert np.abs(read[:, :2] - landmarks[:, :2]).max() > 3  # something really moved
    offsets, centre_ok = _centroid_errors(out_image, read, colours)
    assert centre_ok.all()  # the pixel under every landmark read from the map has its dot's colour
    # Each disc's centroid is within 1 px of its landmark (pixel-quantised estimate), and there is
    # no systematic offset (averaged over the landmarks: a half-pixel convention slip would show).
    assert np.hypot(*offsets.T).max() < 1.0
    assert np.abs(offsets.mean(axis=0)).max() < 0.1, offsets.mean(axis=0)
    shifted, _ = _centroid_errors(out_image, read + np.array([0.5, 0.0, 0.0]), colours)
    assert abs(shifted.mean(axis=0)[0]) > 0.35  # the check is sensitive to such a slip


def test_z_scales_with_the_image():
    image, posmap, landmarks, (rows, cols), _ = _dots_example(5)
    cfg = aug.AugmentConfig(rotate=False, translate=False, color=False, occlude=False)
    _, out_map, _ = aug.augment(image, posmap, tf.constant([1, 2]), cfg)
    out_map = out_map.numpy()
    s = out_map[..., 2] / posmap[..., 2]
    assert 0.9 <= s.mean() <= 1.2 and np.ptp(s) < 1e-4
    c = 127.5
    np.testing.assert_allclose(out_map[..., :2] - c, s.mean() * (posmap[..., :2] - c), atol=2e-3)


def test_warp_matches_independent_bilinear_sampling():
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(3)
    image = rng.random((256, 256, 3)).astype(np.float32)
    matrix = aug.similarity_matrix(0.4, 1.15, tf.constant([12.0, -20.0])).numpy()
    ours = aug.warp_image(image, matrix).numpy()
    # Output pixel (x, y) samples the input at inverse(matrix) @ (x, y, 1) (integer pixel centres).
    ys, xs = np.mgrid[0:256, 0:256].astype(np.float64)
    inv = np.linalg.inv(matrix.astype(np.float64))
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    ref = np.stack([map_coordinates(image[..., c].astype(np.float64), [src_y, src_x], order=1, mode="constant")
                    for c in range(3)], -1)
    inner = (src_x > 1) & (src_x < 254) & (src_y > 1) & (src_y < 254)
    assert inner.mean() > 0.5
    assert np.abs(ours - ref)[inner].max() < 1e-4
    # cv2 agrees too, up to its 1/32-pixel fixed-point interpolation
    cv = cv2.warpAffine(image, matrix[:2].astype(np.float64), (256, 256), flags=cv2.INTER_LINEAR)
    assert np.abs(ours - cv)[inner].mean() < 5e-3


def test_quarter_turn_is_exact_rot90():
    rng = np.random.default_rng(4)
    image = rng.random((256, 256, 3)).astype(np.float32)
    matrix = aug.similarity_matrix(np.pi / 2, 1.0, tf.zeros([2])).numpy()
    np.testing.assert_allclose(matrix[:2], [[0, -1, 255], [1, 0, 0]], atol=1e-4)
    out = aug.warp_image(image, matrix).numpy()
    np.testing.assert_allclose(out, np.rot90(image, k=-1), atol=1e-4)  # clockwise on screen (y down)
    p = aug.transform_points(np.array([[10.0, 20.0, 5.0]]), matrix, 1.0).numpy()
    np.testing.assert_allclose(p, [[235.0, 10.0, 5.0]], atol=1e-3)


def test_toggles_and_photometric_only_touch_the_image():
    image, posmap, _, _, _ = _dots_example(6)
    seed = tf.constant([3, 4])
    im, pm, lm = aug.augment(image, posmap, seed, aug.NO_AUGMENTATION)
    assert lm is None
    np.testing.assert_array_equal(im.numpy(), image)
    np.testing.assert_array_equal(pm.numpy(), posmap)

    color = aug.AugmentConfig(rotate=False, translate=False, scale=False, occlude=False)
    im, pm, _ = aug.augment(image, posmap, seed, color)
    np.testing.assert_array_equal(pm.numpy(), posmap)
    ratio = im.numpy() / image
    per_channel = ratio.reshape(-1, 3)
    assert np.ptp(per_channel, axis=0).max() < 1e-5  # one factor per channel (no clipping at 0.5 grey)
    assert np.all((per_channel[0] >= 0.6) & (per_channel[0] <= 1.4)) and np.ptp(per_channel[0]) > 1e-3

    occ = aug.AugmentConfig(rotate=False, translate=False, scale=False, color=False, occluder_prob=1.0)
    im, pm, _ = aug.augment(image, posmap, seed, occ)
    np.testing.assert_array_equal(pm.numpy(), posmap)
    changed = np.any(im.numpy() != image, axis=-1)
    ys, xs = np.nonzero(changed)
    area = changed.sum()
    assert 200 < area < 0.26 * 256 * 256 * 1.01  # patch sides 15-50 % of the crop
    assert np.ptp(xs) <= 0.5 * 256 + 2 and np.ptp(ys) <= 0.5 * 256 + 2
    patch = im.numpy()[changed]
    assert patch.std(axis=0).min() > 0.01  # textured, not flat


def test_deterministic_and_graph_compatible():
    image, posmap, landmarks, _, _ = _dots_example(7)
    image_u8 = (image * 255).astype(np.uint8)
    a = aug.augment(image_u8, posmap, tf.constant([1, 9]), landmarks=landmarks)
    b = aug.augment(image_u8, posmap, tf.constant([1, 9]), landmarks=landmarks)
    c = aug.augment(image_u8, posmap, tf.constant([1, 10]), landmarks=landmarks)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert not np.allclose(a[1].numpy(), c[1].numpy())

    ds = tf.data.Dataset.from_tensors({"image": image_u8, "posmap": posmap, "landmarks": landmarks})
    ds = ds.map(lambda ex: aug.augment(ex["image"], ex["posmap"], tf.constant([1, 9], tf.int64),
                                       landmarks=ex["landmarks"]), num_parallel_calls=2)
    graph = next(iter(ds))
    for x, y in zip(a, graph):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)
        assert x.dtype == tf.float32


def test_config_validation():
    with pytest.raises(aug.AugmentConfigError):
        aug.AugmentConfig(scale_range=(0.0, 1.0))
    with pytest.raises(aug.AugmentConfigError):
        aug.AugmentConfig(occluder_prob=2.0)
    assert not aug.NO_AUGMENTATION.enabled and aug.AugmentConfig().enabled
