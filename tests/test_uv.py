"""The UV template (prnet.core.uv) on the real uv-data files: contents, triangulation, error handling."""

import shutil

import cv2
import numpy as np
import pytest

from prnet.core.uv import (
    UV_SIZE,
    generate_uv_triangles,
    landmarks_from_posmap,
    load_uv_template,
    uv_triangles,
    vertices_from_posmap,
)
from prnet.errors import AssetsCorruptError, AssetsNotFoundError
from prnet.mesh.raster import rasterize


def _mask_png(assets_dir, name):
    return cv2.imread(str(assets_dir / name), cv2.IMREAD_GRAYSCALE)


def test_template_contents(uv_template, assets_dir):
    t = uv_template
    assert t.face_ind.shape == (43867,) and t.kpt_ind.shape == (68, 2)
    assert t.canonical_vertices.shape == (43867, 3) and t.canonical_vertices.dtype == np.float32
    # face_ind lists exactly the non-zero pixels of the face mask image, row-major.
    mask = _mask_png(assets_dir, "uv_face_mask.png")
    np.testing.assert_array_equal(np.sort(t.face_ind), np.flatnonzero(mask.ravel() > 0))
    np.testing.assert_array_equal(t.face_mask, (mask > 0).astype(np.float32))
    # The file stores row 0 = column, row 1 = row; the loader returns (col, row) pairs.
    raw = np.loadtxt(assets_dir / "uv_kpt_ind.txt")
    np.testing.assert_array_equal(t.kpt_ind, raw.T.astype(np.int64))
    # Every landmark lies on a face pixel: mask[row, col].
    assert np.all(t.face_mask[t.kpt_ind[:, 1], t.kpt_ind[:, 0]] == 1)
    # Landmark 8 (chin) is below the nose tip (30), left-eye corner 45 right of right-eye corner 36.
    assert t.kpt_ind[8, 1] > t.kpt_ind[30, 1] and t.kpt_ind[45, 0] > t.kpt_ind[36, 0]


def test_weight_mask(uv_template, assets_dir):
    t = uv_template
    grey = _mask_png(assets_dir, "uv_weight_mask.png").astype(np.float32)
    np.testing.assert_allclose(t.weight_mask, grey / 255 * t.face_mask, atol=1e-6)
    assert np.all(t.weight_mask[t.face_mask == 0] == 0)  # neck and background carry no loss
    assert np.all(t.weight_mask[t.kpt_ind[:, 1], t.kpt_ind[:, 0]] == 1.0)  # landmarks: full weight
    # Regions 255 / 64 / 48 (16:4:3) with a few anti-aliased boundary levels in between.
    face_levels = np.round(t.weight_mask[t.face_mask > 0] * 255)
    assert face_levels.min() == 48 and face_levels.max() == 255
    assert np.isin(face_levels, [48, 64, 255]).mean() > 0.97
    assert (face_levels == 255).sum() == 68
    assert t.face_texture.shape == (256, 256, 3) and t.face_texture.dtype == np.uint8


def test_posmap_indexing(uv_template):
    t = uv_template
    rows, cols = np.mgrid[:UV_SIZE, :UV_SIZE]
    pos = np.stack([cols, rows, rows * UV_SIZE + cols], axis=-1).astype(np.float32)  # x=col, y=row, z=flat
    v = vertices_from_posmap(pos, t)
    np.testing.assert_array_equal(v[:, 2], t.face_ind)
    np.testing.assert_array_equal(v[:, 0] + UV_SIZE * v[:, 1], t.face_ind)
    lm = landmarks_from_posmap(pos, t)
    np.testing.assert_array_equal(lm[:, :2], t.kpt_ind)
    batch = np.stack([pos, pos + 1])
    assert vertices_from_posmap(batch, t).shape == (2, 43867, 3)
    np.testing.assert_array_equal(landmarks_from_posmap(batch, t)[1], lm + 1)


def _expected_triangle_count(mask):
    """Independent count: a full 2x2 quad gives 2 triangles; a 3-pixel quad gives 1 when the
    missing pixel is a corner off the b-c diagonal (top-left a or bottom-right d)."""
    a, b = mask[:-1, :-1], mask[:-1, 1:]
    c, d = mask[1:, :-1], mask[1:, 1:]
    full = a & b & c & d
    return int(2 * full.sum() + (~a & b & c & d).sum() + (a & b & c & ~d).sum())


