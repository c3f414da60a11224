"""Mesh post-processing (prnet.mesh: pose, render, texture, draw, obj): pose, renders, texture, overlays, .obj."""

import math

import cv2
import numpy as np
import pytest
import scipy.io as sio

from prnet.core.transforms import euler_to_rotation, flip_y, umeyama
from prnet.core.uv import UV_SIZE, landmarks_from_posmap, uv_triangles, vertices_from_posmap
from prnet.mesh import draw, pose, render, texture
from prnet.mesh.obj import write_obj

F = np.diag([1.0, -1.0, 1.0])


def placed_face(template, offset=(150.0, -100.0), z_min=1.0):
    """The template's mean face moved into a ~300x300 image (x, y px), with min z = ``z_min``."""
    v = template.canonical_vertices.astype(np.float64).copy()
    v[:, 0] += offset[0]
    v[:, 1] += offset[1]
    v[:, 2] += z_min - v[:, 2].min()
    return v


def as_posmap(template, vertices):
    pos = np.zeros((UV_SIZE * UV_SIZE, 3), np.float32)
    pos[template.face_ind] = vertices
    return pos.reshape(UV_SIZE, UV_SIZE, 3)


# ----------------------------------------------------------------------------- colours
def test_vertex_colors_bilinear_on_gradient():
    h, w = 200, 256
    ys, xs = np.mgrid[:h, :w]
    image = np.stack([xs, ys, np.full_like(xs, 77)], -1).astype(np.uint8)  # R = x, G = y
    rng = np.random.default_rng(1)
    v = np.c_[rng.uniform(0, w - 1, 500), rng.uniform(0, h - 1, 500), rng.normal(size=500)]
    c = texture.vertex_colors(image, v)
    assert c.shape == (500, 3) and c.dtype == np.float32
    np.testing.assert_allclose(c * 255, np.c_[v[:, 0], v[:, 1], np.full(500, 77)], atol=1e-3)
    # Outside the image: clamped to the border.
    out = texture.vertex_colors(image, np.array([[-5.0, 10.5, 0], [300.0, 500.0, 0]]))
    np.testing.assert_allclose(out * 255, [[0, 10.5, 77], [255, 199, 77]], atol=1e-3)
    with pytest.raises(ValueError):
        texture.vertex_colors(image.astype(np.float32), v)


# ----------------------------------------------------------------------------- pose
def rotation_from_angles(yaw, pitch, roll):
    """Independent construction: standard right-handed rotations in the y-up frame.

    Nose (+z) turns toward -x (image left) for yaw > 0 and toward +y (up) for pitch > 0; for
    roll > 0 the face's +x side turns toward -y (down: clockwise in the image)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return F @ (rx @ ry @ rz) @ F  # into the image frame (y down)


def image_rotation(yaw, pitch, roll):
    """The library's image-frame rotation for angles in degrees (prnet.core.transforms)."""
    return flip_y(euler_to_rotation(*np.deg2rad([pitch, yaw, roll])))


@pytest.mark.parametrize("angles", [(30, 0, 0), (-30, 0, 0), (0, 30, 0), (0, -30, 0), (0, 0, 30), (0, 0, -30),
                                    (45, -20, 10), (-70, 15, -25)])
def test_estimate_pose_recovers_known_rotation(uv_template, angles):
    c = uv_template.canonical_vertices.astype(np.float64)
    rot = rotation_from_angles(*angles)
    rng = np.random.default_rng(2)
    v = 1.8 * c @ rot.T + np.array([40.0, -300.0, 12.0]) + rng.normal(scale=0.3, size=c.shape)
    R, (yaw, pitch, roll) = pose.estimate_pose(v, c)
    np.testing.assert_allclose([yaw, pitch, roll], angles, atol=0.1)
    np.testing.assert_allclose(R, rot, atol=2e-3)
    np.testing.assert_allclose(image_rotation(*angles), rot, atol=1e-12)


