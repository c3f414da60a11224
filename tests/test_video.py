"""Video tracking (prnet.inference.video) and its files (prnet.outputs.video) on clips generated from a real
annotated photo.

Each clip moves, scales and rotates the real 68-point annotation of ``faces/takeo.pts`` frame by
frame (the similarity of a ``cv2.warpAffine`` matrix), so the true landmarks of every frame, and
so the true landmark crop, are known. The network is an oracle that sees only the crop: every frame
is a "coordinate image" (red / green = the pixel's x / y as a ramp over the frame, blue =
255 - 4 x the frame index), so the oracle recovers from the crop's pixels both the frame and the
crop transform (least squares), and returns the exact position map of that crop of the true face
nearest the crop's centre (the mean face moved onto the frame's landmarks). The detector returns
each visible face's true landmark box, shifted and scaled by 10 %, and records the frames it ran on.
"""

import cv2
import numpy as np
import pytest

from prnet.core import crop as cropping
from prnet.errors import ImageReadError
from prnet.inference import video
from prnet.inference.predictor import Predictor
from prnet.outputs.video import RESULT_FIELDS, process_video

from helpers import run_cli
from oracle import truth_posmap

SHAPE = (300, 400)  # frame (H, W)


def motion(centre, target, scale, angle_deg) -> np.ndarray:
    """2x3 similarity (cv2.getRotationMatrix2D) taking ``centre`` (photo px) to ``target`` (frame px)."""
    m = cv2.getRotationMatrix2D(tuple(map(float, centre)), float(angle_deg), float(scale))
    m[:, 2] += np.asarray(target, np.float64) - np.asarray(centre, np.float64)
    return m


def warp_truth(posmap, m) -> np.ndarray:
    """The position map of the photo after ``cv2.warpAffine(photo, m, ...)``: x, y through ``m``, z x scale."""
    out = posmap.copy()
    out[..., :2] = posmap[..., :2] @ m[:, :2].T + m[:, 2]
    out[..., 2] = posmap[..., 2] * np.sqrt(abs(np.linalg.det(m[:, :2])))
    return out


def coordinate_frame(index, shape=SHAPE) -> np.ndarray:
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([np.round(255 * xs / (w - 1)), np.round(255 * ys / (h - 1)), np.full((h, w), 255 - 4 * index)],
                    axis=-1).astype(np.uint8)


class FrameOracle:
    """Crops -> exact position maps (crop px) of the true face nearest the crop centre in the crop's
    frame. ``glitch``: frames on which the first crop seen gets a face shrunk to 30 % (a network
    failure the tracker must notice)."""

    source, random_weights = "frame oracle", False

    def __init__(self, truths, template, glitch=()):
        self.truths, self.glitch, self.glitched = truths, set(glitch), set()
        kpt = template.kpt_ind
        self.centres = [[t[kpt[:, 1], kpt[:, 0], :2].mean(0) for t in faces] for faces in truths]

    def frame_and_tform(self, crop):
        h, w = SHAPE
        blue = crop[..., 2]
        top = blue.max()
        frame = int(round((255 - top * 255) / 4))
        v, u = np.nonzero(np.abs(blue - top) < 1e-4)  # bilinear footprint inside the frame
        a = np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64)
        x = crop[v, u, 0].astype(np.float64) * (w - 1)
        y = crop[v, u, 1].astype(np.float64) * (h - 1)
        inv = np.stack([np.linalg.lstsq(a, x, rcond=None)[0], np.linalg.lstsq(a, y, rcond=None)[0], [0, 0, 1]])
        return frame, np.linalg.inv(inv)

    def __call__(self, crops):
        out = []
        for c in np.asarray(crops):
            frame, tform = self.frame_and_tform(c)
            centre = cropping.crop_to_image(np.array([127.5, 127.5]), tform)
            k = int(np.argmin([np.linalg.norm(centre - p) for p in self.centres[frame]]))
            truth = self.truths[frame][k]
            if frame in self.glitch and frame not in self.glitched:
                self.glitched.add(frame)
                mid = self.centres[frame][k]
                truth = truth.copy()
                truth[..., :2] = mid + 0.3 * (truth[..., :2] - mid)
            out.append(cropping.image_to_crop(truth, tform))
        return np.asarray(out, np.float32)


