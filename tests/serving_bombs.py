"""Valid-but-costly image files for the serving limits (tests/test_serving_limits.py and
benchmarks/bench_serving_limits.py): each is small on disk and would cost far more memory or CPU
than its size suggests if the serving graph decoded it as TensorFlow's decoders do.

Every builder returns ``bytes``. Sizes are pixels (width ``w``, height ``h``).
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _gif_frame_data(w, h):
    """(LZW minimum code size byte + data sub-blocks + terminator) of a w x h frame of colour 0, from PIL's
    encoder (constant frames compress ~1000:1), and the frame's own descriptor flags."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8), "L").save(buf, format="GIF")
    data = buf.getvalue()
    packed = data[10]
    pos = 13 + (3 * (2 << (packed & 7)) if packed & 0x80 else 0)
    while data[pos] == 0x21:  # extensions before the frame
        pos += 2
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    assert data[pos] == 0x2C
    local = data[pos + 9]
    start = pos + 10 + (3 * (2 << (local & 7)) if local & 0x80 else 0)
    end = start + 1
    while data[end]:
        end += 1 + data[end]
    return data[start:end + 1], data[13:13 + (3 * (2 << (packed & 7)) if packed & 0x80 else 0)], packed


def gif(frames, w, h, screen=None, extension=b"", first=None):
    """A GIF of ``frames`` black frames of ``w`` x ``h`` at (0, 0) on a logical screen ``screen`` (w, h;
    default the frame size). ``extension``: raw blocks put before the first frame. ``first``: (w, h) of a
    different first frame."""
    body, table, packed = _gif_frame_data(w, h)
    sw, sh = screen or (w, h)
    out = [b"GIF89a", struct.pack("<HHBBB", sw, sh, packed | 0x80 if table else packed, 0, 0), table, extension]
    for k in range(frames):
        fw, fh = (first if k == 0 and first else (w, h))
        data = _gif_frame_data(fw, fh)[0] if k == 0 and first else body
        out += [b"\x2c", struct.pack("<HHHHB", 0, 0, fw, fh, 0), data]
    return b"".join(out) + b";"


def gif_comment(n_subblocks, size=1):
    """A GIF comment extension of ``n_subblocks`` data sub-blocks of ``size`` bytes each."""
    return b"\x21\xfe" + (bytes([size]) + b"c" * size) * n_subblocks + b"\0"


def progressive_jpeg(w, h, repeat_last_scan=0):
    """A progressive JPEG of a black ``w`` x ``h`` picture; its last scan repeated ``repeat_last_scan`` more
    times (each extra scan makes the decoder pass over every block again)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    assert data.endswith(b"\xff\xd9")
    last = data.rfind(b"\xff\xda")
    scan = data[last:-2]
    return data[:-2] + scan * repeat_last_scan + b"\xff\xd9"


def jpeg(w, h, quality=90):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_fill_bytes(data, n):
    """A JPEG with ``n`` 0xFF fill bytes before its first marker after SOI (valid: decoders skip them)."""
    return data[:2] + b"\xff" * n + data[2:]


def jpeg_app_segments(data, n):
    """A JPEG with ``n`` empty APP15 segments after SOI."""
    return data[:2] + b"\xff\xef\x00\x02" * n + data[2:]


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, chunks_before_idat=0, idat=None):
    """A grey PNG of ``w`` x ``h`` black pixels (built row by row: tiny for any size), with
    ``chunks_before_idat`` empty private ancillary chunks before its data; ``idat``: other IDAT bytes."""
    if idat is None:
        z = zlib.compressobj(9)
        row = b"\0" * (w + 1)
        idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"prVt", b"") * chunks_before_idat + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
