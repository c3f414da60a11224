"""Resources of the SavedModel's image reading bounded by the request (issue 20, section 5): every valid
file a client can send is checked from its header before decoding, with walks of bounded length, and
an animated GIF is decoded from its first frame only.

Graph-op level (``checked_header`` / ``decode_oriented`` of :mod:`prnet.serving.ops.image_bytes`, traced
once by ``tf.function`` as the export traces them): nothing is exported. The files come from
``tests/serving_bombs.py``; ``benchmarks/bench_serving_limits.py`` measures memory and time on larger ones.
"""

import cv2
import numpy as np
import pytest
import serving_bombs as bombs
import tensorflow as tf

from prnet.core.images import decode_image
from prnet.serving.limits import MAX_HEADER_STEPS, MAX_JPEG_SCANS
from prnet.serving.ops.image_bytes import checked_header, decode_oriented

CAP = 1_000_000  # pixels, as tests/test_serving_failures.py's model


@tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)])
def _read(data, index):
    header = checked_header(data, CAP, index=index)
    return header.data, decode_oriented(header, index=index)


def read(data, index=0):
    """(bytes the decoder is given, decoded RGB image) for one request element."""
    cut, image = _read(tf.constant(data), tf.constant(index))
    return cut.numpy(), image.numpy()


def refused(data, words, index=0):
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        read(data, index)
    text = str(err.value)
    assert f"predict_images: images[{index}]" in text and words in text, text
    return text


def test_animated_gif_is_decoded_from_its_first_frame_only():
    """TensorFlow's GIF decoder reads every frame (600 MB and 10 s for 40 frames of 16 MP in a 0.5 MB file):
    the graph hands it the first frame alone, which it decodes as the Python reader does."""
    data = bombs.gif(30, 600, 500)
    cut, image = read(data)
    assert len(cut) < len(data) / 20
    frames = tf.io.decode_image(cut, expand_animations=True)
    assert frames.shape[0] == 1 and tf.io.decode_image(data, expand_animations=True).shape[0] == 30
    np.testing.assert_array_equal(image, decode_image(data))


def test_gif_frame_smaller_than_its_screen_is_placed_on_it():
    """The stored size of a GIF is its logical screen (as OpenCV and browsers show it), the first frame at its
    place, the background colour elsewhere."""
    picture = cv2.resize(np.random.default_rng(0).integers(0, 256, (6, 8), np.uint8), (80, 60),
                         interpolation=cv2.INTER_NEAREST)
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture, "L").save(buf, format="GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 100, 90)                 # a larger screen
    pos = data.index(b"\x2c", 13 + 3 * (2 << (data[10] & 7)))
    data[pos + 1:pos + 5] = struct.pack("<HH", 12, 20)         # the frame at x = 12, y = 20
    _, image = read(bytes(data))
    expected = decode_image(bytes(data))
    assert image.shape == expected.shape == (90, 100, 3)
    np.testing.assert_array_equal(image, expected)
    around = np.concatenate([image[:20].reshape(-1, 3), image[:, :12].reshape(-1, 3)])
    assert len(np.unique(around, axis=0)) == 1  # one colour (the background) around the frame


def test_gif_first_frame_outside_its_screen_is_refused():
    data = bombs.gif(1, 64, 64, screen=(40, 64))
    refused(data, "outside its logical screen")


def test_gif_screen_is_the_capped_size():
    refused(bombs.gif(1, 16, 16, screen=(1001, 1000)), "limit on pixels per image")
    refused(bombs.gif(2, 1200, 1000), "limit on pixels per image")


def test_gif_long_runs_of_full_subblocks_are_cheap_short_ones_are_bounded():
    """Full 255-byte sub-blocks (every encoder's) are skipped in runs: a 1 MB comment costs a few steps;
    a chain of short sub-blocks longer than the step limit is refused (it cost 105 s for 600,000 before)."""
    read(bombs.gif(1, 64, 64, extension=bombs.gif_comment(4000, size=255)))
    read(bombs.gif(1, 64, 64, extension=bombs.gif_comment(MAX_HEADER_STEPS // 2, size=3)))
    refused(bombs.gif(1, 64, 64, extension=bombs.gif_comment(MAX_HEADER_STEPS + 10)), "more than 2048")


def test_gif_frame_hidden_beyond_the_walk_is_refused_not_decoded():
    """Before, the walk gave up after 2**20 blocks and a later frame over the cap was decoded anyway."""
    refused(bombs.gif(1, 2000, 2000, extension=bombs.gif_comment(3 * MAX_HEADER_STEPS)), "more than 2048")


def test_progressive_jpeg_scans_are_limited():
    ordinary = bombs.progressive_jpeg(64, 48)
    assert 2 < ordinary.count(b"\xff\xda") <= MAX_JPEG_SCANS
    assert read(ordinary)[1].shape == (48, 64, 3)
    text = refused(bombs.progressive_jpeg(64, 48, repeat_last_scan=MAX_JPEG_SCANS), "more than 64 scans")
    assert "re-encode" in text


def test_jpeg_and_png_header_walks_are_bounded():
    """Fill bytes and empty chunks are valid; the walk takes at most MAX_HEADER_STEPS of them (1,000,000 fill
    bytes took over 5 minutes before)."""
    jpeg = bombs.jpeg(64, 48)
    assert read(bombs.jpeg_fill_bytes(jpeg, 100))[1].shape == (48, 64, 3)
    assert read(bombs.jpeg_app_segments(jpeg, 100))[1].shape == (48, 64, 3)
    refused(bombs.jpeg_fill_bytes(jpeg, MAX_HEADER_STEPS + 10), "more than 2048")
    refused(bombs.jpeg_app_segments(jpeg, MAX_HEADER_STEPS + 10), "more than 2048")
    assert read(bombs.png(64, 48, chunks_before_idat=100))[1].shape == (48, 64, 3)
    refused(bombs.png(64, 48, chunks_before_idat=MAX_HEADER_STEPS + 10), "more than 2048")


def _files():
    rng = np.random.default_rng(3)
    picture = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (80, 60))
    return {"jpeg": cv2.imencode(".jpg", picture)[1].tobytes(), "png": cv2.imencode(".png", picture)[1].tobytes(),
            "bmp": cv2.imencode(".bmp", picture)[1].tobytes(), "gif": bombs.gif(1, 80, 60)}


@pytest.mark.parametrize("kind", ["jpeg", "png", "bmp", "gif"])
def test_truncated_files_are_named_with_advice(kind):
    """Row 24: a truncated file got the decoder's own text ("jpeg::Uncompress failed ..."); now the element,
    the cause and what to send."""
    data = _files()[kind]
    assert read(data)[1].shape == (60, 80, 3)
    for cut in (len(data) // 2, len(data) - 2):
        text = refused(data[:cut], "truncated or damaged", index=3)
        assert "send the whole file" in text


def test_junk_after_the_end_is_still_accepted():
    files = _files()
    for kind in ("jpeg", "png"):
        assert read(files[kind] + b"trailing junk")[1].shape == (60, 80, 3)


def test_messages_name_the_element():
    refused(b"definitely not an image", "is not an encoded JPEG, PNG, GIF or BMP image", index=7)
    refused(bombs.png(2000, 1000), "limit on pixels per image", index=12)
