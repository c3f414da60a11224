"""SavedModel / TFLite export (prnet.serving.saved_model, export.py): signatures, backend agreement, serving, errors."""

import base64
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from prnet.errors import ExportError
from prnet.inference.predictor import Predictor
from prnet.model.resfcn256 import POSMAP_SCALE, build_resfcn256, randomize_batchnorm
from prnet.serving.calibration import representative_crops
from prnet.serving.export import export_all
from prnet.serving.saved_model import export_saved_model
from prnet.serving.tflite import convert_tflite, tflite_predict
from prnet.weights.formats import load_keras_model

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
# Stated agreement bounds against the Keras training graph on real sample crops (crop pixels).
FP32_MAX_PX = 1e-3
FP16_MAX_PX = 0.1
INT8_MEAN_PX, INT8_MAX_PX = 1.5, 6.0


@pytest.fixture(scope="module")
def crops(samples_dir):
    return np.stack(representative_crops(samples_dir / "faces", limit=4))


@pytest.fixture(scope="module")
def exported(small_export):
    """The session's export set of ``small_model`` (conftest): saved_model + float32/float16/int8 TFLite."""
    assert set(small_export) == {"saved_model", "float32", "float16", "int8"}
    folder = Path(small_export["saved_model"]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["prnet_float16.tflite", "prnet_float32.tflite",
                                                        "prnet_int8.tflite", "saved_model"]
    return small_export


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported["saved_model"]))


def test_signatures_and_shapes(loaded):
    sigs = loaded.signatures
    assert set(sigs) == {"serving_default", "predict_images", "predict_images_nobox", "predict_images_detect"}
    spec = sigs["serving_default"].structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 256, 256, 3]
    assert sigs["serving_default"].structured_outputs["posmap"].shape.as_list() == [None, 256, 256, 3]
    inputs = sigs["predict_images"].structured_input_signature[1]
    assert inputs["images"].dtype == tf.string and inputs["boxes"].shape.as_list() == [None, 4]
    outputs = sigs["predict_images"].structured_outputs
    assert {k: v.shape.as_list() for k, v in outputs.items()} == {
        "posmap": [None, 256, 256, 3], "landmarks": [None, 68, 3], "tform": [None, 3, 3]}
    from prnet.serving.saved_model import DEFAULT_MAX_IMAGE_PIXELS

    assert int(loaded.max_image_pixels.numpy()) == DEFAULT_MAX_IMAGE_PIXELS == 40_000_000


def test_backends_agree(exported, small_model, crops):
    ref = small_model(crops, training=False).numpy() * POSMAP_SCALE
    assert ref.std() > 1.0
    saved = tf.saved_model.load(str(exported["saved_model"])).signatures["serving_default"]
    np.testing.assert_allclose(saved(images=tf.constant(crops))["posmap"].numpy(), ref, atol=FP32_MAX_PX)
    err = {q: np.abs(tflite_predict(exported[q], crops) - ref) for q in ("float32", "float16", "int8")}
    assert err["float32"].max() <= FP32_MAX_PX
    assert err["float16"].max() <= FP16_MAX_PX
    assert err["int8"].mean() <= INT8_MEAN_PX and err["int8"].max() <= INT8_MAX_PX
    # int8 is a real quantisation (smaller, not bit-identical), float16 halves the weights.
    assert err["int8"].max() > err["float32"].max()
    sizes = {q: os.path.getsize(exported[q]) for q in ("float32", "float16", "int8")}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_predictor_loads_exports(exported, small_model, crops, uv_template):
    ref = small_model(crops, training=False).numpy() * POSMAP_SCALE
    p_saved = Predictor.from_weights(exported["saved_model"], detector=None, template=uv_template)
    np.testing.assert_allclose(p_saved.predict_posmaps(crops), ref, atol=FP32_MAX_PX)
    p_lite = Predictor.from_weights(exported["float32"], detector=None, template=uv_template)
    np.testing.assert_allclose(p_lite.predict_posmaps(crops), ref, atol=FP32_MAX_PX)