class ShiftedTruthDetector:
    """The true landmark box of every face whose centre is in the frame, moved by 10 % of its side
    and scaled by 0.9, largest first; records the frames (by their blue code) it ran on."""

    box_rule = "bbox"

    def __init__(self, truths, template):
        self.truths, self.kpt, self.frames = truths, template.kpt_ind, []

    def __call__(self, image):
        frame = int(round((255 - int(image[..., 2].max())) / 4))
        self.frames.append(frame)
        boxes = []
        for t in self.truths[frame]:
            x0, y0, x1, y1 = cropping.landmarks_bbox(t[self.kpt[:, 1], self.kpt[:, 0]])
            cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + y1 - y0) / 2
            if 0 <= cx < SHAPE[1] and 0 <= cy < SHAPE[0]:
                cx, cy = cx + 0.1 * side, cy - 0.1 * side
                boxes.append([cx - 0.45 * (x1 - x0), cy - 0.45 * (y1 - y0), cx + 0.45 * (x1 - x0),
                              cy + 0.45 * (y1 - y0)])
        boxes = np.array(boxes).reshape(-1, 4)
        return boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]))]


@pytest.fixture(scope="module")
def takeo(samples_dir, uv_template):
    from prnet.data.annotations import load_pts

    lm = load_pts(samples_dir / "faces" / "takeo.pts")
    return lm, truth_posmap(uv_template, lm)


def clip(takeo, template, n, paths):
    """``paths``: per face, ``f(k) -> (target centre, scale, angle)``; returns (truths[frame][face], landmarks)."""
    lm, truth = takeo
    centre = lm.mean(0)
    side = np.mean(cropping.landmarks_bbox(lm)[2:] - cropping.landmarks_bbox(lm)[:2])
    truths = []
    for k in range(n):
        faces = []
        for f in paths:
            target, scale, angle = f(k)
            faces.append(warp_truth(truth, motion(centre, target, scale * 70 / side, angle)))
        truths.append(faces)
    kpt = template.kpt_ind
    marks = [[t[kpt[:, 1], kpt[:, 0]] for t in faces] for faces in truths]
    return truths, marks


def run_tracker(truths, template, detect_every, glitch=(), max_faces=None):
    oracle = FrameOracle(truths, template, glitch)
    detector = ShiftedTruthDetector(truths, template)
    tracker = video.FaceTracker(Predictor(oracle, detector=detector, template=template), detect_every=detect_every,
                                max_faces=max_faces)
    frames = [tracker.update(coordinate_frame(k)) for k in range(len(truths))]
    assert tracker.detector_frames == detector.frames  # the tracker's record is the detector's
    return frames, detector.frames


def one_face(k):  # moves right and down, grows 30 %, turns 24 degrees over 16 frames
    return (120 + 8 * k, 130 + 3 * k), 1.0 + 0.02 * k, 1.5 * k


@pytest.mark.parametrize("detect_every, expected", [(5, [0, 5, 10, 15]), (0, [0])])
def test_tracked_landmarks_and_crops_are_the_truth_and_the_detector_runs_on_schedule(
        takeo, uv_template, detect_every, expected):
    truths, marks = clip(takeo, uv_template, 16, [one_face])
    frames, ran = run_tracker(truths, uv_template, detect_every)
    assert ran == expected
    for k, tracked in enumerate(frames):
        (t,) = tracked
        assert t.face_id == 0 and t.frame == k and t.detected == (k == 0)
        np.testing.assert_allclose(t.face.landmarks[:, :2], marks[k][0][:, :2], atol=0.1)
        # the crop: frame 0 the detector's, refined to the x1.6 crop of this frame's landmarks; later
        # frames the x1.6 crop of the previous frame's true landmarks
        center, size = cropping.box_from_landmarks(marks[max(k - 1, 0)][0])
        assert np.abs(t.face.center - center).max() < 0.5 and abs(t.face.size - size) <= 1.0, k
    # the truth really moves: the crop of frame 15 is far from frame 0's
    assert np.linalg.norm(frames[15][0].face.center - frames[0][0].face.center) > 100


def test_a_lost_face_is_found_again_with_its_id_and_a_cut_gives_a_new_one(takeo, uv_template):
    """Frame 7: the network answers nonsense once (a face shrunk to 30 %): the face is lost, the detector
    runs on that frame and the face keeps id 0. Frame 11: a cut moves the face across the frame: the
    tracked crop no longer holds it, the detector finds it far from its last crop: a new id."""
    def path(k):
        return ((110 + 5 * k, 150) if k < 11 else (310, 120)), 1.0, 0.0

    truths, marks = clip(takeo, uv_template, 14, [path])
    frames, ran = run_tracker(truths, uv_template, detect_every=5, glitch=[7])
    assert ran == [0, 5, 7, 11]  # every 5 frames counted from the last detection
    assert [t.face_id for tracked in frames for t in tracked] == [0] * 11 + [1] * 3
    assert [k for k, tracked in enumerate(frames) if tracked[0].detected] == [0, 7, 11]
    for k, (t,) in enumerate(frames):
        np.testing.assert_allclose(t.face.landmarks[:, :2], marks[k][0][:, :2], atol=0.1)


