"""A small vectorised triangle rasteriser (NumPy) with a z-buffer.

Pixel convention: pixel ``(row, col)`` covers the point ``(x=col, y=row)``, i.e. pixel centres
sit at integer coordinates, x grows to the right (columns) and y downward (rows). ``z`` grows
toward the camera: where triangles overlap, the one with the **largest** z wins.

Memory is bounded by the image size, whatever the mesh: each triangle's bounding box is clipped
to the image and the (triangle, pixel) candidates are processed in chunks of at most
:data:`CHUNK_PIXELS` pixels (a box larger than that is split into bands of rows), so a degenerate
mesh (e.g. the output of an untrained network, triangles spanning the whole image) costs time, not
memory. Triangles with a non-finite vertex coordinate or a zero area are skipped. The result does
not depend on the chunking: the z-buffer is shared by all chunks and ties keep the last triangle.

Used to render depth images and coloured meshes (:mod:`prnet.mesh.render`), and, with z = 0, to
precompute the covering triangle and barycentric weights of every UV pixel (:mod:`prnet.data.posmap`).
"""

import numpy as np

#: Most (triangle, pixel) candidates evaluated at once (about 100 bytes of temporaries each); a
#: bounding box wider than this is processed one row at a time (at most ``width`` candidates).
CHUNK_PIXELS = 1 << 18


def _pieces(xmin, ymin, bw, bh, cap):
    """Split boxes of more than ``cap`` pixels into bands of rows: ``(box index, ymin, rows)`` per piece."""
    if (bw * bh).max() <= cap:  # the usual case: every box in one piece
        return np.arange(len(bw)), ymin, bh
    rows = np.maximum(cap // bw, 1)
    n = -(-bh // rows)  # pieces per box (1 for all boxes within the cap)
    box = np.repeat(np.arange(len(bw)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    band = np.arange(len(box)) - first
    y0 = ymin[box] + band * rows[box]
    return box, y0, np.minimum(rows[box], bh[box] - band * rows[box])


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

    Peak memory is about ``28 * height * width`` bytes (outputs and z-buffer) plus the chunk's
    temporaries (see :data:`CHUNK_PIXELS`), independent of the triangles' sizes.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    z = vertices[:, 2] if vertices.shape[1] > 2 else np.zeros(len(vertices))
    tri_index = np.full((height, width), -1, np.int32)
    bary_out = np.zeros((height, width, 3), np.float32)
    if len(triangles) == 0 or height <= 0 or width <= 0:
        return tri_index, bary_out
    p = vertices[triangles, :2]  # (T, 3, 2)
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite corners: dropped just below
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    # Element-wise min/max of the three corners (reductions over a length-3 axis are ~7x slower);
    # clipped to the image in floating point (a NaN compares false below and is dropped).
    xmin = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2)), 0)
    xmax = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2)), width - 1)
    ymin = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2)), 0)
    ymax = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2)), height - 1)
    ok = (xmax >= xmin) & (ymax >= ymin) & (np.abs(area) > 1e-12) & np.isfinite(area)
    if not np.isfinite(z).all():
        ok &= np.isfinite(z[triangles]).all(axis=1)
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        return tri_index, bary_out
    xmin, ymin = xmin[keep].astype(np.int64), ymin[keep].astype(np.int64)
    bw = xmax[keep].astype(np.int64) - xmin + 1
    bh = ymax[keep].astype(np.int64) - ymin + 1
    box, py0, rows = _pieces(xmin, ymin, bw, bh, CHUNK_PIXELS)
    if len(box) > len(keep):  # per piece
        keep, xmin, bw = keep[box], xmin[box], bw[box]
    counts = bw * rows
    ends = np.cumsum(counts)
    zbuf = np.full(height * width, -np.inf)
    flat_tri = tri_index.reshape(-1)
    flat_bary = bary_out.reshape(-1, 3)
    start = 0
    while start < len(keep):
        # pieces [start, stop): at most CHUNK_PIXELS candidates, at least one piece
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + CHUNK_PIXELS, side="right")), start + 1)
        c = counts[start:stop]
        # One candidate per (triangle, pixel of its box piece), in triangle order.
        tri = np.repeat(keep[start:stop], c)
        local = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        bw_r = np.repeat(bw[start:stop], c)
        px = np.repeat(xmin[start:stop], c) + local % bw_r
        py = np.repeat(py0[start:stop], c) + local // bw_r
        del local, bw_r
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
        # The z-buffer holds the earlier chunks' winners: a candidate at least as near replaces them.
        np.maximum.at(zbuf, pix, depth)
        win = depth >= zbuf[pix]
        # Ties (shared edges at equal depth): keep one deterministically, the last in triangle order.
        pix_w = pix[win]
        start = stop
        if len(pix_w) == 0:
            continue
        order = np.argsort(pix_w, kind="stable")
        last = np.r_[pix_w[order][1:] != pix_w[order][:-1], True]
        sel = np.flatnonzero(win)[order[last]]
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
