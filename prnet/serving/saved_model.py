"""Export a trained ResFCN256 as a SavedModel (TF Serving) and as TFLite models.

Weights sources (:func:`load_keras_model`): a Keras ``.weights.h5`` file, a training checkpoint
directory (``tf.train.Checkpoint(model=...)``, newest via ``tf.train.latest_checkpoint``) or one
TF2 checkpoint prefix, an official TF1 checkpoint prefix, or ``None`` for the official weights
from the cache. The exported graphs use the BN-folded fast network of :mod:`prnet.model.fast`.

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

Bad requests (empty batch, bytes that are not an image, a box count different from the image
count, a non-zero box with ``x1 <= x0`` or ``y1 <= y0``) fail with an ``InvalidArgumentError``
whose message says what is wrong.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from prnet.errors import PRNetError, WeightsFormatError, WeightsNotFoundError
from prnet.model.resfcn256 import RESOLUTION, build_resfcn256
from prnet.model.fast import IMAGES_SPEC, build_inference_model

#: TFLite variants written by :func:`convert_tflite`.
QUANTIZATIONS = ("float32", "float16", "int8")
#: Crop side for a given box (the original's rule for landmarks / user boxes).
BOX_SCALE = 1.6
_IMAGE_MAGIC = ((b"\xff\xd8\xff", 3), (b"\x89PNG\r\n\x1a\n", 8), (b"GIF8", 4), (b"BM", 2))


class ExportError(PRNetError, ValueError):
    """An export could not be written (destination exists, bad calibration data, ...)."""


# ----------------------------------------------------------------------------- loading weights

def _size_from_shapes(shapes, source) -> int:
    """Base width from the stem conv / Conv2d_transpose_14 kernels, both shaped (4, 4, 3, size)."""
    widths = [s[3] for s in shapes if len(s) == 4 and tuple(s[:3]) == (4, 4, 3)]
    if not widths:
        raise WeightsFormatError(f"{source}: no ResFCN256 kernel of shape (4, 4, 3, size) found; "
                                 "is this a PRNet weights file or checkpoint?")
    return int(max(widths))


def _h5_shapes(path):
    import h5py

    shapes = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    return shapes


def _is_tf2_checkpoint(prefix) -> bool:
    try:
        return any(name == "_CHECKPOINTABLE_OBJECT_GRAPH" for name, _ in tf.train.list_variables(str(prefix)))
    except (tf.errors.OpError, ValueError):
        return False


def load_keras_model(source=None, *, size: int | None = None):
    """Build ResFCN256 (inference form, no weight decay) and load weights from ``source``.

    Args:
      source: ``None`` (official weights via :func:`prnet.weights.download.ensure_official_weights`), a Keras
        ``.weights.h5`` file, a training checkpoint directory or TF2 checkpoint prefix (an object
        checkpoint holding ``model=``), or an official TF1 checkpoint prefix
        (``.../256_256_resfcn256_weight``).
      size: base width; inferred from the weights when ``None``.

    Raises:
      WeightsNotFoundError: nothing at ``source``. WeightsFormatError: unreadable or mismatched.
    """
    if source is None:
        from prnet.weights.download import ensure_official_weights

        source = ensure_official_weights()
    path = Path(source).expanduser()
    if path.name.endswith(".index") or ".data-" in path.name:  # a checkpoint file -> its prefix
        from prnet.weights.convert import checkpoint_prefix

        path = checkpoint_prefix(path)
    if path.is_dir() and tf.train.latest_checkpoint(str(path)) is None:
        from prnet.weights.convert import checkpoint_prefix, is_tf1_checkpoint

        if is_tf1_checkpoint(path):  # e.g. the original's Data/net-data folder
            path = checkpoint_prefix(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise WeightsFormatError(f"{path} is already an exported SavedModel; export from the Keras "
                                     "weights or the training checkpoint instead")
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None:
            raise WeightsNotFoundError(f"{path}: no checkpoint found in this directory (expected a "
                                       "'checkpoint' file written by tf.train.CheckpointManager)")
        return _load_tf2_checkpoint(prefix, size)
    if path.is_file() and path.suffix == ".h5":
        try:
            size = size or _size_from_shapes(_h5_shapes(path), path)
            model = build_resfcn256(weight_decay=0, size=size)
            model.load_weights(str(path))
        except (OSError, ValueError) as err:
            raise WeightsFormatError(f"{path}: cannot load as ResFCN256 Keras weights: {err}") from err
        return model
    if Path(f"{path}.index").is_file():
        if _is_tf2_checkpoint(path):
            return _load_tf2_checkpoint(str(path), size)
        from prnet.weights.convert import load_official_weights

        size = size or _size_from_shapes([s for _, s in tf.train.list_variables(str(path))], path)
        model = build_resfcn256(weight_decay=0, size=size)
        load_official_weights(model, str(path))
        return model
    raise WeightsNotFoundError(
        f"no weights at {path}: give a Keras .weights.h5 file, a training checkpoint directory, or a "
        "checkpoint prefix (the path without .index / .data-*); `prnet-convert --download` fetches "
        "the official weights")


def _load_tf2_checkpoint(prefix, size):
    # All variables, not only ``model/...``: when the optimizer is saved too (as train.py does), TF
    # files the model's kernels under ``optimizer/_trainable_variables/...``.
    shapes = [s for _, s in tf.train.list_variables(prefix)]
    size = size or _size_from_shapes(shapes, prefix)
    model = build_resfcn256(weight_decay=0, size=size)
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise WeightsFormatError(f"{prefix}: the checkpoint's model= does not match ResFCN256 "
                                 f"(size {size}): {err}") from err
    return model


# ----------------------------------------------------------------------------- in-graph crop

def _checked(value, condition, message):
    """``value`` if ``condition`` holds, else fail with InvalidArgumentError(``message``).

    A ``tf.cond`` makes everything downstream data-dependent on the check, so graph optimisers
    cannot run (and fail in) a later op first.
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [message])]):
            return tf.identity(value)

    return tf.cond(condition, lambda: tf.identity(value), fail)


