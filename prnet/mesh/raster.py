"""A small vectorised triangle rasteriser (NumPy) with a z-buffer.

Pixel convention: pixel ``(row, col)`` covers the point ``(x=col, y=row)``, i.e. pixel centres
sit at integer coordinates, x grows to the right (columns) and y downward (rows). ``z`` grows
toward the camera: where triangles overlap, the one with the **largest** z wins.

Used to render depth images and coloured meshes (:mod:`prnet.mesh.render`), and, with z = 0, to
precompute the covering triangle and barycentric weights of every UV pixel (:mod:`prnet.data.posmap`).
"""

import numpy as np


def rasterize(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int):
    """Find, for every pixel, the front-most triangle covering its centre.

    Args:
      vertices: ``(V, 2)`` or ``(V, 3)`` float array of ``(x, y[, z])`` in pixels (z optional).
      triangles: ``(T, 3)`` int array of vertex indices (either winding).
      height, width: output size in pixels.

    Returns:
      ``tri_index``: ``(height, width)`` int32, index into ``triangles`` or -1 where empty;
      ``bary``: ``(height, width, 3)`` float32 barycentric weights of the triangle's three
      vertices (zeros where empty). Interpolate any per-vertex attribute with :func:`interpolate`.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    z = vertices[:, 2] if vertices.shape[1] > 2 else np.zeros(len(vertices))
    tri_index = np.full((height, width), -1, np.int32)
    bary_out = np.zeros((height, width, 3), np.float32)
    if len(triangles) == 0:
        return tri_index, bary_out
    p = vertices[triangles, :2]  # (T, 3, 2)
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    # Element-wise min/max of the three corners (reductions over a length-3 axis are ~7x slower).
    xmin = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2)), 0).astype(np.int64)
    xmax = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2)), width - 1).astype(np.int64)
    ymin = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2)), 0).astype(np.int64)
    ymax = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2)), height - 1).astype(np.int64)
    keep = np.flatnonzero((xmax >= xmin) & (ymax >= ymin) & (np.abs(area) > 1e-12))
    if len(keep) == 0:
        return tri_index, bary_out
    bw = xmax[keep] - xmin[keep] + 1
    bh = ymax[keep] - ymin[keep] + 1
    counts = bw * bh
    # One candidate per (triangle, pixel of its bounding box).
    tri = np.repeat(keep, counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    bw_r = np.repeat(bw, counts)
    px = np.repeat(xmin[keep], counts) + local % bw_r
    py = np.repeat(ymin[keep], counts) + local // bw_r
    inv = 1.0 / area[tri]
    w0 = ((x1[tri] - px) * (y2[tri] - py) - (x2[tri] - px) * (y1[tri] - py)) * inv
    w1 = ((x2[tri] - px) * (y0[tri] - py) - (x0[tri] - px) * (y2[tri] - py)) * inv
    w2 = 1.0 - w0 - w1
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    tri, px, py, w0, w1, w2 = tri[inside], px[inside], py[inside], w0[inside], w1[inside], w2[inside]
    t = triangles[tri]
    depth = w0 * z[t[:, 0]] + w1 * z[t[:, 1]] + w2 * z[t[:, 2]]
    pix = py * width + px
    zbuf = np.full(height * width, -np.inf)
    np.maximum.at(zbuf, pix, depth)
    win = depth >= zbuf[pix]
    # Ties (shared edges at equal depth): keep one deterministically, the last in triangle order.
    pix_w = pix[win]
    order = np.argsort(pix_w, kind="stable")
    last = np.r_[pix_w[order][1:] != pix_w[order][:-1], True]
    sel = np.flatnonzero(win)[order[last]]
    flat_tri = tri_index.reshape(-1)
    flat_bary = bary_out.reshape(-1, 3)
    flat_tri[pix[sel]] = tri[sel]
    flat_bary[pix[sel]] = np.stack([w0[sel], w1[sel], w2[sel]], axis=1)
    return tri_index, bary_out


def interpolate(attributes: np.ndarray, triangles: np.ndarray, tri_index: np.ndarray, bary: np.ndarray,
                background=0.0) -> np.ndarray:
    """Interpolate per-vertex ``attributes`` (``(V, C)``) over a rasterisation -> ``(H, W, C)`` float32."""
    attributes = np.asarray(attributes, dtype=np.float32)
    out = np.full(tri_index.shape + attributes.shape[1:], background, np.float32)
    covered = tri_index >= 0
    t = np.asarray(triangles)[tri_index[covered]]
    w = bary[covered]
    out[covered] = (w[:, 0:1] * attributes[t[:, 0]] + w[:, 1:2] * attributes[t[:, 1]]
                    + w[:, 2:3] * attributes[t[:, 2]])
    return out
