"""Twin of :func:`prnet.inference.blazeface.letterbox`, :func:`~prnet.inference.blazeface.decode`,
:func:`~prnet.inference.blazeface.weighted_nms`, :class:`prnet.inference.blazeface.BlazeFaceDetector`,
:func:`prnet.inference.boxes.box_iou`, :func:`~prnet.inference.boxes.sort_and_suppress` and
:meth:`prnet.core.crop.BoxCalibration.apply`; pinned by tests/test_graph_twins.py.

The default face detector (BlazeFace) in TensorFlow ops, for the SavedModel's ``predict_images_detect``:
the same steps as the NumPy + TFLite-interpreter detector, written as graph ops so TF Serving can
run them: letterbox, the rebuilt network (:func:`prnet.model.blazeface.blazeface_net`: the Keras
rebuild's steps on plain variables), anchor decoding, MediaPipe's weighted non-maximum suppression,
the calibration to the 68 landmarks' bounding box, and "largest first, drop boxes overlapping a
larger one". Every constant (anchors, score clip, thresholds, calibration) comes from
:mod:`prnet.model.blazeface`.

Coordinates: boxes ``(x0, y0, x1, y1)`` and key points ``(x, y)`` in pixels of the image as
displayed (x = column, y = row); box maths in float64 like the NumPy detector.
"""

from __future__ import annotations

import tensorflow as tf

from prnet.model.blazeface import (
    BLAZEFACE_CALIBRATION,
    MIN_SCORE,
    MODELS,
    NMS_IOU,
    SCORE_CLIP,
    SUPPRESS_IOU,
    blazeface_net,
    model_anchors,
)