def test_nobox_takes_the_whole_image(loaded, samples_dir):
    data = (samples_dir / "faces" / "prnet_test_0.jpg").read_bytes()
    h, w = tf.io.decode_jpeg(data).shape[:2]
    a = loaded.signatures["predict_images_nobox"](images=tf.constant([data]))
    b = loaded.signatures["predict_images"](images=tf.constant([data]), boxes=tf.zeros([1, 4]))
    np.testing.assert_allclose(a["landmarks"].numpy(), b["landmarks"].numpy(), atol=1e-4)
    t = a["tform"].numpy()[0].astype(np.float64)
    side = min(h, w) - 1
    corner = t @ [(w - 1) / 2 - side / 2, (h - 1) / 2 - side / 2, 1]
    np.testing.assert_allclose(corner[:2], [0, 0], atol=1e-3)
    np.testing.assert_allclose(t[0, 0], 255 / side, rtol=1e-6)


@pytest.mark.parametrize("images,boxes,message", [
    ([b"definitely not an image"], [[0, 0, 0, 0]], "not an encoded JPEG, PNG"),
    ([], np.zeros((0, 4)), "empty batch"),
    (["JPEG"], np.zeros((2, 4)), "must have shape \\[N, 4\\]"),
    (["JPEG"], np.zeros((1, 3)), "must have shape \\[N, 4\\]"),
    (["JPEG"], [[50, 50, 10, 80]], "x1 > x0"),
])
def test_bad_requests_fail_clearly(loaded, samples_dir, images, boxes, message):
    jpeg = (samples_dir / "faces" / "prnet_test_0.jpg").read_bytes()
    images = tf.constant([jpeg if x == "JPEG" else x for x in images], dtype=tf.string)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["predict_images"](images=images, boxes=tf.constant(boxes, tf.float32))


