"""The per-face outputs (prnet.outputs.faces): one writer per kind, the files each writes, and the
content beyond the mesh: visibility mask, texture size, frontal mesh, pose box and camera matrix,
.npz / .mat dumps, binary .ply, depth as a float array; the file naming and random-weights marking."""

import re

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from prnet.mesh.ply import read_ply, write_ply
from prnet.outputs import faces as face_outputs
from prnet.outputs.faces import OUTPUT_KINDS, WRITERS, TextureOptions, write_face_outputs

from oracle import oracle_face, similarity_face, synthetic

EXPECTED_FILES = {
    "obj": ["f.obj"], "landmarks": ["f_landmarks.txt"], "pose": ["f_pose.txt"], "depth": ["f_depth.png"],
    "overlay": ["f_overlay.png"], "texture": ["f_texture.png"], "texture_mask": ["f_texture_mask.png"],
    "front": ["f_front.obj"], "pose_box": ["f_pose_box.png"], "npz": ["f.npz"], "mat": ["f_mesh.mat"],
    "ply": ["f.ply"], "depth_npy": ["f_depth.npy"], "crop": ["f_crop.png"], "glb": ["f.glb"],
}


@pytest.fixture(scope="module")
def turned(uv_template):
    image, pos = synthetic(11, uv_template, 40.0)
    return oracle_face(image, pos, uv_template)


@pytest.fixture(scope="module")
def written(turned, tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs")
    paths = write_face_outputs(folder, "f", turned, "synthetic", OUTPUT_KINDS,
                               TextureOptions(obj=False, size=512, visible_only=True))
    return folder, paths


def _read_png(path, flags=cv2.IMREAD_UNCHANGED):
    img = cv2.imread(str(path), flags)
    assert img is not None, path
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_every_output_kind_writes_its_files(written):
    folder, paths = written
    assert set(EXPECTED_FILES) == set(OUTPUT_KINDS)
    expected = sorted(name for kind in OUTPUT_KINDS for name in EXPECTED_FILES[kind])
    assert sorted(p.name for p in paths) == expected
    assert sorted(p.name for p in folder.iterdir()) == expected


def test_texture_mask_and_texture_size(turned, written):
    folder, _ = written
    mask = _read_png(folder / "f_texture_mask.png")
    texture = _read_png(folder / "f_texture.png")
    assert mask.shape == (512, 512) and texture.shape == (512, 512, 3)
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask, turned.visibility_mask(512) * 255)
    assert (texture[mask == 0] == 0).all()  # --mask_texture: hidden surface is black
    assert texture[mask > 0].mean() > 20
    # The 512 mask is the 256 one on a finer grid.
    np.testing.assert_array_equal(mask[::2, ::2] > 0, turned.visibility_mask() > 0)


def test_ply_round_trip(turned, written):
    folder, _ = written
    path = folder / "f.ply"
    vertices, faces, colors = read_ply(path)
    h = turned.image.shape[0]
    expected = np.stack([turned.vertices[:, 0], h - 1 - turned.vertices[:, 1], turned.vertices[:, 2]], axis=1)
    np.testing.assert_allclose(vertices, expected, atol=1e-4)
    np.testing.assert_array_equal(faces, turned.triangles[:, ::-1])
    np.testing.assert_array_equal(colors, np.round(turned.colors.astype(np.float64) * 255).astype(np.uint8))
    # Independent check of the binary layout: header text, then 15 bytes per vertex, 13 per face.
    data = path.read_bytes()
    header = data[:data.index(b"end_header\n") + 11].decode("ascii")
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {len(expected)}" in header and f"element face {len(faces)}" in header
    assert len(data) == len(header) + 15 * len(expected) + 13 * len(faces)
    first = np.frombuffer(data, "<f4", 3, len(header))
    np.testing.assert_allclose(first, expected[0], atol=1e-4)