def _is_image(data):
    ok = tf.constant(False)
    for magic, n in _IMAGE_MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(data, 0, n), magic))
    return ok


def crop_encoded(data, box):
    """Decode one image (tf.string) and crop it for the network, in TensorFlow ops.

    ``box`` float32 ``(4,)`` ``(x0, y0, x1, y1)`` image px, or zeros for the whole image.
    Returns ``(crop float32 (256, 256, 3) in [0, 1], tform float32 (3, 3) image -> crop px)``,
    the same crop as ``prnet.core.crop.warp_crop(image, crop_transform(*box_from_bbox(box)))``
    (bilinear, black outside the image).
    """
    data = _checked(data, _is_image(data), "predict_images: an element of `images` is not an encoded JPEG, "
                    "PNG, GIF or BMP image (send the raw file bytes; in REST JSON as {\"b64\": base64})")
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    h = tf.cast(tf.shape(image)[0], tf.float64)
    w = tf.cast(tf.shape(image)[1], tf.float64)
    b = tf.cast(box, tf.float64)
    has_box = tf.reduce_any(tf.not_equal(b, 0.0))
    valid = tf.logical_or(tf.logical_not(has_box), tf.logical_and(b[2] > b[0], b[3] > b[1]))
    b = _checked(b, valid, "predict_images: a box must be (x0, y0, x1, y1) image pixels with x1 > x0 "
                           "and y1 > y0, or four zeros for the whole image")
    old = (b[2] - b[0] + b[3] - b[1]) / 2.0
    size = tf.maximum(tf.where(has_box, tf.floor(old * BOX_SCALE), tf.minimum(w, h) - 1.0), 1.0)
    cx = tf.where(has_box, (b[0] + b[2]) / 2.0, (w - 1.0) / 2.0)
    cy = tf.where(has_box, (b[1] + b[3]) / 2.0, (h - 1.0) / 2.0)
    s = (RESOLUTION - 1) / size
    ox, oy = cx - size / 2.0, cy - size / 2.0
    zero = tf.zeros([], tf.float64)
    # ImageProjectiveTransform maps output (crop) pixel (x, y) to input (x / s + ox, y / s + oy).
    inverse = tf.stack([1.0 / s, zero, ox, zero, 1.0 / s, oy, zero, zero])
    crop = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=tf.cast(inverse, tf.float32)[None],
        output_shape=tf.constant([RESOLUTION, RESOLUTION]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0] / 255.0
    one = tf.ones([], tf.float64)
    tform = tf.reshape(tf.stack([s, zero, -s * ox, zero, s, -s * oy, zero, zero, one]), [3, 3])
    return crop, tf.cast(tform, tf.float32)


