"""Every graph twin (``prnet/serving/ops``) against the NumPy rule it mirrors, on the same inputs.

The SavedModel's signatures run TensorFlow-op copies of rules the Python path runs in NumPy: the
image bytes (header, EXIF orientation, decode; :mod:`prnet.core.images`), the face crop
(:mod:`prnet.core.crop`), BlazeFace's post-processing (:mod:`prnet.inference.blazeface`,
:mod:`prnet.inference.boxes`) and the head pose (:mod:`prnet.mesh.pose`). Each pair runs here on the
same inputs (real sample photos, phone-style EXIF fixtures, the detector's raw outputs, random
rotations), in this process (ops with while loops traced once by ``tf.function``): nothing is
exported. Bounds name what differs between the two sides (another JPEG decoder, OpenCV's 1/32 px
warp grid, float32 tforms); where both sides compute the same float64 formula, the bound is a few ulps.

The header check with its limits (``checked_header``) is pinned to its plain-Python twin
:func:`prnet.serving.limits.read_request_header` on crafted and mutated files.

Not pinned (the NumPy side has no graph twin): WebP and TIFF orientation (the graph accepts JPEG,
PNG, GIF and BMP only).
"""

import io
import struct

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_images import as_displayed, jpeg_with_orientation, png_with_orientation
from test_serving_failures import _picture, _png, _stored, _tiff, _with_jpeg_exif, _with_png_exif

from prnet.core.crop import BoxCalibration, box_from_bbox, crop_transform, warp_crop
from prnet.core.images import apply_orientation, decode_image, exif_orientation, read_image
from prnet.serving.limits import REFUSALS, RequestImageError, read_request_header
from prnet.serving.ops import blazeface as graph_blazeface
from prnet.serving.ops.crop import crop_encoded, crop_square, landmark_square
from prnet.serving.ops.image_bytes import checked_header, decode_oriented, orient_image
from prnet.serving.ops.pose import pose_angles

#: Two JPEG decoders (TensorFlow's in the graph, OpenCV's in the Python reader) on the same bytes:
#: mean absolute difference in grey levels (measured on the sample photos: at most 1.6).
JPEG_DECODERS_MEAN_LEVELS = 3.0
#: ``warp_crop`` (OpenCV: sub-pixel positions on a 1/32 px grid) vs the graph's exact bilinear crop,
#: in [0, 1] units: mean and max over the crop.
CROP_MEAN, CROP_MAX = 2e-3, 0.06
#: The crop transform is returned as float32 by the graph.
TFORM_RTOL, TFORM_ATOL = 1e-5, 1e-4
#: Graph vs Python detector boxes on the same pixels, in units of the box width (measured: 0.15 %);
#: the graph's letterbox resize differs from OpenCV's by at most one grey level.
BOX_REL_TOL = 0.005
#: Same float64 formula on both sides.
ULPS = 1e-12


def _photos(samples_dir):
    """The real JPEG sample photos: samples/faces, AFLW2000-3D, 300W-LP."""
    return (sorted((samples_dir / "faces").glob("*.jpg")) + sorted((samples_dir / "aflw2000-3d").glob("*.jpg"))
            + sorted((samples_dir / "300w-lp").glob("*/*.jpg")))


STRING = tf.TensorSpec([], tf.string)


@tf.function(input_signature=[STRING])
def _read(data):
    """One encoded image through the graph's header checks and decode, as the SavedModel runs them (traced
    once: the header parsers' while loops run as a graph, not in Python)."""
    header = checked_header(data)
    return header.stored_h, header.stored_w, header.orientation, header.h, header.w, decode_oriented(header)


_crop_encoded = tf.function(crop_encoded, input_signature=[STRING, tf.TensorSpec([4], tf.float32)])


def _header(data):
    """The graph's header of bytes -> (stored (h, w), orientation, displayed (h, w)) as ints."""
    sh, sw, orientation, h, w, _ = _read(tf.constant(data))
    return (int(sh), int(sw)), int(orientation), (int(h), int(w))


def _graph_decode(data):
    return _read(tf.constant(data))[-1].numpy()