def test_ply_writer_rejects_bad_meshes_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="triangle indices"):
        write_ply(tmp_path / "bad.ply", np.zeros((3, 3)), np.array([[0, 1, 5]]), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        write_ply(tmp_path / "bad.ply", np.full((3, 3), np.nan), np.array([[0, 1, 2]]), np.zeros((3, 3)))
    assert list(tmp_path.iterdir()) == []


def test_npz_and_mat_hold_the_same_arrays(turned, written):
    folder, _ = written
    npz = np.load(folder / "f.npz")
    mat = loadmat(str(folder / "f_mesh.mat"))
    rot, angles = turned.pose
    for name, value in (("vertices", turned.vertices), ("colors", turned.colors), ("triangles", turned.triangles),
                        ("kpt", turned.landmarks), ("pose", angles), ("rotation", rot), ("tform", turned.tform),
                        ("camera_matrix", turned.camera_matrix), ("posmap", turned.posmap), ("box", turned.box)):
        np.testing.assert_allclose(npz[name], value, rtol=1e-6, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(mat[name]).reshape(np.shape(value)), value, rtol=1e-6, atol=1e-5,
                                   err_msg=name)
    assert npz["triangles"].min() == 0 and npz["triangles"].max() == len(turned.vertices) - 1
    assert not bool(npz["random_weights"]) and str(npz["weights"]) == turned.source


def test_depth_array_is_the_depth_image_with_nan_background(turned, written):
    folder, _ = written
    depth = np.load(folder / "f_depth.npy")
    assert depth.dtype == np.float32 and depth.shape == turned.image.shape[:2]
    ref, covered = turned.depth_image(with_mask=True)
    np.testing.assert_array_equal(np.isnan(depth), ~covered)
    np.testing.assert_array_equal(depth[covered], ref[covered])
    png = _read_png(folder / "f_depth.png")
    np.testing.assert_array_equal(png > 0, covered)


def test_known_pose_gives_camera_matrix_box_and_frontal_mesh(uv_template, tmp_path):
    """A face that is exactly s R canonical + t: the camera matrix is [s R | t], the pose file holds
    it, the frontal mesh is the canonical face, and the pose box's front square lies toward the nose."""
    face, rot, scale, t = similarity_face(uv_template, yaw=30.0, pitch=10.0, roll=-5.0)
    np.testing.assert_allclose(face.camera_matrix, np.hstack([scale * rot, t[:, None]]), atol=1e-3)
    np.testing.assert_allclose(face.pose[1], (30.0, 10.0, -5.0), atol=1e-3)
    np.testing.assert_allclose(face.frontal_vertices(), uv_template.canonical_vertices, atol=1e-3)

    paths = write_face_outputs(tmp_path, "f", face, "known", ["pose", "front", "pose_box"])
    text = (tmp_path / "f_pose.txt").read_text()
    rows = [list(map(float, line.split())) for line in text.splitlines() if line and not line.startswith("#")]
    np.testing.assert_allclose(rows[0], (30.0, 10.0, -5.0), atol=1e-3)
    np.testing.assert_allclose(rows[1:4], rot, atol=1e-5)
    np.testing.assert_allclose(rows[4:7], face.camera_matrix, atol=1e-5)

    v = np.array([list(map(float, line.split()[1:4])) for line in
                  (tmp_path / "f_front.obj").read_text().splitlines() if line.startswith("v ")])
    canonical = uv_template.canonical_vertices
    np.testing.assert_allclose(v, canonical * [1, -1, 1], atol=2e-3)  # y up in the .obj

    box = face.pose_box()
    assert box.shape == (8, 3)
    rear, front = box[:4, :2].mean(0), box[4:, :2].mean(0)
    assert front[0] < rear[0]  # yaw > 0: the nose, and the box's front, turn toward the image's left
    assert front[1] < rear[1]  # pitch > 0: looking up
    overlay = _read_png(tmp_path / "f_pose_box.png")
    changed = np.any(overlay != face.image, axis=2)
    h, w = changed.shape
    inside = [(x, y) for x, y in np.round(box[:, :2]).astype(int) if 2 <= x < w - 2 and 2 <= y < h - 2]
    assert len(inside) >= 6
    for x, y in inside:  # a line passes by every corner in the photo
        assert changed[y - 2:y + 3, x - 2:x + 3].any()
    assert len(paths) == 3


def test_frontal_pose_box_is_a_centred_square(uv_template):
    face, _, scale, t = similarity_face(uv_template)
    box = face.pose_box()
    rear = box[:4]
    np.testing.assert_allclose(rear[0, 1], rear[1, 1], atol=1e-6)  # top edge horizontal
    np.testing.assert_allclose(np.ptp(rear[:, 0]), np.ptp(rear[:, 1]), rtol=1e-6)  # a square
    np.testing.assert_allclose(box[4:, :2].mean(0), rear[:, :2].mean(0), atol=1e-6)  # front straight ahead
    assert np.all(box[4:, 2] > box[:4, 2])  # nearer the camera


def test_random_weights_are_marked_in_ply_and_dumps(turned, tmp_path):
    import dataclasses

    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING_ASCII

    fake = dataclasses.replace(turned, random_weights=True)
    write_face_outputs(tmp_path, "f", fake, "x", ["ply", "npz"])
    assert RANDOM_WEIGHTS_WARNING_ASCII in (tmp_path / "f.ply").read_bytes()[:400].decode("ascii", "replace")
    assert bool(np.load(tmp_path / "f.npz")["random_weights"])


def test_demo_help_lists_the_new_outputs():
    from helpers import run_cli

    proc = run_cli("prnet.cli.demo", "--help", timeout=120)
    for word in ("texture_size", "mask_texture", "texture_mask", "pose_box", "depth_npy", "_mesh.mat", ".ply"):
        assert word in proc.stdout, word
    assert re.search(r"--outputs", proc.stdout)


@pytest.mark.slow
def test_demo_cli_writes_every_output_kind(tmp_path, samples_dir, assets_dir):
    """The flags reach the writers: every --outputs kind, --texture_size, --mask_texture, --texture
    (random weights: a pipeline check; the face is cropped from einstein.pts)."""
    from helpers import run_cli

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("einstein.jpg", "einstein.pts"):
        (folder / name).symlink_to(samples_dir / "faces" / name)
    out = tmp_path / "out"
    proc = run_cli("prnet.cli.demo", "--input", folder / "einstein.jpg", "--output_dir", out,
                   "--assets_dir", assets_dir, "--smoke_test_random_weights", "--outputs", ",".join(OUTPUT_KINDS),
                   "--texture_size", 128, "--mask_texture", "--texture")
    assert proc.returncode == 0, proc.stderr
    stem = "einstein_0_RANDOM_WEIGHTS"
    names = sorted(p.name for p in out.iterdir())
    expected = sorted(n.replace("f", stem, 1) for kind in OUTPUT_KINDS for n in EXPECTED_FILES[kind])
    assert names == sorted(expected + [f"{stem}.png", f"{stem}.mtl"])  # the textured .obj's image
    assert _read_png(out / f"{stem}_texture.png").shape == (128, 128, 3)
    assert _read_png(out / f"{stem}.png").shape == (128, 128, 3)
    mask = _read_png(out / f"{stem}_texture_mask.png")
    assert mask.shape == (128, 128)
    assert (_read_png(out / f"{stem}_texture.png")[mask == 0] == 0).all()


def test_crop_output_is_the_network_input(uv_template, tmp_path):
    """`crop` (the original's isImage) writes exactly the 256x256 crop the backend received."""
    from prnet.inference.predictor import Predictor

    from oracle import OracleBackend

    class Recording(OracleBackend):
        def __call__(self, crops):
            self.seen = np.asarray(crops)
            return super().__call__(crops)

    image, pos = synthetic(5, uv_template, -30.0)
    backend = Recording(pos)
    predictor = Predictor(backend, detector=None, template=uv_template)
    landmarks = np.asarray(pos)[uv_template.kpt_ind[:, 1], uv_template.kpt_ind[:, 0]]
    backend.tform = predictor.face_crops(image, landmarks=landmarks)[0][3]
    face = predictor.reconstruct(image, landmarks=landmarks)[0]
    (path,) = write_face_outputs(tmp_path, "f", face, "synthetic", ["crop"])
    written = _read_png(path)
    assert written.shape == (256, 256, 3) and written.dtype == np.uint8
    seen = backend.seen[0]
    assert seen.shape == (256, 256, 3)
    # the backend gets float [0, 1] crops; the file is the uint8 warp of the same transform
    assert np.abs(written / 255.0 - seen).max() <= 1.5 / 255
    assert np.abs(written / 255.0 - seen).mean() < 0.2 / 255


def _documented_files() -> dict:
    """``{kind: (files, textured extras)}`` from the table in :mod:`prnet.outputs.faces`'s docstring,
    ``<stem>`` replaced by ``f`` (a continuation row's files are the textured ``.obj``'s extras)."""
    table, kind = {}, None
    for line in face_outputs.__doc__.splitlines():
        names = [f"f{rest}" for rest in re.findall(r"``<stem>([^`]*)``", line)]
        if not names:
            continue
        if not line.startswith(" "):
            kind = line.split()[0]
            table[kind] = (names, [])
        else:
            table[kind][1].extend(names)
    return table


def test_the_registry_has_one_writer_per_kind_writing_the_documented_files(turned, tmp_path):
    """Each writer alone, for one face, writes exactly the files the library's table and the demo's
    help document for its kind (the textured ``.obj`` also its ``.png`` and ``.mtl``)."""
    import ast
    from pathlib import Path

    import prnet.cli

    demo_help = ast.get_docstring(ast.parse((Path(prnet.cli.__file__).parent / "demo.py").read_text("utf-8")))
    documented = _documented_files()
    assert list(WRITERS) == list(OUTPUT_KINDS) == list(documented)
    assert set(face_outputs.DEFAULT_OUTPUTS) <= set(OUTPUT_KINDS)
    runs = [(kind, TextureOptions(), documented[kind][0]) for kind in OUTPUT_KINDS]
    runs.append(("obj", TextureOptions(obj=True, size=64), documented["obj"][0] + documented["obj"][1]))
    for n, (kind, textures, expected) in enumerate(runs):
        folder = tmp_path / f"{n}_{kind}"
        folder.mkdir()
        paths = WRITERS[kind](folder, "f", turned, "synthetic", textures)
        assert sorted(p.name for p in paths) == sorted(expected), kind
        assert sorted(p.name for p in folder.iterdir()) == sorted(expected), kind
        assert sorted(expected) == sorted(EXPECTED_FILES[kind] + (["f.mtl", "f.png"] if textures.obj else []))
        for name in documented[kind][0]:  # the demo's help names each kind's files: <name>_<k> for the stem
            assert f"<name>_<k>{name[1:]}" in demo_help, name
    with pytest.raises(ValueError, match="unknown output kinds"):
        write_face_outputs(tmp_path, "f", turned, "synthetic", ["obj", "fbx"])


def test_file_names_and_random_weights_marking(turned, tmp_path):
    import dataclasses

    from prnet.outputs.naming import RANDOM_TAG, face_stem, header, output_names, tagged_path, warning_text
    from prnet.outputs.video import output_paths

    assert face_stem("img", 2) == "img_2" and face_stem("img", 0, True) == "img_0" + RANDOM_TAG
    assert tagged_path(tmp_path / "out.png", True).name == f"out{RANDOM_TAG}.png"
    assert tagged_path(tmp_path / "out.png", False) == tmp_path / "out.png"
    assert {p.name for p in output_paths(tmp_path, "clip", True).values()} == {
        f"clip{RANDOM_TAG}_video.mp4", f"clip{RANDOM_TAG}_tracks.npz", f"clip{RANDOM_TAG}_tracks.csv"}
    assert output_names([tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpg"]) == ["a_jpg", "a_png", "b"]
    fake = dataclasses.replace(turned, random_weights=True)
    assert header(turned, "x.jpg", "head pose").splitlines() == ["# PRNet head pose for x.jpg",
                                                                  f"# weights: {turned.source}"]
    marked = header(fake, "x.jpg", "head pose").splitlines()
    assert marked[0].startswith(f"# {warning_text()}") and marked[1:] == ["# PRNet head pose for x.jpg",
                                                                          f"# weights: {turned.source}"]
    # every file of an untrained network's face says so: names, text headers, .obj/.ply comments, pixels
    paths = face_outputs.write_image_outputs([fake], "img", "x.jpg", tmp_path / "out", ["obj", "landmarks", "overlay"])
    assert sorted(p.name for p in paths) == sorted(f"img_0{RANDOM_TAG}{s}" for s in (".obj", "_landmarks.txt",
                                                                                   "_overlay.png"))
    obj_text = (tmp_path / "out" / f"img_0{RANDOM_TAG}.obj").read_text(encoding="ascii")
    assert obj_text.startswith(f"# {warning_text(ascii_only=True)}\n")
    plain = WRITERS["overlay"](tmp_path, "plain", turned, "x.jpg", TextureOptions())[0]
    shown, unmarked = _read_png(tmp_path / "out" / f"img_0{RANDOM_TAG}_overlay.png"), _read_png(plain)
    differs = np.any(shown != unmarked, axis=2)
    assert differs.any() and not differs[60:].any()  # the warning only, in the top band


def test_write_image_is_atomic_and_lossless_for_png(tmp_path):
    from prnet.core.images import read_image, write_image

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey = rgb[..., 1].copy()
    assert write_image(tmp_path / "rgb.png", rgb) == tmp_path / "rgb.png"
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)  # channel order kept
    write_image(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(_read_png(tmp_path / "grey.png"), grey)
    write_image(tmp_path / "q.jpg", rgb)
    assert np.abs(read_image(tmp_path / "q.jpg").astype(int) - rgb).mean() < 60
    with pytest.raises(Exception):  # noqa: B017  (cv2.error: no encoder for the suffix): nothing left behind
        write_image(tmp_path / "x.unknown", rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "q.jpg", "rgb.png"]


def test_pose_box_of_random_weights_is_marked_like_the_overlay(turned, tmp_path):
    """Issue 20 section 4: pose_box.png said nothing about random weights in smoke mode (the overlay did)."""
    import dataclasses

    from prnet.outputs.naming import WARNING_COLOR

    fake = dataclasses.replace(turned, random_weights=True)
    marked = _read_png(WRITERS["pose_box"](tmp_path, "marked", fake, "x.jpg", TextureOptions())[0])
    plain = _read_png(WRITERS["pose_box"](tmp_path, "plain", turned, "x.jpg", TextureOptions())[0])
    differs = np.any(marked != plain, axis=2)
    assert differs[:60].sum() > 200 and not differs[60:].any()  # the warning, in the top band only
    change = marked[:60][differs[:60]].astype(int) - plain[:60][differs[:60]].astype(int)
    assert WARNING_COLOR == (255, 0, 0)
    assert change[:, 0].mean() > 20 and change[:, 1].mean() < -20 and change[:, 2].mean() < -20  # drawn in red
