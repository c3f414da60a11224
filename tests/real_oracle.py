"""Exact faces of real photos: oracle position maps from real AFLW2000-3D fits.

For an AFLW2000-3D sample of ``../shared/samples/aflw2000-3d``, its ``.mat`` fit (``Shape_Para``,
``Exp_Para``, ``Pose_Para``) drives the real BFM mean face with the real 68-landmark bases spread over
the mesh (:func:`prnet.data.bfm.landmark_interpolated_model`), and the posed mesh is rasterised into
UV (:class:`prnet.data.posmap.UVRasterizer`): the image-pixel position map of the photo's face. It
goes through the real :class:`~prnet.inference.predictor.Predictor` chain as a perfect network's
output (:func:`oracle.oracle_face`). ``scale`` resizes the photo (and the map) to test other face
sizes. Import as ``from real_oracle import ...`` (like ``oracle``); the model is built once per
process (~5 s).
"""

import functools
from pathlib import Path

import cv2
import numpy as np

from oracle import oracle_face


@functools.cache
def _model_and_rasterizer(shared_dir: str):
    from prnet.data.bfm import landmark_interpolated_model
    from prnet.data.posmap import UVRasterizer

    d = Path(shared_dir) / "reference" / "bfm-mean"
    model = landmark_interpolated_model(d / "bfm_mean_53215.npz", d / "bfm_kpt68_bases.npz")
    return model, UVRasterizer(model.uv_coords, model.triangles, fill_mask="holes")


@functools.cache
def real_sample(shared_dir, name: str, scale: float = 1.0):
    """``(image (H, W, 3) uint8 RGB, posmap (256, 256, 3) float64 image px)`` of AFLW2000-3D sample
    ``name`` (e.g. ``"image00516"``), the photo resized by ``scale`` (cubic) and the map with it
    (pixel centres: ``x' = (x + 0.5) * scale - 0.5``; z scaled alike)."""
    from prnet.data.annotations import load_fit
    from prnet.data.bfm import transform

    path = Path(shared_dir) / "samples" / "aflw2000-3d" / name
    image = cv2.cvtColor(cv2.imread(str(path.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
    fit = load_fit(path.with_suffix(".mat"))
    model, raster = _model_and_rasterizer(str(shared_dir))
    pos = raster(transform(model.vertices(fit.shape_para, fit.exp_para), fit.pose_para, image.shape[0]))
    pos = np.asarray(pos, np.float64)
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        pos = pos.copy()
        pos[..., :2] = (pos[..., :2] + 0.5) * scale - 0.5
        pos[..., 2] *= scale
    return image, pos


def real_face(shared_dir, template, name: str, scale: float = 1.0):
    """The ``FaceResult`` a perfect network gives for AFLW2000-3D sample ``name`` (:func:`real_sample`)."""
    image, pos = real_sample(str(shared_dir), name, float(scale))
    return oracle_face(image, pos, template)
