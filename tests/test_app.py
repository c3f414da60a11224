"""prnet-app's work without the page (prnet.app.service): one photo gives the demo's files, a zip of them,
a .glb per face and the pose; each bad input (not an image, no face, over the pixel cap, a clip over the
frame limit, not a video) is an AppError with its message and the service keeps working; a clip gives
an H.264 video and the tracks; random weights put the banner on every result.

The network is a stand-in whose output is a real face shape: the template's mean face framed in every
crop as the x1.6 landmark rule frames a face (``oracle.mean_face_crop_posmap``), NOT a face model, behind
the default detector (BlazeFace). ``python tests/test_app.py PORT WORK_DIR`` serves
the page on that stand-in, photos up to 4 MP, clips up to 40 frames (tests/test_browser.py and the README
screenshot use it)."""

import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from prnet.app.service import AppError, AppService, banner
from prnet.inference.predictor import Predictor
from prnet.mesh.gltf import read_glb

from oracle import mean_face_crop_posmap

SHARED = Path(__file__).resolve().parents[2] / "shared"


class MeanFaceBackend:
    """A stand-in network: the mean face (crop px) for every crop. NOT a face model."""

    source = "TEST MODEL: the mean face in every crop (not a face model)"

    def __init__(self, template, random_weights=False):
        self.posmap = mean_face_crop_posmap(template)
        self.random_weights = random_weights

    def __call__(self, crops):
        return np.repeat(self.posmap[None], len(crops), axis=0)


def test_predictor(template, *, random_weights=False, max_pixels=40_000_000):
    return Predictor(MeanFaceBackend(template, random_weights), detector="auto", template=template,
                     max_pixels=max_pixels)


test_predictor.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def service(uv_template, tmp_path_factory):
    return AppService(test_predictor(uv_template, max_pixels=2_000_000), tmp_path_factory.mktemp("app"),
                      max_frames=12)


def test_photo_writes_the_demo_files_a_zip_and_a_glb(service, samples_dir):
    photo = samples_dir / "faces" / "einstein.jpg"
    result = service.photo(photo, "einstein", outputs=["obj", "ply"])
    face_glb = result.faces[0].glb  # the 3D view's mesh (not one of the demo's files)
    assert len(result.faces) >= 1 and not result.random_weights
    shown = ["_0.glb", "_0_overlay.png", "_0_depth.png", "_0_landmarks.txt", "_0_pose.txt"]
    assert all(f"einstein{k}" in [p.name for p in result.files] for k in shown)
    with zipfile.ZipFile(service.zip(result.run_id)) as z:  # the other kinds asked for, written on demand
        names = sorted(z.namelist())
    assert names == sorted(p.name for p in result.folder.iterdir() if p.suffix != ".zip" and p != face_glb)
    assert all(f"einstein{k}" in names for k in shown + ["_0.obj", "_0.ply"]), names
    assert service.zip(result.run_id).name == result.zip_name  # made once
    with pytest.raises(AppError, match="expired"):
        service.zip("0123456789ab")
    face = result.faces[0]
    vertices, faces, colors, _, _ = read_glb(face.glb)
    full, _, _, _, _ = read_glb(result.folder / "einstein_0.glb")
    assert 10000 < len(vertices) < len(full) / 3 and colors is not None  # every 2nd UV pixel
    assert np.isin(vertices, full).all(axis=1).all()  # ... of the same mesh
    np.testing.assert_allclose(face.centre, (vertices.min(0) + vertices.max(0)) / 2, atol=1e-2)
    assert abs(face.extent - (vertices.max(0) - vertices.min(0)).max()) < 1e-2
    x0, y0, x1, y1 = face.box  # the mesh lies on the detected face
    lm = face.landmarks
    assert lm.shape == (68, 3) and np.all(np.isfinite(face.pose))
    assert x0 - 20 < np.median(lm[:, 0]) < x1 + 20 and y0 - 20 < np.median(lm[:, 1]) < y1 + 20
    assert abs(face.pose[0]) < 30  # the mean face, frontal in its crop


def test_view_mesh_is_the_face_subsampled_and_wound_alike(uv_template):
    from prnet.app.service import view_mesh

    from oracle import similarity_face

    face, *_ = similarity_face(uv_template, yaw=20.0)
    v, tris, colors = view_mesh(face, step=2)
    full_v, full_t = np.asarray(face.vertices), np.asarray(face.triangles)
    assert len(full_v) / 5 < len(v) < len(full_v) / 3 and len(tris) > len(full_t) / 5
    assert {tuple(x) for x in v} <= {tuple(x) for x in full_v}
    where = [np.flatnonzero((full_v == x).all(axis=1))[0] for x in v[::500]]
    np.testing.assert_array_equal(colors[::500], np.asarray(face.colors)[where])

    def facing(vertices, triangles):  # signed screen area (image px, y down): the same sign for both meshes
        a, b, c = (vertices[triangles[:, i]] for i in range(3))
        return np.cross(b - a, c - a)[:, 2]

    assert np.sign(facing(full_v, full_t).sum()) == np.sign(facing(v, tris).sum()) != 0
    front = np.sign(facing(full_v, full_t).sum())  # (a turned face has some triangles facing away)
    assert np.mean(np.sign(facing(v, tris)) == front) > 0.7 < np.mean(np.sign(facing(full_v, full_t)) == front)


