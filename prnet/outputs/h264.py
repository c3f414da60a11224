"""Browser-playable video files: H.264 in MP4 (yuv420p, ``+faststart``), with an ``mp4v`` fallback.

Browsers, notebooks and chat apps play H.264/AVC with 4:2:0 chroma; OpenCV's own writer only has
MPEG-4 part 2 (``mp4v``), which they do not. :func:`open_video_writer` encodes with the ffmpeg binary
shipped inside the ``imageio-ffmpeg`` wheel (``libx264``; the ``moov`` index at the start of the
file, so a page starts playing before the whole file has arrived). When that encoder is unavailable
(the package missing, its binary unable to run, no ``libx264`` in it), it falls back to OpenCV's
``mp4v`` and logs one warning line (:data:`FALLBACK_NOTE`).

Frames are RGB uint8 ``(H, W, 3)`` of the size given. yuv420p needs even sides: an odd width or
height is padded by one pixel (a copy of the last column / row) at the right / bottom.
"""

import functools
import logging
import subprocess

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: The warning logged when a video is written as mp4v instead of H.264 (``{why}``: the reason).
FALLBACK_NOTE = "H.264 encoder unavailable ({why}); writing mp4v, which browsers and notebooks do not play"


@functools.lru_cache(maxsize=1)
def _probe_encoder():
    """``(ffmpeg executable, None)`` when imageio-ffmpeg's binary has libx264, else ``(None, why)``."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                  timeout=30).stdout
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return None, f"its ffmpeg binary does not run: {e}"
    if " libx264 " not in encoders:
        return None, "its ffmpeg binary has no libx264"
    return exe, None


def h264_encoder():
    """``(ffmpeg executable or None, reason it is unavailable or None)``; probed once per process."""
    return _probe_encoder()


class H264Writer:
    """Write RGB frames to an H.264 MP4 (yuv420p, faststart) through imageio-ffmpeg's ffmpeg."""

    codec = "h264"

    def __init__(self, path, fps: float, size, *, crf: int = 20, preset: str = "veryfast"):
        import imageio_ffmpeg

        self.size = (int(size[0]), int(size[1]))
        even = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)
        self._pad = (even[0] - self.size[0], even[1] - self.size[1])
        self._gen = imageio_ffmpeg.write_frames(
            str(path), even, fps=float(fps), codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            macro_block_size=1, quality=None, ffmpeg_log_level="error",
            output_params=["-crf", str(crf), "-preset", preset, "-movflags", "+faststart"])
        self._gen.send(None)  # starts ffmpeg

    def write(self, frame) -> None:
        frame = np.asarray(frame, np.uint8)
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame must be {self.size[1]}x{self.size[0]}x3 RGB, got {frame.shape}")
        if any(self._pad):
            frame = np.pad(frame, ((0, self._pad[1]), (0, self._pad[0]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame))

    def release(self) -> None:
        if self._gen is not None:
            gen, self._gen = self._gen, None
            gen.close()  # waits for ffmpeg to finish the file


class Mp4vWriter:
    """Write RGB frames to an MPEG-4 part 2 (``mp4v``) MP4 with OpenCV (the fallback)."""

    codec = "mp4v"

    def __init__(self, path, fps: float, size):
        self.size = (int(size[0]), int(size[1]))
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), self.size)
        if not self._writer.isOpened():
            raise OSError(f"OpenCV cannot write an mp4v video to {path}")

    def write(self, frame) -> None:
        self._writer.write(cv2.cvtColor(np.asarray(frame, np.uint8), cv2.COLOR_RGB2BGR))

    def release(self) -> None:
        self._writer.release()


def open_video_writer(path, fps: float, size, *, h264: bool = True):
    """A writer (``write(rgb_frame)``, ``release()``, ``codec`` ``"h264"`` or ``"mp4v"``) of an MP4 at
    ``path``, ``fps`` frames per second, ``size`` (width, height) px: H.264 when the encoder is
    available (and ``h264``), else mp4v with one warning line (:data:`FALLBACK_NOTE`)."""
    if h264:
        exe, why = h264_encoder()
        if exe is not None:
            try:
                return H264Writer(path, fps, size)
            except (OSError, RuntimeError) as e:
                why = f"ffmpeg failed to start: {e}"
        log.warning(FALLBACK_NOTE.format(why=why))
    return Mp4vWriter(path, fps, size)
