"""The video files' failure behaviour (issue #20, review rows 11, 16, 17, 25, 29): encoder limits named
as such, a damaged video reported, odd frame sizes, a folder in the way of an output name, messages.

A stand-in network (the template's mean face framed by the x1.6 crop rule, for any crop) and a
detector that finds a face box in the middle of any frame that is not black.
"""

import cv2
import numpy as np
import pytest

from prnet.errors import NoFaceFoundError, OutputFolderError, VideoWriteError
from prnet.inference.predictor import Predictor
from prnet.inference.video import VideoFileSource
from prnet.outputs import video as video_files
from prnet.outputs.video import check_video_encodable, output_paths, process_video

from oracle import mean_face_crop_posmap


class MiddleDetector:
    box_rule = "bbox"

    def __call__(self, image):
        h, w = image.shape[:2]
        if image.mean() <= 1:
            return np.zeros((0, 4))
        return np.array([[0.3 * w, 0.25 * h, 0.7 * w, 0.75 * h]])


@pytest.fixture(scope="module")
def predictor(uv_template):
    posmap = mean_face_crop_posmap(uv_template)
    return Predictor(lambda crops: np.repeat(posmap[None], len(crops), axis=0), detector=MiddleDetector(),
                     template=uv_template)


class ListSource:
    def __init__(self, frames, fps=12.0, name="clip", size=None):
        self.frames, self.fps, self.name = frames, fps, name
        self.size = size or (frames[0].shape[1], frames[0].shape[0])

    def __iter__(self):
        yield from self.frames


def frames(n, w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(40, 215, (12, 16, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, 3 * k, axis=1) for k in range(n)]


# ----------------------------------------------------------------------------- encoder limits (row 16)
@pytest.mark.parametrize("size, fps, codec, words", [
    ((9000, 6000), 25.0, "mp4v", "too large for the mp4v video encoder (at most 8191 px"),
    ((17000, 64), 25.0, "h264", "too large for the h264 video encoder (at most 16384 px"),
    ((64, 1), 25.0, "h264", "too small"),
    ((64, 64), 1e5, "mp4v", "frame rate of 100000 fps"),
    ((64, 64), float("inf"), "h264", "frame rate of inf fps"),
    ((64, 64), float("nan"), "h264", "frame rate of nan fps"),
])
def test_encoder_limits_are_named_not_blamed_on_the_folder(size, fps, codec, words):
    with pytest.raises(VideoWriteError, match=words.replace("(", r"\(")) as e:
        check_video_encodable(size, fps, codec)
    assert "output folder" not in str(e.value)
    check_video_encodable((8190, 64), 65535.0, "mp4v")  # within both limits
    check_video_encodable((16384, 2), 0.5, "h264")


def test_a_refused_video_writes_nothing_and_names_the_encoder(tmp_path, predictor, monkeypatch):
    """Too large for the encoder: refused before any frame is read, nothing written; and when the
    encoder itself refuses (the limit check bypassed, mp4v at 9000 px), the error names the encoder
    and the size, not the output folder."""
    big = ListSource([], fps=25.0, size=(17000, 6000))  # too large for either encoder
    with pytest.raises(VideoWriteError, match="too large"):
        process_video(predictor, big, tmp_path / "out", "big")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    from prnet.outputs import h264

    monkeypatch.setattr(video_files, "check_video_encodable", lambda *a, **k: None)
    monkeypatch.setattr(h264, "h264_encoder", lambda: (None, "test: no encoder"))
    small = frames(2, 64, 48)
    source = ListSource(small, size=(9000, 48))
    with pytest.raises(VideoWriteError, match="encoder refused a video of 9000x48 at 12 fps") as e:
        process_video(predictor, source, tmp_path / "out", "refused")
    assert "output folder" not in str(e.value)
    assert not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------- odd sizes (row 29), names (row 11)
def test_odd_frame_size_the_tracks_say_the_videos_size(tmp_path, predictor):
    run = process_video(predictor, ListSource(frames(4, 161, 121)), tmp_path, "odd")
    with np.load(output_paths(tmp_path, "odd")["npz"]) as z:
        frame_size, input_size = z["frame_size"].tolist(), z["input_frame_size"].tolist()
    cap = cv2.VideoCapture(str(run.paths[0]))
    ok, first = cap.read()
    cap.release()
    assert ok and [first.shape[1], first.shape[0]] == frame_size == [160, 120]
    assert input_size == [161, 121]


@pytest.mark.parametrize("blocked", ["npz", "video", "csv"])
def test_a_folder_in_the_way_of_an_output_name_writes_nothing(tmp_path, predictor, blocked):
    names = output_paths(tmp_path, "clip")
    names[blocked].mkdir(parents=True)
    (names[blocked] / "keep.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=f"cannot write {names[blocked]}: it is a folder"):
        process_video(predictor, ListSource(frames(3, 64, 48)), tmp_path, "clip")
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[blocked].name]  # nothing else, no temporaries
    assert (names[blocked] / "keep.txt").read_text() == "mine"


def test_no_face_message_does_not_repeat_the_name(tmp_path, predictor):
    black = [np.zeros((48, 64, 3), np.uint8)] * 3
    with pytest.raises(NoFaceFoundError) as e:
        process_video(predictor, ListSource(black, name="noface.mp4"), tmp_path, "noface")
    assert str(e.value) == "no face found in any of the video's 3 frames"
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------- damaged video (row 17)
def _mp4(path, n=12):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (320, 240))
    for f in frames(n, 320, 240, seed=1):
        w.write(f)
    w.release()
    return path


def test_a_damaged_video_is_reported_with_its_frames(tmp_path, predictor):
    """2,000 bytes flipped in a 12-frame mp4v file (the review's damage): FFmpeg conceals the errors
    and OpenCV reads every frame; the run reports the frames with decode errors (a warning line and
    ``decode_error_frames``); the intact file reports none."""
    good = _mp4(tmp_path / "good.mp4")
    data = bytearray(good.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 2000):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    assert not VideoFileSource(good).check_decoding().result()
    errors = VideoFileSource(bad).check_decoding().result()
    assert errors and errors.decoded == 12 and len(errors.frames) >= 1

    run = process_video(predictor, VideoFileSource(bad), tmp_path / "out", "bad")
    assert run.frames == 12 and len(run.warnings) == 1
    assert f"decode errors in {len(errors.frames)} of 12 frames" in run.warnings[0]
    with np.load(output_paths(tmp_path / "out", "bad")["npz"]) as z:
        assert z["decode_error_frames"].tolist() == errors.frames
    run = process_video(predictor, VideoFileSource(good), tmp_path / "out", "good")
    assert run.warnings == [] and not run.decode_errors
