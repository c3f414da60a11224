"""Compact, exact-to-1/128-px storage of position maps: fixed point, 2D differences, zlib.

A position map holds crop-pixel coordinates (x = column, y = row, z toward the camera, 0 off the
face), float32 ``(H, W, 3)``: 786,432 bytes at 256x256. Stored instead as:

1. fixed point ``q = round((value + OFFSET) / STEP)``, an integer in ``[0, 65535]`` (16 bits):
   max error ``STEP / 2`` = 1/128 px (0.0078 px), and 0 stays exactly 0;
2. per channel, the 2D second difference ``r[i, j] = q[i, j] - q[i-1, j] - q[i, j-1] + q[i-1, j-1]``
   (``q`` = 0 outside the map), taken modulo 2**16 as a signed 16-bit value: near 0 wherever the
   map is smooth (a plane is predicted exactly);
3. zigzag to unsigned (0, -1, 1, -2... -> 0, 1, 2, 3...), split into a high-byte plane and a
   low-byte plane (the high bytes are almost all 0), zlib.

Decoding inverts each step exactly: two cumulative sums give ``q`` back modulo 2**16, which is
``q`` itself. Real 300W-LP maps take ~11 % of the float32 bytes (``benchmarks/bench_data.py``).
Representable range: the closed interval ``[LOW, HIGH]`` = [-256, 767.984375] crop px (``HIGH`` =
65535 / 64 - 256); a map outside it (or with NaN / inf, complex, non-numeric or empty) is refused
with :class:`prnet.errors.DatasetError`, never clipped.

Byte layout of the zlib payload: ``[2, 3, H, W]`` uint8 (plane: high then low byte; channel x, y,
z; rows; columns). The map's shape is not stored: the decoder is given it (the TFDS feature
knows it). :func:`decode_tf` (for ``tf.data``) and :func:`decode_np` agree bit for bit.
"""

import zlib

import numpy as np

from prnet.errors import DatasetError

#: Sub-pixel step of the stored values, crop pixels (a power of two: decoding is exact in float32).
STEP = 1.0 / 64.0
#: Added before quantising so that negative coordinates (face beyond the crop's left/top) fit.
OFFSET = 256.0
#: Largest decoding error, crop pixels.
MAX_ERROR = STEP / 2
LOW, HIGH = -OFFSET, 65535 * STEP - OFFSET
#: zlib level: 6 is within 1 % of 9 in size and faster to write.
ZLIB_LEVEL = 6


def encode(posmap) -> bytes:
    """``(H, W, 3)`` real-valued position map (crop px; integer or float) -> compressed bytes. Raises
    :class:`DatasetError` for an empty, complex, non-numeric or wrongly shaped map, and when a value is
    not finite or outside the closed interval ``[LOW, HIGH]``."""
    raw = np.asarray(posmap)
    if raw.dtype.kind not in "iuf":
        what = {"c": "complex", "b": "boolean"}.get(raw.dtype.kind, "non-numeric")
        raise DatasetError(f"position map must hold real numbers (crop px), got {what} values (dtype {raw.dtype})")
    p = raw.astype(np.float64)
    if p.ndim != 3 or p.shape[2] != 3:
        raise DatasetError(f"position map must be (H, W, 3), got shape {p.shape}")
    if p.size == 0:
        raise DatasetError(f"position map is empty (shape {p.shape}); a map needs at least one pixel")
    if not np.isfinite(p).all():
        raise DatasetError("position map holds NaN or inf values; check the fit that produced it")
    lo, hi = float(p.min()), float(p.max())
    if lo < LOW or hi > HIGH:
        bad = lo if lo < LOW else hi
        raise DatasetError(
            f"position map value {bad!r} crop px is outside the storable range {LOW:g} <= v <= {HIGH!r} "
            f"(values span {lo!r} to {hi!r}): the mesh lies far outside its crop; check the sample's fit and crop box")
    q = np.round((p + OFFSET) / STEP).astype(np.int64).transpose(2, 0, 1)       # (3, H, W)
    d = np.diff(q, axis=1, prepend=0)
    r = np.diff(d, axis=2, prepend=0)
    r = (r + 32768) % 65536 - 32768                                                # signed 16-bit
    zz = np.where(r >= 0, 2 * r, -2 * r - 1).astype(np.uint16)                    # zigzag
    planes = np.stack([zz >> 8, zz & 0xFF]).astype(np.uint8)
    return zlib.compress(planes.tobytes(), ZLIB_LEVEL)


def _shape_error(size, shape):
    return DatasetError(f"stored position map holds {size} bytes, not the {2 * 3 * shape[0] * shape[1]} of a "
                        f"{tuple(shape)} map: wrong shape or not a position map")


def decode_np(data: bytes, shape=(256, 256, 3)) -> np.ndarray:
    """Bytes from :func:`encode` -> float32 ``shape`` (``(H, W, 3)``) crop px."""
    h, w = int(shape[0]), int(shape[1])
    try:
        raw = np.frombuffer(zlib.decompress(data), np.uint8)
    except zlib.error as e:
        raise DatasetError(f"not a compressed position map ({e})") from e
    if raw.size != 2 * 3 * h * w:
        raise _shape_error(raw.size, shape)
    planes = raw.reshape(2, 3, h, w).astype(np.int64)
    zz = planes[0] * 256 + planes[1]
    r = (zz >> 1) ^ -(zz & 1)
    q = np.cumsum(np.cumsum(r, axis=1) % 65536, axis=2) % 65536
    return q.transpose(1, 2, 0).astype(np.float32) * np.float32(STEP) - np.float32(OFFSET)


def decode_tf(data, shape=(256, 256, 3)):
    """TensorFlow version of :func:`decode_np` (scalar string tensor -> float32 ``shape``)."""
    import tensorflow as tf

    h, w = int(shape[0]), int(shape[1])
    raw = tf.io.decode_raw(tf.io.decode_compressed(data, compression_type="ZLIB"), tf.uint8)
    planes = tf.cast(tf.reshape(raw, (2, 3, h, w)), tf.int32)
    zz = planes[0] * 256 + planes[1]
    r = tf.bitwise.bitwise_xor(tf.bitwise.right_shift(zz, 1), -tf.bitwise.bitwise_and(zz, 1))
    # Reduced modulo 2**16 after each sum: partial sums stay below 2**31 for H, W < 32768 (int32-safe).
    q = tf.math.floormod(tf.cumsum(tf.math.floormod(tf.cumsum(r, axis=1), 65536), axis=2), 65536)
    return tf.transpose(tf.cast(q, tf.float32), (1, 2, 0)) * STEP - OFFSET
