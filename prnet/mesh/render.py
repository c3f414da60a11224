"""Renders of a mesh in image pixels: z-buffered depth, per-vertex colours, grey shading, normals.

Conventions (as everywhere in the library): x = column (right), y = row (down), pixel centres at
integer coordinates; z points toward the camera in the same pixel units, its origin arbitrary.
Larger z = nearer: renders keep the largest z.
"""

import hashlib

import numpy as np

from prnet.mesh.raster import interpolate, rasterize

#: Largest image (pixels) whose rasterisation :func:`_rasterize_reused` keeps for a second use
#: (16 bytes per pixel: 256 MB at this size, held until the next rasterisation).
REUSE_MAX_PIXELS = 16_000_000
_last = [None]  # [(key, (tri_index, bary))]: the last rasterisation, for one reuse


def _rasterize_reused(vertices, triangles, height: int, width: int):
    """:func:`prnet.mesh.raster.rasterize`, remembered for one more call with the same mesh and size.

    A face's depth image and its overlay rasterise the same mesh at the photo's size: the second
    call gets the first one's result (then forgets it) instead of rasterising again. The key is a
    hash of the vertex and triangle bytes, so a changed mesh is never served a stale result."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    t = np.ascontiguousarray(triangles, dtype=np.int64)
    digest = hashlib.blake2b(v.tobytes(), digest_size=16)
    digest.update(t.tobytes())
    key = (v.shape, t.shape, int(height), int(width), digest.digest())
    entry = _last[0]
    if entry is not None and entry[0] == key:
        _last[0] = None
        return entry[1]
    result = rasterize(v, t, height, width)
    _last[0] = (key, result) if height * width <= REUSE_MAX_PIXELS else None
    return result


def _check_points(points: np.ndarray, min_dims: int = 3, name: str = "vertices") -> np.ndarray:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < min_dims:
        raise ValueError(f"{name} must have shape (N, {min_dims}{'+' if min_dims < 3 else ''}), got {points.shape}")
    return points


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
    with np.errstate(invalid="ignore", over="ignore"):
        fn = np.cross(p1 - p0, p2 - p0)
    fn[~np.isfinite(fn).all(axis=1)] = 0  # triangles with a non-finite vertex (never drawn) add nothing
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
    tri_index, bary = _rasterize_reused(vertices[:, :3], triangles, height, width)
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
    tri_index, bary = _rasterize_reused(vertices[:, :3], triangles, height, width)
    return interpolate(intensity, triangles, tri_index, bary)[..., 0], tri_index >= 0