def test_pose_sign_convention_in_the_image(uv_template):
    """yaw > 0: nose toward the image's left; pitch > 0: nose up; roll > 0: clockwise."""
    t = uv_template
    c = t.canonical_vertices.astype(np.float64)
    lm = landmarks_from_posmap(as_posmap(t, c), t).astype(np.float64)
    centre = c.mean(0)

    def nose_offset(yaw, pitch, roll):
        posed = (lm - centre) @ image_rotation(yaw, pitch, roll).T
        return posed[30, :2] - posed[27, :2]  # nose tip relative to the nose root

    frontal = nose_offset(0, 0, 0)
    assert nose_offset(30, 0, 0)[0] < frontal[0] - 10  # moves left (smaller x)
    assert nose_offset(0, 30, 0)[1] < frontal[1] - 5  # moves up (smaller y)
    posed = (lm - centre) @ image_rotation(0, 0, 30).T
    assert posed[45, 1] > posed[36, 1] + 20  # image-right eye corner drops: clockwise


def test_estimate_pose_matches_aflw2000_annotations(uv_template, samples_dir):
    """Aligning the real 3D landmarks to the mean face gives the dataset's Pose_Para angles."""
    t = uv_template
    canonical_lm = landmarks_from_posmap(as_posmap(t, t.canonical_vertices), t)
    mats = sorted((samples_dir / "aflw2000-3d").glob("*.mat"))
    assert mats
    for mat in mats:
        m = sio.loadmat(mat)
        pitch, yaw, roll = np.rad2deg(m["Pose_Para"].ravel()[:3])
        _, est = pose.estimate_pose(m["pt3d_68"].T, canonical_lm)
        np.testing.assert_allclose(est, [yaw, pitch, roll], atol=4.0, err_msg=mat.name)


def test_umeyama_and_frontalize(uv_template):
    c = uv_template.canonical_vertices.astype(np.float64)
    rot = rotation_from_angles(25, -10, 5)
    v = 0.7 * c @ rot.T + [3.0, 4.0, 5.0]
    s, R, tr = umeyama(c, v)
    assert s == pytest.approx(0.7, rel=1e-9) and np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(tr, [3.0, 4.0, 5.0], atol=1e-6)
    np.testing.assert_allclose(pose.frontalize(v, c), c, atol=1e-3)
    # A mirrored copy still gives a proper rotation (no reflection).
    _, R, _ = umeyama(c, c * [-1, 1, 1])
    assert np.linalg.det(R) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- rendering
def test_render_depth_front_triangle_wins():
    # Two triangles covering the same pixels: a plane z = 10 and a tilted one nearer (z = 20..40).
    v = np.array([[0, 0, 10], [60, 0, 10], [0, 60, 10],
                  [2, 2, 20], [58, 2, 30], [2, 58, 40]], np.float64)
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    depth, mask = render.render_depth(v, tris, 64, 64, return_mask=True)
    assert depth.shape == (64, 64) and depth.dtype == np.float32
    # Inside the second triangle: its plane z = 20 + (x - 2) * 10/56 + (y - 2) * 20/56.
    for x, y in [(10, 10), (20, 5), (5, 30)]:
        assert depth[y, x] == pytest.approx(20 + (x - 2) * 10 / 56 + (y - 2) * 20 / 56, abs=1e-4)
    assert depth[0, 0] == pytest.approx(10) and depth[1, 40] == pytest.approx(10)  # only the back one
    assert depth[63, 63] == 0 and not mask[63, 63] and mask[0, 0]
    # Swap depths: now the plane at z = 50 is in front everywhere.
    v[:3, 2] = 50
    assert np.all(render.render_depth(v, tris, 64, 64)[mask] == pytest.approx(50))
    # x is the column, y the row.
    strip = render.render_depth(np.array([[10, 0, 1], [12, 0, 1], [10, 63, 1], [12, 63, 1.0]]),
                           np.array([[0, 1, 2], [1, 3, 2]]), 64, 64)
    assert np.all(strip[:, 10:13] == 1) and np.all(strip[:, :10] == 0) and np.all(strip[:, 13:] == 0)


