"""Detection inside the exported model (issue 10 section 4): the Keras rebuild of BlazeFace, the
SavedModel signature ``predict_images_detect`` (image bytes in, every face out) against the Python
``Predictor`` on the real sample photos, and its bad-request behaviour.

One SavedModel is exported per module (size-4 network with randomised BatchNorm, so the landmarks
depend on every crop pixel); the comparison loads it in a fresh process by signature name, as TF
Serving does. Both sides run without landmark re-cropping (``refine=False``): the graph has none.
The graph's detector, NMS and pose against their NumPy twins, op by op: tests/test_graph_twins.py.
"""

import base64
import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from prnet.core.images import decode_image, read_image
from prnet.errors import ExportError
from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm

from helpers import run_cli

MAX_PIXELS = 2_100_000  # the cap this module's SavedModel is exported with (breakingbad.jpg: 2.07 MP)
MAX_FACES = 3
# Stated agreement bounds, graph vs Python detector on the same pixels (measured: 0.15 % and 0.055 px).
BOX_REL_TOL = 0.005   # box coordinates, in units of the box width
LANDMARK_TOL_PX = 0.25  # landmarks, image px (random-weights network: amplifies crop differences)
POSE_TOL_DEG = 0.1  # yaw, pitch, roll (degrees) of the same faces
# Keras rebuild vs the TFLite interpreter (float32 both; measured max 6e-7 x the output's range).
RAW_REL_TOL = 1e-5


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(3)
    return randomize_batchnorm(build_resfcn256(weight_decay=0, size=4), seed=3)


@pytest.fixture(scope="module")
def saved_model(small_model, uv_template, blazeface_path, tmp_path_factory):
    from prnet.serving.saved_model import export_saved_model

    return export_saved_model(small_model, tmp_path_factory.mktemp("detect") / "sm", template=uv_template,
                              max_image_pixels=MAX_PIXELS, max_faces=MAX_FACES)


@pytest.fixture(scope="module")
def detect_fn(saved_model):
    return tf.saved_model.load(str(saved_model)).signatures["predict_images_detect"]


def _photos(samples_dir):
    """Every real sample photo: samples/faces (incl. takeo.ppm, breakingbad's two faces), AFLW2000-3D, 300W-LP."""
    faces = sorted(p for p in (samples_dir / "faces").iterdir() if p.suffix in (".jpg", ".ppm"))
    faces += sorted((samples_dir / "aflw2000-3d").glob("*.jpg"))
    return faces + sorted((samples_dir / "300w-lp").glob("*/*.jpg"))


def _png(rgb):
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def test_keras_rebuild_equals_the_tflite_interpreter(samples_dir, blazeface_path):
    from prnet.inference.blazeface import letterbox
    from prnet.model.blazeface import blazeface_net, build_blazeface
    from prnet.model.runtime import tflite_interpreter

    model = build_blazeface("back")
    interp, _ = tflite_interpreter(blazeface_path, runtime="tf")
    interp.allocate_tensors()
    outputs = {int(o["shape"][-1]): o["index"] for o in interp.get_output_details()}
    photos = [samples_dir / "faces" / n for n in ("breakingbad.jpg", "einstein.jpg", "prnet_test_3.jpg")]
    photos.append(sorted((samples_dir / "aflw2000-3d").glob("*.jpg"))[-1])
    batch = np.stack([letterbox(read_image(p), 256)[0] for p in photos])
    regressors, logits = (np.asarray(t) for t in model(batch, training=False))
    assert regressors.shape == (len(photos), 896, 16) and logits.shape == (len(photos), 896, 1)
    # the SavedModel's copy (same steps on plain tf.Variables) computes the same
    net_r, net_l = (t.numpy() for t in blazeface_net("back")(tf.constant(batch)))
    np.testing.assert_allclose(net_r, regressors, rtol=0, atol=RAW_REL_TOL * np.abs(regressors).max())
    np.testing.assert_allclose(net_l, logits, rtol=0, atol=RAW_REL_TOL * np.abs(logits).max())
    for i, x in enumerate(batch):
        interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
        interp.invoke()
        for got, index in ((regressors[i], outputs[16]), (logits[i], outputs[1])):
            want = interp.get_tensor(index)[0]
            assert np.abs(want).max() > 10  # a real output, not a blank
            np.testing.assert_allclose(got, want, rtol=0, atol=RAW_REL_TOL * np.abs(want).max())