def letterbox(image, size: int):
    """RGB uint8 ``(H, W, 3)`` -> ``(input (size, size, 3) float32 in [-1, 1], (sx, sy), (px, py))``.

    As :func:`prnet.inference.blazeface.letterbox`: resized by ``size / max(H, W)`` to whole pixels
    (area filter when shrinking, bilinear when enlarging), centred on a black square; image pixel
    ``p`` lands at input pixel ``p * (sx, sy) + (px, py)`` (float64 scalars).
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = size / tf.maximum(h, w)
    nw = tf.maximum(tf.round(w * scale), 1.0)
    nh = tf.maximum(tf.round(h * scale), 1.0)
    new = tf.cast(tf.stack([nh, nw]), tf.int32)
    resized = tf.cond(scale < 1.0,
                      lambda: tf.image.resize(image, new, method="area"),
                      lambda: tf.image.resize(image, new, method="bilinear"))
    resized = tf.round(tf.clip_by_value(resized, 0.0, 255.0))  # the uint8 image the NumPy path resizes to
    px = (size - new[1]) // 2
    py = (size - new[0]) // 2
    square = tf.image.pad_to_bounding_box(resized, py, px, size, size)
    return square / 127.5 - 1.0, (nw / w, nh / h), (tf.cast(px, tf.float64), tf.cast(py, tf.float64))

def decode(regressors, logits, anchors, input_size: int):
    """Raw outputs -> ``(boxes (N, 4) x0, y0, x1, y1, scores (N,), keypoints (N, 6, 2))`` float64 in [0, 1]
    of the input square (as :func:`prnet.inference.blazeface.decode`).

    ``regressors`` ``(N, 16)`` (centre offset and size in input pixels, then 6 key points, relative to
    the anchor centre), ``logits`` ``(N,)`` or ``(N, 1)`` (score: sigmoid of the logit clipped to
    +-:data:`prnet.model.blazeface.SCORE_CLIP`), ``anchors`` ``(N, 2)`` float64 centres.
    """
    r = tf.cast(regressors, tf.float64) / float(input_size)
    centre = r[:, :2] + anchors
    boxes = tf.concat([centre - r[:, 2:4] / 2, centre + r[:, 2:4] / 2], axis=1)
    keypoints = tf.reshape(r[:, 4:16] + tf.tile(anchors, [1, 6]), [-1, 6, 2])
    scores = tf.sigmoid(tf.clip_by_value(tf.cast(tf.reshape(logits, [-1]), tf.float64), -SCORE_CLIP, SCORE_CLIP))
    return boxes, scores, keypoints


def calibrate(boxes, calibration):
    """``(K, 4)`` detector boxes -> ``(K, 4)`` landmark-like boxes, image px (as
    :meth:`prnet.core.crop.BoxCalibration.apply`); ``calibration`` float64 ``(4,)`` ``(dx, dy, sx, sy)``."""
    dx, dy, csx, csy = tf.unstack(calibration)
    w = boxes[:, 2] - boxes[:, 0]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + dy * w
    return tf.stack([cx - csx * w / 2, cy - csy * w / 2, cx + csx * w / 2, cy + csy * w / 2], axis=1)


def iou(box, boxes):
    """IoU of one box ``(4,)`` with ``(K, 4)`` boxes (as :func:`prnet.inference.boxes.box_iou`)."""
    iw = tf.maximum(tf.minimum(box[2], boxes[:, 2]) - tf.maximum(box[0], boxes[:, 0]), 0.0)
    ih = tf.maximum(tf.minimum(box[3], boxes[:, 3]) - tf.maximum(box[1], boxes[:, 1]), 0.0)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / tf.maximum(area - inter, 1e-12)


def weighted_nms(boxes, scores, extra, iou_threshold: float = NMS_IOU):
    """MediaPipe's weighted NMS in graph ops (as :func:`prnet.inference.blazeface.weighted_nms`).

    ``boxes`` ``(K, 4)``, ``scores`` ``(K,)``, ``extra`` ``(K, E)`` float64. Highest score first, every
    remaining box with IoU > ``iou_threshold`` joins its cluster; the cluster's box and ``extra`` are
    the score-weighted means, its score the highest. Returns ``(boxes (J, 4), scores (J,), extra (J, E))``
    by decreasing score.
    """
    order = tf.argsort(-scores, stable=True)
    b, s, e = tf.gather(boxes, order), tf.gather(scores, order), tf.gather(extra, order)
    k = tf.shape(b)[0]
    index = tf.range(k)

    def step(remaining, out_b, out_s, out_e):
        top = tf.cast(tf.reduce_min(tf.where(remaining)[:, 0]), tf.int32)
        members = tf.logical_or(tf.logical_and(remaining, iou(b[top], b) > iou_threshold), tf.equal(index, top))
        w = tf.where(members, s, 0.0)
        w = w / tf.reduce_sum(w)
        return (tf.logical_and(remaining, tf.logical_not(members)),
                out_b.write(out_b.size(), tf.reduce_sum(w[:, None] * b, 0)),
                out_s.write(out_s.size(), s[top]),
                out_e.write(out_e.size(), tf.reduce_sum(w[:, None] * e, 0)))

    arrays = [tf.TensorArray(tf.float64, size=0, dynamic_size=True, element_shape=shape)
              for shape in ([4], [], extra.shape[1:])]
    _, out_b, out_s, out_e = tf.while_loop(lambda remaining, *_: tf.reduce_any(remaining), step,
                                           [tf.ones([k], tf.bool), *arrays])
    return (tf.reshape(out_b.stack(), [-1, 4]), tf.reshape(out_s.stack(), [-1]),
            tf.reshape(out_e.stack(), tf.concat([[-1], tf.shape(extra)[1:]], 0)))


def largest_first_suppressed(boxes, iou_threshold: float = SUPPRESS_IOU):
    """Indices of ``(K, 4)`` boxes, largest area first, without those overlapping a larger kept box by
    IoU > ``iou_threshold`` (as :func:`prnet.inference.boxes.sort_and_suppress`)."""
    order = tf.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), stable=True)
    b = tf.gather(boxes, order)
    k = tf.shape(b)[0]

    def step(i, kept):
        overlap = tf.reduce_any(tf.logical_and(kept, iou(b[i], b) > iou_threshold))
        return i + 1, tf.tensor_scatter_nd_update(kept, [[i]], [tf.logical_not(overlap)])

    _, kept = tf.while_loop(lambda i, kept: i < k, step, [tf.constant(0), tf.zeros([k], tf.bool)])
    return tf.boolean_mask(order, kept)


class BlazeFaceGraph(tf.Module):
    """BlazeFace as a ``tf.Module``: RGB uint8 image -> calibrated face boxes, scores, key points.

    Args:
      variant: ``"back"`` or ``"front"`` (:data:`prnet.model.blazeface.MODELS`).
      model_path: a ``.tflite`` file instead of the installed one.
      min_score, iou_threshold: as :class:`prnet.inference.blazeface.BlazeFaceDetector`.
    """

    def __init__(self, variant: str = "back", model_path=None, min_score: float = MIN_SCORE,
                 iou_threshold: float = NMS_IOU):
        super().__init__(name=f"blazeface_{variant}")
        self.variant = variant
        self.input_size = MODELS[variant].input_size
        self.network = blazeface_net(variant, model_path)
        self.anchors = tf.constant(model_anchors(variant), tf.float64)
        c = BLAZEFACE_CALIBRATION[variant]
        self.calibration = tf.constant([c.dx, c.dy, c.sx, c.sy], tf.float64)
        self.min_score, self.iou_threshold = float(min_score), float(iou_threshold)

    def raw(self, image):
        """The network's own boxes ``(J, 4)``, scores ``(J,)`` and key points ``(J, 6, 2)``, image px, by
        decreasing score (after the score threshold and weighted NMS)."""
        n = self.input_size
        x, (sx, sy), (px, py) = letterbox(image, n)
        regressors, logits = self.network(x[None])
        boxes, scores, keypoints = decode(regressors[0], logits[0], self.anchors, n)
        keypoints = tf.reshape(keypoints, [-1, 12])
        keep = scores >= self.min_score
        boxes, scores, keypoints = weighted_nms(tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep),
                                                tf.boolean_mask(keypoints, keep), self.iou_threshold)
        scale = tf.stack([sx, sy])
        pad = tf.stack([px, py])
        boxes = tf.reshape((tf.reshape(boxes, [-1, 2, 2]) * n - pad) / scale, [-1, 4])
        keypoints = (tf.reshape(keypoints, [-1, 6, 2]) * n - pad) / scale
        return boxes, scores, keypoints

    def __call__(self, image):
        """RGB uint8 ``(H, W, 3)`` -> ``(boxes (K, 4), scores (K,), keypoints (K, 6, 2))`` float64, image px:
        the calibrated landmark-like boxes, largest first, as the Python detector returns them."""
        boxes, scores, keypoints = self.raw(image)
        calibrated = calibrate(boxes, self.calibration)
        order = largest_first_suppressed(calibrated)
        return tf.gather(calibrated, order), tf.gather(scores, order), tf.gather(keypoints, order)

