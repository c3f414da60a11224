"""Training position maps from 3DMM fits, as the original data generation (face3d's
``examples/8_generate_posmap_300WLP.py``), with a fast precomputed UV rasteriser.

Pipeline for one sample (all pixel coordinates 0-based, x = column, y = row, z toward the camera):

1. mesh = ``BFM.vertices(Shape_Para, Exp_Para)``, projected to image pixels with
   :func:`prnet.data.bfm.transform` (``Pose_Para``);
2. crop box around the 68 projected landmark vertices: :func:`prnet.core.crop.training_box`
   (``size = int(1.5 * old)``, optional jitter as the original); the original truncates the
   landmark coordinates to integers before this, we keep them exact (< 1 px difference);
3. ``tform`` = :func:`prnet.core.crop.crop_transform` (image -> crop pixels, scale
   ``s = 255 / size``); the image is warped bilinearly to 256x256 (uint8 kept);
4. vertices -> crop pixels: :func:`prnet.core.crop.image_to_crop` (``z <- z * s``), then
   ``z -= min(z)`` over all mesh vertices;
5. the crop-pixel xyz of every vertex are rasterised into the 256x256 UV map at UV pixel
   ``(col, row) = (255 u, 255 (1 - v))`` (BFM_UV.mat, v flipped), interpolated barycentrically.

Step 5 depends only on the UV triangulation: :class:`UVRasterizer` finds, once, the covering
triangle and barycentric weights of every UV pixel, so each map is a gather and a weighted sum
(one sparse matrix product, ~1.6 ms per map here).
"""

from dataclasses import dataclass

import numpy as np

from prnet.core.crop import TRAIN_BOX_SCALE, crop_transform, image_to_crop, training_box, warp_crop
from prnet.core.uv import UV_SIZE
from prnet.data.bfm import BFM, transform
from prnet.errors import DatasetError
from prnet.mesh.raster import rasterize


