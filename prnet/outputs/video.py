"""The files of a tracked video: the annotated video and the per-frame tracks ``.npz`` / ``.csv``.

Frames are RGB uint8 ``(H, W, 3)``; coordinates are image pixels (x right, y down, pixel centres at
integer coordinates, z toward the camera, origin arbitrary), as in :mod:`prnet.inference.video`,
whose :class:`~prnet.inference.video.FaceTracker` gives the faces of each frame.
"""

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from prnet.core.files import folder_error, staged_files
from prnet.errors import ImageReadError, NoFaceFoundError, OutputFolderError, VideoWriteError
from prnet.inference.video import FaceTracker, crop_box
from prnet.mesh.draw import draw_landmarks, draw_mesh_overlay
from prnet.outputs.h264 import h264_encoder, open_video_writer
from prnet.outputs.naming import draw_warning, tag, warning_text

#: Fields of the per-frame results ``.npz`` (one row per face per frame).
RESULT_FIELDS = ("frame", "face_id", "detected", "crop_box", "landmarks", "pose", "rotation")
#: Largest frame side (px) each encoder writes a readable video of (measured: libx264 through
#: imageio-ffmpeg writes an unreadable file from 16386 px on; OpenCV's mp4v refuses 8192 px).
MAX_VIDEO_SIDE = {"h264": 16384, "mp4v": 8191}
#: Frame sides below this are refused (OpenCV's mp4v refuses 1 px).
MIN_VIDEO_SIDE = 2
#: Largest frame rate (fps) written: the MPEG-4 time base is 16-bit (mp4v refuses 65536 fps; H.264
#: files above it read back with a wrong rate).
MAX_VIDEO_FPS = 65535.0


def video_size(frame_size) -> tuple:
    """``(width, height)`` of the annotated video for frames of ``frame_size`` (width, height): each
    side rounded down to even (both encoders write even sides); frames are cut, not scaled, so video
    pixel ``(x, y)`` is frame pixel ``(x, y)`` and an odd side loses its last column / row."""
    w, h = (int(v) for v in frame_size)
    return w - w % 2, h - h % 2


def check_video_encodable(frame_size, fps, codec=None) -> None:
    """Raise :class:`VideoWriteError` (naming the limit) when the annotated video of frames of
    ``frame_size`` (width, height) at ``fps`` cannot be encoded by ``codec`` (``"h264"``, ``"mp4v"``;
    None: the one :func:`prnet.outputs.h264.open_video_writer` will use). Limits:
    :data:`MAX_VIDEO_SIDE`, :data:`MIN_VIDEO_SIDE`, :data:`MAX_VIDEO_FPS`. Cheap: run it before any work."""
    if codec is None:
        codec = "h264" if h264_encoder()[0] is not None else "mp4v"
    w, h = (int(v) for v in frame_size)
    if max(w, h) > MAX_VIDEO_SIDE[codec]:
        raise VideoWriteError(f"frames of {w}x{h} are too large for the {codec} video encoder (at most "
                              f"{MAX_VIDEO_SIDE[codec]} px a side): resize the frames first")
    if min(w, h) < MIN_VIDEO_SIDE:
        raise VideoWriteError(f"frames of {w}x{h} are too small for a video (at least {MIN_VIDEO_SIDE} px a side)")
    fps = float(fps)
    if not (np.isfinite(fps) and 0 < fps <= MAX_VIDEO_FPS):
        raise VideoWriteError(f"a frame rate of {fps:g} fps cannot be written to the video (more than 0, at most "
                              f"{MAX_VIDEO_FPS:g})")


def check_output_names(paths) -> None:
    """Raise :class:`OutputFolderError` naming the first of ``paths`` (the files a video will be
    written to) that exists and is not a file (a folder in the way), before any is written or moved."""
    for path in paths:
        path = Path(path)
        if (path.exists() or path.is_symlink()) and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            raise OutputFolderError(f"cannot write {path}: it is {what}, in the way of this output file; move it "
                                    "or choose another output folder")