SERVING_CLIENT = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf
# What TF Serving does: read the MetaGraph, pick the SignatureDef by name, feed/fetch its tensors.
export_dir, request_path, out_path = sys.argv[1:]
request = json.load(open(request_path))
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    sig = meta.signature_def[request["signature_name"]]
    feed = {}
    for alias, value in request["inputs"].items():
        info = sig.inputs[alias]
        if info.dtype == tf.string.as_datatype_enum:
            feed[info.name] = np.array([base64.b64decode(v["b64"]) for v in value], dtype=object)
        else:
            feed[info.name] = np.asarray(value, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    out = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
np.savez(out_path, **out)
"""


@pytest.mark.slow
def test_serving_signature_like_tf_serving(exported, small_model, samples_dir, uv_template, tmp_path):
    photo = samples_dir / "faces" / "prnet_test_2.jpg"
    box = [70.0, 50.0, 230.0, 240.0]
    request = {"signature_name": "predict_images",
               "inputs": {"images": [{"b64": base64.b64encode(photo.read_bytes()).decode("ascii")}],
                          "boxes": [box]}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    script = tmp_path / "client.py"
    script.write_text(SERVING_CLIENT)
    client = run_cli(script, exported["saved_model"], tmp_path / "request.json", tmp_path / "out.npz")
    assert client.returncode == 0, client.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert out["landmarks"].shape == (1, 68, 3) and out["posmap"].shape == (1, 256, 256, 3)

    # Independent path: OpenCV decode + prnet.core.crop + Keras training graph + template landmarks.
    import cv2

    from prnet.core.crop import box_from_bbox, crop_to_image, crop_transform, warp_crop
    from prnet.core.uv import landmarks_from_posmap

    image = cv2.imread(str(photo))[..., ::-1]
    tform = crop_transform(*box_from_bbox(box))
    np.testing.assert_allclose(out["tform"][0], tform, rtol=1e-5, atol=1e-3)
    pos = small_model(warp_crop(image, tform)[None], training=False).numpy()[0] * POSMAP_SCALE
    expected = crop_to_image(landmarks_from_posmap(pos, uv_template), tform)
    diff = np.abs(out["landmarks"][0] - expected)
    assert diff.max() < 0.5, diff.max()  # JPEG decoder and warp round-off only
    face = Predictor.from_weights(exported["saved_model"], detector=None,
                                  template=uv_template).reconstruct(image, boxes=[box])[0]
    assert np.abs(out["landmarks"][0] - face.landmarks).max() < 0.5


@pytest.mark.slow  # saves a SavedModel (an export)
def test_load_keras_model_sources(small_model, tmp_path):
    h5 = tmp_path / "m.weights.h5"
    small_model.save_weights(str(h5))
    x = tf.random.uniform([1, 256, 256, 3], seed=1)
    ref = small_model(x, training=False).numpy()
    np.testing.assert_allclose(load_keras_model(h5)(x).numpy(), ref, atol=1e-6)  # size 4 inferred
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=small_model), str(tmp_path / "ckpt"), 2)
    manager.save()
    np.testing.assert_allclose(load_keras_model(tmp_path / "ckpt")(x).numpy(), ref, atol=1e-6)
    # An official-style TF1 name-based checkpoint (raw TF1 variable names, as a TF1 Saver writes them).
    from prnet.model.resfcn256 import checkpoint_name

    names = [checkpoint_name(v) for v in small_model.weights]
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf1" / "ck"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[v.numpy() for v in small_model.weights])
    for source in (tmp_path / "tf1" / "ck", tmp_path / "tf1" / "ck.index", tmp_path / "tf1"):
        np.testing.assert_allclose(load_keras_model(source)(x).numpy(), ref, atol=1e-6)
    from prnet.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="no weights at"):
        load_keras_model(tmp_path / "missing.weights")
    with pytest.raises(WeightsNotFoundError, match="no checkpoint found"):
        load_keras_model(tmp_path)


@pytest.mark.slow
def test_failed_export_leaves_nothing(small_model, uv_template, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(small_model, tmp_path / "sm", kpt_ind=uv_template.kpt_ind)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="representative crops"):
        convert_tflite(small_model, tmp_path / "q.tflite", quantization="int8")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_and_atomic_failure(small_model, samples_dir, assets_dir, tmp_path):
    h5 = tmp_path / "m.weights.h5"
    small_model.save_weights(str(h5))
    out = tmp_path / "out"
    ok = run_cli(REPO / "export.py", f"--weights={h5}", f"--output_dir={out}", "--formats=saved_model,float32",
                 f"--assets_dir={assets_dir}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (out / "saved_model" / "saved_model.pb").is_file() and (out / "prnet_float32.tflite").is_file()
    again = run_cli(REPO / "export.py", f"--weights={h5}", f"--output_dir={out}", "--formats=float32",
                    f"--assets_dir={assets_dir}")
    assert again.returncode == 2 and "already exists" in again.stderr
    empty = tmp_path / "no_images"
    empty.mkdir()
    bad = run_cli(REPO / "export.py", f"--weights={h5}", f"--output_dir={tmp_path / 'out2'}",
                  "--formats=saved_model,int8", f"--calibration={empty}", f"--assets_dir={assets_dir}")
    assert bad.returncode == 2 and "no images" in bad.stderr
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_mixed_batch_of_jpeg_and_png(loaded, samples_dir, uv_template):
    jpeg = (samples_dir / "faces" / "prnet_test_3.jpg").read_bytes()
    other = tf.io.decode_jpeg((samples_dir / "faces" / "prnet_test_4.jpg").read_bytes())
    png = tf.io.encode_png(other).numpy()
    out = loaded.signatures["predict_images"](images=tf.constant([jpeg, png]),
                                              boxes=tf.constant([[40, 30, 200, 220], [0, 0, 0, 0]], tf.float32))
    assert out["posmap"].shape == (2, 256, 256, 3) and out["landmarks"].shape == (2, 68, 3)
    alone = loaded.signatures["predict_images_nobox"](images=tf.constant([png]))
    np.testing.assert_allclose(out["landmarks"].numpy()[1], alone["landmarks"].numpy()[0], atol=1e-3)
    # Landmarks are the posmap's landmark pixels mapped through inv(tform) (z divided by the scale).
    t = out["tform"].numpy()[0].astype(np.float64)
    lm = out["landmarks"].numpy()[0].astype(np.float64)
    kpt = out["posmap"].numpy()[0][uv_template.kpt_ind[:, 1], uv_template.kpt_ind[:, 0]]
    np.testing.assert_allclose(lm[:, :2] @ t[:2, :2].T + t[:2, 2], kpt[:, :2], atol=1e-3)
    np.testing.assert_allclose(lm[:, 2] * t[0, 0], kpt[:, 2], atol=1e-3)
    assert np.abs(t[0, 0] - 255 / int(1.6 * (160 + 190) / 2)) < 1e-6


def _tree(folder):
    """{relative path: (mode bits, sha256 of a file's bytes or None for a folder)} of everything under ``folder``."""
    import hashlib

    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.stat().st_mode & 0o777,
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_cli_unknown_format_writes_nothing(small_model, assets_dir, tmp_path):
    h5 = tmp_path / "weights" / "m.weights.h5"
    h5.parent.mkdir()
    small_model.save_weights(str(h5))
    out = tmp_path / "out"
    bad = run_cli(REPO / "export.py", f"--weights={h5}", f"--output_dir={out}", f"--assets_dir={assets_dir}",
                  "--formats=saved_model,float32,coreml")
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "unknown format 'coreml'" in bad.stderr and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("export.py")] == [
        "export.py: error: unknown format 'coreml'; choose from saved_model, saved_model_bf16, float32, float16, int8, "
        "onnx (comma-separated)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # checked before anything was written


@pytest.mark.slow
def test_overwrite_replaces_the_whole_set(small_model, uv_template, tmp_path, monkeypatch):
    import prnet.serving.export as export_module
    from prnet.errors import OutputExistsError

    out = tmp_path / "out"
    # detector=None: the detection signature is not what this test is about (and it is the slow part of a save)
    export_all(small_model, out, formats=("saved_model", "float32"), kpt_ind=uv_template.kpt_ind, progress=False,
               detector=None)
    old = _tree(out)
    keras.utils.set_random_seed(7)
    other = randomize_batchnorm(build_resfcn256(weight_decay=0, size=2), seed=7)  # other weights, other size

    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_all(other, out, formats=("float32",), progress=False)
    with pytest.raises(ExportError, match="unknown format 'tflite'"):
        export_all(other, out, formats=("float16", "tflite"), overwrite=True, progress=False)

    def broken(*args, **kwargs):  # fails after the SavedModel of the new set was written
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "convert_tflite", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_all(other, out, formats=("saved_model", "float32"), kpt_ind=uv_template.kpt_ind, overwrite=True,
                   progress=False, detector=None)
    monkeypatch.undo()
    assert _tree(out) == old  # the old complete set, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporaries left beside it

    written = export_all(other, out, formats=("float32",), overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["prnet_float32.tflite"]  # no file of the old set remains
    assert _tree(out)["prnet_float32.tflite"][1] != old["prnet_float32.tflite"][1]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    x = np.random.default_rng(0).random((1, 256, 256, 3), np.float32)
    np.testing.assert_allclose(tflite_predict(written["float32"], x), other(x).numpy() * POSMAP_SCALE,
                               atol=FP32_MAX_PX)

    (out / "notes.txt").write_text("mine")  # a folder with other files is never replaced
    with pytest.raises(OutputExistsError, match="notes.txt"):
        export_all(other, out, formats=("float32",), overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_exports_get_normal_permissions(small_model, uv_template, tmp_path, umask):
    previous = os.umask(umask)
    try:
        export_all(small_model, tmp_path / "out", formats=("saved_model", "float32"), kpt_ind=uv_template.kpt_ind,
                   progress=False, detector=None)  # no detection signature: a quicker save, the same files' modes
    finally:
        os.umask(previous)
    tree = _tree(tmp_path / "out")
    assert "saved_model/variables" in tree and "saved_model/saved_model.pb" in tree
    tree["."] = ((tmp_path / "out").stat().st_mode & 0o777, None)
    for name, (mode, digest) in tree.items():
        assert mode == (0o777 if digest is None else 0o666) & ~umask, (name, oct(mode))


@pytest.mark.slow
def test_saved_model_cli_lists_signatures(exported):
    if shutil.which("saved_model_cli") is None:
        pytest.skip("saved_model_cli is not on PATH")
    shown = run_cli("saved_model_cli", "show", "--dir", exported["saved_model"], "--all").stdout
    for needle in ("signature_def['serving_default']", "signature_def['predict_images']", "inputs['boxes']",
                   "outputs['landmarks']", "shape: (-1, 68, 3)", "dtype: DT_STRING"):
        assert needle in shown, needle
