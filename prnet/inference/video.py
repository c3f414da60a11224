"""Video: frame sources and a landmark tracker over frames (the files: :mod:`prnet.outputs.video`).

Coordinates as everywhere in :mod:`prnet.inference`: frames are RGB uint8 ``(H, W, 3)``; x = column
(right), y = row (down), pixel centres at integer coordinates; z toward the camera in image pixels
(origin arbitrary). Boxes are ``(x0, y0, x1, y1)`` image pixels; a *crop box* is the crop square
``(cx - size/2, cy - size/2, cx + size/2, cy + size/2)`` the network saw.

Tracking (:class:`FaceTracker`): each face seen in the previous frame is cropped by the x1.6
landmark rule (:func:`prnet.core.crop.box_from_landmarks`, the same rule as annotated photos, via
``Predictor.prepare(frame, landmarks=...)``) from the 68 landmarks predicted there, and run once
through the network. The face detector (``Predictor.detect``, whatever detector the predictor has)
runs only

* on the first frame and whenever no face is tracked,
* when a tracked face is lost on this frame (checked by :meth:`FaceTracker.lost_reason`: the new
  landmark crop is implausible next to the crop it was predicted from (``Predictor.refine_crops``'s
  rule: centre moved by more than half the crop side, side changed more than 2x, degenerate
  landmarks), the landmark box is smaller than ``min_face_px``, or less than half of it is inside
  the frame), and
* every ``detect_every`` frames since the last detection (0: only the above), to pick up faces that
  entered the picture.

Ending a face the detector no longer sees: on every frame the detector runs, a face followed into
that frame whose crop no detection overlaps (crop-box IoU >= ``match_iou``) is checked once more by
the detector on the frame's region around it (its crop square grown by :data:`RECHECK_SCALE`, where
the face fills much of the detector's view); when the detector finds no face centred inside its
landmark box there either, the face is gone (turned away, covered, or left behind an object: PRNet
regresses a face from any crop, so the landmark checks above cannot tell) and is not reported from
this frame on. So a face that disappears is dropped at the latest on the next scheduled detection
(``detect_every`` frames), and never kept by the network's answers alone.

Detected faces go through the predictor's usual detector crop and landmark re-cropping. A detection
whose crop overlaps a face tracked on this frame (crop-box IoU >= ``match_iou``) is that face, and
is dropped; one that overlaps the last crop of a face of the previous frame missing from this one (lost,
or not followable) takes that face's id; any other is a new face with the next free id. Ids are never
reused. A detected face whose landmarks give no sound crop is reported for its frame but not followed
(the detector looks for it again on the next frame).
"""

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from prnet.core import crop as cropping
from prnet.core.images import as_rgb, read_image
from prnet.errors import ImageReadError, NoFaceFoundError
from prnet.inference.boxes import box_iou

#: File suffixes taken as videos (read with ``cv2.VideoCapture``; any other file can be forced as a
#: video by the caller, e.g. ``prnet-demo --video``).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".3gp", ".ts", ".mts", ".ogv"})
#: Frames per second written for a folder of frames (which has no frame rate of its own).
DEFAULT_FPS = 25.0
#: A tracked face whose 68-landmark box has a mean side below this (image px) is lost.
MIN_FACE_PX = 16.0
#: Default crop-box IoU at or above which a detection is the same face as a tracked one.
MATCH_IOU = 0.3
#: A followed face the detector misses on the whole frame is looked for again in the region of its
#: crop square grown by this factor (about 2.4x its landmark box), before it is ended.
RECHECK_SCALE = 1.5