@pytest.mark.slow
def test_signature_in_a_fresh_process_matches_the_predictor(saved_model, small_model, samples_dir, uv_template,
                                                            tmp_path):
    """The whole photo set as one request of image bytes (PNG of the pixels the Python reader gives,
    plus the original JPEG files), through the SignatureDef in a new process; against
    ``Predictor(detector="blazeface", refine=False)`` with the same weights."""
    from test_export import SERVING_CLIENT

    from prnet.inference.predictor import Predictor
    from prnet.model.runtime import KerasBackend

    photos = _photos(samples_dir)
    images = [read_image(p) for p in photos]
    jpegs = [p for p in photos if p.parent.name == "faces" and p.suffix == ".jpg"]
    payload = [_png(im) for im in images] + [p.read_bytes() for p in jpegs]
    request = {"signature_name": "predict_images_detect",
               "inputs": {"images": [{"b64": base64.b64encode(d).decode("ascii")} for d in payload]}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "client.py").write_text(SERVING_CLIENT)
    client = run_cli(tmp_path / "client.py", saved_model, tmp_path / "request.json", tmp_path / "out.npz")
    assert client.returncode == 0, client.stderr[-3000:]
    out = dict(np.load(tmp_path / "out.npz"))
    n = len(payload)
    assert {k: v.shape for k, v in out.items()} == {
        "boxes": (n, MAX_FACES, 4), "scores": (n, MAX_FACES), "keypoints": (n, MAX_FACES, 6, 2),
        "landmarks": (n, MAX_FACES, 68, 3), "tform": (n, MAX_FACES, 3, 3), "pose": (n, MAX_FACES, 3),
        "num_faces": (n,)}

    predictor = Predictor(KerasBackend(small_model), detector="blazeface", template=uv_template, refine=False)
    expected = [predictor.reconstruct(im, max_faces=MAX_FACES) for im in images]
    counts = [len(f) for f in expected]
    assert sum(counts) == len(photos) + 1  # every photo's face, and breakingbad's second one
    np.testing.assert_array_equal(out["num_faces"][:len(photos)], counts)
    for i, faces in enumerate(expected):
        for k, face in enumerate(faces):
            width = face.box[2] - face.box[0]
            assert np.abs(out["boxes"][i, k] - face.box).max() <= BOX_REL_TOL * width, photos[i]
            assert np.abs(out["landmarks"][i, k] - face.landmarks).max() <= LANDMARK_TOL_PX, photos[i]
            np.testing.assert_allclose(out["tform"][i, k, :2, :2], face.tform[:2, :2], rtol=0.01)
            assert np.abs(out["pose"][i, k] - face.pose[1]).max() <= POSE_TOL_DEG, photos[i]
            assert 0.5 <= out["scores"][i, k] <= 1
        assert not out["landmarks"][i, len(faces):].any() and not out["boxes"][i, len(faces):].any()
    # The original JPEG bytes (TensorFlow's JPEG decoder differs from the Python reader's by a few grey
    # levels): the same faces, boxes within 3 % of their width.
    for j, path in enumerate(jpegs):
        i = photos.index(path)
        assert out["num_faces"][len(photos) + j] == counts[i], path
        for k, face in enumerate(expected[i]):
            assert np.abs(out["boxes"][len(photos) + j, k] - face.box).max() <= 0.03 * (face.box[2] - face.box[0])


@pytest.mark.slow
def test_exif_orientation_is_applied_before_detection(detect_fn, samples_dir):
    import io

    from PIL import Image

    upright = read_image(samples_dir / "faces" / "prnet_test_5.jpg")  # 500 x 257, not square
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=exif)
    turned = buffer.getvalue()
    np.testing.assert_array_equal(decode_image(turned), upright)  # the Python reader's view of it
    a = detect_fn(images=tf.constant([_png(upright), turned]))
    assert a["num_faces"].numpy().tolist() == [1, 1]
    np.testing.assert_allclose(a["boxes"].numpy()[1], a["boxes"].numpy()[0], atol=1e-3)
    np.testing.assert_allclose(a["landmarks"].numpy()[1], a["landmarks"].numpy()[0], atol=1e-3)


