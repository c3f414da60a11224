"""Twin of :func:`prnet.mesh.pose.estimate_pose` (:func:`prnet.core.transforms.umeyama`,
:func:`~prnet.core.transforms.flip_y`, :func:`~prnet.core.transforms.rotation_to_euler`); pinned by
tests/test_graph_twins.py.

Head pose in graph ops, for the SavedModel's ``predict_images_detect``: angles ``(yaw, pitch, roll)``
in degrees, the 300W-LP ``Pose_Para`` convention of :mod:`prnet.core.transforms`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from prnet.core.transforms import FLIP_Y

#: ``F R F`` (``F`` = :data:`prnet.core.transforms.FLIP_Y`) is ``R`` times these signs, element by element.
_FLIP_SIGNS = np.outer(np.diag(FLIP_Y), np.diag(FLIP_Y))


def pose_angles(vertices, canonical):
    """Head pose ``(yaw, pitch, roll)`` degrees (float64 ``(3,)``) of ``(P, 3)`` face vertices, in graph ops.

    As :func:`prnet.mesh.pose.estimate_pose`: the rotation of the least-squares similarity
    ``vertices ~ s R canonical + t`` (Umeyama, proper rotation), moved to the y-up frame
    (``F R F``, ``F = diag(1, -1, 1)``) and read as ``Rx(pitch) Ry(yaw) Rz(roll)``
    (:func:`prnet.core.transforms.rotation_to_euler`, gimbal lock: roll 0). ``vertices`` may be in crop
    or image pixels (the crop differs by a uniform scale and a shift only: same rotation).
    """
    src = tf.cast(canonical, tf.float64)
    dst = tf.cast(vertices, tf.float64)
    sc = src - tf.reduce_mean(src, 0)
    dc = dst - tf.reduce_mean(dst, 0)
    cov = tf.matmul(dc, sc, transpose_a=True) / tf.cast(tf.shape(src)[0], tf.float64)
    _, u, v = tf.linalg.svd(cov)
    one = tf.ones([], tf.float64)
    d = tf.where(tf.linalg.det(u) * tf.linalg.det(v) < 0, -one, one)  # a proper rotation, never a reflection
    rot = tf.matmul(u * tf.stack([one, one, d]), v, transpose_b=True)
    r = rot * tf.constant(_FLIP_SIGNS, tf.float64)  # F R F
    yaw = tf.asin(tf.clip_by_value(-r[0, 2], -1.0, 1.0))
    regular = tf.abs(r[0, 2]) < 1 - 1e-9
    pitch = tf.where(regular, tf.atan2(r[1, 2], r[2, 2]), tf.atan2(-r[2, 1], r[1, 1]))
    roll = tf.where(regular, tf.atan2(r[0, 1], r[0, 0]), tf.zeros([], tf.float64))
    return tf.stack([yaw, pitch, roll]) * (180.0 / math.pi)

