"""Calibration and check crops for exports: float32 ``(256, 256, 3)`` RGB crops in ``[0, 1]``,
cut by the same crop rules as inference (:mod:`prnet.core.crop`)."""

from pathlib import Path

import numpy as np

from prnet.core.crop import box_from_landmarks, crop_transform, warp_crop
from prnet.core.images import IMAGE_SUFFIXES, read_image
from prnet.data.annotations import sidecar_landmarks
from prnet.errors import ExportError, ImageReadError


def representative_crops(source, limit: int = 100, seed: int = 0):
    """Float32 crops ``(256, 256, 3)`` in ``[0, 1]`` for int8 calibration or checks.

    Args:
      source: ``"tfds:NAME[/config]"`` (e.g. ``tfds:prnet_synthetic``; its ``image`` feature, already
        256x256 crops; needs ``import tfds_builders``) or a folder searched recursively for images;
        an image with a sibling ``.pts`` (68 points) or ``.mat`` (``pt3d_68``/``pt2d``) is cropped by
        the landmark rule (:func:`prnet.core.crop.box_from_landmarks`) exactly as ``prnet-demo``
        crops it (landmarks from :func:`prnet.data.annotations.sidecar_landmarks`); any other is
        taken whole (centred square). Unreadable images are skipped; a malformed annotation raises
        :class:`prnet.errors.DatasetError`.
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
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"no images (*.jpg, *.png, ...) found under {folder} for calibration")
    crops = []
    for path in files[:limit]:
        try:
            image = read_image(path)
        except ImageReadError:
            continue
        annotation = sidecar_landmarks(path)
        if annotation is not None:
            center, size = box_from_landmarks(annotation[0])
        else:
            h, w = image.shape[:2]
            center, size = ((w - 1) / 2.0, (h - 1) / 2.0), min(w, h) - 1.0
        crops.append(warp_crop(image, crop_transform(center, size)))
    if not crops:
        raise ExportError(f"none of the images under {folder} could be read for calibration")
    return crops