class ServingModule(tf.Module):
    """What the SavedModel holds: the fast network, the landmark UV pixels and the signatures."""

    def __init__(self, net, kpt_ind):
        super().__init__(name="prnet")
        self.net = net
        # (68, 2) UV pixels as (row, col) for gather_nd.
        self.kpt_rowcol = tf.constant(np.asarray(kpt_ind, np.int32)[:, ::-1].copy(), name="kpt_rowcol")

    @tf.function(input_signature=[IMAGES_SPEC])
    def serving_default(self, images):
        """Float32 RGB crops [N, 256, 256, 3] in [0, 1] -> {"posmap": [N, 256, 256, 3] crop pixels}."""
        return {"posmap": self.net(images)}

    def _predict(self, images, boxes):
        n = tf.shape(images)[0]
        n = _checked(n, n > 0, "predict_images: empty batch; send at least one image")
        boxes = _checked(boxes, tf.equal(tf.size(boxes), 4 * n),
                         "predict_images: `boxes` must have shape [N, 4] (x0, y0, x1, y1), one row per image")
        boxes = tf.reshape(boxes, [n, 4])
        crops, tforms = tf.map_fn(
            lambda args: crop_encoded(*args), (images, boxes),
            fn_output_signature=(tf.TensorSpec([RESOLUTION, RESOLUTION, 3], tf.float32),
                                 tf.TensorSpec([3, 3], tf.float32)))
        posmap = self.net(crops)
        kpt = tf.gather_nd(posmap, tf.tile(self.kpt_rowcol[None], [n, 1, 1]), batch_dims=1)  # (N, 68, 3)
        s = tforms[:, 0, 0][:, None]
        landmarks = tf.stack([(kpt[..., 0] - tforms[:, 0, 2][:, None]) / s,
                              (kpt[..., 1] - tforms[:, 1, 2][:, None]) / s,
                              kpt[..., 2] / s], axis=-1)
        return {"posmap": posmap, "landmarks": landmarks, "tform": tforms}

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

def _atomic_dir(destination: Path, write, overwrite: bool) -> Path:
    """Run ``write(tmp_dir)`` and move the result to ``destination``; nothing left on failure."""
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination} already exists; pass overwrite=True (--overwrite) to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        write(tmp)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(tmp, destination)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, destination)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return destination


def _atomic_file(destination: Path, data: bytes, overwrite: bool) -> Path:
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination} already exists; pass overwrite=True (--overwrite) to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return destination


def _as_net(model_or_net, optimize=True):
    if isinstance(model_or_net, tf.Module) and hasattr(model_or_net, "weights_list"):
        return model_or_net
    if optimize:
        return build_inference_model(model_or_net)
    from prnet.model.resfcn256 import POSMAP_SCALE

    model = model_or_net

    class _KerasNet(tf.Module):
        def __init__(self):
            super().__init__(name="resfcn256_training_graph")
            self.model = model
            self.weights_list = list(model.weights)

        @tf.function(input_signature=[IMAGES_SPEC])
        def __call__(self, images):
            return model(images, training=False) * POSMAP_SCALE

    return _KerasNet()


def export_saved_model(model_or_net, export_dir, *, kpt_ind=None, optimize: bool = True,
                       overwrite: bool = False) -> Path:
    """Write the SavedModel (signatures in the module docstring) to ``export_dir``, atomically.

    Args:
      model_or_net: a Keras ResFCN256 or an :class:`prnet.model.fast.InferenceNet`.
      kpt_ind: ``(68, 2)`` UV pixels (col, row) of the landmarks; default: the UV template's
        (:func:`prnet.core.uv.load_uv_template`, needs the assets).
      optimize: export the BN-folded graph (default) rather than the Keras training graph.
      overwrite: replace an existing ``export_dir``.
    """
    if kpt_ind is None:
        from prnet.core.uv import load_uv_template

        kpt_ind = load_uv_template().kpt_ind
    module = ServingModule(_as_net(model_or_net, optimize), kpt_ind)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "predict_images": module.predict_images.get_concrete_function(),
        "predict_images_nobox": module.predict_images_nobox.get_concrete_function(),
    }

    def write(tmp):
        tf.saved_model.save(module, str(tmp), signatures=signatures)

    return _atomic_dir(Path(export_dir), write, overwrite)