def test_bad_inputs_are_messages_and_the_service_goes_on(service, samples_dir, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    with pytest.raises(AppError, match="notes: not a photo"):
        service.photo(text, "notes")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(AppError, match="no face found in grey"):
        service.photo(grey, "grey")
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((1500, 1500, 3), np.uint8))  # 2.25 MP > the 2 MP cap of this service
    with pytest.raises(AppError, match="larger than the limit"):
        service.photo(big, "big")
    assert str(tmp_path) not in str(pytest.raises)  # (messages name the upload, not the server's path)
    with pytest.raises(AppError, match="not a video"):
        service.video(text, "notes")
    with pytest.raises(AppError, match="unknown output kinds"):
        service.photo(samples_dir / "faces" / "einstein.jpg", "einstein", outputs=["fbx"])
    assert service.photo(samples_dir / "faces" / "takeo.ppm", "takeo").faces  # still serving


def _clip(path, frames):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_video_h264_tracks_and_the_frame_limit(service, samples_dir, tmp_path):
    from prnet.outputs.h264 import h264_encoder

    photo = cv2.imread(str(samples_dir / "faces" / "einstein.jpg"))
    photo = cv2.resize(photo, (photo.shape[1] // 2 * 2, photo.shape[0] // 2 * 2))
    result = service.video(_clip(tmp_path / "c.mp4", [np.roll(photo, 3 * i, axis=1) for i in range(6)]), "c")
    assert result.frames == 6 and result.faces >= 6
    assert sorted(p.name for p in (result.video, result.npz, result.csv)) == ["c_tracks.csv", "c_tracks.npz",
                                                                           "c_video.mp4"]
    import subprocess

    info = subprocess.run([h264_encoder()[0], "-hide_banner", "-i", str(result.video)], capture_output=True,
                          text=True).stderr
    assert "Video: h264" in info and "yuv420p" in info
    with pytest.raises(AppError, match="13 frames, more than this app's limit of 12"):
        service.video(_clip(tmp_path / "long.mp4", [photo] * 13), "long")


def test_swap_paints_the_reference_face_and_only_there(service, samples_dir):
    from prnet.core.images import read_image

    result = service.swap(samples_dir / "faces" / "takeo.ppm", samples_dir / "faces" / "einstein.jpg",
                          target_name="takeo", reference_name="einstein", region="face", blend="none")
    assert result.image.name == "takeo_swap.png" and result.painted > 1000
    before, after = read_image(samples_dir / "faces" / "takeo.ppm"), read_image(result.image)
    changed = (before != after).any(axis=-1)
    assert 0 < changed.sum() <= result.painted
    with pytest.raises(AppError, match="no face found in grey"):
        grey = result.image.parent / "grey.png"
        cv2.imwrite(str(grey), np.full((200, 200, 3), 128, np.uint8))
        service.swap(grey, samples_dir / "faces" / "einstein.jpg", target_name="grey")


def test_random_weights_banner_on_every_result(uv_template, samples_dir, tmp_path):
    service = AppService(test_predictor(uv_template, random_weights=True), tmp_path)
    result = service.photo(samples_dir / "faces" / "einstein.jpg", "einstein")
    assert result.random_weights and "RANDOM_WEIGHTS" in result.zip_name
    assert all("RANDOM_WEIGHTS" in p.name for p in result.files)
    assert banner(True).startswith("RANDOM WEIGHTS") and banner(False) == ""


def serve(port: int, work_dir: str) -> None:
    """Serve the page on the stand-in network (the test model above), UV template from ../shared."""
    from prnet.app.page import serve as serve_page
    from prnet.core.uv import load_uv_template

    template = load_uv_template(SHARED / "prnet-assets" / "uv-data")
    service = AppService(test_predictor(template, max_pixels=4_000_000), work_dir, max_frames=40)
    service.predictor.detector  # noqa: B018  (built before serving, as prnet-app does)
    serve_page(service, port=port, title="PRNet: 3D face reconstruction (TEST MODEL: mean face, not a face model)")


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])


def test_cli_port_in_use_is_one_setup_error_before_loading_anything():
    """prnet-app on a port already listened on: exit 2, one ``prnet-app: error:`` line, before the weights
    (no TensorFlow in the child: the fast lane checks it)."""
    import socket

    from helpers import run_cli

    pytest.importorskip("nicegui")  # the app extra (CI installs it)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("prnet.cli.app", "--port", port, "--smoke_test_random_weights")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("prnet-app: error: cannot serve on 127.0.0.1:"), lines