def test_render_depth_of_face_contains_landmarks(uv_template):
    t = uv_template
    v = placed_face(t)
    depth, mask = render.render_depth(v, uv_triangles(t), 300, 300, return_mask=True)
    assert np.all(depth[mask] >= 1.0 - 1e-3) and np.all(depth[~mask] == 0)
    assert depth.max() == pytest.approx(v[:, 2].max(), abs=2.0)  # the nose tip is the nearest point
    lm = landmarks_from_posmap(as_posmap(t, v), t)
    cols, rows = np.round(lm[:, 0]).astype(int), np.round(lm[:, 1]).astype(int)
    assert np.all(mask[rows[17:], cols[17:]])  # brows, eyes, nose, mouth: inside
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.all(near[rows, cols])  # jaw-line points sit on the silhouette, within a pixel
    # Nose tip (30) is nearer than the eye corners and the jaw line.
    assert depth[rows[30], cols[30]] > depth[rows[[0, 16, 36, 45]], cols[[0, 16, 36, 45]]].max() + 10
    u8 = render.depth_to_uint8(depth)
    assert u8.dtype == np.uint8 and u8[~mask].max() == 0 and u8[mask].min() >= 1 and u8.max() == 255
    assert u8[rows[30], cols[30]] > 240


def test_render_colors_and_background():
    v = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0]], np.float64)
    tri = np.array([[0, 1, 2]])
    colors = np.eye(3, dtype=np.float32)
    img = render.render_colors(v, tri, colors, 24, 24)
    assert img.shape == (24, 24, 3)
    np.testing.assert_allclose(img[5, 10], [1 - 15 / 20, 10 / 20, 5 / 20], atol=1e-5)  # barycentric
    bg = np.full((24, 24, 3), 0.5, np.float32)
    with_bg = render.render_colors(v, tri, colors, 24, 24, background=bg)
    np.testing.assert_allclose(with_bg[23, 23], 0.5)
    np.testing.assert_allclose(with_bg[5, 10], img[5, 10])
    np.testing.assert_allclose(render.render_colors(v, tri, colors, 24, 24, background=(1, 0, 0))[23, 23], [1, 0, 0])
    with pytest.raises(ValueError):
        render.render_colors(v, tri, colors[:2], 24, 24)
    with pytest.raises(ValueError):
        render.render_depth(v, np.array([[0, 1, 3]]), 24, 24)


def test_vertex_normals_face_the_camera(uv_template):
    t = uv_template
    n = render.vertex_normals(t.canonical_vertices, uv_triangles(t))
    assert n.shape == (43867, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1)[np.any(n != 0, axis=1)], 1, atol=1e-5)
    assert (n[:, 2] > 0).mean() > 0.9
    lm_idx = np.flatnonzero(np.isin(t.face_ind, t.kpt_ind[:, 1] * UV_SIZE + t.kpt_ind[:, 0]))
    assert len(lm_idx) == 68 and (n[lm_idx, 2] > 0.2).mean() > 0.8


# ----------------------------------------------------------------------------- UV texture
def _texture():
    rows, cols = np.mgrid[:UV_SIZE, :UV_SIZE]
    return np.stack([128 + 100 * np.sin(cols / 15.0), rows.astype(float), cols.astype(float)], -1).astype(np.float32)