def annotate_frame(frame, tracked, *, mesh: bool = True, warning: str = "") -> np.ndarray:
    """The frame with every face's mesh (shaded, :func:`prnet.mesh.draw.draw_mesh_overlay`), its 68
    landmarks and its id drawn on (``tracked``: ``list[TrackedFace]``); ``warning`` (e.g. the
    random-weights text) in the top-left corner."""
    out = frame
    for t in tracked:
        if mesh:
            out = draw_mesh_overlay(out, t.face.vertices, t.face.triangles)
        out = draw_landmarks(out, t.face.landmarks)
    out = np.ascontiguousarray(out).copy() if out is frame else out
    scale = max(0.4, frame.shape[1] / 1000)
    for t in tracked:
        x0, y0 = crop_box(t.face)[:2]
        cv2.putText(out, f"id {t.face_id}", (int(max(x0, 0)) + 2, int(max(y0, 0)) + int(20 * scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), max(1, int(2 * scale)), cv2.LINE_AA)
    if warning:
        draw_warning(out, warning, scale=scale, baseline=int(30 * scale) + 10)
    return out


class ResultTable:
    """Per-face, per-frame rows collected during a run, written as ``.npz`` and ``.csv``."""

    def __init__(self):
        self.rows = []

    def add(self, tracked) -> None:
        for t in tracked:
            rot, angles = t.face.pose
            self.rows.append((t.frame, t.face_id, t.detected, crop_box(t.face), np.asarray(t.face.landmarks),
                              np.asarray(angles, np.float64), np.asarray(rot, np.float64)))

    def arrays(self) -> dict:
        n = len(self.rows)
        cols = list(zip(*self.rows)) if n else [()] * len(RESULT_FIELDS)
        shapes = {"crop_box": (4,), "landmarks": (68, 3), "pose": (3,), "rotation": (3, 3)}
        out = {}
        for name, col in zip(RESULT_FIELDS, cols):
            if name in ("frame", "face_id"):
                out[name] = np.asarray(col, np.int32).reshape(n)
            elif name == "detected":
                out[name] = np.asarray(col, bool).reshape(n)
            else:
                out[name] = np.asarray(col, np.float64).reshape((n,) + shapes[name])
        return out

    def write_npz(self, path, **extra) -> Path:
        np.savez_compressed(path, **self.arrays(), **extra)
        return Path(path)

    def write_csv(self, path) -> Path:
        a = self.arrays()
        head = ["frame", "face_id", "detected", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "yaw", "pitch", "roll"]
        head += [f"{c}{k}" for k in range(68) for c in "xyz"]
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(",".join(head) + "\n")
            for i in range(len(a["frame"])):
                nums = np.concatenate([a["crop_box"][i], a["pose"][i], a["landmarks"][i].reshape(-1)])
                f.write(f"{a['frame'][i]},{a['face_id'][i]},{int(a['detected'][i])}," +
                        ",".join(f"{v:.3f}" for v in nums) + "\n")
        return Path(path)


@dataclass
class VideoRun:
    """What :func:`process_video` did: the files written, frames read, face rows, detector frames."""

    paths: list
    frames: int
    faces: int
    detector_frames: list
    face_ids: int
    #: ``prnet.inference.video.DecodeErrors`` of a damaged video file (falsy when none / not checked).
    decode_errors: object = None
    #: one line each for the user (e.g. the decode errors).
    warnings: list = field(default_factory=list)


def output_paths(folder, name: str, random_weights: bool = False) -> dict:
    """The files :func:`process_video` writes for input ``name`` in ``folder``: ``video``
    (``<name>_video.mp4``), ``npz`` (``<name>_tracks.npz``), ``csv`` (``<name>_tracks.csv``);
    :data:`prnet.outputs.naming.RANDOM_TAG` is added to the names for an untrained network."""
    folder, name = Path(folder), name + tag(random_weights)
    return {"video": folder / f"{name}_video.mp4", "npz": folder / f"{name}_tracks.npz",
            "csv": folder / f"{name}_tracks.csv"}


def process_video(predictor, source, out_dir, name: str, *, detect_every: int = 10, max_faces=None,
                  mesh: bool = True, progress=None, tracker=None) -> VideoRun:
    """Track the faces of every frame of ``source`` and write, all together or not at all (staged
    with :func:`prnet.core.files.staged_files`: an error or Ctrl-C leaves nothing), into ``out_dir``:

    * ``<name>_video.mp4``: the frames with each face's mesh, landmarks and id (H.264, yuv420p,
      faststart: plays in browsers; ``mp4v`` when the encoder is unavailable,
      :func:`prnet.outputs.h264.open_video_writer`), at the source's frame rate; an odd frame side
      loses its last column / row (:func:`video_size`);
    * ``<name>_tracks.npz``: one row per face per frame: ``frame`` (0-based index), ``face_id``,
      ``detected`` (crop from the detector on this frame), ``crop_box`` (N, 4) the crop square,
      ``landmarks`` (N, 68, 3), ``pose`` (N, 3) yaw, pitch, roll in degrees, ``rotation`` (N, 3, 3);
      plus ``num_frames``, ``fps``, ``frame_size`` (width, height of the video written),
      ``input_frame_size`` (of the input frames: one more where a side is odd),
      ``detector_frames``, ``decode_error_frames`` (frames the video file's decoder reported
      errors in: :class:`prnet.inference.video.DecodeCheck`), ``random_weights``, ``weights``.
      Image pixels of the input frames (x right, y down, z toward the camera);
    * ``<name>_tracks.csv``: the same rows (frame, face_id, detected, crop box, yaw/pitch/roll,
      x0 y0 z0 ... x67 y67 z67).

    ``source``: frames (RGB) with ``fps``, ``size`` (width, height) and ``name``
    (:class:`prnet.inference.video.VideoFileSource`, :class:`~prnet.inference.video.FrameFolderSource`).
    ``tracker``: a :class:`prnet.inference.video.FaceTracker` (default: one over ``predictor``).
    ``progress``: a callable ``progress(n_faces)`` called after each frame (e.g. a tqdm ``update``
    wrapper). Raises :class:`VideoWriteError` (before any work) when the video cannot be encoded
    (:func:`check_video_encodable`), :class:`ImageReadError` for an unreadable frame,
    :class:`NoFaceFoundError` when no frame has a face (nothing written), ``PRNetError`` from the
    network, :class:`prnet.errors.OutputFolderError` when ``out_dir`` cannot be written or something
    that is not a file is in the way of one of the three names (checked before anything is written
    and again before the files move into place: they appear all together or not at all). Messages
    do not repeat ``source.name`` (the caller names the video). A video file's decode errors, which
    FFmpeg conceals, are counted beside the run (:class:`prnet.inference.video.DecodeCheck`): one
    line in ``VideoRun.warnings`` and the frames in ``decode_error_frames``.
    """
    check_video_encodable(source.size, source.fps)
    tracker = tracker or FaceTracker(predictor, detect_every=detect_every, max_faces=max_faces)
    random_weights = bool(getattr(predictor, "random_weights", False))
    names = output_paths(out_dir, name, random_weights)
    check_output_names(names.values())
    size = video_size(source.size)
    table, frames, writer, errors = ResultTable(), 0, None, None
    check = source.check_decoding() if hasattr(source, "check_decoding") else None
    try:
        with staged_files(out_dir) as staging:
            video_tmp = staging / names["video"].name
            try:
                writer = open_video_writer(video_tmp, float(source.fps), size)
            except OSError as e:
                if not staging.is_dir():
                    raise
                raise VideoWriteError(f"the video encoder refused a video of {size[0]}x{size[1]} at "
                                      f"{float(source.fps):g} fps ({e})") from e
            warning = warning_text(ascii_only=True) if random_weights else ""
            for frame in source:
                tracked = tracker.update(frame)
                table.add(tracked)
                shown = annotate_frame(frame, tracked, mesh=mesh, warning=warning)
                writer.write(np.ascontiguousarray(shown[:size[1], :size[0]]))
                frames += 1
                if progress is not None:
                    progress(len(tracked))
            writer.release()
            writer = None
            if frames == 0:
                raise ImageReadError("the video has no frames")
            if not table.rows:
                raise NoFaceFoundError(f"no face found in any of the video's {frames} frames")
            errors = check.result() if check is not None else None
            table.write_npz(staging / names["npz"].name, num_frames=np.int32(frames), fps=np.float64(source.fps),
                            frame_size=np.asarray(size, np.int32), input_frame_size=np.asarray(source.size, np.int32),
                            detector_frames=np.asarray(tracker.detector_frames, np.int32),
                            decode_error_frames=np.asarray(errors.frames if errors else [], np.int32),
                            random_weights=np.bool_(random_weights), weights=str(getattr(predictor, "source", "")))
            table.write_csv(staging / names["csv"].name)
            check_output_names(names.values())  # something made meanwhile: still nothing moved
    except OSError as e:
        if isinstance(e, OutputFolderError):
            raise
        raise folder_error(e, out_dir, f" (the video results of {source.name})") from e
    finally:
        if writer is not None:
            writer.release()
        if check is not None:
            check.cancel()
    warnings = [errors.summary()] if errors else []  # the caller shows them (prnet-demo: one line each)
    ids = {row[1] for row in table.rows}
    return VideoRun([names["video"], names["npz"], names["csv"]], frames, len(table.rows),
                    list(tracker.detector_frames), len(ids), errors, warnings)
