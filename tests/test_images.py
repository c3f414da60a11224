"""prnet.core.images: the one image reader honours the EXIF orientation (all 8 tags, mirrored ones
included) for JPEG, PNG and WebP, keeps 16-bit / alpha / grey handling, and reports broken links."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from prnet.core.images import ORIENTATION_STEPS, apply_orientation, decode_image, exif_orientation, read_image
from prnet.errors import ImageReadError


def _tiff_ifd(tag: int, order: str = "MM") -> bytes:
    """A minimal TIFF structure (EXIF payload): IFD0 with one SHORT entry Orientation = ``tag``."""
    o = ">" if order == "MM" else "<"
    head = b"MM\x00*" if order == "MM" else b"II*\x00"
    return (head + struct.pack(o + "I", 8) + struct.pack(o + "H", 1)
            + struct.pack(o + "HHIHH", 0x0112, 3, 1, tag, 0) + struct.pack(o + "I", 0))


def jpeg_with_orientation(bgr, tag: int, order: str = "MM", after_jfif: bool = False) -> bytes:
    """``cv2.imencode``'s JPEG of ``bgr`` with an APP1 Exif segment carrying Orientation ``tag``
    inserted (right after SOI, or after the JFIF APP0 segment): the compressed pixels are untouched."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = buf.tobytes()
    payload = b"Exif\x00\x00" + _tiff_ifd(tag, order)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    at = 2
    if after_jfif:
        assert data[2:4] == b"\xff\xe0"
        at = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:at] + app1 + data[at:]


def png_with_orientation(image, tag: int) -> bytes:
    """``cv2.imencode``'s PNG with an ``eXIf`` chunk (little-endian TIFF) after IHDR."""
    ok, buf = cv2.imencode(".png", image)
    assert ok
    data = buf.tobytes()
    body = _tiff_ifd(tag, "II")
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return data[:33] + chunk + data[33:]  # signature (8) + IHDR chunk (25)


def as_displayed(stored, tag: int):
    """What a viewer shows for ``tag``, written with numpy's rotations (independent of ORIENTATION_STEPS)."""
    t = (1, 0, *range(2, stored.ndim))
    return {1: stored, 2: np.fliplr(stored), 3: np.rot90(stored, 2), 4: np.flipud(stored),
            5: stored.transpose(t), 6: np.rot90(stored, -1), 7: np.rot90(stored.transpose(t), 2),
            8: np.rot90(stored, 1)}[tag]


def _asymmetric_bgr():
    """A non-square picture whose 8 orientations all differ."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    return cv2.resize(small, (80, 48), interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("tag", range(1, 9))
@pytest.mark.parametrize("order, after_jfif", [("MM", False), ("II", True)])
def test_every_jpeg_exif_orientation_gives_the_displayed_pixels(tmp_path, tag, order, after_jfif):
    bgr = _asymmetric_bgr()
    plain = tmp_path / "plain.jpg"
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    plain.write_bytes(buf.tobytes())
    stored = read_image(plain)  # no EXIF: the stored pixels
    path = tmp_path / f"photo_{tag}.jpg"
    path.write_bytes(jpeg_with_orientation(bgr, tag, order, after_jfif))
    assert exif_orientation(path.read_bytes()) == tag
    got = read_image(path)
    expected = as_displayed(stored, tag)
    assert got.shape == expected.shape == ((48, 80, 3) if tag < 5 else (80, 48, 3))
    np.testing.assert_array_equal(got, expected)
    # the same as cv2.imread (which the dataset builders used) and as decoding the bytes
    np.testing.assert_array_equal(got, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
    np.testing.assert_array_equal(decode_image(path.read_bytes()), expected)


def test_the_eight_orientations_are_distinct_and_steps_match_numpy():
    stored = _asymmetric_bgr()
    shown = [apply_orientation(stored, tag) for tag in range(1, 9)]
    for tag, image in zip(range(1, 9), shown):
        np.testing.assert_array_equal(image, as_displayed(stored, tag))
    assert len({(a.shape, a.tobytes()) for a in shown}) == 8
    assert set(ORIENTATION_STEPS) == set(range(1, 9))
    assert {s for steps in ORIENTATION_STEPS.values() for s in steps} == {"transpose", "flip_left_right",
                                                                          "flip_up_down"}


@pytest.mark.parametrize("tag", [3, 6, 7, 8])
def test_png_orientation_keeps_16_bit_alpha_and_grey(tmp_path, tag):
    rng = np.random.default_rng(tag)
    bgr = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    rgb = bgr[..., ::-1]
    cases = {
        "deep.png": (bgr.astype(np.uint16) * 257, rgb),
        "alpha.png": (np.concatenate([bgr, np.full((12, 20, 1), 9, np.uint8)], axis=2), rgb),
        "grey.png": (bgr[..., 0], np.repeat(bgr[..., :1], 3, axis=2)),
    }
    for name, (stored, rgb_stored) in cases.items():
        path = tmp_path / name
        path.write_bytes(png_with_orientation(stored, tag))
        got = read_image(path)
        assert got.dtype == np.uint8 and got.shape[2] == 3, name
        np.testing.assert_array_equal(got, as_displayed(rgb_stored, tag), err_msg=name)


def test_webp_and_tiff_orientation_as_pillow_shows_them(tmp_path):
    """WebP carries EXIF in a chunk (applied here); TIFF's own tag is applied by OpenCV's decoder (not twice)."""
    pil = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    rgb = _asymmetric_bgr()[..., ::-1]
    for tag in (2, 6, 7):
        webp, tiff = tmp_path / f"p{tag}.webp", tmp_path / f"p{tag}.tif"
        exif = pil.Exif()
        exif[0x0112] = tag
        pil.fromarray(rgb).save(webp, "WEBP", lossless=True, exif=exif.tobytes())
        pil.fromarray(rgb).save(tiff, "TIFF", tiffinfo={0x0112: tag})
        for path in (webp, tiff):
            with pil.open(path) as im:
                shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            np.testing.assert_array_equal(shown, as_displayed(rgb, tag), err_msg=path.name)
            np.testing.assert_array_equal(read_image(path), shown, err_msg=path.name)


def test_missing_or_malformed_exif_means_upright(tmp_path):
    bgr = _asymmetric_bgr()
    upright = decode_image(cv2.imencode(".jpg", bgr)[1].tobytes())
    good = jpeg_with_orientation(bgr, 6)
    at = good.index(b"\x01\x12")  # the Orientation entry (big-endian)
    bad_values = [good[:at + 8] + struct.pack(">H", v) + good[at + 10:] for v in (0, 9, 0xFFFF)]
    wrong_type = good[:at + 2] + struct.pack(">H", 4) + good[at + 4:]  # LONG instead of SHORT
    bad_offset = good.replace(b"MM\x00*\x00\x00\x00\x08", b"MM\x00*\xff\xff\xff\x00")  # IFD beyond the segment
    not_exif = good.replace(b"Exif\x00\x00", b"Exxx\x00\x00")
    for data in (*bad_values, wrong_type, bad_offset, not_exif):
        assert exif_orientation(data) == 1
        np.testing.assert_array_equal(decode_image(data), upright)
    assert upright.shape == (48, 80, 3)
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"\x89PNG\r\n\x1a\n\x00\x00", b"RIFF\x00\x00\x00\x00WEBP"):
        assert exif_orientation(junk) == 1


def test_broken_symlink_is_named_as_such(tmp_path):
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    with pytest.raises(ImageReadError, match="gone.jpg is a broken symbolic link"):
        read_image(link)
