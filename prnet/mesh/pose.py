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


def camera_matrix(vertices: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """The affine camera of the pose fit: ``(3, 4)`` ``P = [scale * R | t]`` with
    ``vertices ~ P @ [canonical; 1]`` (image pixels, x right, y down, z toward the camera). Rows 0-1
    project a canonical point to image pixels; row 2 gives its z. (The original's ``isPose``
    camera matrix, in this library's y-down frame.)"""
    scale, rot, t = umeyama(canonical, vertices)
    return np.hstack([scale * rot, np.asarray(t, np.float64).reshape(3, 1)])


#: Pose box proportions, in landmark box widths w: rear square side, front square side, and the
#: front square's distance toward the camera (the original ``plot_pose_box``: half sides 90 and 105,
#: depth 110, with the rear square about as wide as the face).
POSE_BOX_REAR, POSE_BOX_FRONT, POSE_BOX_DEPTH = 1.0, 105 / 90, 110 / 180


def pose_box(canonical_landmarks: np.ndarray) -> np.ndarray:
    """The 3D pose box in the canonical (mean face) frame: ``(8, 3)`` corners, rear square first
    (clockwise on screen from top-left), then the front square. The rear square is centred on the
    mean of the jaw and eyebrow landmarks (0-26) at their mean depth, side = the landmark box width;
    the front square is larger and nearer the camera (+z). Map with :func:`camera_matrix`."""
    lm = np.asarray(canonical_landmarks, dtype=np.float64)
    width = float(np.ptp(lm[:, 0]))
    centre = lm[:27].mean(axis=0)
    unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) / 2
    rear = np.hstack([centre[:2] + unit * width * POSE_BOX_REAR, np.full((4, 1), centre[2])])
    front = np.hstack([centre[:2] + unit * width * POSE_BOX_FRONT,
                       np.full((4, 1), centre[2] + width * POSE_BOX_DEPTH)])
    return np.vstack([rear, front])
