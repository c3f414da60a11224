"""Training augmentation of (crop, position map) pairs, as in the paper, in pure TF ops.

Everything here runs inside ``tf.data.Dataset.map`` (graph mode, no Python per example) and is
deterministic given a ``seed`` (a ``[2]`` int tensor; stateless random ops), so a resumed run sees
the same augmented examples as an uninterrupted one.

Conventions: crops are 256x256, pixel centres at integer coordinates, x = column (right),
y = row (down); the crop centre is ``(127.5, 127.5)``. Position maps and landmarks hold
``(x, y, z)`` in crop pixels, z toward the camera.

Geometric augmentation draws an angle ``theta`` in ``[-max_rotation, max_rotation]``, a scale ``s``
in ``scale_range`` and a shift ``t`` up to ``max_translation * 256`` px per axis, and maps every
crop point ``p = (x, y)`` to ``p' = s * R(theta) (p - c) + c + t`` (``c`` the crop centre) and
``z' = s * z``. The image is warped with the same matrix (output pixel ``p'`` samples the input,
bilinearly, at the inverse image of ``p'``; outside the crop is black), so the map still points at
the same image content. All map pixels are transformed (background ones too: they carry zero
loss weight in the ``paper`` and ``uniform`` modes); values are not clipped.

Photometric augmentation (image only): per-channel colour scaling in ``color_range`` and, with
probability ``occluder_prob``, one random textured patch (rectangle or ellipse, 15-50 % of the
crop side) pasted over the image.
"""

import dataclasses
import math

import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.errors import AugmentConfigError


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and their ranges (defaults: the paper's)."""

    rotate: bool = True
    max_rotation_deg: float = 45.0
    translate: bool = True
    max_translation: float = 0.1  # fraction of the crop side, per axis
    scale: bool = True
    scale_range: tuple = (0.9, 1.2)
    color: bool = True
    color_range: tuple = (0.6, 1.4)
    occlude: bool = True
    occluder_prob: float = 0.5
    occluder_size_range: tuple = (0.15, 0.5)  # fraction of the crop side

    def __post_init__(self):
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise AugmentConfigError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
        if not 0 <= self.color_range[0] <= self.color_range[1]:
            raise AugmentConfigError(f"color_range must be 0 <= lo <= hi, got {self.color_range}")
        if not 0 <= self.occluder_prob <= 1:
            raise AugmentConfigError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")
        if not 0 < self.occluder_size_range[0] <= self.occluder_size_range[1]:
            raise AugmentConfigError(f"occluder_size_range must be 0 < lo <= hi, got {self.occluder_size_range}")

    @property
    def geometric(self) -> bool:
        return self.rotate or self.translate or self.scale

    @property
    def enabled(self) -> bool:
        return self.geometric or self.color or self.occlude


NO_AUGMENTATION = AugmentConfig(rotate=False, translate=False, scale=False, color=False, occlude=False)


def similarity_matrix(angle_rad, scale, translation, size: int = CROP_SIZE):
    """``[3, 3]`` float32 matrix of ``p -> scale * R(angle) (p - c) + c + translation`` on crop
    pixels (x, y, 1), ``c = ((size-1)/2, (size-1)/2)``; positive angles turn x toward y (clockwise
    on screen, since y points down)."""
    angle = tf.cast(angle_rad, tf.float32)
    s = tf.cast(scale, tf.float32)
    t = tf.cast(translation, tf.float32)
    c = (size - 1) / 2.0
    cos, sin = s * tf.cos(angle), s * tf.sin(angle)
    tx = c + t[0] - (cos * c - sin * c)
    ty = c + t[1] - (sin * c + cos * c)
    zero, one = tf.zeros_like(cos), tf.ones_like(cos)
    return tf.stack([tf.stack([cos, -sin, tx]), tf.stack([sin, cos, ty]), tf.stack([zero, zero, one])])


def transform_points(points, matrix, scale):
    """Apply ``matrix`` to the x, y of ``points`` (``[..., 3]`` crop px) and multiply z by ``scale``."""
    points = tf.convert_to_tensor(points, tf.float32)
    xy = points[..., :2]
    new_xy = tf.linalg.matvec(matrix[:2, :2], xy) + matrix[:2, 2]
    return tf.concat([new_xy, points[..., 2:] * tf.cast(scale, tf.float32)], axis=-1)


def warp_image(image, matrix):
    """Warp ``image`` (``[H, W, C]`` float32) so that input pixel ``p`` lands at ``matrix @ p``.

    Bilinear, constant 0 outside; pixel centres at integer coordinates (matches
    ``cv2.warpAffine(image, matrix[:2], ...)``).
    """
    image = tf.convert_to_tensor(image, tf.float32)
    inverse = tf.linalg.inv(tf.cast(matrix, tf.float64))
    inverse = tf.cast(inverse / inverse[2, 2], tf.float32)
    transform = tf.reshape(inverse, [9])[:8]
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform[tf.newaxis], output_shape=shape[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], image.shape)


