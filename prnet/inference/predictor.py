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

import warnings
from pathlib import Path

import numpy as np

from prnet.core import crop as cropping
from prnet.model.runtime import KerasBackend, SavedModelBackend, TFLiteBackend, check_crops
from prnet.core.images import as_rgb, read_image
from prnet.errors import NoFaceFoundError, WeightsFormatError, WeightsNotFoundError
from prnet.model.resfcn256 import BASE_SIZE, RESOLUTION, build_resfcn256
from prnet.core.uv import landmarks_from_posmap, load_uv_template, vertices_from_posmap
from prnet.inference.results import FaceResult
from prnet.weights.formats import _checkpoint_dir_prefix, _looks_like_checkpoint, infer_base_size

#: Values of ``backend`` in :meth:`Predictor.from_weights`.
BACKENDS = ("auto", "keras", "saved_model")
#: Warning carried by every output of a network with untrained weights.
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS \u2014 NOT A FACE MODEL"


# ----------------------------------------------------------------------------- weights


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
                     download: bool = True, **kwargs) -> "Predictor":
        """Build a predictor from any weights format, detected from ``path``:

        * None: the official weights (:meth:`from_official_weights`): converted Keras weights in the
          cache (downloaded and converted on first use unless ``download=False``), run through a
          SavedModel exported from them once into the cache (``backend="keras"``: the Keras model);
        * a directory with ``saved_model.pb``: :meth:`from_saved_model`;
        * ``*.tflite``: :meth:`from_tflite`;
        * ``*.h5`` (``.weights.h5``): :meth:`from_keras_weights`; ``*.keras``: :meth:`from_keras_model_file`;
        * a checkpoint (:meth:`from_checkpoint`): a training checkpoint directory (written by
          ``tf.train.CheckpointManager`` with ``model=``, e.g. ``<model_dir>/checkpoints``; the newest is
          used), a TF2 checkpoint prefix, or the official TF1 checkpoint prefix (or its ``.index`` /
          ``.data-*`` file).

        ``backend``: ``"auto"`` (the above), ``"keras"`` (require a Keras model: the official weights
        or a Keras/checkpoint file are not exported) or ``"saved_model"`` (require a SavedModel: the
        official export or a SavedModel folder). ``smoke_test_random_weights=True`` ignores ``path``
        and uses an untrained network (for checking the pipeline only; every result is flagged
        ``random_weights``).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        kwargs["download"] = download
        if smoke_test_random_weights:
            return cls.from_random_weights(**kwargs)
        if path is None:
            return cls.from_official_weights(backend=backend, **kwargs)
        p = Path(path).expanduser()
        predictor = cls._from_path(p, **kwargs)
        kind = predictor.backend_name
        if backend == "keras" and kind != "Keras" or backend == "saved_model" and kind != "SavedModel":
            raise WeightsFormatError(
                f"backend {backend!r} cannot run {p} ({kind}): "
                + ("pass Keras weights (.weights.h5), a .keras file or a checkpoint" if backend == "keras" else
                   "pass a SavedModel folder (export one with export.py), or omit the path for the official "
                   "weights"))
        return predictor

    @classmethod
    def _from_path(cls, p: Path, **kwargs) -> "Predictor":
        if p.is_dir():
            if (p / "saved_model.pb").is_file():
                return cls.from_saved_model(p, **kwargs)
            if _checkpoint_dir_prefix(p) is not None:
                return cls.from_checkpoint(p, **kwargs)
            hint = ""
            if (p / "checkpoints").is_dir() or (p / "final.weights.h5").is_file():
                hint = f" (a training run folder: pass {p / 'checkpoints'} or {p / 'final.weights.h5'})"
            raise WeightsFormatError(f"{p} is a folder without saved_model.pb and without a checkpoint{hint}: "
                                     "pass a SavedModel folder, a training checkpoint folder, a .weights.h5, a "
                                     ".tflite file or a checkpoint prefix")
        if p.suffix == ".tflite":
            return cls.from_tflite(p, **kwargs)
        if p.suffix == ".keras" and p.is_file():
            return cls.from_keras_model_file(p, **kwargs)
        if p.suffix == ".h5" or p.name.endswith(".weights.h5"):
            return cls.from_keras_weights(p, **kwargs)
        if _looks_like_checkpoint(p):
            return cls.from_checkpoint(p, **kwargs)
        if not p.exists():
            raise WeightsNotFoundError(
                f"weights not found: {p}. Pass a Keras .weights.h5, a SavedModel folder, a .tflite file, a "
                "training checkpoint folder or a checkpoint prefix, or omit the path to use the official "
                "weights (`prnet-convert --download`).")
        raise WeightsFormatError(f"unrecognised weights file {p}: expected .weights.h5, .tflite, a SavedModel "
                                 "folder, a training checkpoint folder or a checkpoint prefix (with .index and "
                                 ".data-* files)")

    @classmethod
    def from_official_weights(cls, *, backend: str = "auto", download: bool = True, **kwargs) -> "Predictor":
        """The authors' weights: ``<cache>/resfcn256.weights.h5`` (downloaded + converted on first use).

        With ``backend="auto"`` / ``"saved_model"`` they run through the fast SavedModel exported from
        them once into ``<cache>/resfcn256_saved_model`` (:func:`prnet.weights.download.ensure_official_saved_model`;
        re-exported when the weights file changes; a damaged export is rebuilt). If the cache cannot be
        written, ``"auto"`` falls back to the Keras model with a warning. ``backend="keras"`` skips
        the export. Raises :class:`WeightsNotFoundError` with the manual steps when the weights are
        missing and cannot be downloaded.
        """
        from prnet.weights.official import ensure_official_saved_model, ensure_official_weights

        kwargs["download"] = download
        weights = ensure_official_weights(download=download)
        if backend == "keras":
            predictor = cls.from_keras_weights(weights, **kwargs)
            predictor.backend.source = f"official PRNet weights {weights}"
            return predictor
        import tensorflow as tf

        kpt_ind = _template_kpt_ind(kwargs.get("template"))
        try:
            export = ensure_official_saved_model(download, kpt_ind=kpt_ind)
            try:
                predictor = cls.from_saved_model(export, **kwargs)
            except WeightsFormatError:  # a damaged cached export: rebuild it once
                export = ensure_official_saved_model(download, kpt_ind=kpt_ind, force=True)
                predictor = cls.from_saved_model(export, **kwargs)
        except (OSError, tf.errors.OpError) as e:
            if backend == "saved_model":
                raise
            warnings.warn(f"could not export the official weights as a SavedModel into the cache ({e}); "
                          "running the Keras model instead", RuntimeWarning, stacklevel=2)
            predictor = cls.from_keras_weights(weights, **kwargs)
            predictor.backend.source = f"official PRNet weights {weights}"
            return predictor
        predictor.backend.source = f"official PRNet weights {weights} (exported SavedModel {export})"
        return predictor

    @classmethod
    def from_keras_weights(cls, path, **kwargs) -> "Predictor":
        """Keras ``.weights.h5`` of ResFCN256 (converted official weights or a training run); the
        base width (16, or e.g. 4 for a smoke model) is read from the file."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"Keras weights file not found: {p}")
        size = infer_base_size(p)
        model = build_resfcn256(weight_decay=0.0, size=size)
        try:
            model.load_weights(str(p))
        except Exception as e:  # Keras raises ValueError / KeyError / OSError for mismatches
            raise WeightsFormatError(f"{p} does not match ResFCN256 (size={size}): {e}") from e
        return cls(KerasBackend(model, source=f"Keras weights {p}"), **kwargs)

    @classmethod
    def from_keras_model_file(cls, path, **kwargs) -> "Predictor":
        """A whole saved Keras model (``.keras``) whose output is the sigmoid map, as ResFCN256's."""
        import keras

        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as e:  # corrupt archive, unknown layers, ...
            raise WeightsFormatError(f"could not load the Keras model {path}: {e}") from e
        return cls(KerasBackend(model, source=f"Keras model {path}"), **kwargs)

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "Predictor":
        """A checkpoint, loaded by :func:`prnet.serving.saved_model.load_keras_model` (base width read from it):

        a training checkpoint directory (``tf.train.CheckpointManager`` over ``tf.train.Checkpoint(
        model=...)``, as ``train.py`` writes to ``<model_dir>/checkpoints``; the newest one), a TF2
        checkpoint prefix holding ``model=``, or the official TF1 checkpoint prefix
        (``256_256_resfcn256_weight``, converted in memory), or a checkpoint's ``.index`` / ``.data-*`` file.
        """
        from prnet.weights.convert import checkpoint_prefix
        from prnet.weights.formats import load_keras_model

        p = Path(path).expanduser()
        resolved = (_checkpoint_dir_prefix(p) if p.is_dir() else None) or str(checkpoint_prefix(p))
        model = load_keras_model(p)
        return cls(KerasBackend(model, source=f"checkpoint {resolved}"), **kwargs)

    @classmethod
    def from_saved_model(cls, path, **kwargs) -> "Predictor":
        """An exported SavedModel folder (signature ``serving_default``: ``images`` -> ``posmap``)."""
        return cls(SavedModelBackend(path), **kwargs)

    @classmethod
    def from_tflite(cls, path, *, num_threads=None, **kwargs) -> "Predictor":
        """A ``.tflite`` model (float or int8/uint8 quantised I/O)."""
        return cls(TFLiteBackend(path, num_threads=num_threads), **kwargs)

    @classmethod
    def from_random_weights(cls, *, size: int = BASE_SIZE, seed: int = 0, **kwargs) -> "Predictor":
        """An UNTRAINED network (smoke tests of the pipeline only); results are flagged ``random_weights``."""
        import keras

        keras.utils.set_random_seed(seed)
        model = build_resfcn256(weight_decay=0.0, size=size)
        return cls(KerasBackend(model, source=f"random weights (seed {seed}) - {RANDOM_WEIGHTS_WARNING}",
                                random_weights=True), **kwargs)

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
                try:
                    from prnet.weights.official import ensure_uv_template
                except ImportError:  # pragma: no cover - download.py ships with the package
                    ensure_uv_template = None
                if ensure_uv_template is not None:
                    directory = ensure_uv_template(download=self.download)
            self._template = load_uv_template(directory)
        return self._template

    @property
    def detector(self):
        """The face detector (built on first use)."""
        if self._detector is None:
            if self._detector_spec is None:
                raise NoFaceFoundError("no face detector configured: pass boxes= or landmarks= to reconstruct()")
            from prnet.inference.detect import make_detector

            self._detector = make_detector(self._detector_spec)
        return self._detector

    # -- steps
    def predict_posmaps(self, crops) -> np.ndarray:
        """Crops ``[N, 256, 256, 3]`` float32 in [0, 1] -> position maps ``[N, 256, 256, 3]`` in crop pixels."""
        crops = check_crops(crops)
        out = [self.backend(crops[i:i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, RESOLUTION, RESOLUTION, 3), np.float32)

    def detect(self, image) -> np.ndarray:
        """``(K, 4)`` face boxes (image px), largest first, from the detector."""
        return np.asarray(self.detector(as_rgb(image)), dtype=np.float64).reshape(-1, 4)

    def face_crops(self, image, boxes=None, landmarks=None, max_faces=None):
        """Crop squares for an image: ``list of (box, center, size, tform)``.

        ``landmarks`` (``(68, 2+)`` or a list/array of them) or ``boxes`` (``(K, 4)``, e.g. from
        another detector) skip the detector and use the ``x1.6`` rule; otherwise the detector's
        boxes and its ``box_rule``. Raises :class:`NoFaceFoundError` when no face is found.
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
            out.append((box, center, size, cropping.crop_transform(center, size, RESOLUTION)))
        return out

    def reconstruct(self, image, boxes=None, landmarks=None, max_faces=None) -> list:
        """Reconstruct every face of ``image`` (RGB array or file path) -> ``list[FaceResult]``.

        Faces come from ``landmarks``, else ``boxes``, else the detector (largest first, at most
        ``max_faces``). Raises :class:`ImageReadError` for a bad image and
        :class:`NoFaceFoundError` when no face is found.
        """
        image = read_image(image) if isinstance(image, (str, Path)) else as_rgb(image)
        template = self.template
        crops_info = self.face_crops(image, boxes=boxes, landmarks=landmarks, max_faces=max_faces)
        crops = np.stack([cropping.warp_crop(image, t, RESOLUTION) for _, _, _, t in crops_info])
        posmaps = self.predict_posmaps(crops)
        results = []
        for (box, center, size, tform), pos in zip(crops_info, posmaps):
            pos_img = posmap_to_image(pos, tform)
            results.append(FaceResult(
                box=np.asarray(box, np.float64), center=center, size=size, tform=tform, posmap_crop=pos,
                posmap=pos_img, vertices=vertices_from_posmap(pos_img, template),
                landmarks=landmarks_from_posmap(pos_img, template), random_weights=self.random_weights,
                source=self.source, image=image, template=template))
        return results


def posmap_to_image(posmap_crop, tform) -> np.ndarray:
    """Crop-pixel position map -> image pixels (``prnet.mesh.geometry.posmap_to_image``)."""
    from prnet.mesh.geometry import posmap_to_image as _to_image

    return _to_image(posmap_crop, tform)