def is_video_path(path) -> bool:
    """True for a file whose suffix is one of :data:`VIDEO_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# -- frame sources --------------------------------------------------------------------------------------
class VideoFileSource:
    """The frames of a video file (any container and codec the installed OpenCV reads), RGB uint8.

    Opening reads the first frame, so a file that is not a readable video raises
    :class:`ImageReadError` at once. ``fps`` is the file's frame rate (``DEFAULT_FPS`` when it
    does not say); ``frame_count`` the container's count (an estimate for some formats; 0 = unknown).
    """

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self.name = str(path)
        if not self.path.is_file():
            raise ImageReadError(f"{self.path} is not a file (a video file, or a folder of frames with --video)")
        cap = cv2.VideoCapture(str(self.path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise ImageReadError(
                f"cannot read the video {self.path}: OpenCV decodes no frame from it (not a video, damaged, "
                "or a codec this OpenCV build lacks); convert it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or "
                "pass a folder of its frames with --video")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        self.frame_count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        self.size = (first.shape[1], first.shape[0])  # (width, height)
        cap.release()

    def check_decoding(self) -> "DecodeCheck":
        """Start counting the file's decode errors (:class:`DecodeCheck`) beside the caller's reading."""
        return DecodeCheck(self.path)

    def __iter__(self):
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield as_rgb(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame, self.name)
        finally:
            cap.release()


#: The decoding pass of :class:`DecodeCheck` (a separate process, so that FFmpeg's log level, which
#: OpenCV sets once per process, can be "errors" there whatever this process uses): one FFmpeg
#: thread, so that each frame's errors are logged while that frame is decoded, and a marker line
#: after each frame.
_DECODE_CHECK = """
import os, sys, cv2
cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
os.write(2, b"\\n@@prnet-opened\\n")
n = 0
while cap.grab():
    os.write(2, b"\\n@@prnet-frame %d\\n" % n)
    n += 1