class UVRasterizer:
    """Rasterise per-vertex attributes into the fixed UV layout, from a one-time precomputation.

    Args:
      uv_coords: ``(n, 2)`` UV in [0, 1] (u right, v up), e.g. ``BFM_UV.mat``.
      triangles: ``(T, 3)`` 0-based vertex indices.
      size: UV map side in pixels; vertex i sits at UV pixel ``((size-1) u, (size-1) (1 - v))``.
      fill_mask: optional ``(size, size)`` mask of pixels that must get a value (e.g. the template's
        ``face_mask``), or ``"holes"`` (the gaps enclosed by the mesh, e.g. the mouth when
        ``tri_mouth`` is absent): uncovered pixels there take the triangle of the nearest covered
        pixel, with barycentric weights extrapolated linearly.

    Attributes:
      pixels: ``(P,)`` flat row-major indices of the covered UV pixels.
      vertex_ids: ``(P, 3)`` vertices of each covered pixel's triangle.
      weights: ``(P, 3)`` float32 barycentric weights (sum to 1).
    """

    def __init__(self, uv_coords, triangles, size: int = UV_SIZE, fill_mask=None):
        uv = np.asarray(uv_coords, np.float64)
        tris = np.asarray(triangles, np.int64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise DatasetError(f"uv_coords must be (n, 2), got {uv.shape}")
        if tris.ndim != 2 or tris.shape[1] != 3 or (tris.size and (tris.min() < 0 or tris.max() >= len(uv))):
            raise DatasetError(f"triangles must be (T, 3) indices into {len(uv)} vertices")
        self.size = size
        self.n_vertices = len(uv)
        self.uv_pixels = np.stack([(size - 1) * uv[:, 0], (size - 1) * (1 - uv[:, 1])], axis=1)
        tri_index, bary = rasterize(self.uv_pixels, tris, size, size)
        covered = tri_index >= 0
        if isinstance(fill_mask, str) and fill_mask == "holes":
            from scipy import ndimage

            fill_mask = ndimage.binary_fill_holes(covered)
        if fill_mask is not None:
            tri_index, bary = self._fill(tri_index, bary, np.asarray(fill_mask) > 0, tris)
        flat = tri_index.ravel()
        self.pixels = np.flatnonzero(flat >= 0)
        self.vertex_ids = tris[flat[self.pixels]]
        self.weights = bary.reshape(-1, 3)[self.pixels].astype(np.float32)
        self.covered = covered
        self.mask = tri_index >= 0
        from scipy import sparse

        # (P, n) interpolation matrix, 3 weights per row: each map is one sparse product.
        self._matrix = sparse.csr_matrix(
            (self.weights.ravel(), self.vertex_ids.ravel(), np.arange(0, 3 * len(self.pixels) + 1, 3)),
            shape=(len(self.pixels), self.n_vertices))

    def _fill(self, tri_index, bary, fill_mask, tris):
        from scipy import ndimage

        covered = tri_index >= 0
        todo = fill_mask & ~covered
        if not todo.any() or not covered.any():
            return tri_index, bary
        _, (rr, cc) = ndimage.distance_transform_edt(~covered, return_indices=True)
        rows, cols = np.nonzero(todo)
        tri = tri_index[rr[rows, cols], cc[rows, cols]]
        p = self.uv_pixels[tris[tri]]                            # (M, 3, 2)
        x, y = cols.astype(np.float64), rows.astype(np.float64)
        x0, y0, x1, y1, x2, y2 = p[:, 0, 0], p[:, 0, 1], p[:, 1, 0], p[:, 1, 1], p[:, 2, 0], p[:, 2, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        w0 = ((x1 - x) * (y2 - y) - (x2 - x) * (y1 - y)) / area
        w1 = ((x2 - x) * (y0 - y) - (x0 - x) * (y2 - y)) / area
        tri_index, bary = tri_index.copy(), bary.copy()
        tri_index[rows, cols] = tri
        bary[rows, cols] = np.stack([w0, w1, 1 - w0 - w1], axis=1)
        return tri_index, bary

    def __call__(self, attributes, background: float = 0.0) -> np.ndarray:
        """``(n, C)`` per-vertex values -> ``(size, size, C)`` float32 map (``background`` outside)."""
        a = np.asarray(attributes, np.float32)
        if a.ndim != 2 or a.shape[0] != self.n_vertices:
            raise DatasetError(f"expected ({self.n_vertices}, C) vertex attributes, got {a.shape}")
        out = np.full((self.size * self.size, a.shape[1]), background, np.float32)
        out[self.pixels] = self._matrix @ a
        return out.reshape(self.size, self.size, a.shape[1])


def vertices_to_crop(vertices, tform, z_shift=None) -> np.ndarray:
    """Image-pixel vertices ``(n, 3)`` -> crop pixels (:func:`prnet.core.crop.image_to_crop`), then
    ``z -= z_shift``: the training maps' z origin.

    ``z_shift`` (crop pixels) defaults to the minimum of the scaled z (so min z = 0, as the original).
    """
    out = image_to_crop(np.asarray(vertices, np.float64).reshape(-1, 3), tform)
    out[:, 2] -= out[:, 2].min() if z_shift is None else z_shift
    return out


@dataclass(frozen=True)
class PosmapExample:
    """One training pair. ``image`` (256,256,3) uint8 crop; ``posmap`` (256,256,3) float32 crop
    pixels (x, y, z; 0 outside the UV face); ``landmarks_68`` (68,3) float32 crop pixels (the 68 BFM
    landmark vertices, same z shift); ``tform`` (3,3) image->crop; ``center`` (2,), ``size`` (px);
    ``z_shift``: crop z = image z * scale - z_shift (the mesh's min)."""

    image: np.ndarray
    posmap: np.ndarray
    landmarks_68: np.ndarray
    tform: np.ndarray
    center: np.ndarray
    size: float
    z_shift: float = 0.0


def load_model_files(folder):
    """``(BFM, UVRasterizer)`` from ``folder`` holding ``BFM.mat`` and ``BFM_UV.mat`` (or ``folder/BFM/``).

    Raises :class:`DatasetError` naming the missing file and how to get it.
    """
    from pathlib import Path

    from prnet.data.bfm import OBTAIN_HELP, load_bfm

    folder = Path(folder)
    for d in (folder, folder / "BFM"):
        if (d / "BFM.mat").is_file():
            if not (d / "BFM_UV.mat").is_file():
                raise DatasetError(f"{d / 'BFM_UV.mat'}: not found (needed beside BFM.mat). {OBTAIN_HELP}")
            bfm = load_bfm(d / "BFM.mat", d / "BFM_UV.mat")
            return bfm, UVRasterizer(bfm.uv_coords, bfm.triangles, fill_mask="holes")
    raise DatasetError(f"{folder / 'BFM.mat'}: not found. {OBTAIN_HELP}")


def image_vertices(fit, bfm: BFM, image_height: int) -> np.ndarray:
    """The fit's dense mesh in 0-based image pixels ``(n, 3)`` (z toward the camera, fit's origin)."""
    return transform(bfm.vertices(fit.shape_para, fit.exp_para), fit.pose_para, image_height)


def make_example(image, fit, bfm: BFM, rasterizer: UVRasterizer, *, jitter: bool = False,
                 rng: np.random.Generator | None = None, box_scale: float = TRAIN_BOX_SCALE,
                 box=None, model_vertices=None) -> PosmapExample:
    """Crop ``image`` (uint8 RGB, H x W x 3) and build its position map from ``fit`` (annotations.Fit).

    The crop box is ``box = (center, size)`` if given, else :func:`prnet.core.crop.training_box`
    around the fit's 68 projected landmark vertices (``box_scale``; with ``jitter``, drawn from
    ``rng`` or a fresh generator). A degenerate box raises :class:`DatasetError`.
    ``model_vertices``: the fit's mesh if already computed (e.g. by :meth:`BFM.vertices_batch`).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DatasetError(f"expected an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
    if model_vertices is None:
        model_vertices = bfm.vertices(fit.shape_para, fit.exp_para)
    verts = transform(model_vertices, fit.pose_para, image.shape[0])
    if box is None:
        if jitter and rng is None:
            rng = np.random.default_rng()
        try:
            center, size = training_box(verts[bfm.kpt_ind], rng if jitter else None, scale=box_scale)
        except ValueError as e:
            raise DatasetError(str(e)) from e
    else:
        center, size = box
    tform = crop_transform(center, size)
    z_shift = float(verts[:, 2].min() * tform[0, 0])
    crop_v = vertices_to_crop(verts, tform, z_shift)
    return PosmapExample(
        image=warp_crop(image, tform, as_float=False),
        posmap=rasterizer(crop_v),
        landmarks_68=crop_v[bfm.kpt_ind].astype(np.float32),
        tform=tform,
        center=np.asarray(center, np.float64),
        size=float(size),
        z_shift=z_shift,
    )


def fit_similarity_yflip(source, target):
    """Least-squares ``target ~ (a x + tx, ty - a y, a z + tz)`` for ``(N, 3)`` point sets.

    Returns ``(a, (tx, ty, tz), residuals (N,) Euclidean)``; relates the BFM model frame (y up) to
    pixel-like frames (y down) such as ``canonical_vertices.npy``.
    """
    s = np.asarray(source, np.float64) * np.array([1.0, -1.0, 1.0])
    t = np.asarray(target, np.float64)
    sc = s - s.mean(0)
    a = float((sc * (t - t.mean(0))).sum() / (sc * sc).sum())
    offset = t.mean(0) - a * s.mean(0)
    res = np.linalg.norm(a * s + offset - t, axis=1)
    return a, offset, res
