"""Serving signatures on bad requests and phone photos (prnet.serving.saved_model; issue 14 items 2 and 6).

The SavedModel is exported once (size-4 network) and its signatures are called by name after
loading it from disk, as TF Serving does; the memory check runs a client in a fresh process.
"""

import struct
import zlib

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from prnet.core.images import ORIENTATION_STEPS, decode_image
from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm
from prnet.serving.saved_model import export_saved_model

from helpers import run_cli

MAX_PIXELS = 1_000_000  # the cap this test's model is exported with


@pytest.fixture(scope="module")
def saved_model(uv_template, tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0, size=4), seed=1)
    return export_saved_model(model, tmp_path_factory.mktemp("serving") / "sm", kpt_ind=uv_template.kpt_ind,
                              max_image_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def loaded(saved_model):
    return tf.saved_model.load(str(saved_model))


def _picture(h=120, w=160, seed=0):
    """An RGB uint8 picture with no symmetry (smooth blobs: little JPEG loss)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _png(rgb):
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def _black_png(w, h):
    """A real grey PNG of w x h black pixels, built row by row (a 16000 x 16000 one is ~250 KB)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _call(loaded, images, boxes=None):
    images = tf.constant(images, dtype=tf.string)
    if boxes is None:
        return loaded.signatures["predict_images_nobox"](images=images)
    return loaded.signatures["predict_images"](images=images, boxes=tf.constant(boxes, tf.float32))


# ----------------------------------------------------------------------------- item 6: bad requests

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("box,message", [
    ([1000, 1000, 1100, 1100], "must overlap the image"),      # right of / below the image
    ([-300, -300, -100, -100], "must overlap the image"),      # left of / above it
    ([159, 10, 260, 100], "must overlap the image"),           # starts at the last column
    ([0, 0, INF, INF], "NaN or infinite"),
    ([-INF, 10, 100, 100], "NaN or infinite"),
    ([NAN, 10, 100, 100], "NaN or infinite"),
    ([50, 50, 51, 51], "at least 8 pixels"),                   # a 1-pixel box
    ([50, 50, 57.5, 90], "at least 8 pixels"),
    ([0, 0, 1e9, 1e9], "at most 4 times"),                     # a 1e9-pixel box
    ([-400, 10, 300, 100], "at most 4 times"),
    ([50, 50, 10, 80], "x1 > x0"),
])
def test_bad_boxes_are_rejected(loaded, box, message):
    png = _png(_picture(120, 160))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(loaded, [png], [box])


@pytest.mark.parametrize("box", [
    [10, 10, 18, 18],            # the smallest box
    [-50, -40, 30, 30],          # partly outside
    [150, 100, 400, 300],        # partly outside, bottom right
    [-300, -200, 340, 280],      # at most 4x the image
    [0, 0, 0, 0],                # the whole image
])
def test_boxes_within_the_limits_work(loaded, box):
    out = _call(loaded, [_png(_picture(120, 160))], [box])
    assert np.all(np.isfinite(out["landmarks"].numpy())) and out["posmap"].shape == (1, 256, 256, 3)


@pytest.mark.parametrize("h,w", [(1, 1), (15, 300), (300, 15), (0, 0)])
def test_tiny_images_are_rejected(loaded, h, w):
    data = _png(_picture(max(h, 1), max(w, 1))) if h else b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"  # truncated header
    message = "smaller than 16x16" if h else "truncated or damaged"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(loaded, [data])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(loaded, [data], [[0, 0, 0, 0]])


def test_mixed_batch_names_the_bad_element(loaded):
    """Review row 23: in a batch of valid and invalid images the message says which element is bad."""
    good = _png(_picture(40, 40))
    jpeg = cv2.imencode(".jpg", _picture(60, 80))[1].tobytes()
    cases = [([good, good, b"junk"], None, r"predict_images: images\[2\] is not an encoded"),
             ([good, jpeg[:len(jpeg) // 2], good], None, r"predict_images: images\[1\]: the file is truncated"),
             ([good, good], [[0, 0, 0, 0], [50, 50, 10, 80]], r"predict_images: boxes\[1\]: a box must be"),
             ([good, _black_png(1001, 1000)], [[0, 0, 0, 0], [0, 0, 0, 0]], r"images\[1\] is larger than")]
    for images, boxes, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _call(loaded, images, boxes)


def test_smallest_image_works(loaded):
    assert _call(loaded, [_png(_picture(16, 16))])["landmarks"].shape == (1, 68, 3)


def test_pixel_cap_is_recorded_and_enforced(loaded):
    assert int(loaded.max_image_pixels.numpy()) == MAX_PIXELS
    fits = _png(_picture(1000, 1000))
    assert _call(loaded, [fits])["posmap"].shape == (1, 256, 256, 3)
    too_big = [_png(_picture(1001, 1000)), cv2.imencode(".jpg", _picture(800, 1300))[1].tobytes(),
               cv2.imencode(".bmp", _picture(1300, 800))[1].tobytes(), _black_png(16000, 16000)]
    for data in too_big:
        with pytest.raises(tf.errors.InvalidArgumentError, match="limit on pixels per image"):
            _call(loaded, [fits, data], [[0, 0, 0, 0], [10, 10, 100, 100]])


def test_export_rejects_a_nonsense_cap(tmp_path):
    from prnet.errors import ExportError

    for bad in (0, 10, -5, 1.5, "many"):
        with pytest.raises(ExportError, match="max_image_pixels"):
            export_saved_model(None, tmp_path / "sm", kpt_ind=np.zeros((68, 2), int), max_image_pixels=bad)
    assert not (tmp_path / "sm").exists()


MEMORY_CLIENT = r"""
import resource, sys
import tensorflow as tf
fn = tf.saved_model.load(sys.argv[1]).signatures["predict_images_nobox"]
small = tf.io.encode_png(tf.zeros([64, 64, 3], tf.uint8))
fn(images=tf.stack([small]))  # warm up: graphs built, buffers allocated
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
huge = open(sys.argv[2], "rb").read()
try:
    fn(images=tf.constant([huge]))
    print("ACCEPTED")
except tf.errors.InvalidArgumentError as err:
    print("REJECTED", "limit on pixels per image" in str(err))
print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.slow
def test_huge_png_costs_no_memory(saved_model, tmp_path):
    png = tmp_path / "huge.png"
    png.write_bytes(_black_png(16000, 16000))  # 256 MP (768 MB as RGB): ~250 KB on disk
    assert png.stat().st_size < 400_000
    script = tmp_path / "client.py"
    script.write_text(MEMORY_CLIENT)
    run = run_cli(script, saved_model, png)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    assert lines.get("REJECTED") == "True", run.stdout
    assert float(lines["GROWTH_MB"]) < 100, run.stdout  # decoding alone would take 768 MB


@pytest.mark.slow
def test_animated_gif_costs_one_frame(saved_model, tmp_path):
    """Issue 20: TensorFlow's GIF decoder reads every frame; the SavedModel decodes the first one only, so
    400 frames of 1 MP (each under the cap, 0.8 MB on disk) cost one frame, not 400 MB."""
    import serving_bombs

    gif = tmp_path / "frames.gif"
    gif.write_bytes(serving_bombs.gif(400, 1000, 1000))
    assert gif.stat().st_size < 1_500_000
    script = tmp_path / "client.py"
    script.write_text(MEMORY_CLIENT)
    run = run_cli(script, saved_model, gif)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    assert "ACCEPTED" in run.stdout, run.stdout
    assert float(lines["GROWTH_MB"]) < 100, run.stdout  # all frames: 400 MB of indices + the RGB frame


# ----------------------------------------------------------------------------- item 2: EXIF orientation


def _tiff(orientation, big_endian, tag_type=3):
    o = ">" if big_endian else "<"
    entries = [(0x010F, 2, 4, 0x41424300), (0x0112, tag_type, 1, orientation << (16 if big_endian else 0))]
    body = struct.pack(o + "H", len(entries)) + b"".join(struct.pack(o + "HHII", *e) for e in entries)
    return (b"MM\0*" if big_endian else b"II*\0") + struct.pack(o + "I", 8) + body + b"\0\0\0\0"


def _with_jpeg_exif(jpeg, orientation, big_endian=False):
    payload = b"Exif\0\0" + _tiff(orientation, big_endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]  # before the JFIF APP0, as cameras write it


def _with_png_exif(png, orientation):
    body = _tiff(orientation, True)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return png[:33] + chunk + png[33:]  # after IHDR


def _stored(upright, orientation):
    """The pixels a camera stores for ``upright`` with this EXIF orientation (the steps undone)."""
    undo = {"transpose": lambda x: np.swapaxes(x, 0, 1), "flip_left_right": lambda x: x[:, ::-1],
            "flip_up_down": lambda x: x[::-1]}
    for step in reversed(ORIENTATION_STEPS[orientation]):
        upright = undo[step](upright)
    return np.ascontiguousarray(upright)


UPRIGHT_BOX = [30.0, 20.0, 120.0, 100.0]  # in the upright (displayed) 128 x 160 picture

# The EXIF parser and crop of the graph against the NumPy reader and crop: tests/test_graph_twins.py.


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_predict_images_on_a_phone_photo_equals_the_predictor(loaded, saved_model, uv_template, orientation):
    from prnet.inference.predictor import Predictor

    upright = _picture(128, 160, seed=4)
    jpeg = cv2.imencode(".jpg", _stored(upright, orientation)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    photo = _with_jpeg_exif(jpeg.tobytes(), orientation, big_endian=True)
    out = _call(loaded, [photo], [UPRIGHT_BOX])
    predictor = Predictor.from_weights(saved_model, detector=None, template=uv_template)
    face = predictor.reconstruct(decode_image(photo), boxes=[UPRIGHT_BOX])[0]
    assert np.abs(out["landmarks"].numpy()[0] - face.landmarks).max() < 0.5
    # ... and equals the request with the upright picture itself (lossless PNG).
    upright_out = _call(loaded, [_png(decode_image(photo))], [UPRIGHT_BOX])
    np.testing.assert_allclose(out["landmarks"].numpy(), upright_out["landmarks"].numpy(), atol=0.05)
    np.testing.assert_allclose(out["tform"].numpy(), upright_out["tform"].numpy(), atol=1e-5)