def random_geometry(seed, config: AugmentConfig):
    """``(matrix [3, 3], scale)`` drawn from ``config`` with the stateless ``seed`` ([2] int)."""
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    max_angle = math.radians(config.max_rotation_deg) if config.rotate else 0.0
    angle = tf.random.stateless_uniform([], seeds[0], -max_angle, max_angle) if config.rotate else 0.0
    if config.scale:
        scale = tf.random.stateless_uniform([], seeds[1], config.scale_range[0], config.scale_range[1])
    else:
        scale = tf.constant(1.0)
    if config.translate:
        shift = config.max_translation * CROP_SIZE
        translation = tf.random.stateless_uniform([2], seeds[2], -shift, shift)
    else:
        translation = tf.zeros([2])
    return similarity_matrix(angle, scale, translation), scale


def random_color_scale(image, seed, color_range=(0.6, 1.4)):
    """Multiply each RGB channel by its own factor in ``color_range``; clip to ``[0, 1]``."""
    factors = tf.random.stateless_uniform([3], seed, color_range[0], color_range[1])
    return tf.clip_by_value(image * factors, 0.0, 1.0)


def random_occluder(image, seed, size_range=(0.15, 0.5)):
    """Paste one random textured patch (rectangle or ellipse) over ``image`` (``[256, 256, 3]`` in [0, 1]).

    The texture is a random base colour plus smooth (bilinearly upsampled 6x6) colour noise plus
    fine per-pixel noise; the patch's centre is uniform over the crop, its sides in
    ``size_range`` times the crop side.
    """
    s = tf.random.experimental.stateless_split(seed, num=6)
    size = tf.shape(image)[:2]
    side = tf.cast(size[0], tf.float32)
    half = 0.5 * side * tf.random.stateless_uniform([2], s[0], size_range[0], size_range[1])
    center = tf.random.stateless_uniform([2], s[1], 0.0, side)
    ellipse = tf.random.stateless_uniform([], s[2]) < 0.5
    ys, xs = tf.meshgrid(tf.range(side), tf.range(side), indexing="ij")
    dx = (xs - center[0]) / half[0]
    dy = (ys - center[1]) / half[1]
    inside = tf.where(ellipse, dx * dx + dy * dy <= 1.0, (tf.abs(dx) <= 1.0) & (tf.abs(dy) <= 1.0))
    base = tf.random.stateless_uniform([1, 1, 3], s[3])
    smooth = tf.image.resize(tf.random.stateless_uniform([6, 6, 3], s[4]), size, method="bilinear")
    fine = tf.random.stateless_uniform(tf.concat([size, [3]], 0), s[5])
    texture = tf.clip_by_value(0.5 * base + 0.4 * smooth + 0.2 * (fine - 0.5), 0.0, 1.0)
    return tf.where(inside[..., tf.newaxis], texture, image)


def to_float_image(image):
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; float images are returned as float32 unchanged."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def augment(image, posmap, seed, config: AugmentConfig = AugmentConfig(), landmarks=None):
    """Augment one training pair consistently.

    Args:
      image: ``[256, 256, 3]`` uint8 or float32 in ``[0, 1]`` RGB crop.
      posmap: ``[256, 256, 3]`` float32 position map in crop pixels.
      seed: ``[2]`` int32/int64 stateless seed; the same seed gives the same augmentation.
      config: which augmentations run.
      landmarks: optional ``[68, 3]`` (or ``[K, 3]``) crop-pixel points, moved like the map.
    Returns:
      ``(image float32 [0, 1], posmap, landmarks)`` (``landmarks`` is None when not given).
    """
    image = to_float_image(image)
    posmap = tf.convert_to_tensor(posmap, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    if config.geometric:
        matrix, scale = random_geometry(seeds[0], config)
        image = warp_image(image, matrix)
        posmap = transform_points(posmap, matrix, scale)
        if landmarks is not None:
            landmarks = transform_points(landmarks, matrix, scale)
    if config.color:
        image = random_color_scale(image, seeds[1], config.color_range)
    if config.occlude and config.occluder_prob > 0:
        occ_seeds = tf.random.experimental.stateless_split(seeds[2], num=2)
        apply = tf.random.stateless_uniform([], occ_seeds[0]) < config.occluder_prob
        image = tf.cond(apply, lambda: random_occluder(image, occ_seeds[1], config.occluder_size_range),
                        lambda: image)
    return image, posmap, landmarks
