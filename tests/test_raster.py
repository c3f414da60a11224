"""The NumPy rasteriser: coverage, barycentrics, z-buffer, clipping."""

import numpy as np
import pytest

from prnet.mesh import render
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


# ----------------------------------------------------------------------------- bounded memory (issue 14, item 8)

def _face(template, size, face_width):
    """The template's mean face, ``face_width`` px wide, yawed 20 degrees, centred in a ``size`` image."""
    from prnet.core.transforms import euler_to_rotation, flip_y

    c = template.canonical_vertices.astype(np.float64)
    v = (c - c.mean(0)) @ flip_y(euler_to_rotation(*np.radians([5, 20, 0]))).T
    v *= face_width / np.ptp(v[:, 0])
    v[:, :2] += size / 2
    v[:, 2] -= v[:, 2].min()
    return v


def _peak_mb(fn):
    """``(result, peak traced MB)`` of ``fn()`` (NumPy registers its buffers with tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # rasterises full meshes several times
def test_chunking_gives_identical_results_on_a_real_face(uv_template, monkeypatch):
    """A face from the UV template (43,867 vertices, 86,907 triangles) rasterised in one chunk (the
    algorithm as it was) and in many small chunks, boxes split into bands of rows: bit-identical."""
    from prnet.core.uv import uv_triangles
    from prnet.mesh import raster

    tris = uv_triangles(uv_template)
    for size, width in ((256, 210), (300, 700)):  # a crop; a face larger than the image (clipped)
        v = _face(uv_template, size, width)
        monkeypatch.setattr(raster, "CHUNK_PIXELS", 1 << 40)
        whole = rasterize(v, tris, size, size)
        assert (whole[0] >= 0).sum() > 0.3 * size * size
        for cap in (raster.CHUNK_PIXELS, 5000, 7):
            monkeypatch.setattr(raster, "CHUNK_PIXELS", cap)
            tri, bary = rasterize(v, tris, size, size)
            np.testing.assert_array_equal(tri, whole[0])
            np.testing.assert_array_equal(bary, whole[1])
        monkeypatch.undo()
        np.testing.assert_array_equal(rasterize(v, tris, size, size)[0], whole[0])  # the default chunking


def test_smooth_large_face_memory_is_bounded_by_the_image(uv_template):
    """A 1000 px wide face used ~230 MB (growing with the face's area: 6.6 GB at 6000 px); now the
    outputs and z-buffer (28 bytes per pixel) plus one chunk of temporaries."""
    from prnet.core.uv import uv_triangles

    size = 1024
    v = _face(uv_template, size, 1000)
    (depth, mask), peak = _peak_mb(lambda: render.render_depth(v, uv_triangles(uv_template), size, size,
                                                               return_mask=True))
    assert mask.sum() > 0.3 * size * size and depth[mask].max() > 0
    assert peak < 28 * size * size / 1e6 + 64, f"{peak:.0f} MB"


@pytest.mark.slow  # rasterises full meshes several times
def test_degenerate_mesh_memory_is_bounded_and_it_finishes():
    """An untrained network's mesh: random vertices all over a 450x450 photo, plus triangles spanning the
    whole image. Before: memory grew with the summed bounding-box area (~400 MB for the 20 large
    triangles alone, 24 GB for a real bad model); now it stays below 100 MB."""
    rng = np.random.default_rng(0)
    size = 450
    v = np.concatenate([rng.uniform(0, size, (500, 3)), [[-50, -50, 1], [3 * size, -50, 2], [-50, 3 * size, 3]]])
    tris = np.concatenate([rng.integers(0, 500, (300, 3)), np.tile([500, 501, 502], (20, 1))])
    (depth, mask), peak = _peak_mb(lambda: render.render_depth(v, tris, size, size, return_mask=True))
    assert peak < 100, f"{peak:.0f} MB"
    assert mask.all()  # the large triangles cover every pixel
    colors, peak = _peak_mb(lambda: render.render_colors(v, tris, rng.random((len(v), 3)), size, size))
    assert peak < 100, f"{peak:.0f} MB"
    assert colors.shape == (size, size, 3) and np.isfinite(colors).all()


def test_non_finite_vertices_are_skipped():
    """NaN / inf vertices (a diverged network) do not crash the renders: their triangles are skipped,
    the others are drawn as without them."""
    v = np.array([[2, 2, 1.0], [30, 2, 1.0], [2, 30, 1.0],  # a good triangle
                  [0, 0, np.nan], [np.inf, 3, 1.0], [10, np.nan, 2.0], [-np.inf, -np.inf, np.inf]])
    good = np.array([[0, 1, 2]])
    bad = np.array([[0, 1, 3], [4, 1, 2], [0, 5, 2], [6, 1, 2], [3, 4, 5]])
    ref_tri, ref_bary = rasterize(v, good, 40, 40)
    tri, bary = rasterize(v, np.concatenate([bad, good]), 40, 40)
    np.testing.assert_array_equal(tri, np.where(ref_tri >= 0, len(bad), -1))
    np.testing.assert_array_equal(bary, ref_bary)
    tri, _ = rasterize(v, bad, 40, 40)
    assert np.all(tri == -1)
    depth, mask = render.render_depth(v, np.concatenate([bad, good]), 40, 40, return_mask=True)
    assert np.isfinite(depth).all() and mask.sum() == (ref_tri >= 0).sum()
    shade, mask = render.render_shaded(v, bad, 40, 40)
    assert not mask.any() and np.isfinite(shade).all()
    # the good triangle shares its corners with bad ones: their normals must stay finite
    shade, mask = render.render_shaded(v, np.concatenate([bad, good]), 40, 40)
    np.testing.assert_array_equal(mask, ref_tri >= 0)
    assert np.isfinite(shade).all() and shade[mask].min() > 0.9  # a frontal triangle: fully lit
