"""Colours of a reconstructed face: per-vertex colours from the photo and the UV texture.

Vertices and position maps are in image pixels (x = column, y = row, pixel centres at integer
coordinates); the UV map is 256x256, UV pixel ``(row, col)`` (see :mod:`prnet.core.uv`).
"""

import cv2
import numpy as np

from prnet.core.uv import UV_SIZE
from prnet.mesh.render import _check_points


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def vertex_colors(image: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Bilinearly sample ``image`` at each vertex's ``(x, y)`` (image pixels; positions outside
    the image are clamped to its border). Returns ``(N, 3)`` float32 RGB in [0, 1]."""
    image = _check_image(image)
    vertices = _check_points(vertices, 2)
    h, w = image.shape[:2]
    x = np.clip(vertices[:, 0].astype(np.float64), 0, w - 1)
    y = np.clip(vertices[:, 1].astype(np.float64), 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return ((top * (1 - fy) + bottom * fy) / 255.0).astype(np.float32)


def uv_texture(image: np.ndarray, posmap_image: np.ndarray, face_mask=None) -> np.ndarray:
    """Unwrap the photo into UV space: UV pixel ``(row, col)`` takes the colour of ``image`` at
    ``posmap_image[row, col, :2]`` (image pixels, bilinear; outside the image -> black).

    Args:
      image: ``(H, W, 3)`` uint8 RGB.
      posmap_image: ``(256, 256, 3)`` position map in image pixels (:func:`prnet.core.crop.crop_to_image`).
      face_mask: optional ``(256, 256)`` mask; pixels where it is 0 are set to black.

    Returns ``(256, 256, 3)`` uint8 RGB texture (z is ignored: occluded parts get the occluder's colour).
    """
    image = _check_image(image)
    pos = np.asarray(posmap_image, dtype=np.float32)
    if pos.ndim != 3 or pos.shape[2] < 2:
        raise ValueError(f"posmap_image must have shape (256, 256, 3), got {pos.shape}")
    tex = cv2.remap(image, np.ascontiguousarray(pos[..., 0]), np.ascontiguousarray(pos[..., 1]),
                    interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if face_mask is not None:
        tex = tex * (np.asarray(face_mask) > 0)[..., None].astype(np.uint8)
    return tex


def template_uv_coords(template) -> np.ndarray:
    """``(43867, 2)`` float32 OBJ texture coordinates of the face vertices: ``u = col / 255``,
    ``v = 1 - row / 255`` (v up), for a texture from :func:`uv_texture` saved as an image."""
    rows, cols = np.divmod(np.asarray(template.face_ind), UV_SIZE)
    return np.stack([cols / (UV_SIZE - 1), 1 - rows / (UV_SIZE - 1)], axis=1).astype(np.float32)
