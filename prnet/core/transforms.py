"""Rotations and rigid/similarity alignment: the one home of the head-pose convention.

Frames. The *model frame* (BFM, 300W-LP / AFLW2000-3D fits) has x right, y UP, z toward the
camera. The *image frame* (image / crop pixels, position maps) has x = column (right), y = row
(DOWN), z toward the camera. A rotation ``R`` in one frame is ``F @ R @ F`` in the other, with
``F = diag(1, -1, 1)`` (:func:`flip_y`, its own inverse).

Angles. ``Pose_Para``'s ``(pitch, yaw, roll)`` in RADIANS, 3DDFA's order and signs, model frame::

    R = Rx(pitch) @ Ry(yaw) @ Rz(roll)
    Rx(a) = [[1, 0, 0], [0, c, s], [0, -s, c]]
    Ry(a) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
    Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]     (c = cos a, s = sin a)

(each the transpose of the textbook right-handed rotation). A model point ``p`` goes to
``R @ p``. In words: yaw > 0 turns the nose toward the image's left (the subject turns to their
right), pitch > 0 raises the nose (looking up), roll > 0 turns the face clockwise in the image.
Callers working in degrees or in ``(yaw, pitch, roll)`` order convert at the call site.
"""

import math

import numpy as np

#: ``diag(1, -1, 1)``: flips y between the model frame (y up) and the image frame (y down).
FLIP_Y = np.diag([1.0, -1.0, 1.0])


def flip_y(rotation) -> np.ndarray:
    """``F @ rotation @ F`` with ``F = diag(1, -1, 1)``: a rotation moved between the y-up model
    frame and the y-down image frame (either way)."""
    return FLIP_Y @ np.asarray(rotation, dtype=np.float64) @ FLIP_Y


def euler_to_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """``Rx(pitch) @ Ry(yaw) @ Rz(roll)`` (radians, model frame; module docstring) as (3, 3) float64."""
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def rotation_to_euler(rotation):
    """``(pitch, yaw, roll)`` in radians of a model-frame rotation; inverse of :func:`euler_to_rotation`.

    Yaw lies in [-pi/2, pi/2]. At gimbal lock (|yaw| = pi/2) only ``pitch -/+ roll`` is defined:
    roll is set to 0.
    """
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.asin(float(np.clip(-r[0, 2], -1.0, 1.0)))
    if abs(r[0, 2]) < 1 - 1e-9:
        pitch = math.atan2(r[1, 2], r[2, 2])
        roll = math.atan2(r[0, 1], r[0, 0])
    else:  # R = Rx(pitch -/+ roll) @ Ry(+-90): only the combination is defined.
        pitch = math.atan2(-r[2, 1], r[1, 1])
        roll = 0.0
    return pitch, yaw, roll


def umeyama(source, target, scale: bool = True):
    """Least-squares ``target ~ s * R @ source + t`` for ``(N, 3)`` corresponding points (Umeyama 1991).

    ``R`` is a proper rotation (det +1, never a reflection); with ``scale=False`` ``s = 1``
    (rigid, Kabsch). Any frame and unit, as long as both sets share them. Returns
    ``(s float, R (3, 3), t (3,))`` float64; apply as ``s * points @ R.T + t``.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"need two (N, 3) point sets of equal shape with N >= 3, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = (u * d) @ vt
    s = 1.0
    if scale:
        var_s = (sc ** 2).sum() / len(src)
        s = float((sig * d).sum() / var_s) if var_s > 0 else 1.0
    return s, rot, mu_d - s * rot @ mu_s
