"""The files of a tracked video: the annotated video and the per-frame tracks ``.npz`` / ``.csv``.

Frames are RGB uint8 ``(H, W, 3)``; coordinates are image pixels (x right, y down, pixel centres at
integer coordinates, z toward the camera, origin arbitrary), as in :mod:`prnet.inference.video`,
whose :class:`~prnet.inference.video.FaceTracker` gives the faces of each frame.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from prnet.core.files import folder_error, staged_files
from prnet.errors import ImageReadError, NoFaceFoundError
from prnet.inference.video import FaceTracker, crop_box
from prnet.mesh.draw import draw_landmarks, draw_mesh_overlay
from prnet.outputs.h264 import open_video_writer
from prnet.outputs.naming import draw_warning, tag, warning_text

#: Fields of the per-frame results ``.npz`` (one row per face per frame).
RESULT_FIELDS = ("frame", "face_id", "detected", "crop_box", "landmarks", "pose", "rotation")


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
      :func:`prnet.outputs.h264.open_video_writer`), at the source's frame rate;
    * ``<name>_tracks.npz``: one row per face per frame: ``frame`` (0-based index), ``face_id``,
      ``detected`` (crop from the detector on this frame), ``crop_box`` (N, 4) the crop square,
      ``landmarks`` (N, 68, 3), ``pose`` (N, 3) yaw, pitch, roll in degrees, ``rotation`` (N, 3, 3);
      plus ``num_frames``, ``fps``, ``frame_size`` (width, height), ``detector_frames``,
      ``random_weights``, ``weights``. Image pixels (x right, y down, z toward the camera);
    * ``<name>_tracks.csv``: the same rows (frame, face_id, detected, crop box, yaw/pitch/roll,
      x0 y0 z0 ... x67 y67 z67).

    ``source``: frames (RGB) with ``fps``, ``size`` (width, height) and ``name``
    (:class:`prnet.inference.video.VideoFileSource`, :class:`~prnet.inference.video.FrameFolderSource`).
    ``tracker``: a :class:`prnet.inference.video.FaceTracker` (default: one over ``predictor``).
    ``progress``: a callable ``progress(n_faces)`` called after each frame (e.g. a tqdm ``update``
    wrapper). Raises :class:`ImageReadError` for an unreadable frame, :class:`NoFaceFoundError`
    when no frame has a face (nothing written), ``PRNetError`` from the network,
    :class:`prnet.errors.OutputFolderError` when ``out_dir`` cannot be written.
    """
    tracker = tracker or FaceTracker(predictor, detect_every=detect_every, max_faces=max_faces)
    random_weights = bool(getattr(predictor, "random_weights", False))
    names = output_paths(out_dir, name, random_weights)
    table, frames, writer = ResultTable(), 0, None
    try:
        with staged_files(out_dir) as staging:
            video_tmp = staging / names["video"].name
            writer = open_video_writer(video_tmp, float(source.fps), tuple(int(v) for v in source.size))
            warning = warning_text(ascii_only=True) if random_weights else ""
            for frame in source:
                tracked = tracker.update(frame)
                table.add(tracked)
                shown = annotate_frame(frame, tracked, mesh=mesh, warning=warning)
                writer.write(shown)
                frames += 1
                if progress is not None:
                    progress(len(tracked))
            writer.release()
            writer = None
            if frames == 0:
                raise ImageReadError(f"{source.name}: no frames")
            if not table.rows:
                raise NoFaceFoundError(f"{source.name}: no face found in any of its {frames} frames")
            table.write_npz(staging / names["npz"].name, num_frames=np.int32(frames), fps=np.float64(source.fps),
                            frame_size=np.asarray(source.size, np.int32),
                            detector_frames=np.asarray(tracker.detector_frames, np.int32),
                            random_weights=np.bool_(random_weights), weights=str(getattr(predictor, "source", "")))
            table.write_csv(staging / names["csv"].name)
    except OSError as e:
        raise folder_error(e, out_dir, f" (the video results of {source.name})") from e
    finally:
        if writer is not None:
            writer.release()
    ids = {row[1] for row in table.rows}
    return VideoRun([names["video"], names["npz"], names["csv"]], frames, len(table.rows),
                    list(tracker.detector_frames), len(ids))