# ----------------------------------------------------------------------------- image_bytes <-> core.images


def test_real_photos_header_orientation_and_pixels(samples_dir):
    """JPEG bytes of every sample photo, and a PNG of the pixels the Python reader gives."""
    photos = _photos(samples_dir)
    assert len(photos) >= 20
    for path in photos:
        data = path.read_bytes()
        image = decode_image(data)
        _, orientation, size = _header(data)
        assert orientation == exif_orientation(data) and size == image.shape[:2], path.name
        got = _graph_decode(data)
        assert got.shape == image.shape
        assert np.abs(got.astype(int) - image).mean() < JPEG_DECODERS_MEAN_LEVELS, path.name
        png = _png(image)
        np.testing.assert_array_equal(_graph_decode(png), decode_image(png), err_msg=path.name)


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_fixtures(tag):
    """Phone-style files (both test helpers' EXIF writers, both byte orders, JPEG and PNG): the same tag,
    displayed size and pixels as the Python reader."""
    rng = np.random.default_rng(tag)
    bgr = cv2.resize(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), (80, 48), interpolation=cv2.INTER_NEAREST)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    cases = {
        "jpeg MM": jpeg_with_orientation(bgr, tag, "MM"),
        "jpeg II after JFIF": jpeg_with_orientation(bgr, tag, "II", after_jfif=True),
        "jpeg II": _with_jpeg_exif(jpeg, tag, big_endian=False),
        "png II": png_with_orientation(bgr, tag),
        "png MM": _with_png_exif(cv2.imencode(".png", bgr)[1].tobytes(), tag),
    }
    for name, data in cases.items():
        expected = decode_image(data)
        stored, orientation, size = _header(data)
        assert orientation == exif_orientation(data) == tag, name
        assert stored == (48, 80) and size == expected.shape[:2], name
        got = _graph_decode(data)
        if name.startswith("png"):
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:  # TensorFlow's JPEG decoder, turned by the graph == the same pixels turned by NumPy
            upright = tf.io.decode_jpeg(data, channels=3).numpy()
            np.testing.assert_array_equal(got, apply_orientation(upright, tag), err_msg=name)
            np.testing.assert_array_equal(got, as_displayed(upright, tag), err_msg=name)
            assert np.abs(got.astype(int) - expected).mean() < JPEG_DECODERS_MEAN_LEVELS, name


def test_orient_image_equals_apply_orientation():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    shown = {}
    for tag in range(0, 10):  # 0 and 9: unknown values leave the image as stored
        got = orient_image(tf.constant(image), tf.constant(tag, tf.int64)).numpy()
        np.testing.assert_array_equal(got, apply_orientation(image, tag), err_msg=str(tag))
        shown[got.shape, got.tobytes()] = tag
    assert len(shown) == 8


def test_unknown_or_broken_orientation_counts_as_upright():
    """Both parsers read malformed or out-of-range tags as 1 (upright)."""
    jpeg = cv2.imencode(".jpg", _picture(40, 60)[..., ::-1])[1].tobytes()
    wrong_type = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 8 + len(_tiff(6, False, 4))) + b"Exif\0\0" \
        + _tiff(6, False, tag_type=4) + jpeg[2:]  # LONG instead of SHORT
    good = jpeg_with_orientation(_picture(40, 60)[..., ::-1], 6)
    cases = [_with_jpeg_exif(jpeg, 0), _with_jpeg_exif(jpeg, 9), wrong_type,
             jpeg[:2] + b"\xff\xe1\x00\x10Exif\0\0II*\0\xff\xff\xff\x7f" + jpeg[2:],  # IFD past the end
             good.replace(b"MM\x00*\x00\x00\x00\x08", b"MM\x00*\xff\xff\xff\x00"),  # IFD beyond the segment
             good.replace(b"Exif\x00\x00", b"Exxx\x00\x00"),  # not an EXIF segment
             _with_png_exif(_png(_picture(40, 60)), 0)]
    for data in cases:
        assert exif_orientation(data) == 1
        assert _header(data)[1] == 1
    assert _header(good)[1] == exif_orientation(good) == 6  # the fixture itself is valid