def test_triangulation_covers_face_grid(uv_template):
    t = uv_template
    tris = uv_triangles(t)
    mask = t.face_mask > 0
    assert tris.shape == (86907, 3) and tris.dtype == np.int64
    assert len(tris) == _expected_triangle_count(mask)
    assert tris.min() >= 0 and tris.max() < 43867
    rows, cols = np.divmod(t.face_ind, UV_SIZE)
    r, c = rows[tris], cols[tris]  # (T, 3) UV pixel of each corner
    assert np.all(mask[r, c])  # all three corners are face pixels
    # Each triangle sits in one 2x2 quad, is a right triangle of area 1/2, all with the same winding.
    assert np.all(np.ptp(r, axis=1) == 1) and np.all(np.ptp(c, axis=1) == 1)
    area = (c[:, 1] - c[:, 0]) * (r[:, 2] - r[:, 0]) - (c[:, 2] - c[:, 0]) * (r[:, 1] - r[:, 0])
    assert np.all(area == 1)
    # Each full quad is split exactly once: its two triangles share the b-c diagonal and no quad
    # holds more than two triangles.
    quad = r.min(1) * UV_SIZE + c.min(1)
    counts = np.bincount(quad, minlength=UV_SIZE * UV_SIZE).reshape(UV_SIZE, UV_SIZE)[:-1, :-1]
    full = mask[:-1, :-1] & mask[:-1, 1:] & mask[1:, :-1] & mask[1:, 1:]
    assert np.all(counts[full] == 2) and np.all(counts[~full] <= 1)
    assert len(np.unique(np.sort(tris, axis=1), axis=0)) == len(tris)  # no duplicates
    # Manifold: every undirected edge belongs to at most two triangles.
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    _, edge_counts = np.unique(edges, axis=0, return_counts=True)
    assert edge_counts.max() == 2


def test_triangulation_is_deterministic_and_cached(uv_template):
    first = generate_uv_triangles(uv_template.face_ind)
    np.testing.assert_array_equal(first, generate_uv_triangles(uv_template.face_ind.copy()))
    cached = uv_triangles(uv_template)
    assert cached is uv_triangles(uv_template) and not cached.flags.writeable
    np.testing.assert_array_equal(cached, first)


def test_rendered_uv_grid_covers_face_mask(uv_template):
    t = uv_template
    tris = uv_triangles(t)
    rows, cols = np.divmod(t.face_ind, UV_SIZE)
    tri_index, _ = rasterize(np.stack([cols, rows], 1).astype(np.float64), tris, UV_SIZE, UV_SIZE)
    covered = tri_index >= 0
    mask = t.face_mask > 0
    in_triangle = np.zeros(UV_SIZE * UV_SIZE, bool)
    in_triangle[t.face_ind[np.unique(tris)]] = True
    np.testing.assert_array_equal(covered.ravel(), in_triangle)  # exactly the triangulated pixels
    assert not np.any(covered & ~mask)
    assert covered.sum() >= 0.995 * mask.sum()  # only a few isolated border pixels are left out


@pytest.fixture
def assets_copy(assets_dir, tmp_path):
    dst = tmp_path / "uv-data"
    shutil.copytree(assets_dir, dst)
    return dst


def test_triangles_file_is_used_when_present(assets_copy):
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    np.savetxt(assets_copy / "triangles.txt", tris, fmt="%d")
    np.testing.assert_array_equal(uv_triangles(load_uv_template(assets_copy)), tris)


def test_assets_dir_resolution(assets_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("PRNET_ASSETS_DIR", str(assets_copy.parent))  # the parent of uv-data/ works too
    assert load_uv_template().directory == assets_copy
    monkeypatch.delenv("PRNET_ASSETS_DIR")
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(AssetsNotFoundError, match="prnet-convert --download"):
        load_uv_template()  # the (empty, test-local) cache


def test_missing_files_raise(assets_copy, tmp_path):
    with pytest.raises(AssetsNotFoundError):
        load_uv_template(tmp_path / "nowhere")
    (assets_copy / "face_ind.txt").unlink()
    with pytest.raises(AssetsNotFoundError, match="face_ind.txt"):
        load_uv_template(assets_copy)


@pytest.mark.parametrize("damage", [
    "truncate_face_ind", "garbage_face_ind", "canonical_shape", "kpt_range", "mask_png", "mask_mismatch", "texture",
])
def test_corrupt_files_raise(assets_copy, damage):
    d = assets_copy
    if damage == "truncate_face_ind":
        lines = (d / "face_ind.txt").read_text().split()
        (d / "face_ind.txt").write_text("\n".join(lines[:1000]))
    elif damage == "garbage_face_ind":
        (d / "face_ind.txt").write_text("not a number\n")
    elif damage == "canonical_shape":
        np.save(d / "canonical_vertices.npy", np.zeros((43867, 2), np.float32))
    elif damage == "kpt_range":
        kpt = np.loadtxt(d / "uv_kpt_ind.txt")
        kpt[0, 0] = 300
        np.savetxt(d / "uv_kpt_ind.txt", kpt)
    elif damage == "mask_png":
        (d / "uv_face_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif damage == "mask_mismatch":
        mask = cv2.imread(str(d / "uv_face_mask.png"), cv2.IMREAD_GRAYSCALE)
        mask[0, 0] = 255
        cv2.imwrite(str(d / "uv_face_mask.png"), mask)
    elif damage == "texture":
        cv2.imwrite(str(d / "uv_face.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(AssetsCorruptError):
        load_uv_template(d)