def test_two_faces_keep_their_ids_moving_apart_until_one_leaves_the_frame(takeo, uv_template):
    def left(k):
        return (170 - 6 * k, 150), 0.9, 0.0

    def right(k):  # larger, so the detector lists it first
        return (235 + 14 * k, 150), 1.0, -1.0 * k

    truths, marks = clip(takeo, uv_template, 16, [left, right])
    frames, ran = run_tracker(truths, uv_template, detect_every=4)
    # the right face's landmark box is more than half outside the 400 px frame from frame `gone` on
    x_max = np.array([m[1][:, 0].max() for m in marks])
    x_min = np.array([m[1][:, 0].min() for m in marks])
    gone = int(np.argmax((np.minimum(x_max, SHAPE[1] - 1) - x_min) < 0.5 * (x_max - x_min)))
    assert 8 < gone < 16
    owner = {t.face_id: int(np.argmin([np.abs(t.face.landmarks[:, :2] - m[:, :2]).max() for m in marks[0]]))
             for t in frames[0]}
    assert sorted(owner.values()) == [0, 1] and owner[0] == 1  # ids in detection order: largest first
    for k, tracked in enumerate(frames):
        assert [t.face_id for t in tracked] == ([0, 1] if k < gone else [1]), k
        for t in tracked:
            np.testing.assert_allclose(t.face.landmarks[:, :2], marks[k][owner[t.face_id]][:, :2], atol=0.1)
    # the detector ran on the first frame, every 4 frames since its last run, and on the frame a face left
    last, expect = None, []
    for k in range(16):
        if last is None or k - last >= 4 or k == gone:
            expect.append(k)
            last = k
    assert ran == expect


class ListSource:
    def __init__(self, frames, fps=12.0, name="clip"):
        self.frames, self.fps, self.name = frames, fps, name
        self.size = (frames[0].shape[1], frames[0].shape[0])

    def __iter__(self):
        yield from self.frames


def test_video_and_results_files_round_trip(takeo, uv_template, tmp_path):
    truths, marks = clip(takeo, uv_template, 12, [one_face])
    predictor = Predictor(FrameOracle(truths, uv_template), detector=ShiftedTruthDetector(truths, uv_template),
                          template=uv_template)
    frames = [coordinate_frame(k) for k in range(12)]
    seen = []
    run = process_video(predictor, ListSource(frames), tmp_path, "clip", detect_every=6, progress=seen.append)
    assert (run.frames, run.faces, run.face_ids, run.detector_frames) == (12, 12, 1, [0, 6]) and seen == [1] * 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_tracks.csv", "clip_tracks.npz", "clip_video.mp4"]
    cap = cv2.VideoCapture(str(tmp_path / "clip_video.mp4"))
    decoded = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        decoded.append(img)
    assert len(decoded) == 12 and decoded[0].shape == SHAPE + (3,)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    # the overlay is on the face: pixels inside the landmark box changed, the corner did not
    x0, y0, x1, y1 = cropping.landmarks_bbox(marks[5][0]).astype(int)
    shown = cv2.cvtColor(decoded[5], cv2.COLOR_BGR2RGB).astype(float)
    assert np.abs(shown[y0:y1, x0:x1] - frames[5][y0:y1, x0:x1]).mean() > 20
    assert np.abs(shown[-20:, -20:] - frames[5][-20:, -20:]).mean() < 4  # mp4v is lossy
    with np.load(tmp_path / "clip_tracks.npz") as z:
        assert set(RESULT_FIELDS) <= set(z.files)
        np.testing.assert_array_equal(z["frame"], np.arange(12))
        np.testing.assert_array_equal(z["face_id"], np.zeros(12))
        np.testing.assert_array_equal(z["detected"], np.arange(12) == 0)
        assert z["landmarks"].shape == (12, 68, 3) and z["crop_box"].shape == (12, 4) and z["pose"].shape == (12, 3)
        np.testing.assert_allclose(z["landmarks"][:, :, :2], np.stack([m[0][:, :2] for m in marks]), atol=0.1)
        assert int(z["num_frames"]) == 12 and float(z["fps"]) == 12.0 and tuple(z["frame_size"]) == (400, 300)
        np.testing.assert_array_equal(z["detector_frames"], [0, 6])
        # the pose follows the clip's in-plane turn: 1.5 degrees per frame (roll; sign by convention)
        roll = z["pose"][:, 2]
        assert abs(abs(roll[11] - roll[0]) - 16.5) < 1.0
        for r in z["rotation"]:
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
        csv = np.loadtxt(tmp_path / "clip_tracks.csv", delimiter=",", skiprows=1)
        assert csv.shape == (12, 10 + 204)
        np.testing.assert_allclose(csv[:, 3:7], z["crop_box"], atol=1e-3)
        np.testing.assert_allclose(csv[:, 10:].reshape(12, 68, 3), z["landmarks"], atol=1e-3)


