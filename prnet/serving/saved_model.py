"""The SavedModel for TF Serving: the fast network plus in-graph decoding and cropping.

The exported graph is the BN-folded fast network of :mod:`prnet.model.fast`; the weights come
from any format :mod:`prnet.weights.formats` reads. The in-graph decoding, cropping, detection and
pose are the graph twins of :mod:`prnet.serving.ops` (each mirrors a NumPy rule of the Python path).

SavedModel signatures (crop conventions of :mod:`prnet.core.crop`; crop pixels: x = column, y = row,
z toward the camera on the x/y scale):

* ``serving_default``: ``images`` float32 ``[N, 256, 256, 3]`` RGB crops in ``[0, 1]`` ->
  ``posmap`` float32 ``[N, 256, 256, 3]`` UV position map in crop pixels.
* ``predict_images``: ``images`` tf.string ``[N]`` encoded JPEG/PNG/BMP/GIF bytes (any size,
  decoded to RGB) and ``boxes`` float32 ``[N, 4]`` face boxes ``(x0, y0, x1, y1)`` in image pixels
  -> ``posmap`` ``[N, 256, 256, 3]`` crop px, ``landmarks`` ``[N, 68, 3]`` image px (z / s), and
  ``tform`` ``[N, 3, 3]`` image -> crop. A box gives the crop square by the original's rule for a
  given box (centre of the box, side ``int(1.6 * (w + h) / 2)``). A row of four zeros means "no
  box": the whole image is taken as the face crop (its centred square of side
  ``min(W, H) - 1``, so a square image maps edge pixel to edge pixel, as the original does with
  pre-cropped 256x256 inputs).
* ``predict_images_nobox``: ``images`` only; every image as with a zero box.
* ``predict_images_detect`` (unless exported with ``detector=None``): ``images`` tf.string ``[N]``
  only. Per image, in the graph: decode (same checks and EXIF rule), the default face detector
  (BlazeFace "back": :mod:`prnet.serving.ops.blazeface`, constants from :mod:`prnet.model.blazeface`),
  its weighted NMS, the calibrated box -> the 1.6 x crop rule (``prnet.core.crop.box_from_bbox``),
  the network. Returns, padded to ``M = max_faces`` rows per image (largest face first, rows past
  ``num_faces`` are zeros): ``boxes`` ``[N, M, 4]`` the calibrated face boxes (estimates of the 68
  landmarks' bounding box, image px), ``scores`` ``[N, M]`` (detector score 0-1), ``keypoints``
  ``[N, M, 6, 2]`` (BlazeFace's eyes, nose, mouth, ears; image px), ``landmarks`` ``[N, M, 68, 3]``
  (image px, z / s), ``tform`` ``[N, M, 3, 3]`` (image -> crop) and ``num_faces`` int32 ``[N]``.
  This equals :class:`prnet.inference.predictor.Predictor` with the default detector and
  ``refine=False`` (no landmark re-cropping in the graph).

Images are taken **as displayed**: the EXIF Orientation tag of a JPEG (APP1 ``Exif``) or PNG
(``eXIf``) is applied before cropping (the table :data:`prnet.core.images.ORIENTATION_STEPS`, the
same rule as the Python reader), and boxes are in the pixels of the turned image, so a phone photo
gives the same result here as through :class:`prnet.inference.predictor.Predictor`.

Limits. A request is checked before anything is decoded or run, from the image headers (PNG
``IHDR``, JPEG ``SOFn``, GIF frame descriptors, BMP info header), so an oversized image costs no
memory; a failure is an ``InvalidArgumentError`` (HTTP 400 ``INVALID_ARGUMENT``) whose message
says what is wrong and what to send instead:

* the batch is not empty, and ``boxes`` has one row of 4 per image;
* each element is JPEG, PNG, GIF or BMP bytes, of at least :data:`~prnet.serving.limits.MIN_IMAGE_SIDE`
  pixels on each side and at most ``max_image_pixels`` pixels (width x height; chosen at export,
  ``export.py --max_image_pixels``, default :data:`DEFAULT_MAX_IMAGE_PIXELS`; the exported value
  is the SavedModel's variable ``max_image_pixels``). At most 10 images of a batch are decoded at
  once (``tf.map_fn``), so a request holds at most ~10 x 3 bytes x ``max_image_pixels`` of decoded
  pixels plus one float copy of each crop window;
* a box (other than four zeros) has finite coordinates, ``x1 > x0`` and ``y1 > y0``, a width and
  height of at least :data:`~prnet.serving.limits.MIN_BOX_SIDE` pixels and at most
  :data:`~prnet.serving.limits.MAX_BOX_FACTOR` times the image width / height, and overlaps the
  image (``x0 < W - 1``, ``x1 > 0``, ``y0 < H - 1``, ``y1 > 0`` for pixel centres ``0 .. W - 1`` /
  ``0 .. H - 1`` of the image as displayed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.core.files import _umask, atomic_path
from prnet.errors import ExportError
from prnet.model.fast import IMAGES_SPEC, build_inference_model
from prnet.model.resfcn256 import to_posmap
from prnet.serving.limits import (
    DEFAULT_MAX_FACES,
    DEFAULT_MAX_IMAGE_PIXELS,
    check_max_faces,
    check_max_image_pixels,
)
from prnet.serving.ops.blazeface import BlazeFaceGraph
from prnet.serving.ops.crop import crop_encoded, crop_square, landmark_square
from prnet.serving.ops.image_bytes import checked, checked_header, decode_oriented
from prnet.serving.ops.pose import pose_angles


class ServingModule(tf.Module):
    """What the SavedModel holds: the fast network, the landmark UV pixels and the signatures."""

    def __init__(self, net, kpt_ind, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, detector=None,
                 max_faces: int = DEFAULT_MAX_FACES, pose_points=None):
        super().__init__(name="prnet")
        self.net = net
        #: The cap on pixels per image of predict_images (read it back: ``loaded.max_image_pixels``).
        self.max_image_pixels = tf.Variable(int(max_image_pixels), dtype=tf.int64, trainable=False,
                                            name="max_image_pixels")
        # (68, 2) UV pixels as (row, col) for gather_nd.
        self.kpt_rowcol = tf.constant(np.asarray(kpt_ind, np.int32)[:, ::-1].copy(), name="kpt_rowcol")
        if detector is not None:
            #: The face detector graph of predict_images_detect (:class:`prnet.serving.ops.blazeface.BlazeFaceGraph`).
            self.detector = detector
            self._max_faces = int(max_faces)
            #: Faces per image predict_images_detect returns at most (read it back: ``loaded.max_faces``).
            self.max_faces = tf.Variable(self._max_faces, dtype=tf.int64, trainable=False, name="max_faces")
            self._pose = pose_points is not None
            if self._pose:  # (face_ind (P,) flat UV pixels, canonical_vertices (P, 3)) of the UV template
                self.face_ind = tf.constant(np.asarray(pose_points[0], np.int32), name="face_ind")
                self.canonical_vertices = tf.constant(np.asarray(pose_points[1], np.float32),
                                                      name="canonical_vertices")
            self.predict_images_detect = tf.function(
                self._predict_detect, input_signature=[tf.TensorSpec([None], tf.string, name="images")])

    @tf.function(input_signature=[IMAGES_SPEC])
    def serving_default(self, images):
        """Float32 RGB crops [N, 256, 256, 3] in [0, 1] -> {"posmap": [N, 256, 256, 3] crop pixels}."""
        return {"posmap": self.net(images)}

    def _predict(self, images, boxes):
        n = tf.shape(images)[0]
        # gate the images themselves: map_fn's trip count and its (empty) output come from them, so the
        # network cannot run on an empty batch before the check fails
        images = checked(images, n > 0, "predict_images: empty batch; send at least one image")
        n = tf.shape(images)[0]
        boxes = checked(boxes, tf.equal(tf.size(boxes), 4 * n),
                        "predict_images: `boxes` must have shape [N, 4] (x0, y0, x1, y1), one row per image")
        boxes = tf.reshape(boxes, [n, 4])
        crops, tforms = tf.map_fn(
            lambda args: crop_encoded(*args[:2], max_image_pixels=self.max_image_pixels, index=args[2]),
            (images, boxes, tf.range(n)),
            fn_output_signature=(tf.TensorSpec([CROP_SIZE, CROP_SIZE, 3], tf.float32),
                                 tf.TensorSpec([3, 3], tf.float32)))
        posmap = self.net(crops)
        return {"posmap": posmap, "landmarks": self._landmarks(posmap, tforms), "tform": tforms}

    def _landmarks(self, posmap, tforms):
        """Position maps [N, 256, 256, 3] crop px + tforms [N, 3, 3] -> landmarks [N, 68, 3] image px (z / s)."""
        n = tf.shape(posmap)[0]
        kpt = tf.gather_nd(posmap, tf.tile(self.kpt_rowcol[None], [n, 1, 1]), batch_dims=1)  # (N, 68, 3)
        s = tforms[:, 0, 0][:, None]
        return tf.stack([(kpt[..., 0] - tforms[:, 0, 2][:, None]) / s,
                         (kpt[..., 1] - tforms[:, 1, 2][:, None]) / s,
                         kpt[..., 2] / s], axis=-1)

    def _detect_one(self, args):
        """One encoded image and its index in the request -> its faces, padded to ``max_faces`` (see
        ``predict_images_detect``)."""
        data, index = args
        name = "predict_images_detect"
        image = decode_oriented(checked_header(data, self.max_image_pixels, name, index), name, index)
        boxes, scores, keypoints = self.detector(image)
        m = self._max_faces
        boxes, scores, keypoints = boxes[:m], scores[:m], keypoints[:m]
        k = tf.shape(boxes)[0]

        crops, tforms = tf.map_fn(lambda box: crop_square(image, *landmark_square(box)), boxes,
                                  fn_output_signature=(tf.TensorSpec([CROP_SIZE, CROP_SIZE, 3], tf.float32),
                                                       tf.TensorSpec([3, 3], tf.float32)))
        def faces():
            posmap = self.net(crops)
            if not self._pose:
                return self._landmarks(posmap, tforms), tf.zeros([k, 3], tf.float32)
            vertices = tf.gather(tf.reshape(posmap, [k, CROP_SIZE * CROP_SIZE, 3]), self.face_ind, axis=1)
            pose = tf.map_fn(lambda v: pose_angles(v, self.canonical_vertices), vertices,
                             fn_output_signature=tf.TensorSpec([3], tf.float64))
            return self._landmarks(posmap, tforms), tf.cast(pose, tf.float32)

        landmarks, pose = tf.cond(k > 0, faces, lambda: (tf.zeros([0, 68, 3], tf.float32), tf.zeros([0, 3])))
        pad = m - k

        def padded(x, dtype=tf.float32):
            x = tf.cast(x, dtype)
            return tf.pad(x, tf.concat([[[0, pad]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], 0))

        out = {"boxes": padded(boxes), "scores": padded(scores), "keypoints": padded(keypoints),
               "landmarks": padded(landmarks), "tform": padded(tforms), "num_faces": k}
        if self._pose:
            out["pose"] = padded(pose)
        return out

    def _predict_detect(self, images):
        """Encoded images [N] -> every face the detector finds (at most max_faces per image, largest first):
        boxes [N,M,4], scores [N,M], keypoints [N,M,6,2], landmarks [N,M,68,3] (image px), tform [N,M,3,3],
        num_faces [N]; rows past num_faces are zeros."""
        n = tf.shape(images)[0]
        images = checked(images, n > 0, "predict_images_detect: empty batch; send at least one image")
        m = self._max_faces
        spec = {"boxes": tf.TensorSpec([m, 4], tf.float32), "scores": tf.TensorSpec([m], tf.float32),
                "keypoints": tf.TensorSpec([m, 6, 2], tf.float32), "landmarks": tf.TensorSpec([m, 68, 3], tf.float32),
                "tform": tf.TensorSpec([m, 3, 3], tf.float32), "num_faces": tf.TensorSpec([], tf.int32)}
        if self._pose:
            spec["pose"] = tf.TensorSpec([m, 3], tf.float32)
        return tf.map_fn(self._detect_one, (images, tf.range(n)), fn_output_signature=spec)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images"),
                                  tf.TensorSpec([None, 4], tf.float32, name="boxes")])
    def predict_images(self, images, boxes):
        """Encoded images [N] + face boxes [N, 4] (x0, y0, x1, y1 image px; zeros = whole image) ->
        posmap [N,256,256,3] crop px, landmarks [N,68,3] image px, tform [N,3,3] image->crop."""
        return self._predict(images, boxes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def predict_images_nobox(self, images):
        """Encoded images [N], each taken whole as the face crop -> as predict_images."""
        return self._predict(images, tf.zeros([tf.shape(images)[0], 4], tf.float32))


# ----------------------------------------------------------------------------- writing


def _as_net(model_or_net, optimize=True):
    if isinstance(model_or_net, tf.Module) and hasattr(model_or_net, "weights_list"):
        return model_or_net
    if optimize:
        return build_inference_model(model_or_net)
    model = model_or_net

    class _KerasNet(tf.Module):
        def __init__(self):
            super().__init__(name="resfcn256_training_graph")
            self.model = model
            self.weights_list = list(model.weights)

        @tf.function(input_signature=[IMAGES_SPEC])
        def __call__(self, images):
            return to_posmap(model(images, training=False))

    return _KerasNet()


def make_detector_graph(detector):
    """``"blazeface"`` -> a new :class:`prnet.serving.ops.blazeface.BlazeFaceGraph` ("back" model); None or
    ``"none"`` -> None; a detector graph is returned as is. :class:`ExportError` for other names."""
    if detector is None or (isinstance(detector, str) and detector == "none"):
        return None
    if isinstance(detector, str):
        if detector != "blazeface":
            raise ExportError(f"unknown detector {detector!r} for predict_images_detect; choose blazeface or none")
        return BlazeFaceGraph("back")
    return detector


def export_saved_model(model_or_net, export_dir, *, kpt_ind=None, optimize: bool = True,
                       overwrite: bool = False, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                       detector="blazeface", max_faces: int = DEFAULT_MAX_FACES, template=None) -> Path:
    """Write the SavedModel (signatures in the module docstring) to ``export_dir``, atomically.

    Args:
      model_or_net: a Keras ResFCN256 or an :class:`prnet.model.fast.InferenceNet`.
      kpt_ind: ``(68, 2)`` UV pixels (col, row) of the landmarks; default: the UV template's
        (:func:`prnet.core.uv.load_uv_template`, needs the assets).
      optimize: export the BN-folded graph (default) rather than the Keras training graph.
      overwrite: replace an existing ``export_dir`` (else :class:`prnet.errors.OutputExistsError`).
      max_image_pixels: the largest image (width x height) ``predict_images`` accepts; larger ones
        are rejected from their header, before decoding (see the module docstring).
      detector: ``"blazeface"`` (default: adds ``predict_images_detect`` with BlazeFace "back" from the
        installed model files), a :class:`prnet.serving.ops.blazeface.BlazeFaceGraph`, or None (no
        detection signature). Raises :class:`prnet.errors.DetectorUnavailableError` when the model
        files are missing.
      max_faces: faces per image ``predict_images_detect`` returns at most (1-64).
      template: the :class:`prnet.core.uv.UVTemplate` (its ``kpt_ind``, ``face_ind`` and
        ``canonical_vertices``): with it, or when neither it nor ``kpt_ind`` is given (the default
        template is loaded), ``predict_images_detect`` also returns each face's ``pose``.
    """
    max_image_pixels = check_max_image_pixels(max_image_pixels)
    max_faces = check_max_faces(max_faces)
    if template is None and kpt_ind is None:
        from prnet.core.uv import load_uv_template

        template = load_uv_template()
    kpt_ind = template.kpt_ind if kpt_ind is None else kpt_ind
    pose_points = None if template is None else (template.face_ind, template.canonical_vertices)
    detector = make_detector_graph(detector)
    module = ServingModule(_as_net(model_or_net, optimize), kpt_ind, max_image_pixels, detector, max_faces,
                           pose_points)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "predict_images": module.predict_images.get_concrete_function(),
        "predict_images_nobox": module.predict_images_nobox.get_concrete_function(),
    }
    if detector is not None:
        signatures["predict_images_detect"] = module.predict_images_detect.get_concrete_function()

    with atomic_path(export_dir, overwrite=overwrite, directory=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        # TensorFlow makes its folders (variables/, assets/) 0o755 whatever the umask: the usual modes instead.
        mask = _umask()
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    return Path(export_dir).expanduser().resolve()