def test_uv_texture_recovers_rendered_texture(uv_template):
    """Render a mesh textured with a known UV texture, then unwrap it back into UV space."""
    t = uv_template
    tris = uv_triangles(t)
    rows, cols = (a.astype(np.float64) for a in np.divmod(t.face_ind, UV_SIZE))
    # A smooth one-to-one surface (scaled, sheared, bulged toward the camera).
    v = np.c_[30 + 1.2 * cols + 0.1 * rows, 20 + 1.1 * rows - 0.05 * cols,
              50 - 0.002 * ((cols - 128) ** 2 + (rows - 128) ** 2)]
    tex = _texture()
    rendered = render.render_colors(v, tris, vertices_from_posmap(tex, t), 250, 350)
    image = np.clip(rendered + 0.5, 0, 255).astype(np.uint8)
    rec = texture.uv_texture(image, as_posmap(t, v))
    assert rec.shape == (256, 256, 3) and rec.dtype == np.uint8
    interior = cv2.erode(t.face_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    err = np.abs(rec.astype(np.float64) - tex)[interior]
    assert err.max() <= 2.5
    masked = texture.uv_texture(image, as_posmap(t, v), face_mask=t.face_mask)
    assert masked[t.face_mask == 0].max() == 0
    np.testing.assert_array_equal(masked[interior], rec[interior])

    # The mean face (self-occlusion at the nose and face border): most of the interior comes back.
    face = placed_face(t)
    rendered = render.render_colors(face, tris, vertices_from_posmap(tex, t), 300, 300)
    image = np.clip(rendered + 0.5, 0, 255).astype(np.uint8)
    err = np.abs(texture.uv_texture(image, as_posmap(t, face)).astype(np.float64) - tex)[interior].max(axis=1)
    assert np.median(err) < 2 and np.mean(err < 6) > 0.85


def test_template_uv_coords(uv_template):
    uv = texture.template_uv_coords(uv_template)
    assert uv.shape == (43867, 2) and uv.min() >= 0 and uv.max() <= 1
    rows, cols = np.divmod(uv_template.face_ind, UV_SIZE)
    np.testing.assert_allclose(uv[:, 0] * 255, cols, atol=1e-4)
    np.testing.assert_allclose((1 - uv[:, 1]) * 255, rows, atol=1e-4)


# ----------------------------------------------------------------------------- .obj
def parse_obj(path):
    v, vt, f = [], [], []
    mtllib = None
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] == "#":
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:]])
        elif parts[0] == "f":
            f.append([[int(i) for i in p.split("/")] for p in parts[1:]])
        elif parts[0] == "mtllib":
            mtllib = parts[1]
    return np.array(v), np.array(vt), np.array(f), mtllib


def test_write_obj_with_colors_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.uniform(0, 100, (50, 3))
    tris = rng.integers(0, 50, (80, 3))
    colors = rng.random((50, 3)).astype(np.float32)
    out = write_obj(tmp_path / "m.obj", v, tris, colors=colors, image_height=120)
    pv, pvt, pf, mtl = parse_obj(out)
    assert pv.shape == (50, 6) and len(pvt) == 0 and mtl is None
    np.testing.assert_allclose(pv[:, 0], v[:, 0], atol=1e-4)
    np.testing.assert_allclose(pv[:, 1], 119 - v[:, 1], atol=1e-4)  # y up: height - 1 - y
    np.testing.assert_allclose(pv[:, 2], v[:, 2], atol=1e-4)
    np.testing.assert_allclose(pv[:, 3:], colors, atol=1e-5)
    np.testing.assert_array_equal(pf[:, :, 0], tris[:, ::-1] + 1)  # 1-based, reversed winding
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.obj"]  # no temp files left
    # Without image_height: y -> -y. uint8 colours are scaled to [0, 1].
    pv, _, _, _ = parse_obj(write_obj(tmp_path / "n.obj", v, tris, colors=(colors * 255).astype(np.uint8)))
    np.testing.assert_allclose(pv[:, 1], -v[:, 1], atol=1e-4)
    np.testing.assert_allclose(pv[:, 3:], np.floor(colors * 255) / 255, atol=1e-5)