@pytest.mark.parametrize("failure", ["bad frame", "ctrl-c"])
def test_an_error_or_ctrl_c_mid_video_leaves_nothing(takeo, uv_template, tmp_path, failure):
    truths, _ = clip(takeo, uv_template, 6, [one_face])
    predictor = Predictor(FrameOracle(truths, uv_template), detector=ShiftedTruthDetector(truths, uv_template),
                          template=uv_template)

    class Broken(ListSource):
        def __iter__(self):
            yield from self.frames[:3]
            raise ImageReadError("frame_0003.png is not a readable image")

    def stop(n):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(n)

    calls = []
    frames = [coordinate_frame(k) for k in range(6)]
    with pytest.raises(ImageReadError if failure == "bad frame" else KeyboardInterrupt):
        process_video(predictor, Broken(frames) if failure == "bad frame" else ListSource(frames), tmp_path,
                      "clip", progress=None if failure == "bad frame" else stop)
    assert list(tmp_path.iterdir()) == []


def test_frame_folder_source_reads_sorted_frames_of_one_size(tmp_path):
    for k in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{k}.png"), np.full((20, 30, 3), 10 * k, np.uint8))
    src = video.FrameFolderSource(sorted(tmp_path.glob("*.png")), fps=5)
    assert src.size == (30, 20) and [int(f[0, 0, 0]) for f in src] == [0, 10, 20]
    cv2.imwrite(str(tmp_path / "f3.png"), np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(ImageReadError, match="f3.png.*one size"):
        list(video.FrameFolderSource(sorted(tmp_path.glob("*.png"))))
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    with pytest.raises(ImageReadError, match="cannot read the video"):
        video.VideoFileSource(bad)


def _real_clip(samples_dir, path, n=8):
    """A real photo moving and turning over ``n`` frames (640 px wide), written with cv2.VideoWriter."""
    photo = cv2.imread(str(samples_dir / "faces" / "prnet_test_0.jpg"))
    h, w = photo.shape[:2]
    scale = 480 / max(h, w)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for k in range(n):
        m = motion((w / 2, h / 2), (320 + 6 * k, 240 - 3 * k), scale * (1 + 0.02 * k), 2.0 * k)
        writer.write(cv2.warpAffine(photo, m, (640, 480)))
    writer.release()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mp4", "frames folder"])
def test_cli_on_a_real_clip_writes_the_video_and_tracks(samples_dir, assets_dir, uv_template, tmp_path, kind):
    """prnet-demo --input walk.mp4 (or a folder of its frames with --video), with the default detector and a
    stand-in network (a SavedModel that answers the mean face framed by the x1.6 rule): one face, one
    id, the video has every frame, the detector ran on frames 0 and 4 (--detect_every 4)."""
    from oracle import mean_face_crop_posmap, save_constant_model

    model = save_constant_model(mean_face_crop_posmap(uv_template), tmp_path / "model")
    clip_path = _real_clip(samples_dir, tmp_path / "walk.mp4")
    args = ["--input", clip_path]
    if kind == "frames folder":
        folder = tmp_path / "walk"
        folder.mkdir()
        cap = cv2.VideoCapture(str(clip_path))
        for k in range(8):
            cv2.imwrite(str(folder / f"frame_{k:04d}.png"), cap.read()[1])
        (folder / "notes.txt").write_text("not a frame")
        args = ["--input", folder, "--video", "--fps", 5]
    out = tmp_path / "out"
    result = run_cli("prnet.cli.demo", *args, "--output_dir", out, "--weights", model, "--detect_every", 4,
                     env={"PRNET_ASSETS_DIR": assets_dir}, timeout=240)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["walk_tracks.csv", "walk_tracks.npz", "walk_video.mp4"]
    assert "8 frames, 8 faces (1 face ids)" in result.stderr
    cap = cv2.VideoCapture(str(out / "walk_video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0 if kind == "mp4" else 5.0)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (640, 480)
    with np.load(out / "walk_tracks.npz") as z:
        np.testing.assert_array_equal(z["frame"], np.arange(8))
        np.testing.assert_array_equal(z["face_id"], np.zeros(8))
        np.testing.assert_array_equal(z["detector_frames"], [0, 4])


def test_cli_help_documents_the_video_flags():
    result = run_cli("prnet.cli.demo", "--help", timeout=120)
    for flag in ("--[no]video", "--detect_every", "--fps", "_tracks.npz", "_video.mp4"):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_cli_bad_video_is_one_clear_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    out = tmp_path / "out"
    result = run_cli("prnet.cli.demo", "--input", bad, "--output_dir", out, "--smoke_test_random_weights",
                     timeout=120)
    assert result.returncode == 2
    assert "cannot read the video" in result.stderr and "holiday.mp4" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
