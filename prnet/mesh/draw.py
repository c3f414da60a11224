"""Overlays on a photo: the 68 landmarks joined along the face contours, and a shaded mesh.

Inputs are in image pixels: x = column (right), y = row (down), pixel centres at integer coordinates.
"""

import cv2
import numpy as np

from prnet.mesh.render import _check_points, render_shaded
from prnet.mesh.texture import _check_image

#: 0-based index ranges of the 68-point contours and whether each is closed.
LANDMARK_CONTOURS = (
    (range(0, 17), False),   # jaw
    (range(17, 22), False),  # right eyebrow (image left)
    (range(22, 27), False),  # left eyebrow
    (range(27, 31), False),  # nose bridge
    (range(31, 36), False),  # nostrils
    (range(36, 42), True),   # right eye
    (range(42, 48), True),   # left eye
    (range(48, 60), True),   # outer lips
    (range(60, 68), True),   # inner lips
)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, *, color=(0, 255, 0), point_color=(255, 0, 0),
                   radius=None, lines: bool = True) -> np.ndarray:
    """Draw 68 landmarks (image pixels, ``(68, 2+)``, x/y first) as dots joined along the face
    contours. Returns a new ``(H, W, 3)`` uint8 RGB image; the input is not modified."""
    out = _check_image(image).copy()
    pts = _check_points(landmarks, 2, "landmarks")[:, :2].astype(np.float64)
    if len(pts) != 68:
        raise ValueError(f"expected 68 landmarks, got {len(pts)}")
    size = min(out.shape[:2])
    radius = radius if radius is not None else max(1, int(round(size / 250)))
    thickness = max(1, radius // 2)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel
    p = np.round(pts * (1 << shift)).astype(np.int32)
    if lines:
        for idx, closed in LANDMARK_CONTOURS:
            cv2.polylines(out, [p[list(idx)].reshape(-1, 1, 2)], closed, color, thickness, cv2.LINE_AA, shift)
    for x, y in p:
        cv2.circle(out, (int(x), int(y)), radius << shift, point_color, -1, cv2.LINE_AA, shift)
    return out


def draw_mesh_overlay(image: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, *, alpha: float = 0.65,
                      color=(200, 200, 255)) -> np.ndarray:
    """Blend a shaded render of the mesh (image pixels) over the photo.

    Returns a new ``(H, W, 3)`` uint8 RGB image: covered pixels are
    ``(1 - alpha) * photo + alpha * shade * color``, the rest is the photo.
    """
    out = _check_image(image).copy()
    shade, mask = render_shaded(vertices, triangles, out.shape[0], out.shape[1])
    mesh = shade[mask][:, None] * np.asarray(color, np.float32)[None]
    out[mask] = np.clip((1 - alpha) * out[mask].astype(np.float32) + alpha * mesh + 0.5, 0, 255).astype(np.uint8)
    return out


#: Edges of the pose box: rear square, front square, and the four edges joining them.
POSE_BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def draw_pose_box(image: np.ndarray, corners: np.ndarray, *, color=(0, 255, 0), thickness=None) -> np.ndarray:
    """Draw a 3D box given its 8 projected corners (``(8, 2+)`` image pixels, rear square then front
    square, as :func:`prnet.mesh.pose.pose_box` mapped by the camera matrix). Returns a new image."""
    out = _check_image(image).copy()
    pts = _check_points(corners, 2, "corners")[:, :2].astype(np.float64)
    if len(pts) != 8:
        raise ValueError(f"expected 8 box corners, got {len(pts)}")
    thickness = thickness if thickness is not None else max(1, int(round(min(out.shape[:2]) / 200)))
    shift = 4
    p = np.round(pts * (1 << shift)).astype(np.int64)
    for a, b in POSE_BOX_EDGES:
        cv2.line(out, (int(p[a, 0]), int(p[a, 1])), (int(p[b, 0]), int(p[b, 1])), color, thickness, cv2.LINE_AA, shift)
    return out
