"""Texture editing and face swap (prnet.mesh.swap, prnet.inference.results.swap_faces, prnet-swap).

Oracle (tests/oracle.py): synthetic photos rendered from known geometry give exact position maps,
returned through the real Predictor chain as a perfect network would.
"""

import cv2
import numpy as np
import pytest

from prnet.errors import UVInputError
from prnet.inference.results import swap_faces
from prnet.mesh import swap as swapping
from prnet.mesh.render import render_colors, render_depth

from helpers import run_cli
from oracle import mirrored_posmap, oracle_face, psnr, synthetic


@pytest.mark.parametrize("seed,yaw", [(0, -15.0), (1, 10.0), (2, 55.0)])
def test_self_swap_returns_the_photo(uv_template, seed, yaw):
    """A face swapped with itself, without blending, is the photo again inside the painted face
    mask (PSNR >= 35 dB: only the two bilinear resamplings photo -> UV -> photo differ); nothing else changes."""
    image, pos = synthetic(seed, uv_template, yaw)
    face = oracle_face(image, pos, uv_template)
    out, painted = swap_faces(face, face, blend="none")
    assert painted.sum() > 5000
    assert psnr(out[painted], image[painted]) >= 35.0
    np.testing.assert_array_equal(out[~painted], image[~painted])


def test_front_triangles_face_the_camera(uv_template):
    """Camera-facing triangles (decided on vertex normals) agree with each triangle's own screen
    winding (counter-clockwise in x-right / y-down coordinates = front for the UV triangulation) for
    >= 98 % of the triangles not tiny (sub-pixel jitter of the vertices flips tiny ones: that is
    why the normals decide); a face turned 60 deg loses its far side, a frontal face keeps most."""
    kept = {}
    for yaw in (0.0, 60.0):
        image, pos = synthetic(3, uv_template, yaw)
        face = oracle_face(image, pos, uv_template)
        tris = face.triangles
        is_front = swapping.facing_camera(face.vertices, tris)
        p = face.vertices[tris, :2].astype(np.float64)
        area = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
                - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
        big = np.abs(area) > 0.5 * np.median(np.abs(area))
        assert ((area > 0) == is_front)[big].mean() > 0.98
        np.testing.assert_array_equal(swapping.front_triangles(face.vertices, tris), tris[is_front])
        kept[yaw] = is_front.mean()
    assert kept[0.0] > 0.85 and kept[60.0] < 0.75


