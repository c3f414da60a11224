"""Mesh post-processing: from a position map to image-space vertices, colours, pose, renders.

Coordinate conventions (the same everywhere in the library):

* Image / crop pixels: x = column (right), y = row (down), pixel centres at integer coordinates.
* z points toward the camera and is scaled like x and y (pixels); its origin is arbitrary
  (training maps have min z = 0 over the face). Larger z = nearer: renders keep the largest z.
* A crop transform ``tform`` (3x3) maps homogeneous image pixels ``(x, y, 1)`` to crop pixels
  with scale ``s``; crop ``z`` becomes image ``z / s``.
* Head pose: ``vertices ~ scale * R @ canonical + t`` (image frame). Angles are reported in
  degrees in the convention of the 300W-LP / AFLW2000-3D ``Pose_Para`` annotations, so they can
  be compared with the ground truth directly: in the y-up model frame (x right, y up, z toward
  the camera) ``R_up = F R F`` with ``F = diag(1, -1, 1)`` and
  ``R_up = Rx(pitch) @ Ry(yaw) @ Rz(roll)``, where ``Rx(a) = [[1,0,0],[0,c,s],[0,-s,c]]``,
  ``Ry(a) = [[c,0,-s],[0,1,0],[s,0,c]]``, ``Rz(a) = [[c,s,0],[-s,c,0],[0,0,1]]``. In words:
  yaw > 0 turns the nose toward the image's left (the subject turns to their right),
  pitch > 0 raises the nose (looking up), roll > 0 turns the face clockwise in the image.
"""

import math

import cv2
import numpy as np

from prnet.mesh.obj import write_obj  # noqa: F401  (re-exported: part of this module's API)
from prnet.mesh.raster import interpolate, rasterize
from prnet.core.uv import UV_SIZE

__all__ = [
    "posmap_to_image", "vertex_colors", "similarity_transform", "angles_to_rotation",
    "rotation_to_angles", "estimate_pose", "frontalize", "vertex_normals", "render_depth",
    "depth_to_uint8", "render_colors", "render_shaded", "uv_texture", "template_uv_coords",
    "write_obj", "draw_landmarks", "draw_mesh_overlay", "LANDMARK_CONTOURS",
]

