"""The NumPy rasteriser: coverage, barycentrics, z-buffer, clipping."""

import numpy as np

from prnet.mesh.raster import interpolate, rasterize


def _square(z_left=0.0, z_right=0.0):
    # Square [2, 9] x [3, 8] split into two triangles along a diagonal.
    v = np.array([[2, 3, z_left], [9, 3, z_right], [2, 8, z_left], [9, 8, z_right]], float)
    return v, np.array([[0, 1, 2], [1, 3, 2]])


def test_square_is_covered_exactly_once_without_holes():
    v, t = _square()
    tri, bary = rasterize(v, t, 12, 12)
    covered = tri >= 0
    expected = np.zeros((12, 12), bool)
    expected[3:9, 2:10] = True  # rows 3..8, cols 2..9 inclusive: pixel centres inside the closed square
    np.testing.assert_array_equal(covered, expected)
    np.testing.assert_allclose(bary[covered].sum(-1), 1.0, atol=1e-6)
    assert np.all(bary[covered] >= -1e-6)


def test_barycentrics_reproduce_pixel_coordinates():
    rng = np.random.default_rng(1)
    v = rng.uniform(0, 40, (30, 3))
    t = rng.integers(0, 30, (40, 3))
    tri, bary = rasterize(v, t, 40, 40)
    xy = interpolate(v[:, :2], t, tri, bary)
    rows, cols = np.nonzero(tri >= 0)
    np.testing.assert_allclose(xy[rows, cols, 0], cols, atol=1e-4)
    np.testing.assert_allclose(xy[rows, cols, 1], rows, atol=1e-4)


def test_z_buffer_keeps_the_front_triangle():
    back = np.array([[0, 0, 1.0], [20, 0, 1.0], [0, 20, 1.0]])
    front = np.array([[0, 0, 5.0], [10, 0, 5.0], [0, 10, 5.0]])
    v = np.concatenate([front, back])
    for order in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        t = np.array(order)
        tri, bary = rasterize(v, t, 21, 21)
        z = interpolate(v[:, 2:], t, tri, bary)[..., 0]
        assert z[2, 2] == 5.0 and z[12, 3] == 1.0 and z[20, 20] == 0.0


def test_clipping_and_degenerate_input():
    v = np.array([[-10, -10], [30, -10], [-10, 30], [5, 5]], float)
    tri, _ = rasterize(v, np.array([[0, 1, 2], [3, 3, 3]]), 8, 8)
    assert np.all(tri == 0)  # the big triangle covers the whole 8x8 image; the degenerate one nothing
    tri, bary = rasterize(v, np.zeros((0, 3), int), 4, 4)
    assert np.all(tri == -1) and not bary.any()