def convert_tflite(model_or_net, output_path, *, quantization: str = "float32", representative=None,
                   overwrite: bool = False) -> Path:
    """Convert the fast network to a ``.tflite`` file, atomically.

    The model has one input ``[N, 256, 256, 3]`` float32 crops in ``[0, 1]`` (batch 1 by default,
    resizable) and one output, the position map in crop pixels (float32).

    Args:
      quantization: ``"float32"``; ``"float16"`` (fp16 weights, dequantised at load); or ``"int8"``
        (full-integer kernels and activations, float32 input/output via quantize/dequantize ops).
      representative: for int8, an iterable of float32 crops ``(256, 256, 3)`` in ``[0, 1]`` used to
        calibrate activation ranges (e.g. :func:`representative_crops`); ~50-200 typical faces.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    net = _as_net(model_or_net)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.__call__.get_concrete_function()], net)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        crops = [np.asarray(c, np.float32).reshape(RESOLUTION, RESOLUTION, 3) for c in (representative or [])]
        if not crops:
            raise ExportError("int8 TFLite needs representative crops for calibration (see "
                              "prnet.serving.saved_model.representative_crops or export.py --calibration)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([c[None]] for c in crops)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = converter.convert()
    if quantization == "int8":
        _check_runs(data, crops[0])
    return _atomic_file(Path(output_path), data, overwrite)


def _check_runs(data: bytes, crop):
    """Run the converted model once with the default (XNNPACK) delegate; raise ExportError if it cannot."""
    interpreter = tf.lite.Interpreter(model_content=data, num_threads=1)
    try:
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        raise ExportError(
            f"the int8 model does not run with TFLite's XNNPACK delegate ({err}). This happens when a layer's "
            "activations are (nearly) constant on all calibration crops, which gives out-of-range requantisation "
            "scales (typical of untrained weights): calibrate a trained model on more, representative face "
            "crops") from err


# ----------------------------------------------------------------------------- calibration data

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def _read_landmarks(image_path: Path):
    """68 (x, y) image px from a sibling menpo ``.pts`` or 300W-LP/AFLW2000 ``.mat`` (``pt2d``), or None."""
    pts = image_path.with_suffix(".pts")
    if pts.is_file():
        text = pts.read_text()
        body = text[text.index("{") + 1:text.index("}")]
        return np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()]) - 1.0
    mat = image_path.with_suffix(".mat")
    if mat.is_file():
        from scipy.io import loadmat

        data = loadmat(str(mat))
        for key in ("pt3d_68", "pt2d"):
            if key in data:
                p = np.asarray(data[key], np.float64)
                return (p if p.shape[0] != 68 else p.T)[:2].T
    return None


def representative_crops(source, limit: int = 100, seed: int = 0):
    """Float32 crops ``(256, 256, 3)`` in ``[0, 1]`` for int8 calibration or checks.

    Args:
      source: ``"tfds:NAME[/config]"`` (e.g. ``tfds:prnet_synthetic``; its ``image`` feature, already
        256x256 crops; needs ``import tfds_builders``) or a folder searched recursively for images;
        an image with a sibling ``.pts`` (68 points) or ``.mat`` (``pt2d``/``pt3d_68``) is cropped by
        the landmark rule (:func:`prnet.core.crop.box_from_landmarks`), any other is taken whole
        (centred square).
      limit: at most this many crops.
    """
    source = str(source)
    if source.startswith("tfds:"):
        import tensorflow_datasets as tfds

        try:
            ds = tfds.load(source[5:], split="train", shuffle_files=False)
        except Exception as err:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
            raise ExportError(f"cannot load calibration dataset {source[5:]!r}: {err}; build it with "
                              "`tfds build` or pass --calibration=FOLDER of face images") from err
        return [ex["image"].astype(np.float32) / 255.0 for ex in tfds.as_numpy(ds.take(limit))]
    from prnet.core.crop import box_from_landmarks, crop_transform, warp_crop

    folder = Path(source).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"no images (*.jpg, *.png, ...) found under {folder} for calibration")
    crops = []
    for path in files[:limit]:
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        image = bgr[..., ::-1]
        pts = _read_landmarks(path)
        if pts is not None:
            center, size = box_from_landmarks(pts)
        else:
            h, w = image.shape[:2]
            center, size = ((w - 1) / 2.0, (h - 1) / 2.0), min(w, h) - 1.0
        crops.append(warp_crop(image, crop_transform(center, size)))
    if not crops:
        raise ExportError(f"none of the images under {folder} could be read for calibration")
    return crops


def export_all(model, output_dir, *, formats=("saved_model",) + QUANTIZATIONS, calibration=None,
               kpt_ind=None, optimize=True, overwrite=False, progress=True) -> dict:
    """Write the requested formats under ``output_dir``: ``saved_model/`` and ``prnet_<q>.tflite``.

    Returns ``{format: path}``. ``calibration`` is a :func:`representative_crops` source or a list
    of crops (needed for ``int8``).
    """
    from tqdm import tqdm

    net = build_inference_model(model) if optimize else _as_net(model, optimize=False)
    output_dir = Path(output_dir).expanduser()
    written = {}
    crops = None
    if "int8" in formats:
        crops = calibration if isinstance(calibration, list) else (
            representative_crops(calibration) if calibration is not None else None)
        if not crops:
            raise ExportError("int8 needs calibration data: pass --calibration=tfds:prnet_synthetic or a "
                              "folder of face images")
    for fmt in tqdm(formats, desc="export", disable=not progress):
        if fmt == "saved_model":
            written[fmt] = export_saved_model(net, output_dir / "saved_model", kpt_ind=kpt_ind,
                                              overwrite=overwrite)
        elif fmt in QUANTIZATIONS:
            written[fmt] = convert_tflite(net, output_dir / f"prnet_{fmt}.tflite", quantization=fmt,
                                          representative=crops, overwrite=overwrite)
        else:
            raise ExportError(f"unknown format {fmt!r}; choose from saved_model, {', '.join(QUANTIZATIONS)}")
    return written


def _dir_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tflite_predict(path, crops, num_threads: int = 2) -> np.ndarray:
    """Run a ``.tflite`` position-map model on float32 crops ``[N, 256, 256, 3]``; returns crop px.

    Handles float and quantized input/output tensors through their quantization parameters.
    """
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    crops = np.asarray(crops, np.float32)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(crops.shape))
    interpreter.allocate_tensors()
    x = crops
    scale, zero = inp["quantization"]
    if inp["dtype"] != np.float32:
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(crops / scale + zero), info.min, info.max).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    scale, zero = out["quantization"]
    return (y.astype(np.float32) - zero) * scale if out["dtype"] != np.float32 else y


def measure_exports(model, written: dict, crops) -> list:
    """Size and position-map error (crop px) of each export against the Keras ``model``.

    Returns rows ``{"format", "path", "size_mb", "max_abs_px", "mean_abs_px"}``; the reference is
    ``model(crops) * POSMAP_SCALE`` (the training graph in inference mode).
    """
    from prnet.model.resfcn256 import POSMAP_SCALE

    crops = np.asarray(crops, np.float32)
    reference = np.concatenate([model(crops[i:i + 4], training=False).numpy() for i in range(0, len(crops), 4)])
    reference = reference * POSMAP_SCALE
    rows = []
    for fmt, path in written.items():
        if fmt == "saved_model":
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            pred = np.concatenate([fn(images=tf.constant(crops[i:i + 4]))["posmap"].numpy()
                                   for i in range(0, len(crops), 4)])
        else:
            pred = np.concatenate([tflite_predict(path, crops[i:i + 1]) for i in range(len(crops))])
        err = np.abs(pred - reference)
        rows.append({"format": fmt, "path": str(path), "size_mb": _dir_size(path) / 2**20,
                     "max_abs_px": float(err.max()), "mean_abs_px": float(err.mean())})
    return rows


__all__ = ["ExportError", "ServingModule", "convert_tflite", "crop_encoded", "export_all", "export_saved_model",
           "load_keras_model", "measure_exports", "representative_crops", "tflite_predict"]