def test_write_obj_with_texture(uv_template, tmp_path):
    t = uv_template
    tris = uv_triangles(t)
    v = placed_face(t)
    tex = np.clip(_texture(), 0, 255).astype(np.uint8)
    out = write_obj(tmp_path / "face.obj", v, tris, texture=tex, uv_coords=texture.template_uv_coords(t),
                    image_height=300)
    pv, pvt, pf, mtl = parse_obj(out)
    assert pv.shape == (43867, 3) and pvt.shape == (43867, 2) and pf.shape == (len(tris), 3, 2)
    np.testing.assert_array_equal(pf[:, :, 0], tris[:, ::-1] + 1)  # reversed for the y flip
    np.testing.assert_array_equal(pf[:, :, 1], tris[:, ::-1] + 1)
    assert mtl == "face.mtl" and "map_Kd face.png" in (tmp_path / "face.mtl").read_text()
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "face.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(png, tex)
    # vt (u right, v up) points at the texture pixel the vertex came from.
    rows, cols = np.divmod(t.face_ind, UV_SIZE)
    np.testing.assert_allclose(pvt[:, 0] * 255, cols, atol=1e-3)
    np.testing.assert_allclose((1 - pvt[:, 1]) * 255, rows, atol=1e-3)
    # In the y-up .obj frame the face's triangles are counter-clockwise seen from +z (front faces).
    p = pv[pf[:, :, 0] - 1]
    area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    assert (area > 0).sum() > 0.8 * len(tris)
    assert pv[:, 1][t.face_ind == t.kpt_ind[8, 1] * UV_SIZE + t.kpt_ind[8, 0]] < pv[:, 1].mean()  # chin at the bottom


def test_write_obj_bad_input_leaves_nothing(tmp_path):
    v = np.zeros((3, 3))
    with pytest.raises(ValueError):
        write_obj(tmp_path / "a.obj", v, np.array([[0, 1, 5]]))
    with pytest.raises(ValueError):
        write_obj(tmp_path / "a.obj", v, np.array([[0, 1, 2]]), texture=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        write_obj(tmp_path / "a.obj", v, np.array([[0, 1, 2]]), colors=np.full((3, 3), 2.0))
    with pytest.raises(FileNotFoundError):
        write_obj(tmp_path / "missing" / "a.obj", v, np.array([[0, 1, 2]]))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- overlays
def test_draw_landmarks(uv_template):
    t = uv_template
    image = np.full((300, 300, 3), 40, np.uint8)
    lm = landmarks_from_posmap(as_posmap(t, placed_face(t)), t)
    out = draw.draw_landmarks(image, lm)
    assert out.shape == image.shape and out.dtype == np.uint8 and np.all(image == 40)  # input untouched
    cols, rows = np.round(lm[:, 0]).astype(int), np.round(lm[:, 1]).astype(int)
    assert np.all(out[rows, cols, 0] > 200)  # a red dot on every landmark
    changed = np.any(out != image, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= lm[:, 0].min() - 4 and xs.max() <= lm[:, 0].max() + 4  # nothing far away
    dots_only = np.any(draw.draw_landmarks(image, lm, lines=False) != image, axis=2)
    assert changed.sum() > dots_only.sum() and np.all(changed[dots_only])
    mid = np.round((lm[40, :2] + lm[41, :2]) / 2).astype(int)  # on the right eye's contour
    assert changed[mid[1], mid[0]] and not dots_only[mid[1], mid[0]]
    with pytest.raises(ValueError):
        draw.draw_landmarks(image, lm[:10])


def test_draw_mesh_overlay(uv_template):
    t = uv_template
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    v = placed_face(t)
    out = draw.draw_mesh_overlay(image, v, uv_triangles(t))
    _, mask = render.render_depth(v, uv_triangles(t), 300, 300, return_mask=True)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert np.mean(np.any(out[mask] != image[mask], axis=1)) > 0.95