def test_header_sizes_match_the_decoders():
    """The stored size read from the header is what both decoders produce (PNG, JPEG, BMP, grey BMP, GIF)."""
    picture = _picture(50, 70)
    samples = {"png": _png(picture), "jpeg": cv2.imencode(".jpg", picture)[1].tobytes(),
               "bmp": cv2.imencode(".bmp", picture)[1].tobytes()}
    for mode in ("RGB", "L"):
        buf = io.BytesIO()
        Image.fromarray(picture).convert(mode).save(buf, format="BMP")
        samples[f"bmp-{mode}"] = buf.getvalue()
    buf = io.BytesIO()  # an animation whose second frame is larger than the first
    Image.fromarray(picture[:20, :30]).save(buf, format="GIF", save_all=True,
                                            append_images=[Image.fromarray(picture)])
    samples["gif"] = buf.getvalue()
    for name, data in samples.items():
        (h, w), orientation, _ = _header(data)
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
        assert (h, w) == tuple(decoded.shape[:2]) == decode_image(data).shape[:2], name
        assert orientation == exif_orientation(data) == 1


TWIN_CAP = 1_000_000


@tf.function(input_signature=[STRING])
def _checked(data):
    header = checked_header(data, TWIN_CAP)
    return header.stored_h, header.stored_w, header.orientation, header.h, header.w, header.top, header.left, \
        header.data


def _graph_verdict(data):
    """The graph's header check as (stored, displayed, orientation, top, left, cut) or the refusal's key."""
    try:
        sh, sw, orientation, h, w, top, left, cut = (x.numpy() for x in _checked(tf.constant(data)))
    except tf.errors.InvalidArgumentError as err:
        keys = [key for key, phrase in REFUSALS.items() if phrase in str(err)]
        assert len(keys) == 1, str(err)
        return keys[0]
    return (int(sh), int(sw)), (int(h), int(w)), int(orientation), int(top), int(left), bytes(cut)


def _python_verdict(data):
    try:
        r = read_request_header(data, TWIN_CAP)
    except RequestImageError as err:
        return err.reason
    return r["stored"], r["displayed"], r["orientation"], r["top"], r["left"], r["cut"]


