"""Binary ``.ply`` export of a face mesh with per-vertex colours (and a reader for it).

Axes as in :mod:`prnet.mesh.obj`: the library's image pixels (x right, y down, z toward the
camera) are written in the y-up frame viewers expect, ``y_ply = image_height - 1 - y`` (``-y``
without ``image_height``); x and z unchanged; each triangle is written reversed so the front side
is counter-clockwise. Layout: ``binary_little_endian 1.0``; vertex ``float x, y, z`` and
``uchar red, green, blue`` (0..255); face ``list uchar int vertex_indices`` (0-based).
"""

from pathlib import Path

import numpy as np

from prnet.core.files import atomic_path
from prnet.mesh.obj import _as_float_colors, checked_mesh

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_FACE = np.dtype([("n", "u1"), ("i", "<i4", (3,))])


def write_ply(path, vertices, triangles, colors, *, image_height=None, comment=None) -> Path:
    """Write ``vertices`` (``(N, 3)`` image px), ``triangles`` (``(T, 3)`` 0-based) and ``colors``
    (``(N, 3)`` float in [0, 1] or uint8) to a binary ``.ply``, atomically; ``comment``: an extra
    one-line ASCII header comment. Returns the path."""
    path = Path(path)
    v, tris = checked_mesh(vertices, triangles)
    rgb = np.round(_as_float_colors(colors, len(v)) * 255).astype(np.uint8)
    vert = np.empty(len(v), _VERTEX)
    vert["x"], vert["z"] = v[:, 0], v[:, 2]
    vert["y"] = (image_height - 1 - v[:, 1]) if image_height is not None else -v[:, 1]
    vert["red"], vert["green"], vert["blue"] = rgb.T
    face = np.empty(len(tris), _FACE)
    face["n"], face["i"] = 3, tris[:, ::-1]
    extra = "" if comment is None else f"comment {' '.join(str(comment).split())}\n"
    header = ("ply\nformat binary_little_endian 1.0\n" + extra +
              "comment PRNet face mesh: x right, y up, z toward the viewer (image pixels)\n"
              f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vert.tobytes())
            f.write(face.tobytes())
    return path


def read_ply(path):
    """Read a ``.ply`` written by :func:`write_ply`: ``(vertices (N, 3) float32 as stored (y up),
    faces (T, 3) int32 as stored, colors (N, 3) uint8)``."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian .ply")
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element")}
    nv, nf = counts["vertex"], counts["face"]
    vert = np.frombuffer(data, _VERTEX, nv, end)
    face = np.frombuffer(data, _FACE, nf, end + nv * _VERTEX.itemsize)
    if nf and not np.all(face["n"] == 3):
        raise ValueError(f"{path}: only triangle faces are supported")
    vertices = np.stack([vert["x"], vert["y"], vert["z"]], axis=1)
    colors = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1)
    return vertices, face["i"].copy(), colors
