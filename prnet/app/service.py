"""What the web app does, without the web page: one :class:`~prnet.inference.predictor.Predictor`
loaded once, and per request a result folder written by the same writers as ``prnet-demo``
(:mod:`prnet.outputs.faces`, :mod:`prnet.outputs.video`).

Every request gets its own folder ``<work_dir>/<id>/`` (served to the page as ``/results/<id>/...``);
a failure (:class:`AppError`) carries the one-line message the page shows, and the server goes on.
Network calls are serialised (one lock): the backends are not re-entrant, and 2 CPU cores gain
nothing from running two at once. Coordinates: image pixels (x right, y down, z toward the camera);
pose angles in degrees (yaw, pitch, roll, the library's convention, :mod:`prnet.core.transforms`).
"""

import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnet.errors import ImageReadError, NoFaceFoundError, PRNetError
from prnet.inference.predictor import Predictor, read_image_within
from prnet.mesh.gltf import write_glb
from prnet.outputs.faces import OUTPUT_KINDS, TextureOptions, write_image_outputs
from prnet.outputs.naming import face_stem, warning_text

#: The kinds the page itself shows; always written (and so in the zip too).
SHOWN_KINDS = ("glb", "overlay", "depth", "landmarks", "pose")
#: The 3D view shows the mesh sampled every VIEW_UV_STEP pixels of the UV map (2: a quarter of the
#: vertices, 4x cheaper to send and to draw in a browser without a GPU); the files keep every vertex.
VIEW_UV_STEP = 2
#: Photo requests whose zip can still be made (their reconstructions are kept in memory).
PENDING_RUNS = 16
#: The kinds written by default (the page's ``outputs`` control starts with these).
DEFAULT_APP_OUTPUTS = ("obj", "landmarks", "pose", "depth", "overlay", "glb")


class AppError(Exception):
    """A request that cannot be done; ``str()`` is the message the page shows."""


@dataclass
class FaceView:
    """One reconstructed face as the page shows it: files (paths in the result folder; ``glb`` the
    view's mesh, :func:`view_mesh`), the 68 landmarks ``(68, 3)`` image px, the pose (yaw, pitch,
    roll) in degrees, the box (x0, y0, x1, y1) px, and where the mesh lies in the ``.glb``'s frame:
    ``centre`` (3,) and ``extent`` (largest side)."""

    index: int
    stem: str
    glb: Path
    overlay: Path
    depth: Path
    landmarks: np.ndarray
    pose: tuple
    box: tuple
    centre: tuple
    extent: float


@dataclass
class PhotoResult:
    """``files``: what the request wrote (the :data:`SHOWN_KINDS`); ``zip_name``: the name of the zip
    :meth:`AppService.zip` makes on demand (with the other kinds asked for)."""

    run_id: str
    folder: Path
    faces: list
    zip_name: str
    random_weights: bool
    seconds: float
    files: list = field(default_factory=list)


@dataclass
class VideoResult:
    run_id: str
    folder: Path
    video: Path
    npz: Path
    csv: Path
    frames: int
    faces: int
    random_weights: bool
    seconds: float


def view_mesh(face, step: int = VIEW_UV_STEP) -> tuple:
    """The face's mesh sampled every ``step`` UV pixels, for the 3D view: ``(vertices (M, 3) image px,
    triangles (K, 3), colors (M, 3) in [0, 1])``; two triangles per grid cell whose four corners are on
    the face, wound as the template's triangles (so the ``.glb`` writer's front side is the same)."""
    template = face.template
    size = template.face_mask.shape[0]
    index = np.full(size * size, -1, np.int64)
    index[template.face_ind] = np.arange(len(template.face_ind))
    index = index.reshape(size, size)
    grid = index[::step, ::step]
    keep = grid >= 0
    sub = np.full(grid.shape, -1, np.int64)
    sub[keep] = np.arange(keep.sum())
    a, b, c, d = sub[:-1, :-1], sub[:-1, 1:], sub[1:, :-1], sub[1:, 1:]  # (r, c) (r, c+1) (r+1, c) (r+1, c+1)
    cells = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
    tris = np.concatenate([np.stack([a[cells], c[cells], b[cells]], 1), np.stack([b[cells], c[cells], d[cells]], 1)])
    ref = np.asarray(face.triangles[0])  # the template's winding, by its signed area in UV (col, row)
    rows, cols = np.divmod(np.asarray(template.face_ind)[ref], size)
    uv_area = (cols[1] - cols[0]) * (rows[2] - rows[0]) - (cols[2] - cols[0]) * (rows[1] - rows[0])
    if uv_area > 0:  # ours, (r, c) -> (r+1, c) -> (r, c+1), have negative area in (col, row)
        tris = tris[:, ::-1]
    chosen = grid[keep]
    return (np.asarray(face.vertices)[chosen], tris.astype(np.int64), np.asarray(face.colors)[chosen])


