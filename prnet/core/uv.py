"""The fixed UV layout of PRNet: landmark pixels, face pixels, masks, mean face, triangulation.

UV pixel conventions: the UV map is 256x256; pixel ``(row, col)`` of a map ``pos`` is
``pos[row, col]``. Flat indices (``face_ind``) are row-major: ``flat = row * 256 + col``.
Landmark ``i`` of the 68 sits at UV pixel ``(col, row) = kpt_ind[i]`` (the original file stores
row 0 = column/x, row 1 = row/y), so ``landmarks = pos[kpt_ind[:, 1], kpt_ind[:, 0]]``.
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from prnet.core.paths import assets_dir
from prnet.errors import AssetsCorruptError

UV_SIZE = 256
NUM_FACE_VERTICES = 43867
NUM_LANDMARKS = 68
#: ``uv_weight_mask.png`` grey level of the landmark pixels; the regions are 255 / 64 / 48 (~16:4:3).
WEIGHT_MASK_MAX = 255.0


@dataclass(frozen=True)
class UVTemplate:
    """The UV template files of the original ``Data/uv-data`` folder, loaded and checked.

    Attributes:
      directory: where the files were read from.
      face_ind: ``(43867,)`` int64 flat row-major indices of the face pixels in the 256x256 map.
      kpt_ind: ``(68, 2)`` int64 UV pixel ``(col, row)`` of each landmark.
      canonical_vertices: ``(43867, 3)`` float32 mean face at ``face_ind`` (pixel-like units, y down).
      face_mask: ``(256, 256)`` float32, 1 on face pixels, 0 elsewhere.
      weight_mask: ``(256, 256)`` float32 loss weights ``uv_weight_mask / 255 * face_mask``:
        landmarks 1.0, eyes/nose/mouth ~0.25, rest of face ~0.19, neck and background 0
        (the paper's 16:4:3:0).
      kpt_mask: ``(256, 256)`` float32, 1 around the landmark pixels.
      face_texture: ``(256, 256, 3)`` uint8 RGB mean-face texture in UV space (``uv_face.png``).
    """

    directory: Path
    face_ind: np.ndarray
    kpt_ind: np.ndarray
    canonical_vertices: np.ndarray
    face_mask: np.ndarray
    weight_mask: np.ndarray
    kpt_mask: np.ndarray
    face_texture: np.ndarray

    @property
    def face_rows_cols(self):
        """``(rows, cols)`` int arrays of the face pixels, in ``face_ind`` order."""
        return np.divmod(self.face_ind, UV_SIZE)


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None or image.shape != (UV_SIZE, UV_SIZE):
        raise AssetsCorruptError(f"{path}: expected a readable {UV_SIZE}x{UV_SIZE} image")
    return image


def _check(condition: bool, path: Path, what: str):
    if not condition:
        raise AssetsCorruptError(f"{path}: {what}. Re-download the UV template (`prnet-convert --download`).")


def load_uv_template(directory=None) -> UVTemplate:
    """Load and validate the UV template from ``directory`` (see :func:`prnet.core.paths.assets_dir`)."""
    d = assets_dir(directory)
    try:
        kpt = np.loadtxt(d / "uv_kpt_ind.txt")
        face_ind = np.loadtxt(d / "face_ind.txt")
        canonical = np.load(d / "canonical_vertices.npy")
    except (ValueError, OSError) as e:
        raise AssetsCorruptError(f"{d}: could not parse a UV template file: {e}") from e
    _check(kpt.shape == (2, NUM_LANDMARKS), d / "uv_kpt_ind.txt", f"expected shape (2, 68), got {kpt.shape}")
    _check(face_ind.shape == (NUM_FACE_VERTICES,), d / "face_ind.txt", f"expected {NUM_FACE_VERTICES} indices")
    _check(canonical.shape == (NUM_FACE_VERTICES, 3), d / "canonical_vertices.npy", "expected shape (43867, 3)")
    face_ind = face_ind.astype(np.int64)
    kpt_ind = kpt.T.astype(np.int64)
    _check(bool(np.all((kpt_ind >= 0) & (kpt_ind < UV_SIZE))), d / "uv_kpt_ind.txt", "indices out of range")
    face_mask = (_read_grey(d / "uv_face_mask.png") > 0).astype(np.float32)
    _check(np.array_equal(np.flatnonzero(face_mask.ravel()), np.sort(face_ind)), d / "uv_face_mask.png",
           "face mask does not match face_ind.txt")
    weight = _read_grey(d / "uv_weight_mask.png").astype(np.float32) / WEIGHT_MASK_MAX * face_mask
    kpt_mask = (_read_grey(d / "uv_kpt_mask.png") > 0).astype(np.float32)
    texture = cv2.imread(str(d / "uv_face.png"), cv2.IMREAD_COLOR)
    _check(texture is not None and texture.shape == (UV_SIZE, UV_SIZE, 3), d / "uv_face.png",
           "expected a 256x256 colour image")
    return UVTemplate(
        directory=d,
        face_ind=face_ind,
        kpt_ind=kpt_ind,
        canonical_vertices=canonical.astype(np.float32),
        face_mask=face_mask,
        weight_mask=weight,
        kpt_mask=kpt_mask,
        face_texture=cv2.cvtColor(texture, cv2.COLOR_BGR2RGB),
    )


def landmarks_from_posmap(posmap: np.ndarray, template: UVTemplate) -> np.ndarray:
    """``(..., 256, 256, 3)`` position map -> ``(..., 68, 3)`` landmarks, same units as the map."""
    return posmap[..., template.kpt_ind[:, 1], template.kpt_ind[:, 0], :]


def vertices_from_posmap(posmap: np.ndarray, template: UVTemplate) -> np.ndarray:
    """``(..., 256, 256, 3)`` position map -> ``(..., 43867, 3)`` face vertices, same units as the map."""
    flat = posmap.reshape(posmap.shape[:-3] + (UV_SIZE * UV_SIZE, 3))
    return flat[..., template.face_ind, :]


def generate_uv_triangles(face_ind: np.ndarray, size: int = UV_SIZE) -> np.ndarray:
    """Triangulate the UV grid over the face pixels, deterministically (replaces ``triangles.txt``).

    Every 2x2 block of UV pixels ``a=(r, c)``, ``b=(r, c+1)``, ``c=(r+1, c)``, ``d=(r+1, c+1)`` is
    split along its b-c diagonal into ``(a, b, c)`` and ``(b, d, c)``; a triangle is kept when its
    three pixels are all face pixels. On the original mask this gives 86,907 triangles (the
    original file has 86,906). Returns ``(T, 3)`` int64 indices into ``face_ind`` order (i.e. into
    the 43,867 vertices), rows sorted by UV position; winding is clockwise on screen (y down).
    """
    face_ind = np.asarray(face_ind, dtype=np.int64)
    lookup = np.full(size * size, -1, np.int64)
    lookup[face_ind] = np.arange(len(face_ind))
    grid = lookup.reshape(size, size)
    a, b = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel()
    c, d = grid[1:, :-1].ravel(), grid[1:, 1:].ravel()
    upper = np.stack([a, b, c], axis=1)
    lower = np.stack([b, d, c], axis=1)
    # Interleave per block so the order follows the UV grid (row-major blocks, upper then lower).
    tris = np.stack([upper, lower], axis=1).reshape(-1, 3)
    return tris[np.all(tris >= 0, axis=1)]


_TRIANGLE_CACHE = {}


def uv_triangles(template: UVTemplate) -> np.ndarray:
    """The mesh triangulation for ``template`` (``triangles.txt`` if present, else generated; cached).

    Indices refer to the 43,867 vertices returned by :func:`vertices_from_posmap`.
    """
    key = str(template.directory)
    if key not in _TRIANGLE_CACHE:
        path = Path(template.directory) / "triangles.txt"
        if path.is_file():
            tris = np.loadtxt(path).astype(np.int64)
            _check(tris.ndim == 2 and tris.shape[1] == 3 and tris.max() < NUM_FACE_VERTICES, path,
                   "expected (T, 3) vertex indices")
        else:
            tris = generate_uv_triangles(template.face_ind)
        tris.setflags(write=False)
        _TRIANGLE_CACHE[key] = tris
    return _TRIANGLE_CACHE[key]
