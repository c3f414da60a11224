"""Head pose of a reconstructed face, and frontalisation, by alignment to the template's mean face.

Frames: vertices are in image pixels (x right, y down, z toward the camera) and so is the
template's ``canonical_vertices``; ``vertices ~ scale * R @ canonical + t`` with ``R`` in the
image frame. Angles are reported in degrees as ``(yaw, pitch, roll)`` in the 300W-LP /
AFLW2000-3D ``Pose_Para`` convention (:mod:`prnet.core.transforms`: ``R = F @ R_model @ F`` with
``F = diag(1, -1, 1)``), so they compare directly with the ground truth.
"""

import math

import numpy as np

from prnet.core.transforms import flip_y, rotation_to_euler, umeyama


def estimate_pose(vertices: np.ndarray, canonical: np.ndarray):
    """Head pose of a face by aligning it to the template's mean face, as the original does.

    Args:
      vertices: ``(N, 3)`` image pixels (e.g. the 43,867 face vertices).
      canonical: ``(N, 3)`` the same points on the frontal mean face
        (``UVTemplate.canonical_vertices``, also y down / z toward the camera).

    Returns ``(R, (yaw, pitch, roll))``: ``R`` (3, 3) image-frame rotation with
    ``vertices ~ scale * R @ canonical + t`` and the angles in degrees (at gimbal lock, roll = 0).
    """
    _, rot, _ = umeyama(canonical, vertices)
    pitch, yaw, roll = rotation_to_euler(flip_y(rot))
    return rot, tuple(float(math.degrees(a)) for a in (yaw, pitch, roll))


def frontalize(vertices: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """Undo the head pose: the vertices mapped by the inverse similarity onto ``canonical``'s
    frame (frontal, y down, z toward the camera). Returns ``(N, 3)`` float32."""
    scale, rot, t = umeyama(canonical, vertices)
    v = np.asarray(vertices, dtype=np.float64)
    return ((v - t) @ rot / scale).astype(np.float32)