"""


@dataclass
class DecodeErrors:
    """What FFmpeg reported while decoding a video: ``frames`` (0-based indices of the frames with
    decode errors; FFmpeg conceals them, and frames predicted from them may be damaged too),
    ``opening`` (errors while opening the file), ``decoded`` (frames decoded), ``messages``
    (the first few of FFmpeg's lines)."""

    frames: list
    opening: int
    decoded: int
    messages: list

    def __bool__(self):
        return bool(self.frames or self.opening)

    def summary(self) -> str:
        """One line for the user, e.g. ``FFmpeg reported decode errors in 1 of 12 frames (frame 0) ...``."""
        shown = ", ".join(str(f) for f in self.frames[:5]) + (", ..." if len(self.frames) > 5 else "")
        where = f"in {len(self.frames)} of {self.decoded} frames (frame {shown})" if self.frames else \
            "while opening it"
        first = f": {self.messages[0]}" if self.messages else ""
        return (f"the video is damaged: FFmpeg reported decode errors {where}{first}; it concealed them, so "
                "those frames (and the frames predicted from them) may be wrong")


class DecodeCheck:
    """FFmpeg's decode errors of a video file, counted by decoding it once more in a separate
    process (started at once, running beside the caller's own reading): OpenCV's reader conceals
    damaged frames and gives no sign of it. :meth:`result` waits for it."""

    def __init__(self, path):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG")}
        self._log = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _DECODE_CHECK, str(path)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        except OSError:
            self._proc = None

    def result(self, timeout: float = 300.0):
        """:class:`DecodeErrors`, or None when the check could not run (or took over ``timeout`` s)."""
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            return None
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        self._log.close()
        if "@@prnet-opened" not in text:
            return None
        frames, opening, decoded, messages, block = [], 0, 0, [], []
        for line in text.splitlines():
            line = line.strip()
            if line == "@@prnet-opened":
                opening, block = len(block), []
            elif line.startswith("@@prnet-frame "):
                decoded = int(line.split()[1]) + 1
                if block:
                    frames.append(decoded - 1)
                block = []
            elif line.startswith("[") and " @ " in line:  # FFmpeg's "[codec @ 0x...] message"
                block.append(line)
                if len(messages) < 3:
                    messages.append(line.split("] ", 1)[-1])
        return DecodeErrors(frames, opening, decoded, messages)

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if not self._log.closed:
            self._log.close()


class FrameFolderSource:
    """Image files as the frames of a video, in the given order (pass them sorted), RGB uint8.

    Every frame must have the first frame's size (:class:`ImageReadError` otherwise, naming the file);
    an unreadable frame file also raises. ``fps``: the rate written to the annotated video.
    """

    def __init__(self, files, fps: float = DEFAULT_FPS, name: str = "frames"):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ImageReadError(f"{name}: no frame images")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps, self.name, self.frame_count = float(fps), str(name), len(self.files)
        first = read_image(self.files[0])
        self.size = (first.shape[1], first.shape[0])

    def __iter__(self):
        for f in self.files:
            frame = read_image(f)
            if (frame.shape[1], frame.shape[0]) != self.size:
                raise ImageReadError(f"{f}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the first "
                                     f"frame's {self.size[0]}x{self.size[1]}; all frames of a video must have one size")
            yield frame


# -- tracking -------------------------------------------------------------------------------------------
def crop_box(face) -> np.ndarray:
    """The crop square of a ``FaceResult``: ``(cx - size/2, cy - size/2, cx + size/2, cy + size/2)`` image px."""
    c, h = np.asarray(face.center, np.float64), float(face.size) / 2.0
    return np.array([c[0] - h, c[1] - h, c[0] + h, c[1] + h])


@dataclass
class TrackedFace:
    """One face in one frame: ``face_id`` (stable across frames), its ``FaceResult`` and whether its
    crop came from the detector on this frame (``detected``) or from the previous frame's landmarks."""

    frame: int
    face_id: int
    face: object
    detected: bool


@dataclass
class _Track:
    """A face reported on the previous frame."""

    face_id: int
    landmarks: np.ndarray  #: (68, 3) image px
    crop: np.ndarray  #: (4,) its crop box
    follow: bool  #: crop it from ``landmarks`` on the next frame (False: its landmarks give no sound crop)


class FaceTracker:
    """Follow faces through frames with a :class:`prnet.inference.predictor.Predictor` (see the module doc).

    Args:
      predictor: the predictor (its backend, detector and refine passes are used as they are).
      detect_every: run the detector when this many frames have passed since it last ran
        (0: only on the first frame and when a face is lost or none is tracked).
      max_faces: follow at most this many faces (largest detections first); None: all.
      min_face_px: a tracked face whose landmark box mean side is below this (image px) is lost.
      match_iou: crop-box IoU at or above which a detection is an already known face.

    ``detector_frames`` lists the frame indices the detector ran on (on the whole frame);
    ``ended`` lists ``(frame, face_id)`` of the faces ended because the detector no longer found them.
    """

    def __init__(self, predictor, *, detect_every: int = 10, max_faces=None, min_face_px: float = MIN_FACE_PX,
                 match_iou: float = MATCH_IOU):
        if int(detect_every) < 0:
            raise ValueError(f"detect_every must be >= 0 (0: only when a face is lost), got {detect_every}")
        self.predictor = predictor
        self.detect_every = int(detect_every)
        self.max_faces = max_faces
        self.min_face_px = float(min_face_px)
        self.match_iou = float(match_iou)
        self.detector_frames = []
        self.ended = []
        self._previous = []
        self._next_id = 0
        self._index = -1
        self._last_detection = None

    def lost_reason(self, face, frame_shape):
        """Why a face tracked into this frame is lost (a short text), or None when it is still followed."""
        if self.predictor.refine_crops([face])[0] is None:
            return "implausible landmarks (the face moved too far or changed size too much for its crop)"
        x0, y0, x1, y1 = cropping.landmarks_bbox(face.landmarks)
        if (x1 - x0 + y1 - y0) / 2 < self.min_face_px:
            return f"too small (landmark box under {self.min_face_px:g} px)"
        h, w = frame_shape[:2]
        inside = max(0.0, min(x1, w - 1) - max(x0, 0)) * max(0.0, min(y1, h - 1) - max(y0, 0))
        if inside < 0.5 * (x1 - x0) * (y1 - y0):
            return "out of the frame"
        return None

    def update(self, frame) -> list:
        """Process the next frame (RGB) -> ``list[TrackedFace]`` in face-id order."""
        frame = as_rgb(frame)
        self._index += 1
        index = self._index
        kept, lost = [], 0  # [(track, face)] followed into this frame; how many were lost
        follow = [t for t in self._previous if t.follow]
        if follow:
            prepared = self.predictor.prepare(frame, landmarks=np.stack([t.landmarks for t in follow]), refine=False)
            for track, face in zip(follow, self.predictor.complete(prepared)):
                if self.lost_reason(face, frame.shape) is None:
                    kept.append((track, face))
                else:
                    lost += 1
        due = self.detect_every > 0 and self._last_detection is not None and \
            index - self._last_detection >= self.detect_every
        found = []
        if not kept or lost or due:
            present = {track.face_id for track, _ in kept}
            found, seen = self._detect(frame, index, [face for _, face in kept],
                                       [t for t in self._previous if t.face_id not in present])
            # a followed face no detection overlaps: looked for around its crop, else it is gone
            confirmed = []
            for i, (track, face) in enumerate(kept):
                if i in seen or self.seen_near(frame, face):
                    confirmed.append((track, face))
                else:
                    self.ended.append((index, track.face_id))
            kept = confirmed
        out = [TrackedFace(index, track.face_id, face, False) for track, face in kept] + found
        out.sort(key=lambda t: t.face_id)
        # followed into the next frame: faces whose landmarks give a sound crop (a detected face whose
        # landmarks do not is still reported for this frame; the detector looks for it again next frame)
        self._previous = [_Track(t.face_id, np.asarray(t.face.landmarks, np.float64), crop_box(t.face),
                                 not t.detected or self.lost_reason(t.face, frame.shape) is None) for t in out]
        return out

    def seen_near(self, frame, face) -> bool:
        """Whether the detector, run on the region of ``frame`` around ``face`` (its crop square grown
        by :data:`RECHECK_SCALE`, clipped to the frame), finds a face whose box centre lies inside
        ``face``'s 68-landmark box: the check before a followed face the whole-frame detector
        missed is ended."""
        c, half = np.asarray(face.center, np.float64), RECHECK_SCALE * float(face.size) / 2
        h, w = frame.shape[:2]
        x0, y0 = int(max(np.floor(c[0] - half), 0)), int(max(np.floor(c[1] - half), 0))
        x1, y1 = int(min(np.ceil(c[0] + half), w)), int(min(np.ceil(c[1] + half), h))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return False
        try:
            boxes = self.predictor.detect(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        except (NoFaceFoundError, ImageReadError):
            return False
        if not len(boxes):
            return False
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 + x0
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 + y0
        lx0, ly0, lx1, ly1 = cropping.landmarks_bbox(face.landmarks)
        return bool(np.any((cx >= lx0) & (cx <= lx1) & (cy >= ly0) & (cy <= ly1)))

    def _detect(self, frame, index, kept, missing):
        """Detector pass on ``frame`` -> ``(new faces and faces of the previous frame found again
        (list[TrackedFace]), indices of the ``kept`` faces a detection overlaps)``. ``kept``: the
        FaceResults followed into this frame (detections overlapping them are dropped); ``missing``:
        the previous frame's other faces (``_Track``), whose ids go to the detections overlapping
        their last crop."""
        p = self.predictor
        self.detector_frames.append(index)
        self._last_detection = index
        try:
            crops_info = p.face_crops(frame)
        except NoFaceFoundError:
            return [], set()
        boxes = np.array([[c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2] for _, c, s, _ in crops_info])
        tracked = np.array([crop_box(face) for face in kept]).reshape(-1, 4)
        overlap = box_iou(boxes, tracked) if len(tracked) else np.zeros((len(boxes), 0))
        seen = set(np.nonzero((overlap >= self.match_iou).any(axis=0))[0].tolist())
        fresh = [i for i in range(len(boxes)) if not len(tracked) or overlap[i].max() < self.match_iou]
        room = None if self.max_faces is None else max(self.max_faces - len(kept), 0)
        fresh = fresh[:room]
        if not fresh:
            return [], seen
        infos = [crops_info[i] for i in fresh]
        faces = p.face_results(frame, infos, p.predict_posmaps(p.warp_crops(frame, infos)))
        (faces,) = p.refine_many([frame], [faces])
        # faces missing since the previous frame take back their id when a detection overlaps their
        # last crop (best overlap first)
        ids, missing = [None] * len(faces), list(missing)
        if missing:
            iou = box_iou(np.array([crop_box(f) for f in faces]), np.array([t.crop for t in missing]))
            for k, j in sorted(np.ndindex(iou.shape), key=lambda kj: -iou[kj]):
                if iou[k, j] >= self.match_iou and ids[k] is None and missing[j] is not None:
                    ids[k], missing[j] = missing[j].face_id, None
        out = []
        for face, face_id in zip(faces, ids):
            if face_id is None:
                face_id, self._next_id = self._next_id, self._next_id + 1
            out.append(TrackedFace(index, face_id, face, True))
        return out, seen