def test_painted_pixels_are_the_visible_zbuffered_surface(uv_template):
    """On a face turned 60 deg, the painted pixels are exactly the pixels its camera-facing surface
    covers (a depth render), and each painted pixel shows the front-most surface: a texture that
    encodes its own UV position decodes, at every painted pixel, to a surface point lying at that
    pixel with the z-buffer's depth (the far cheek, behind the nose, is never painted)."""
    image, pos = synthetic(3, uv_template, 60.0)
    face = oracle_face(image, pos, uv_template)
    front = swapping.front_triangles(face.vertices, face.triangles)
    depth, covered = render_depth(face.vertices, front, *image.shape[:2], return_mask=True)
    rows, cols = np.mgrid[0:256, 0:256]
    code = np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)  # R = col, G = row
    out, painted = swap_faces(face, texture=code, blend="none")
    np.testing.assert_array_equal(painted, covered)
    col = out[painted][:, 0].astype(np.int64)
    row = out[painted][:, 1].astype(np.int64)
    surface = face.posmap[row, col]  # the decoded UV pixel's surface point (image px)
    ys, xs = np.nonzero(painted)
    inner = uv_template.face_mask[row, col] > 0
    assert inner.mean() > 0.97
    dist = np.hypot(surface[inner, 0] - xs[inner], surface[inner, 1] - ys[inner])
    dz = np.abs(surface[inner, 2] - depth[ys[inner], xs[inner]])
    assert np.median(dist) < 0.75 and np.percentile(dist, 99) < 2.0
    assert np.percentile(dz, 99) < 2.0
    # The hidden surface exists on this turned face, and none of it was painted.
    hidden = ~face.visible
    assert hidden.sum() > 1000
    hidden_uv = np.zeros((256, 256), bool)
    hidden_uv.reshape(-1)[uv_template.face_ind[hidden]] = True
    hidden_uv = cv2.erode(hidden_uv.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # away from its border
    assert not hidden_uv[row, col].any()


def test_mirrored_reference_paints_the_mirrored_texture(uv_template):
    """Swapping with a left-right mirrored copy of the photo: the reference texture is the target's
    texture mirrored in UV, the reference sees the mirror image of what the target sees, and the
    result equals the mirrored texture mapped back onto the target (checked against a Gouraud
    render of the same texture at the vertices, an independent renderer: PSNR >= 35 dB)."""
    image, pos = synthetic(4, uv_template, 25.0)
    target = oracle_face(image, pos, uv_template)
    mirror = np.ascontiguousarray(image[:, ::-1])
    reference = oracle_face(mirror, mirrored_posmap(pos, uv_template.face_mask, image.shape[1]), uv_template)

    face = uv_template.face_mask > 0
    both = face & face[:, ::-1]
    tex, ref_tex = target.uv_texture().astype(int), reference.uv_texture().astype(int)
    assert np.abs(ref_tex - tex[:, ::-1])[both].max() <= 1
    # per vertex (the cleaned mask's 4x4 erosions are not left-right symmetric: half a pixel each)
    vis, ref_vis = target.visibility_mask(clean=False) > 0, reference.visibility_mask(clean=False) > 0
    assert (ref_vis == vis[:, ::-1])[both].mean() > 0.98
    ref_vis = reference.visibility_mask() > 0  # what the swap uses

    out, painted = swap_faces(target, reference, blend="none")
    expected_tex = np.where(ref_vis[..., None], tex[:, ::-1], tex).astype(np.float32)
    colors = expected_tex.reshape(-1, 3)[uv_template.face_ind]
    gouraud = render_colors(target.vertices, target.triangles, colors, *image.shape[:2])
    assert psnr(out[painted], gouraud[painted]) >= 35.0
    # ... and it is not the photo: the face really was replaced by its mirror image.
    assert psnr(out[painted], image[painted]) < 30.0


def test_eyes_region_paints_only_the_eyes(uv_template):
    image, pos = synthetic(5, uv_template, 0.0)
    face = oracle_face(image, pos, uv_template)
    eyes = swapping.eyes_region_mask(uv_template.directory)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(eyes.astype(np.uint8))
    assert n - 1 == 2  # two eyes, either side of the UV centre column, at the same height
    assert sorted(centroids[1:, 0] < 128) == [False, True]
    assert abs(centroids[1, 1] - centroids[2, 1]) < 5
    assert (eyes <= uv_template.face_mask).all()

    black = np.zeros((256, 256, 3), np.uint8)
    out, painted = swap_faces(face, texture=black, region="eyes", blend="none")
    _, whole = swap_faces(face, texture=black, region="face", blend="none")
    assert 0 < painted.sum() < 0.1 * whole.sum()
    assert (painted <= whole).all()
    # Black inside the region; at its edge the texture is sampled across it (bilinear: black mixed
    # with the face's own texture, as the original's edited texture).
    inner = cv2.erode(painted.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inner.sum() > 0.3 * painted.sum() and (out[inner] == 0).all()
    assert out[painted].mean() < 0.5 * image[painted].mean()
    np.testing.assert_array_equal(out[~painted], image[~painted])
    # The painted pixels are where the eyes are: around the eye landmarks (36-47).
    ys, xs = np.nonzero(painted)
    eye_lm = face.landmarks[36:48, :2]
    near = np.min(np.hypot(xs[:, None] - eye_lm[None, :, 0], ys[:, None] - eye_lm[None, :, 1]), axis=1)
    assert np.percentile(near, 95) < 0.1 * np.ptp(face.landmarks[:, 0])


def test_user_masks_and_bad_uv_inputs(uv_template):
    image, pos = synthetic(6, uv_template, 0.0)
    face = oracle_face(image, pos, uv_template)
    left = np.zeros((256, 256), np.uint8)
    left[:, :128] = 255
    _, painted = swap_faces(face, texture=uv_template.face_texture, region=left, blend="none")
    _, whole = swap_faces(face, texture=uv_template.face_texture, region="face", blend="none")
    assert 0.3 < painted.sum() / whole.sum() < 0.7
    with pytest.raises(UVInputError, match="256x256"):
        swap_faces(face, texture=uv_template.face_texture, region=np.ones((128, 256)))
    with pytest.raises(UVInputError, match="square"):
        swap_faces(face, texture=np.zeros((256, 200, 3), np.uint8))
    big = cv2.resize(uv_template.face_texture, (512, 512), interpolation=cv2.INTER_CUBIC)
    back = swapping.check_uv_texture(big)  # a 512 texture is brought back to the 256 UV grid
    assert back.shape == (256, 256, 3) and np.abs(back.astype(int) - uv_template.face_texture).mean() < 2.0
    with pytest.raises(ValueError, match="exactly one"):
        swap_faces(face)


@pytest.mark.parametrize("mode", ["alpha", "poisson"])
def test_blending_changes_only_the_painted_pixels(uv_template, mode):
    image, pos = synthetic(7, uv_template, 20.0)
    face = oracle_face(image, pos, uv_template)
    grey = np.full((256, 256, 3), 128, np.uint8)
    out, painted = swap_faces(face, texture=grey, blend=mode)
    np.testing.assert_array_equal(out[~painted], image[~painted])
    hard, _ = swap_faces(face, texture=grey, blend="none")
    # Both keep more of the photo's look than a hard paste (closer to the photo inside the mask).
    assert np.abs(out[painted].astype(int) - image[painted]).mean() < \
        np.abs(hard[painted].astype(int) - image[painted]).mean()


def test_poisson_blend_of_a_region_touching_the_border():
    """A region touching the image border is cloned on the mirrored photo: its border row is
    cloned like the rest (no hard copy, no seam: tests/test_swap_blend.py); nothing outside the
    region changes; a uniform offset is removed by Poisson editing (the painted gradients are kept,
    the level comes from the photo around)."""
    rng = np.random.default_rng(0)
    image = rng.integers(100, 140, (60, 80, 3)).astype(np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[0:30, 20:50] = True  # touches the top border
    painted = image.astype(np.float32) + 60.0
    out = swapping.blend(image, painted, mask, "poisson")
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert np.abs(out[0, 22:48].astype(int) - image[0, 22:48]).mean() < 10  # offset gone on the border row
    assert np.abs(out[5:25, 25:45].astype(int) - image[5:25, 25:45]).mean() < 10  # offset gone
    with pytest.raises(ValueError, match="blend must be"):
        swapping.blend(image, painted, mask, "median")


def test_visibility_mask_properties(uv_template):
    """Frontal face: nearly all of it visible; turned 60 deg: the near half stays visible, the far
    half mostly not; a visible vertex sits on the z-buffered surface, a hidden front-facing one lies
    behind it; the mirrored photo's mask is the mirrored mask."""
    image, pos = synthetic(8, uv_template, 0.0)
    frontal = oracle_face(image, pos, uv_template)
    assert frontal.visible.mean() > 0.85

    image, pos = synthetic(8, uv_template, 60.0)
    face = oracle_face(image, pos, uv_template)
    mask = face.visibility_mask(clean=False)  # every visible vertex (the cleaned mask: tests/test_uv_mask.py)
    cols = np.divmod(uv_template.face_ind, 256)[1]
    vis = face.visible
    # yaw > 0 turns the nose toward the image's left: the UV right half (image right on a frontal
    # face) faces the camera.
    near_side = cols >= 128 if face.pose[1][0] > 0 else cols < 128
    assert vis[near_side].mean() > 0.9 > 0.6 > vis[~near_side].mean()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask.sum() == vis.sum() and (mask <= uv_template.face_mask).all()

    front = swapping.front_triangles(face.vertices, face.triangles)
    depth, covered = render_depth(face.vertices, front, *image.shape[:2], return_mask=True)
    # The z-buffer at the four pixel centres around each vertex (NaN where uncovered).
    x0 = np.floor(face.vertices[:, 0]).astype(int)
    y0 = np.floor(face.vertices[:, 1]).astype(int)
    around = np.stack([np.where(covered[y0 + dy, x0 + dx], depth[y0 + dy, x0 + dx], np.nan)
                       for dy in (0, 1) for dx in (0, 1)], axis=1)
    z, tol = face.vertices[:, 2:3], swapping.VISIBILITY_TOLERANCE_PX
    on_surface = np.any(z >= around - tol, axis=1)  # NaN compares False
    assert on_surface[vis].all()
    from prnet.mesh.render import vertex_normals

    facing = vertex_normals(face.vertices, face.triangles)[:, 2] > 0
    hidden = facing & ~vis & np.isfinite(around).all(axis=1)  # facing the camera, over the face, not seen
    assert hidden.sum() > 500 and np.all(z[hidden] < around[hidden] - tol)
    # A hidden vertex lies well behind: the occluder is at least several pixels nearer.
    assert np.median(np.min(around[hidden] - z[hidden], axis=1)) > 5

    mirror = np.ascontiguousarray(image[:, ::-1])
    mirrored = oracle_face(mirror, mirrored_posmap(pos, uv_template.face_mask, image.shape[1]), uv_template)
    both = (uv_template.face_mask > 0) & (uv_template.face_mask[:, ::-1] > 0)
    assert (mirrored.visibility_mask(clean=False)[both] == mask[:, ::-1][both]).mean() > 0.98


def test_texture_size_and_visible_only_texture(uv_template):
    image, pos = synthetic(9, uv_template, 45.0)
    face = oracle_face(image, pos, uv_template)
    full = face.uv_texture()
    masked = face.uv_texture(visible_only=True)
    hidden = (face.visibility_mask() == 0)
    assert (masked[hidden] == 0).all()
    np.testing.assert_array_equal(masked[~hidden], full[~hidden])
    big = face.uv_texture(size=512)
    assert big.shape == (512, 512, 3) and face.visibility_mask(512).shape == (512, 512)
    # Downsampled back, the 512 texture is the 256 one (same photo points, finer grid).
    small = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    inner = cv2.erode(uv_template.face_mask, np.ones((5, 5), np.uint8)) > 0
    assert np.abs(small - full)[inner].mean() < 3.0


# ----------------------------------------------------------------------------- the prnet-swap app
@pytest.mark.parametrize("entry_point", [False, True])
def test_help_explains_modes_and_exit_status(entry_point):
    # entry_point: call run() as the `prnet-swap` console script does (sys.argv[0] is not the module).
    target = ["-c", "from prnet.cli.swap import run; run()"] if entry_point else "prnet.cli.swap"
    proc = run_cli(target, "--help")
    assert proc.returncode == 0, proc.stderr
    # Every flag is listed: tests/test_cli_common.py (derived from the flag registry).
    assert "mask:PATH" in proc.stdout and "Exit status" in proc.stdout


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("prnet-swap: error:")]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_face", "nothing_painted"])
def test_no_face_in_the_reference_is_a_clear_error(tmp_path, samples_dir, assets_dir, case):
    """exit 1, one line, nothing written: a reference without a face, or (random weights on einstein,
    cropped from einstein.pts: a mesh with no visible pixel) nothing painted, which used to be
    "0 pixels painted" and exit 0."""
    grey = tmp_path / "wall.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    out = tmp_path / "out" / "swapped.png"
    if case == "no_face":
        args = ["--input", samples_dir / "faces" / "prnet_test_0.jpg", "--reference", grey, "--detector", "opencv"]
        expect = ("--reference", "no face found")
    else:
        folder = tmp_path / "in"
        folder.mkdir()
        for name in ("einstein.jpg", "einstein.pts"):
            (folder / name).symlink_to(samples_dir / "faces" / name)
        args = ["--input", folder / "einstein.jpg", "--reference_texture", assets_dir / "uv_face.png"]
        expect = ("--input", "nothing painted: no part of the reconstructed face is visible")
    proc = run_cli("prnet.cli.swap", *args, "--output", out, "--smoke_test_random_weights", "--uv_dir", assets_dir)
    assert proc.returncode == 1, proc.stderr
    lines = _error_lines(proc)
    assert len(lines) == 1 and all(word in lines[0] for word in expect), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize("case", ["mask_size", "texture_unreadable", "mask_unreadable"])
def test_bad_uv_inputs_fail_before_any_work(tmp_path, assets_dir, case):
    target = tmp_path / "target.png"
    cv2.imwrite(str(target), np.full((64, 64, 3), 90, np.uint8))
    out = tmp_path / "out" / "swapped.png"
    args = ["--input", target, "--output", out, "--smoke_test_random_weights", "--uv_dir", assets_dir]
    if case == "mask_size":
        mask = tmp_path / "mask.png"
        cv2.imwrite(str(mask), np.full((100, 120), 255, np.uint8))
        args += ["--reference", target, "--mode", f"mask:{mask}"]
        expect = "256x256"
    elif case == "texture_unreadable":
        bad = tmp_path / "texture.png"
        bad.write_bytes(b"not a png at all")
        args += ["--reference_texture", bad]
        expect = "--reference_texture"
    else:
        args += ["--reference", target, "--mode", f"mask:{tmp_path / 'missing.png'}"]
        expect = "--mode mask"
    proc = run_cli("prnet.cli.swap", *args)
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc)
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "using weights" not in proc.stderr
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


@pytest.fixture(scope="module")
def mean_face_model(uv_template, tmp_path_factory):
    from oracle import mean_face_crop_posmap, save_constant_model

    return save_constant_model(mean_face_crop_posmap(uv_template), tmp_path_factory.mktemp("mean-face") / "model")


@pytest.mark.slow
def test_swap_cli_writes_the_edited_photo(tmp_path, samples_dir, assets_dir, mean_face_model):
    """End to end with a stand-in network (a SavedModel returning the mean face framed by the crop
    rule): the template's texture painted onto einstein's face (cropped from einstein.pts) in a
    ``--mode mask:PATH`` region (the nose and mouth band of the UV face; review row 3: the mask mode
    crashed) with the default Poisson blend. The output is the photo's size and differs from it
    only on the face (inside the crop square)."""
    from prnet.core.crop import box_from_landmarks
    from prnet.core.images import read_image
    from prnet.data.annotations import sidecar_landmarks

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("einstein.jpg", "einstein.pts"):
        (folder / name).symlink_to(samples_dir / "faces" / name)
    band = tmp_path / "band.png"
    mask = np.zeros((256, 256), np.uint8)
    mask[100:200] = 255
    cv2.imwrite(str(band), mask)
    out = tmp_path / "out" / "edited.png"
    proc = run_cli("prnet.cli.swap", "--input", folder / "einstein.jpg", "--reference_texture",
                   assets_dir / "uv_face.png", "--mode", f"mask:{band}", "--output", out,
                   "--weights", mean_face_model, "--uv_dir", assets_dir, env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert proc.returncode == 0, proc.stderr
    assert "pixels painted, blend poisson" in proc.stderr
    # as a user's shell (no TF_CPP_MIN_LOG_LEVEL): only the tool's own lines (review row 30: no
    # TensorFlow start-up banners, no traceback)
    assert all(line.startswith("prnet-swap: ") for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    assert sorted(out.parent.iterdir()) == [out]
    photo, edited = read_image(folder / "einstein.jpg"), read_image(out)
    assert edited.shape == photo.shape
    changed = np.any(np.abs(edited.astype(int) - photo) > 2, axis=2)
    center, size = box_from_landmarks(sidecar_landmarks(folder / "einstein.jpg")[0])
    ys, xs = np.nonzero(changed)
    assert len(xs) > 0.05 * size ** 2
    assert np.all(np.abs(xs - center[0]) <= size / 2 + 1) and np.all(np.abs(ys - center[1]) <= size / 2 + 1)