_FLIP_Y = np.diag([1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- coordinates
def crop_scale(tform: np.ndarray) -> float:
    """Scale ``s`` (crop pixels per image pixel) of a 3x3 crop transform."""
    tform = np.asarray(tform, dtype=np.float64)
    return float(math.sqrt(abs(np.linalg.det(tform[:2, :2]))))


def posmap_to_image(posmap_crop: np.ndarray, tform: np.ndarray) -> np.ndarray:
    """Map crop-pixel positions to image pixels: ``(x, y) <- inv(tform) @ (x, y, 1)``, ``z <- z / s``.

    Args:
      posmap_crop: ``(..., 3)`` positions in crop pixels (a ``(256, 256, 3)`` map or any points).
      tform: ``(3, 3)`` image -> crop transform (see :mod:`prnet.core.crop`).

    Returns the same shape, float32, in image pixels (z keeps its origin, scaled by ``1 / s``).
    """
    pos = np.asarray(posmap_crop)
    tform = np.asarray(tform, dtype=np.float64)
    if pos.shape[-1] != 3:
        raise ValueError(f"expected positions with a last axis of 3 (x, y, z), got shape {pos.shape}")
    if tform.shape != (3, 3):
        raise ValueError(f"tform must be a 3x3 matrix, got shape {tform.shape}")
    inv = np.linalg.inv(tform)
    p = pos.reshape(-1, 3).astype(np.float64)
    xy = p[:, :2] @ inv[:2, :2].T + inv[:2, 2]
    w = p[:, :2] @ inv[2, :2] + inv[2, 2]  # 1 for affine transforms
    out = np.concatenate([xy / w[:, None], p[:, 2:3] / crop_scale(tform)], axis=1)
    return out.reshape(pos.shape).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _check_points(points: np.ndarray, min_dims: int = 3, name: str = "vertices") -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < min_dims:
        raise ValueError(f"{name} must have shape (N, {min_dims}{'+' if min_dims < 3 else ''}), got {points.shape}")
    return points


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


# ----------------------------------------------------------------------------- pose
def similarity_transform(source: np.ndarray, target: np.ndarray):
    """Least-squares similarity ``target ~ scale * R @ source + t`` (Umeyama 1991).

    Args: ``(N, 3)`` corresponding points. Returns ``(scale, R (3, 3) proper rotation, t (3,))``.
    """
    src = _check_points(source).astype(np.float64)
    dst = _check_points(target, name="target").astype(np.float64)
    if src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"need two (N, 3) point sets of equal shape with N >= 3, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = (u * d) @ vt
    var_s = (sc ** 2).sum() / len(src)
    scale = float((sig * d).sum() / var_s) if var_s > 0 else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation ``R`` (image frame: x right, y down, z toward the camera) for angles in degrees.

    Inverse of :func:`rotation_to_angles`; see the module docstring for the convention.
    """
    p, y, r = np.deg2rad([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return _FLIP_Y @ (rx @ ry @ rz) @ _FLIP_Y


def rotation_to_angles(rotation: np.ndarray):
    """``(yaw, pitch, roll)`` in degrees of an image-frame rotation (see the module docstring).

    At gimbal lock (|yaw| = 90 degrees) roll is set to 0.
    """
    r = _FLIP_Y @ np.asarray(rotation, dtype=np.float64) @ _FLIP_Y
    yaw = math.asin(float(np.clip(-r[0, 2], -1.0, 1.0)))
    if abs(r[0, 2]) < 1 - 1e-9:
        pitch = math.atan2(r[1, 2], r[2, 2])
        roll = math.atan2(r[0, 1], r[0, 0])
    else:  # R = Rx(pitch -/+ roll) @ Ry(+-90): only the combination is defined.
        pitch = math.atan2(-r[2, 1], r[1, 1])
        roll = 0.0
    return tuple(float(math.degrees(a)) for a in (yaw, pitch, roll))


def estimate_pose(vertices: np.ndarray, canonical: np.ndarray):
    """Head pose of a face by aligning it to the template's mean face, as the original does.

    Args:
      vertices: ``(N, 3)`` image pixels (e.g. the 43,867 face vertices).
      canonical: ``(N, 3)`` the same points on the frontal mean face
        (``UVTemplate.canonical_vertices``, also y down / z toward the camera).

    Returns ``(R, (yaw, pitch, roll))``: ``R`` (3, 3) rotation with
    ``vertices ~ scale * R @ canonical + t`` (image frame) and the angles in degrees.
    """
    _, rot, _ = similarity_transform(canonical, vertices)
    return rot, rotation_to_angles(rot)


def frontalize(vertices: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """Undo the head pose: the vertices mapped by the inverse similarity onto ``canonical``'s
    frame (frontal, y down, z toward the camera). Returns ``(N, 3)`` float32."""
    scale, rot, t = similarity_transform(canonical, vertices)
    v = np.asarray(vertices, dtype=np.float64)
    return ((v - t) @ rot / scale).astype(np.float32)


# ----------------------------------------------------------------------------- rendering
def _check_mesh(vertices, triangles, min_dims=3):
    vertices = _check_points(vertices, min_dims)
    triangles = np.asarray(triangles)
    if triangles.ndim != 2 or triangles.shape[1] != 3 or not np.issubdtype(triangles.dtype, np.integer):
        raise ValueError(f"triangles must be an integer array of shape (T, 3), got {triangles.dtype} {triangles.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise ValueError(f"triangle indices must lie in [0, {len(vertices) - 1}]")
    return vertices, triangles


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit per-vertex normals ``(N, 3)`` float32 (area-weighted triangle normals).

    With the UV triangulation (clockwise on screen, y down) the normals point out of the face,
    i.e. toward the camera (+z) on a frontal face. Vertices of no triangle get ``(0, 0, 0)``.
    """
    vertices, triangles = _check_mesh(vertices, triangles)
    v = vertices[:, :3].astype(np.float64)
    p0, p1, p2 = v[triangles[:, 0]], v[triangles[:, 1]], v[triangles[:, 2]]
    fn = np.cross(p1 - p0, p2 - p0)
    n = np.zeros_like(v)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(triangles[:, k], weights=fn[:, c], minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0).astype(np.float32)


def render_depth(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, *,
                 background: float = 0.0, return_mask: bool = False):
    """Z-buffered depth image of a mesh.

    Args:
      vertices: ``(N, 3)`` image pixels (x right, y down, z toward the camera).
      triangles: ``(T, 3)`` vertex indices.
      height, width: output size in pixels.

    Returns ``(H, W)`` float32: the interpolated z of the nearest (largest-z) surface at each pixel
    centre, ``background`` where no triangle covers it; with ``return_mask`` also the ``(H, W)``
    bool coverage mask. Use :func:`depth_to_uint8` for a viewable PNG.
    """
    vertices, triangles = _check_mesh(vertices, triangles)
    tri_index, bary = rasterize(vertices[:, :3], triangles, height, width)
    depth = interpolate(vertices[:, 2:3], triangles, tri_index, bary, background=background)[..., 0]
    return (depth, tri_index >= 0) if return_mask else depth


def depth_to_uint8(depth: np.ndarray, mask=None) -> np.ndarray:
    """Normalise a depth image for display: covered pixels linearly to 1 (far) .. 255 (near),
    background 0. ``mask`` defaults to ``depth != 0``."""
    depth = np.asarray(depth, dtype=np.float64)
    mask = depth != 0 if mask is None else np.asarray(mask, dtype=bool)
    out = np.zeros(depth.shape, np.uint8)
    if mask.any():
        lo, hi = depth[mask].min(), depth[mask].max()
        scaled = (depth[mask] - lo) / (hi - lo) if hi > lo else np.ones(int(mask.sum()))
        out[mask] = np.round(1 + 254 * scaled).astype(np.uint8)
    return out


def _composite(rendered, covered, background):
    if background is None:
        return rendered
    bg = np.asarray(background, dtype=np.float32)
    out = np.broadcast_to(bg, rendered.shape).astype(np.float32).copy()
    out[covered] = rendered[covered]
    return out


def render_colors(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray, height: int, width: int,
                  background=None) -> np.ndarray:
    """Render a mesh with per-vertex colours (z-buffered, Gouraud-interpolated).

    Args:
      vertices: ``(N, 3)`` image pixels (``(N, 2)`` for a flat mesh without occlusion).
      colors: ``(N, C)`` float per-vertex values (e.g. RGB in [0, 1] from :func:`vertex_colors`).
      background: None (zeros), a scalar / ``(C,)`` colour, or an ``(H, W, C)`` image for the
        uncovered pixels.

    Returns ``(H, W, C)`` float32.
    """
    vertices, triangles = _check_mesh(vertices, triangles, 2)
    colors = np.asarray(colors, dtype=np.float32)
    if colors.ndim == 1:
        colors = colors[:, None]
    if len(colors) != len(vertices):
        raise ValueError(f"need one colour per vertex: {len(vertices)} vertices, {len(colors)} colours")
    tri_index, bary = rasterize(vertices, triangles, height, width)
    return _composite(interpolate(colors, triangles, tri_index, bary), tri_index >= 0, background)


def render_shaded(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, *, ambient: float = 0.25):
    """Grey shading of a mesh lit from the camera (two-sided Lambert: ``ambient + (1 - ambient) |n_z|``).

    Returns ``(shade (H, W) float32 in [0, 1], mask (H, W) bool)``.
    """
    vertices, triangles = _check_mesh(vertices, triangles)
    intensity = ambient + (1 - ambient) * np.abs(vertex_normals(vertices, triangles)[:, 2:3])
    tri_index, bary = rasterize(vertices[:, :3], triangles, height, width)
    return interpolate(intensity, triangles, tri_index, bary)[..., 0], tri_index >= 0


# ----------------------------------------------------------------------------- UV texture
def uv_texture(image: np.ndarray, posmap_image: np.ndarray, face_mask=None) -> np.ndarray:
    """Unwrap the photo into UV space: UV pixel ``(row, col)`` takes the colour of ``image`` at
    ``posmap_image[row, col, :2]`` (image pixels, bilinear; outside the image -> black).

    Args:
      image: ``(H, W, 3)`` uint8 RGB.
      posmap_image: ``(256, 256, 3)`` position map in image pixels (:func:`posmap_to_image`).
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


# ----------------------------------------------------------------------------- overlays
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
