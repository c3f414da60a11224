"""The annotated video's encoder (prnet.outputs.h264): H.264 in yuv420p with the ``moov`` index first
(faststart), probed with the ffmpeg binary of imageio-ffmpeg; the frames decode back; odd sizes are
padded; without the encoder, mp4v with one warning line."""

import logging
import subprocess

import cv2
import numpy as np
import pytest

from prnet.outputs import h264


def _frames(n, width, height):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = cv2.resize(base, (width, height), interpolation=cv2.INTER_NEAREST)  # blocky: codec-friendly
    return [np.roll(big, 2 * i, axis=1) for i in range(n)]


def _top_level_boxes(data: bytes) -> list:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode("latin-1")
        size = int.from_bytes(data[pos + 8:pos + 16], "big") if size == 1 else size
        boxes.append(kind)
        pos += size if size else len(data)
    return boxes


def _decode(path):
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out, cap
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_h264_yuv420p_faststart_and_decodes(tmp_path):
    exe, why = h264.h264_encoder()
    assert exe is not None, why  # imageio-ffmpeg is a core dependency
    frames = _frames(12, 161, 121)  # odd sides: padded to 162 x 122
    writer = h264.open_video_writer(tmp_path / "v.mp4", 12.5, (161, 121))
    assert writer.codec == "h264"
    for f in frames:
        writer.write(f)
    writer.release()
    info = subprocess.run([exe, "-hide_banner", "-i", str(tmp_path / "v.mp4")], capture_output=True, text=True).stderr
    stream = next(line for line in info.splitlines() if "Video:" in line)
    assert "Video: h264" in stream and "yuv420p" in stream and "162x122" in stream and "12.50 fps" in stream, stream
    boxes = _top_level_boxes((tmp_path / "v.mp4").read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
    decoded, _ = _decode(tmp_path / "v.mp4")
    assert len(decoded) == len(frames)
    gray = lambda f: cv2.cvtColor(np.ascontiguousarray(f[:121, :161]), cv2.COLOR_RGB2GRAY).astype(int)  # noqa: E731
    for i, got in enumerate(decoded):  # lossy (4:2:0 chroma), but each frame is its own picture, in order
        errors = [np.abs(gray(got) - gray(want)).mean() for want in frames]
        assert errors[i] < 4 and int(np.argmin(errors)) == i, errors
        assert np.abs(got[:121, 161].astype(int) - got[:121, 160]).mean() < 4  # padding: the last column again


def test_mp4v_fallback_when_the_encoder_is_unavailable(tmp_path, monkeypatch, caplog):
    exe, _ = h264.h264_encoder()
    monkeypatch.setattr(h264, "h264_encoder", lambda: (None, "simulated"))
    with caplog.at_level(logging.WARNING, logger="prnet.outputs.h264"):
        writer = h264.open_video_writer(tmp_path / "v.mp4", 10, (160, 120))
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [h264.FALLBACK_NOTE.format(why="simulated")] and "\n" not in notes[0]
    assert writer.codec == "mp4v"
    for f in _frames(5, 160, 120):
        writer.write(f)
    writer.release()
    decoded, _ = _decode(tmp_path / "v.mp4")
    assert len(decoded) == 5
    info = subprocess.run([exe, "-hide_banner", "-i", str(tmp_path / "v.mp4")], capture_output=True, text=True).stderr
    assert "Video: mpeg4" in info and "mp4v" in info, info


def test_bad_frame_size_is_refused(tmp_path):
    writer = h264.open_video_writer(tmp_path / "v.mp4", 10, (64, 48))
    with pytest.raises(ValueError, match="48x64x3"):
        writer.write(np.zeros((40, 64, 3), np.uint8))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
