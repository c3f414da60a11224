"""Calibration and check crops for exports: float32 ``(256, 256, 3)`` RGB crops in ``[0, 1]``,
cut by the same crop rules as inference (:mod:`prnet.core.crop`)."""

from pathlib import Path

import cv2
import numpy as np

from prnet.core.crop import box_from_landmarks, crop_transform, warp_crop
from prnet.errors import ExportError


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def _read_landmarks(image_path: Path):
    """68 (x, y) image px from a sibling menpo ``.pts`` or 300W-LP/AFLW2000 ``.mat`` (``pt2d``), or None."""
    pts = image_path.with_suffix(".pts")
    if pts.is_file():
        text = pts.read_text()
        body = text[text.index("{") + 1:text.index("}")]
        return np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()]) - 1.0
    mat = image_path.with_suffix(".mat")
    if mat.is_file():
        from scipy.io import loadmat

        data = loadmat(str(mat))
        for key in ("pt3d_68", "pt2d"):
            if key in data:
                p = np.asarray(data[key], np.float64)
                return (p if p.shape[0] != 68 else p.T)[:2].T
    return None


def representative_crops(source, limit: int = 100, seed: int = 0):
    """Float32 crops ``(256, 256, 3)`` in ``[0, 1]`` for int8 calibration or checks.

    Args:
      source: ``"tfds:NAME[/config]"`` (e.g. ``tfds:prnet_synthetic``; its ``image`` feature, already
        256x256 crops; needs ``import tfds_builders``) or a folder searched recursively for images;
        an image with a sibling ``.pts`` (68 points) or ``.mat`` (``pt2d``/``pt3d_68``) is cropped by
        the landmark rule (:func:`prnet.core.crop.box_from_landmarks`), any other is taken whole
        (centred square).
      limit: at most this many crops.
    """
    source = str(source)
    if source.startswith("tfds:"):
        import tensorflow_datasets as tfds

        try:
            ds = tfds.load(source[5:], split="train", shuffle_files=False)
        except Exception as err:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
            raise ExportError(f"cannot load calibration dataset {source[5:]!r}: {err}; build it with "
                              "`tfds build` or pass --calibration=FOLDER of face images") from err
        return [ex["image"].astype(np.float32) / 255.0 for ex in tfds.as_numpy(ds.take(limit))]

    folder = Path(source).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"no images (*.jpg, *.png, ...) found under {folder} for calibration")
    crops = []
    for path in files[:limit]:

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        image = bgr[..., ::-1]
        pts = _read_landmarks(path)
        if pts is not None:
            center, size = box_from_landmarks(pts)
        else:
            h, w = image.shape[:2]
            center, size = ((w - 1) / 2.0, (h - 1) / 2.0), min(w, h) - 1.0
        crops.append(warp_crop(image, crop_transform(center, size)))
    if not crops:
        raise ExportError(f"none of the images under {folder} could be read for calibration")
    return crops