def banner(random_weights: bool) -> str:
    """The line every result of an untrained network carries ("" for trained weights)."""
    return f"{warning_text()}: these results only check the pipeline" if random_weights else ""


class AppService:
    """The app's work. ``predictor``: the one loaded at start (its detector is the default one);
    ``work_dir``: where result folders go; ``max_frames``: the longest clip accepted (frames);
    ``max_pixels``: the pixel cap of photos and video frames (the predictor's when None)."""

    def __init__(self, predictor: Predictor, work_dir, *, max_frames: int = 300, max_pixels=None):
        self.predictor = predictor
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.max_frames = int(max_frames)
        self.max_pixels = predictor.max_pixels if max_pixels is None else int(max_pixels)
        self._lock = threading.Lock()
        self._by_detector = {}
        self._zip_lock = threading.Lock()
        self._pending = OrderedDict()  # run id -> what its zip still needs (the last PENDING_RUNS photos)

    @property
    def random_weights(self) -> bool:
        return bool(self.predictor.random_weights)

    def _predictor(self, detector) -> Predictor:
        """The start-up predictor, or one sharing its network and template with another detector."""
        if detector in (None, "", "default"):
            return self.predictor
        if detector not in self._by_detector:
            p = self.predictor
            self._by_detector[detector] = Predictor(p.backend, detector=detector, template=p.template,
                                                    batch_size=p.batch_size, download=p.download,
                                                    refine=p.refine_passes, max_pixels=p.max_pixels)
        return self._by_detector[detector]

    def _new_folder(self) -> tuple:
        run_id = uuid.uuid4().hex[:12]
        folder = self.work_dir / run_id
        folder.mkdir()
        return run_id, folder

    def photo(self, path, name: str = "photo", *, outputs=DEFAULT_APP_OUTPUTS, detector=None, refine=True,
              max_faces=None, texture: bool = False) -> PhotoResult:
        """Reconstruct every face of the image file ``path`` and write what the page shows
        (:data:`SHOWN_KINDS`, named as ``prnet-demo`` names them: ``<name>_<k>...``); the other
        ``outputs`` kinds are written when the zip is asked for (:meth:`zip`): the 3D view comes first."""
        start = time.perf_counter()
        unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
        if unknown:
            raise AppError(f"unknown output kinds {unknown}; choose from {', '.join(OUTPUT_KINDS)}")
        try:
            image = read_image_within(path, self.max_pixels)
        except ImageReadError as e:
            raise AppError(f"{name}: not a photo this app can read ({_short(e, path, name)})") from None
        shown = [k for k in OUTPUT_KINDS if k in SHOWN_KINDS]
        later = [k for k in OUTPUT_KINDS if k in set(outputs) and k not in SHOWN_KINDS]
        run_id, folder = self._new_folder()
        try:
            with self._lock:
                faces = self._predictor(detector).reconstruct(image, max_faces=max_faces, refine=bool(refine))
        except NoFaceFoundError:
            faces = []
        except PRNetError as e:
            raise AppError(f"{name}: {_short(e, path, name)}") from None
        if not faces:
            raise AppError(f"no face found in {name}: try another detector, or a photo where the face is larger "
                           "and turned less than 90 degrees")
        textures = TextureOptions(obj=bool(texture))
        written = write_image_outputs(faces, name, name, folder, shown, textures)
        zip_name = f"{name}_prnet{'_RANDOM_WEIGHTS' if self.random_weights else ''}.zip"
        with self._lock:
            self._pending[run_id] = (faces, name, later, textures, list(written), zip_name)
            while len(self._pending) > PENDING_RUNS:
                self._pending.popitem(last=False)
        views = []
        for k, face in enumerate(faces):
            stem = face_stem(name, k, face.random_weights)
            vertices, triangles, colors = view_mesh(face)
            view = write_glb(folder / f"view_{k}.glb", vertices, triangles, colors, image_height=image.shape[0])
            v = np.asarray(vertices, np.float64).copy()
            v[:, 1] = image.shape[0] - 1 - v[:, 1]  # the .glb's y-up frame (prnet.mesh.gltf)
            lo, hi = v.min(axis=0), v.max(axis=0)
            views.append(FaceView(k, stem, view, folder / f"{stem}_overlay.png",
                                  folder / f"{stem}_depth.png", np.asarray(face.landmarks, np.float64),
                                  tuple(float(a) for a in face.pose[1]), tuple(float(b) for b in face.box),
                                  tuple(float(c) for c in (lo + hi) / 2), float(np.max(hi - lo))))
        return PhotoResult(run_id, folder, views, zip_name, self.random_weights, time.perf_counter() - start,
                           written)

    def zip(self, run_id: str) -> Path:
        """The zip of photo request ``run_id``: its files and the other kinds asked for (written now,
        once); raises :class:`AppError` for an unknown or expired request."""
        with self._lock:
            pending = self._pending.get(run_id)
        if pending is None:
            raise AppError("this result has expired; reconstruct the photo again")
        faces, name, later, textures, written, zip_name = pending
        folder = self.work_dir / run_id
        path = folder / zip_name
        with self._zip_lock:
            if not path.exists():
                if later:
                    written = written + write_image_outputs(faces, name, name, folder, later, textures)
                tmp = path.with_suffix(".tmp")
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                    for p in written:
                        z.write(p, p.name)
                tmp.replace(path)
        return path

    def video(self, path, name: str = "clip", *, detect_every: int = 10, max_faces=None) -> VideoResult:
        """Track the faces of the clip at ``path`` (at most :attr:`max_frames` frames) and write the
        annotated H.264 video and the tracks ``.npz`` / ``.csv`` (:func:`prnet.outputs.video.process_video`)."""
        from prnet.inference.video import VideoFileSource
        from prnet.outputs.video import process_video

        start = time.perf_counter()
        try:
            source = VideoFileSource(path)
        except ImageReadError:
            raise AppError(f"{name}: not a video this app can read (OpenCV decodes no frame from it)") from None
        width, height = source.size
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise AppError(f"{name}: its frames are {width}x{height} pixels, more than the limit of "
                           f"{self.max_pixels:,}; downscale the clip")
        if source.frame_count > self.max_frames:
            raise AppError(f"{name}: {source.frame_count} frames, more than this app's limit of {self.max_frames} "
                           "(prnet-app --max_frames); cut the clip shorter, or use prnet-demo for long videos")
        run_id, folder = self._new_folder()
        limited = _Limited(source, self.max_frames)
        try:
            with self._lock:
                run = process_video(self.predictor, limited, folder, name, detect_every=detect_every,
                                    max_faces=max_faces)
        except NoFaceFoundError:
            raise AppError(f"no face found in any frame of {name}") from None
        except _TooLong:
            raise AppError(f"{name}: more than this app's limit of {self.max_frames} frames "
                           "(prnet-app --max_frames); cut the clip shorter") from None
        except PRNetError as e:
            raise AppError(f"{name}: {_short(e, path, name)}") from None
        video, npz, csv = run.paths
        return VideoResult(run_id, folder, video, npz, csv, run.frames, run.faces, self.random_weights,
                           time.perf_counter() - start)


    def swap(self, target_path, reference_path, *, target_name: str = "target", reference_name: str = "reference",
             region: str = "face", blend: str = "poisson") -> "SwapResult":
        """Paint the largest face of the reference photo onto the largest face of the target photo
        (:func:`prnet.inference.results.swap_faces`; ``region`` ``"face"`` or ``"eyes"``, ``blend``
        ``"poisson"``, ``"alpha"`` or ``"none"``) and write ``<target>_swap.png`` (marked like the
        demo's images with random weights)."""
        from prnet.core.images import write_image
        from prnet.inference.results import swap_faces
        from prnet.outputs.faces import _mark_random
        from prnet.outputs.naming import tagged_path

        start = time.perf_counter()
        if region not in ("face", "eyes") or blend not in ("poisson", "alpha", "none"):
            raise AppError(f"unknown mode {region!r} / blend {blend!r}")
        found = []
        for path, name in ((target_path, target_name), (reference_path, reference_name)):
            try:
                image = read_image_within(path, self.max_pixels)
            except ImageReadError as e:
                raise AppError(f"{name}: not a photo this app can read ({_short(e, path, name)})") from None
            try:
                with self._lock:
                    faces = self.predictor.reconstruct(image, max_faces=1)
            except NoFaceFoundError:
                faces = []
            if not faces:
                raise AppError(f"no face found in {name}")
            found.append(faces[0])
        target, reference = found
        image, painted = swap_faces(target, reference, region=region, blend=blend)
        if not painted.any():
            raise AppError(f"nothing painted: no visible pixel of the {target_name} face in the {region} region")
        run_id, folder = self._new_folder()
        out = write_image(tagged_path(folder / f"{target_name}_swap.png", self.random_weights),
                          _mark_random(image, target))
        return SwapResult(run_id, Path(out), int(painted.sum()), self.random_weights, time.perf_counter() - start)


@dataclass
class SwapResult:
    run_id: str
    image: Path
    painted: int
    random_weights: bool
    seconds: float


class _TooLong(PRNetError):
    pass


class _Limited:
    """A frame source that raises :class:`_TooLong` past ``limit`` frames (a container can under-count)."""

    def __init__(self, source, limit: int):
        self.source, self.limit = source, limit
        self.fps, self.size, self.name = source.fps, source.size, source.name

    def __iter__(self):
        for n, frame in enumerate(self.source):
            if n >= self.limit:
                raise _TooLong(self.name)
            yield frame


def _short(error, path, name) -> str:
    """The error's message with the server's temporary path replaced by the upload's name."""
    return str(error).replace(str(path), name)