def _header_cases():
    import serving_bombs as bombs

    picture = _picture(40, 60)
    jpeg = cv2.imencode(".jpg", picture[..., ::-1])[1].tobytes()
    png = _png(picture)
    bmp = cv2.imencode(".bmp", picture)[1].tobytes()
    cases = {"jpeg": jpeg, "png": png, "bmp": bmp, "gif": bombs.gif(3, 60, 40),
             "jpeg exif 6": jpeg_with_orientation(picture[..., ::-1], 6), "png exif 8": _with_png_exif(png, 8),
             "progressive": bombs.progressive_jpeg(60, 40), "scans": bombs.progressive_jpeg(60, 40, 70),
             "fill": bombs.jpeg_fill_bytes(jpeg, 3000), "fill ok": bombs.jpeg_fill_bytes(jpeg, 50),
             "app": bombs.jpeg_app_segments(jpeg, 2100), "chunks": bombs.png(40, 30, 2100),
             "chunks ok": bombs.png(40, 30, 40), "gif screen": bombs.gif(1, 40, 30, screen=(50, 45)),
             "gif outside": bombs.gif(1, 40, 30, screen=(30, 45)), "gif big": bombs.gif(1, 16, 16, screen=(2000, 600)),
             "gif comment": bombs.gif(1, 40, 30, extension=bombs.gif_comment(3000, 255)),
             "gif short blocks": bombs.gif(1, 40, 30, extension=bombs.gif_comment(2100, 2)),
             "png huge": bombs.png(1500, 1000), "tiny": _png(_picture(10, 60)), "junk": b"junk",
             "empty": b"", "jpeg + junk": jpeg + b"junk"}
    for name, data in list(cases.items())[:6]:
        for cut in (2, 11, 30, len(data) // 2, len(data) - 1):
            cases[f"{name} cut {cut}"] = data[:cut]
    rng = np.random.default_rng(0)
    for name in ("jpeg", "png", "bmp", "gif", "jpeg exif 6"):  # header bytes changed at random
        for k in range(12):
            data = bytearray(cases[name])
            for pos in rng.integers(0, min(len(data), 64), 2):
                data[pos] = rng.integers(0, 256)
            cases[f"{name} mutated {k}"] = bytes(data)
    return cases


def test_header_check_equals_its_python_twin():
    """The graph's header check and :func:`read_request_header`: the same sizes, orientation, GIF cut, or the
    same refusal, on valid, costly, truncated and mutated files of every format."""
    verdicts = {}
    for name, data in _header_cases().items():
        graph, python = _graph_verdict(data), _python_verdict(data)
        assert graph == python, (name, graph if isinstance(graph, str) else graph[:5],
                                 python if isinstance(python, str) else python[:5])
        verdicts[name] = graph if isinstance(graph, str) else "ok"
    assert {"ok", "steps", "scans", "truncated", "outside", "too_large", "too_small", "not_image"} <= set(
        verdicts.values())
    assert verdicts["fill ok"] == verdicts["chunks ok"] == verdicts["gif comment"] == "ok"


# ----------------------------------------------------------------------------- crop <-> core.crop


def test_landmark_square_equals_box_from_bbox():
    """Centre and side of the 1.6 x box rule, bit for bit, on float64 and float32-valued boxes."""
    rng = np.random.default_rng(0)
    x0y0 = rng.uniform(-200, 2000, (60, 2))
    boxes = np.concatenate([x0y0, x0y0 + rng.uniform(8, 900, (60, 2))], 1)
    boxes = np.concatenate([boxes, boxes.astype(np.float32).astype(np.float64), [[10, 10, 20, 20]]])
    for box in boxes:
        cx, cy, size = (float(v) for v in landmark_square(tf.constant(box, tf.float64)))
        center, side = box_from_bbox(box)
        assert (cx, cy, size) == (center[0], center[1], side), box


@pytest.mark.parametrize("center,size", [((80.0, 60.0), 100.0), ((10.5, 100.25), 153.0), ((150.0, 5.0), 300.0),
                                         ((79.5, 59.5), 24.0)])
def test_crop_square_equals_warp_crop(center, size):
    """Crops inside, partly outside and much larger than the image, up- and down-sampled."""
    image = _picture(120, 160, seed=5)
    crop, tform = crop_square(tf.constant(image), *(tf.constant(v, tf.float64) for v in (*center, size)))
    expected_t = crop_transform(center, size)
    np.testing.assert_allclose(tform.numpy(), expected_t, rtol=TFORM_RTOL, atol=TFORM_ATOL)
    diff = np.abs(crop.numpy() - warp_crop(image, expected_t))
    assert diff.mean() < CROP_MEAN and diff.max() < CROP_MAX, (diff.mean(), diff.max())


def test_in_graph_crop_matches_prnet_crop(samples_dir):
    data = (samples_dir / "faces" / "prnet_test_1.jpg").read_bytes()
    image = tf.io.decode_jpeg(data, channels=3).numpy()
    box = np.array([60.5, 40.0, 250.0, 260.0], np.float32)
    crop, tform = _crop_encoded(tf.constant(data), tf.constant(box))
    expected_t = crop_transform(*box_from_bbox(box))
    np.testing.assert_allclose(tform.numpy(), expected_t, rtol=TFORM_RTOL, atol=TFORM_ATOL)
    diff = np.abs(crop.numpy() - warp_crop(image, expected_t))
    assert diff.mean() < CROP_MEAN and diff.max() < CROP_MAX


UPRIGHT_BOX = [30.0, 20.0, 120.0, 100.0]  # in the upright (displayed) 128 x 160 picture


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_in_the_graph(orientation):
    """A phone photo (stored turned, EXIF says how to show it): the graph's crop of a box in displayed
    pixels equals ``warp_crop`` of the upright picture."""
    upright = _picture(128, 160, seed=3)
    stored = _stored(upright, orientation)
    jpeg = cv2.imencode(".jpg", stored[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    expected = warp_crop(upright, crop_transform(*box_from_bbox(UPRIGHT_BOX)))
    for data in (_with_jpeg_exif(jpeg, orientation, big_endian=False),
                 _with_jpeg_exif(jpeg, orientation, big_endian=True),
                 _with_png_exif(_png(stored), orientation)):
        (h, w), tag, _ = _header(data)
        assert tag == orientation == exif_orientation(data) and (h, w) == stored.shape[:2]
        crop, tform = _crop_encoded(tf.constant(data), tf.constant(UPRIGHT_BOX, tf.float32))
        diff = np.abs(crop.numpy() - expected)
        assert diff.mean() < 0.01 and np.median(diff) < 0.01, (orientation, diff.mean())
        np.testing.assert_allclose(tform.numpy(), crop_transform(*box_from_bbox(UPRIGHT_BOX)), rtol=TFORM_RTOL,
                                   atol=TFORM_ATOL)


# ----------------------------------------------------------------------------- blazeface <-> inference.blazeface


def _numpy_raw(regressors, logits, anchors, n, min_score):
    """The Python detector's steps on raw outputs: decode, score threshold, weighted NMS."""
    from prnet.inference import blazeface

    boxes, scores, keypoints = blazeface.decode(regressors, logits, anchors, n)
    keep = scores >= min_score
    return blazeface.weighted_nms(boxes[keep], scores[keep], extra=keypoints[keep])


F64 = tf.float64
_weighted_nms = tf.function(graph_blazeface.weighted_nms, input_signature=[
    tf.TensorSpec([None, 4], F64), tf.TensorSpec([None], F64), tf.TensorSpec([None, 12], F64)])
_suppressed = tf.function(graph_blazeface.largest_first_suppressed, input_signature=[tf.TensorSpec([None, 4], F64)])


def _graph_raw(regressors, logits, anchors, n, min_score):
    """The graph's steps on the same raw outputs: decode, score threshold, weighted NMS."""
    boxes, scores, keypoints = graph_blazeface.decode(tf.constant(regressors), tf.constant(logits),
                                                      tf.constant(anchors, F64), n)
    keep = scores >= min_score
    b, s, e = _weighted_nms(tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep),
                            tf.reshape(tf.boolean_mask(keypoints, keep), [-1, 12]))
    return b.numpy(), s.numpy(), e.numpy().reshape(-1, 6, 2)


def _assert_same_raw(got, want):
    assert len(got[0]) == len(want[0])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=ULPS)


def test_decode_and_nms_on_random_raw_outputs():
    """Raw outputs with many overlapping candidates around a few faces, on the real anchor layout."""
    from prnet.model.blazeface import MIN_SCORE, model_anchors

    anchors = model_anchors("back")
    rng = np.random.default_rng(0)
    for _ in range(3):
        faces = rng.uniform(0.2, 0.8, (3, 2))
        target = faces[rng.integers(0, 3, len(anchors))] + rng.normal(0, 0.01, anchors.shape)
        size = rng.uniform(0.15, 0.25, (len(anchors), 2))
        kps = target[:, None] + rng.normal(0, 0.05, (len(anchors), 6, 2))
        regressors = np.concatenate([(target - anchors) * 256, size * 256,
                                     ((kps - anchors[:, None]) * 256).reshape(-1, 12)], 1).astype(np.float32)
        near = np.linalg.norm(target - anchors, axis=1) < 0.08
        logits = np.where(near, rng.normal(2, 2, len(anchors)), rng.normal(-6, 2, len(anchors))).astype(np.float32)
        want = _numpy_raw(regressors, logits[:, None], anchors, 256, MIN_SCORE)
        assert 2 <= len(want[0]) < near.sum()  # clusters merged
        _assert_same_raw(_graph_raw(regressors, logits[:, None], anchors, 256, MIN_SCORE), want)


def test_decode_and_nms_on_the_networks_raw_outputs(samples_dir, blazeface_path):
    """BlazeFace's own outputs on sample photos (letterboxed by the Python detector): the same clusters."""
    from prnet.inference.blazeface import letterbox
    from prnet.model.blazeface import MIN_SCORE, blazeface_net, model_anchors

    net, anchors = blazeface_net("back"), model_anchors("back")
    photos = [samples_dir / "faces" / n for n in ("breakingbad.jpg", "einstein.jpg", "prnet_test_5.jpg")]
    batch = np.stack([letterbox(read_image(p), 256)[0] for p in photos])
    regressors, logits = (t.numpy() for t in net(tf.constant(batch)))
    for i, path in enumerate(photos):
        want = _numpy_raw(regressors[i], logits[i], anchors, 256, MIN_SCORE)
        assert len(want[0]) >= 1, path.name
        _assert_same_raw(_graph_raw(regressors[i], logits[i], anchors, 256, MIN_SCORE), want)


def test_graph_nms_equals_numpy_weighted_nms():
    """The in-graph weighted NMS and suppression against the NumPy ones on random overlapping boxes."""
    from prnet.inference.blazeface import weighted_nms as nms_np
    from prnet.inference.boxes import sort_and_suppress

    rng = np.random.default_rng(0)
    for _ in range(5):
        centres = rng.uniform(0.2, 0.8, (4, 2))[rng.integers(0, 4, 30)] + rng.normal(0, 0.03, (30, 2))
        sizes = rng.uniform(0.05, 0.3, (30, 1))
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
        scores = rng.uniform(0.5, 1.0, 30)
        extra = rng.normal(size=(30, 12))
        b, s, e = nms_np(boxes, scores, 0.3, extra=extra)
        gb, gs, ge = (t.numpy() for t in _weighted_nms(tf.constant(boxes), tf.constant(scores), tf.constant(extra)))
        assert 1 <= len(b) < 30
        np.testing.assert_allclose(gb, b, atol=ULPS)
        np.testing.assert_allclose(gs, s, atol=ULPS)
        np.testing.assert_allclose(ge, e, atol=ULPS)
        kept = tf.gather(tf.constant(b), _suppressed(tf.constant(b))).numpy()
        np.testing.assert_allclose(kept, sort_and_suppress(b), atol=ULPS)


def test_iou_and_calibration_equal_numpy():
    from prnet.inference.boxes import box_iou
    from prnet.model.blazeface import BLAZEFACE_CALIBRATION

    rng = np.random.default_rng(1)
    x0y0 = rng.uniform(0, 100, (50, 2))
    boxes = np.concatenate([x0y0, x0y0 + rng.uniform(1, 60, (50, 2))], 1)
    for i in range(5):
        got = graph_blazeface.iou(tf.constant(boxes[i]), tf.constant(boxes)).numpy()
        np.testing.assert_allclose(got, box_iou(boxes[i], boxes)[0], rtol=0, atol=ULPS)
    for c in (*BLAZEFACE_CALIBRATION.values(), BoxCalibration(0.1, -0.2, 1.3, 0.7)):
        got = graph_blazeface.calibrate(tf.constant(boxes), tf.constant([c.dx, c.dy, c.sx, c.sy], tf.float64))
        np.testing.assert_allclose(got.numpy(), c.apply(boxes), rtol=0, atol=ULPS * 100)


def test_letterbox_equals_numpy(samples_dir):
    """Shrunk (area filter), enlarged (bilinear) and padded photos: the same scale and pads, pixels
    within one grey level (TensorFlow's resize vs OpenCV's, both rounded to uint8)."""
    from prnet.inference.blazeface import letterbox

    for name in ("breakingbad.jpg", "einstein.jpg", "prnet_test_1.jpg", "prnet_test_5.jpg"):
        image = read_image(samples_dir / "faces" / name)
        x, scale, pad = letterbox(image, 256)
        gx, gscale, gpad = graph_blazeface.letterbox(tf.constant(image), 256)
        assert [float(v) for v in gscale] == list(scale) and [float(v) for v in gpad] == list(pad), name
        levels = np.abs(gx.numpy() - x) * 127.5
        assert levels.max() <= 1.0 + 1e-4 and levels.mean() < 0.2, (name, levels.max(), levels.mean())


def test_blazeface_graph_equals_the_detector(samples_dir, blazeface_path):
    """The whole graph detector against the Python one, on every sample photo: same faces, same order."""
    from prnet.inference.blazeface import BlazeFaceDetector

    graph, detector = graph_blazeface.BlazeFaceGraph("back"), BlazeFaceDetector("back")
    image_spec = [tf.TensorSpec([None, None, 3], tf.uint8)]
    raw_fn = tf.function(graph.raw, input_signature=image_spec)
    detect_fn = tf.function(graph, input_signature=image_spec)
    found = 0
    for path in _photos(samples_dir):
        image = read_image(path)
        raw = detector.detect_raw(image)  # the network's own boxes, scores, key points by decreasing score
        boxes, scores, keypoints = (t.numpy() for t in raw_fn(tf.constant(image)))
        assert len(boxes) == len(raw.boxes) >= 1, path.name
        tol = BOX_REL_TOL * (raw.boxes[:, 2] - raw.boxes[:, 0]).min()
        assert np.abs(boxes - raw.boxes).max() <= tol and np.abs(keypoints - raw.keypoints).max() <= tol, path.name
        assert np.abs(scores - raw.scores).max() < 0.01, path.name
        boxes, scores, keypoints = (t.numpy() for t in detect_fn(tf.constant(image)))  # calibrated, largest first
        want = detector(image)
        assert len(boxes) == len(want) and scores.shape == (len(want),) and keypoints.shape == (len(want), 6, 2)
        assert np.abs(boxes - want).max() <= BOX_REL_TOL * (want[:, 2] - want[:, 0]).min(), path.name
        found += len(want)
    assert found == len(_photos(samples_dir)) + 1  # breakingbad.jpg has two faces


# ----------------------------------------------------------------------------- pose <-> mesh.pose


def test_graph_pose_equals_estimate_pose_on_known_rotations(uv_template):
    """The in-graph pose against prnet.mesh.pose.estimate_pose and the known angles: the mean face
    turned by known Euler angles, scaled, shifted and jittered."""
    from prnet.core.transforms import euler_to_rotation, flip_y
    from prnet.mesh.pose import estimate_pose

    canonical = uv_template.canonical_vertices.astype(np.float64)
    rng = np.random.default_rng(1)
    for yaw, pitch, roll in [(0, 0, 0), (70, -20, 10), (-85, 15, -30), (30, 40, 60)]:
        rot = flip_y(euler_to_rotation(*np.radians([pitch, yaw, roll])))  # image frame (y down)
        vertices = 1.7 * canonical @ rot.T + [40, -12, 5] + rng.normal(0, 0.3, canonical.shape)
        got = pose_angles(tf.constant(vertices), tf.constant(canonical)).numpy()
        np.testing.assert_allclose(got, estimate_pose(vertices, canonical)[1], atol=1e-6)
        np.testing.assert_allclose(got, [yaw, pitch, roll], atol=0.05)


def test_graph_pose_equals_estimate_pose_on_random_rotations():
    """Random point clouds under random rotations (any axis, any angle), scales, shifts and noise."""
    from scipy.spatial.transform import Rotation

    from prnet.mesh.pose import estimate_pose

    rng = np.random.default_rng(2)
    rotations = Rotation.random(40, random_state=3).as_matrix()
    for rot in rotations:
        canonical = rng.normal(0, 50, (300, 3))
        vertices = rng.uniform(0.2, 5) * canonical @ rot.T + rng.uniform(-100, 100, 3) \
            + rng.normal(0, 0.5, canonical.shape)
        got = pose_angles(tf.constant(vertices), tf.constant(canonical)).numpy()
        want_rot, want = estimate_pose(vertices, canonical)
        np.testing.assert_allclose(want_rot, rot, atol=0.05)  # the fixture is what it says
        np.testing.assert_allclose(got, want, atol=1e-6)
