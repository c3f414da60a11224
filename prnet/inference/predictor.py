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

import numpy as np

from prnet.core import crop as cropping
from prnet.core.images import as_rgb, read_image
from prnet.core.uv import landmarks_from_posmap, load_uv_template, vertices_from_posmap
from prnet.errors import NoFaceFoundError
from prnet.inference.detect import make_detector
from prnet.inference.results import FaceResult
from prnet.model.runtime import KerasBackend, SavedModelBackend, TFLiteBackend, check_crops, random_weights_backend
from prnet.weights.formats import check_backend, load_backend
from prnet.weights.official import ensure_uv_template, official_backend


def _template_kpt_ind(template):
    """Landmark UV pixels of a template given as a UVTemplate or a folder; None to use the default."""
    if template is None:
        return None
    if isinstance(template, (str, Path)):
        return load_uv_template(template).kpt_ind
    return template.kpt_ind


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
    """

    def __init__(self, backend, *, detector="auto", template=None, batch_size: int = 8, download: bool = True):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.batch_size = int(batch_size)
        self.download = bool(download)
        self._detector_spec = detector
        self._detector = None if isinstance(detector, str) or detector is None else detector
        self._template = template if template is not None and not isinstance(template, (str, Path)) else None
        self._template_dir = template if isinstance(template, (str, Path)) else None

    # -- construction
    @classmethod
    def from_weights(cls, path=None, *, backend: str = "auto", smoke_test_random_weights: bool = False,
                     download: bool = True, num_threads=None, **kwargs) -> "Predictor":
        """Build a predictor from any weights, as ``prnet-demo`` and ``evaluate.py`` do.

        * ``path=None``: the official weights (:func:`prnet.weights.official.official_backend`): converted
          Keras weights in the cache (downloaded and converted on first use unless ``download=False``),
          run through a SavedModel exported from them once into the cache (``backend="keras"``: the
          Keras model);
        * any other path: the format is recognised by :func:`prnet.weights.formats.load_backend`
          (``.weights.h5``, ``.keras``, a training checkpoint folder, a TF2 / official TF1 checkpoint
          prefix or its ``.index`` / ``.data-*`` file, a SavedModel folder, a ``.tflite`` file).

        ``backend``: ``"auto"`` (the above), ``"keras"`` (require a Keras model: the official weights
        or a Keras/checkpoint file are not exported) or ``"saved_model"`` (require a SavedModel: the
        official export or a SavedModel folder). ``num_threads``: TFLite interpreter threads.
        ``smoke_test_random_weights=True`` ignores ``path`` and uses an untrained network (for checking
        the pipeline only; every result is flagged ``random_weights``). Other keyword arguments go
        to :class:`Predictor`.
        """
        check_backend(backend)
        if smoke_test_random_weights:
            runner = random_weights_backend()
        elif path is None:
            runner = official_backend(backend, download=download, kpt_ind=_template_kpt_ind(kwargs.get("template")))
        else:
            runner = load_backend(path, backend, num_threads=num_threads)
        return cls(runner, download=download, **kwargs)

    # -- components
    @property
    def random_weights(self) -> bool:
        return bool(getattr(self.backend, "random_weights", False))

    @property
    def backend_name(self) -> str:
        """``"Keras"``, ``"SavedModel"``, ``"TFLite"`` or the backend's class name."""
        names = {KerasBackend: "Keras", SavedModelBackend: "SavedModel", TFLiteBackend: "TFLite"}
        return names.get(type(self.backend), type(self.backend).__name__)

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

    def reconstruct(self, image, boxes=None, landmarks=None, max_faces=None) -> list:
        """Reconstruct every face of ``image`` (RGB array or file path) -> ``list[FaceResult]``.

        Faces come from ``landmarks``, else ``boxes``, else the detector (largest first, at most
        ``max_faces``). Raises :class:`ImageReadError` for a bad image and
        :class:`NoFaceFoundError` when no face is found.
        """
        image = read_image(image) if isinstance(image, (str, Path)) else as_rgb(image)
        self.template  # noqa: B018  (fail on a missing UV template before running the network)
        crops_info = self.face_crops(image, boxes=boxes, landmarks=landmarks, max_faces=max_faces)
        return self.face_results(image, crops_info, self.predict_posmaps(self.warp_crops(image, crops_info)))

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