@pytest.mark.slow
def test_detect_crops_follow_the_box_rule(detect_fn, samples_dir):
    """Each face's crop is the 1.6 x square of its returned box (prnet.core.crop.box_from_bbox), as in
    predict_images: one rule (prnet.serving.ops.crop.landmark_square) for both signatures."""
    from prnet.core.crop import box_from_bbox, crop_transform

    data = (samples_dir / "faces" / "breakingbad.jpg").read_bytes()
    out = detect_fn(images=tf.constant([data]))
    assert int(out["num_faces"][0]) == 2
    for box, tform in zip(out["boxes"].numpy()[0, :2], out["tform"].numpy()[0, :2]):
        np.testing.assert_allclose(tform, crop_transform(*box_from_bbox(box.astype(np.float64))), rtol=1e-5,
                                   atol=1e-3)


@pytest.mark.slow
def test_no_face_gives_zero_rows(detect_fn):
    rng = np.random.default_rng(0)
    out = detect_fn(images=tf.constant([_png(np.zeros((120, 160, 3), np.uint8)),
                                        _png(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))]))
    assert out["num_faces"].numpy().tolist() == [0, 0]
    assert out["landmarks"].shape == (2, MAX_FACES, 68, 3) and not out["landmarks"].numpy().any()


@pytest.mark.slow
@pytest.mark.parametrize("case,message", [
    ("not an image", r"predict_images_detect: images\[1\] is not an encoded JPEG, PNG"),
    ("empty", "predict_images_detect: empty batch"),
    ("tiny", "smaller than 16x16"),
    ("huge", "limit on pixels per image"),
])
def test_bad_requests_fail_with_invalid_argument(detect_fn, case, message):
    images = {"not an image": [_png(np.zeros((40, 40, 3), np.uint8)), b"definitely not an image"], "empty": [],
              "tiny": [_png(np.zeros((8, 40, 3), np.uint8))],
              "huge": [_png(np.zeros((1500, 1401, 3), np.uint8))]}[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        detect_fn(images=tf.constant(images, dtype=tf.string))


@pytest.mark.slow
def test_max_faces_recorded(saved_model):
    assert int(tf.saved_model.load(str(saved_model)).max_faces.numpy()) == MAX_FACES


def test_export_options_checked(tmp_path):
    from prnet.serving.saved_model import export_saved_model

    for bad in (0, 65, 2.5, "x"):  # checked before the network is touched
        with pytest.raises(ExportError, match="max_faces"):
            export_saved_model(None, tmp_path / "sm", kpt_ind=np.zeros((68, 2), int), max_faces=bad)
    with pytest.raises(ExportError, match="unknown detector"):
        export_saved_model(None, tmp_path / "sm", kpt_ind=np.zeros((68, 2), int), detector="yolo")
    assert not (tmp_path / "sm").exists()


@pytest.mark.slow
def test_tflite_device_pipeline(small_model, samples_dir, uv_template, blazeface_path, tmp_path):
    """``Predictor.from_tflite``: the PRNet .tflite and the BlazeFace .tflite together (no Haar cascade)
    give the faces and landmarks of the Keras model with the same detector."""
    from prnet.inference.blazeface import BlazeFaceDetector
    from prnet.inference.predictor import Predictor
    from prnet.model.runtime import KerasBackend
    from prnet.serving.tflite import convert_tflite

    path = tmp_path / "prnet_float32.tflite"
    convert_tflite(small_model, path, quantization="float32")
    device = Predictor.from_tflite(path, detector_path=blazeface_path, num_threads=2, template=uv_template,
                                   refine=False)
    assert device.backend_name == "TFLite" and isinstance(device.detector, BlazeFaceDetector)
    reference = Predictor(KerasBackend(small_model), detector="blazeface", template=uv_template, refine=False)
    for name in ("breakingbad.jpg", "prnet_test_4.jpg"):
        photo = samples_dir / "faces" / name
        got, want = device.reconstruct(photo), reference.reconstruct(photo)
        assert len(got) == len(want) >= 1
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.box, b.box, atol=1e-9)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.01)  # float32 TFLite vs Keras: 1e-3 crop px
    with pytest.raises(ValueError, match=".tflite"):
        Predictor.from_tflite(tmp_path / "model.weights.h5")
