"""AFLW2000-3D ground truth for the evaluation: dataset folders, TFDS datasets and 3DDFA's arrays.

Every sample's ground truth is in the frame of its image: 0-based pixel centres, x = column,
y = row, z toward the camera with an arbitrary origin (the 3D NMEs remove it).

Frames: ``pt3d_68`` of the ``.mat`` files and 3DDFA's ``AFLW2000-3D.pts68.npy`` are in MATLAB's
1-based frame; :func:`prnet.data.annotations.load_fit` subtracts ``MATLAB_PIXEL_OFFSET`` (1 px)
from x, y (rows of the ``.npy`` are matched after adding it back). The re-annotated landmarks
(``AFLW2000-3D-Reannotated.pts68.npy``) are used as stored: on average they already sit ~1 px
up-left of the original ones (mean offset -1.2, -0.9 px over the 2000 images), i.e. 0-based.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnet.core.crop import crop_to_image
from prnet.core.images import read_image
from prnet.core.uv import load_uv_template, vertices_from_posmap
from prnet.data.annotations import IMAGE_EXTENSIONS, MATLAB_PIXEL_OFFSET, list_samples, load_fit, pose_degrees
from prnet.data.bfm import load_bfm
from prnet.data.posmap import UVRasterizer, image_vertices
from prnet.errors import DatasetError
from prnet.evaluation import metrics

#: Names of the 3DDFA ground-truth arrays (rows in AFLW2000-3D file-name order).
GT_PTS68 = "AFLW2000-3D.pts68.npy"


GT_POSE = "AFLW2000-3D.pose.npy"
#: 3DDFA's second yaw list: yaw from the AFLW labels (|yaw| buckets 1306 / 462 / 232 over the 2000
#: images; 3DDFA's benchmark code calls this split "same as paper"). ``GT_POSE`` is the fitted pose's
#: yaw (1312 / 383 / 305; 3DDFA's "current version"), the one each ``.mat``'s ``Pose_Para`` holds.
GT_POSE_LABELS = "AFLW2000-3D-new.pose.npy"


GT_REANNOTATED = "AFLW2000-3D-Reannotated.pts68.npy"


@dataclass
class EvalSample:
    """One face to evaluate, ground truth in the frame of ``image`` (0-based pixels).

    ``image``/``image_path``: RGB uint8 picture (loaded lazily from the path); when ``precropped``
    it is already the 256x256 network crop (TFDS examples) and no crop is made. ``landmarks``:
    ``(68, 3)`` x, y, z; ``reannotated``: ``(68, 2)`` or None; ``vertices``: ``(43867, 3)`` dense
    ground truth on the UV face points or None; ``yaw``: ground-truth yaw of the fitted pose, degrees;
    ``yaw_labels``: yaw from the AFLW labels (3DDFA's ``AFLW2000-3D-new.pose.npy`` row) or None; ``fit``: the
    :class:`prnet.data.annotations.Fit` it came from (for dense ground truth from a BFM), or None.
    """

    id: str
    yaw: float
    landmarks: np.ndarray
    image_path: Path | None = None
    image: np.ndarray | None = None
    precropped: bool = False
    reannotated: np.ndarray | None = None
    vertices: np.ndarray | None = None
    row: int | None = None
    fit: object | None = None
    yaw_labels: float | None = None

    def load_image(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        return read_image(self.image_path)


@dataclass(frozen=True)
class GroundTruthArrays:
    """3DDFA's arrays: ``pts68`` (M, 68, 3) MATLAB frame, ``yaw`` (M,) degrees of the fitted pose,
    ``reannotated`` (M, 68, 2), ``yaw_labels`` (M,) degrees from the AFLW labels (``GT_POSE_LABELS``)."""

    pts68: np.ndarray
    yaw: np.ndarray | None
    reannotated: np.ndarray | None
    sources: dict = field(default_factory=dict)
    yaw_labels: np.ndarray | None = None


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: could not read {what} ({e}); get it from 3DDFA's "
                           "test.configs / aflw2000-3d ground-truth files") from e


def load_gt_arrays(gt_dir=None, reannotated=None) -> GroundTruthArrays | None:
    """Load 3DDFA's AFLW2000-3D arrays from ``gt_dir`` and/or the re-annotation file ``reannotated``.

    When only ``reannotated`` is given, ``AFLW2000-3D.pts68.npy`` is looked for beside it (it is
    needed to find each image's row). Returns None when neither is given.
    """
    if gt_dir is None and reannotated is None:
        return None
    gt_dir = Path(gt_dir) if gt_dir is not None else Path(reannotated).parent
    if not gt_dir.is_dir():
        raise DatasetError(f"{gt_dir}: ground-truth folder not found (expected 3DDFA's {GT_PTS68} etc.)")
    pts_path = gt_dir / GT_PTS68
    if not pts_path.is_file():
        raise DatasetError(f"{pts_path} not found: it is needed to match images to rows of the 3DDFA "
                           f"arrays; pass --gt_dir pointing to the folder with {GT_PTS68}")
    pts = _load_npy(pts_path, "the 68 landmarks")
    if pts.ndim != 3 or pts.shape[1:] != (3, 68):
        raise DatasetError(f"{pts_path}: expected shape (M, 3, 68), got {pts.shape}")
    _refuse_non_finite_rows(pts, pts_path, "landmark")
    sources = {"pts68": str(pts_path)}
    yaw = None
    if (gt_dir / GT_POSE).is_file():
        pose = _load_npy(gt_dir / GT_POSE, "the poses")
        yaw = pose.reshape(pose.shape[0], -1)[:, 0].astype(np.float64)  # file holds yaw (degrees) first
        _refuse_non_finite_rows(yaw, gt_dir / GT_POSE, "yaw")
        if yaw.shape[0] != pts.shape[0]:
            raise DatasetError(f"{gt_dir / GT_POSE}: {yaw.shape[0]} rows but {pts.shape[0]} landmark sets")
        sources["pose"] = str(gt_dir / GT_POSE)
    yaw_labels = None
    if (gt_dir / GT_POSE_LABELS).is_file():
        pose = _load_npy(gt_dir / GT_POSE_LABELS, "the AFLW-label poses")
        yaw_labels = pose.reshape(pose.shape[0], -1)[:, 0].astype(np.float64)
        if yaw_labels.shape[0] != pts.shape[0] or not np.all(np.isfinite(yaw_labels)):
            raise DatasetError(f"{gt_dir / GT_POSE_LABELS}: expected {pts.shape[0]} finite yaw angles, "
                               f"got shape {pose.shape}")
        sources["pose_labels"] = str(gt_dir / GT_POSE_LABELS)
    re_path = Path(reannotated) if reannotated is not None else gt_dir / GT_REANNOTATED
    re = None
    if re_path.is_file():
        re = _load_npy(re_path, "the re-annotated landmarks")
        if re.shape != (pts.shape[0], 2, 68):
            raise DatasetError(f"{re_path}: expected shape ({pts.shape[0]}, 2, 68), got {re.shape}")
        re = re.transpose(0, 2, 1).astype(np.float64)
        _refuse_non_finite_rows(re, re_path, "re-annotated landmark")
        _check_same_rows(pts, re, pts_path, re_path)
        sources["reannotated"] = str(re_path)
    elif reannotated is not None:
        raise DatasetError(f"{re_path}: re-annotated landmarks file not found")
    return GroundTruthArrays(pts.transpose(0, 2, 1).astype(np.float64), yaw, re, sources, yaw_labels)


def _refuse_non_finite_rows(array: np.ndarray, path, what: str) -> None:
    """:class:`DatasetError` naming the rows of ``array`` (rows = first axis) that hold NaN or inf:
    such a row matches no image (and would be blamed on the row order otherwise)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(array, np.float64).reshape(len(array), -1)).all(axis=1))
    if len(bad):
        rows = ", ".join(str(int(r)) for r in bad[:10]) + (f", ... ({len(bad)} rows)" if len(bad) > 10 else "")
        raise DatasetError(f"{path}: row {rows} (0-based) of the {what} array holds NaN or infinite values; "
                           "use 3DDFA's files as distributed")


#: A re-annotated landmark set farther than this from its row's original landmarks (NME, fraction of
#: the face's size) counts as another face's. Matching files: 1 of the 2000 rows; shifted by a row: 58%.
REANNOTATED_FAR_NME = 0.15


#: More far rows than this fraction: the two arrays are not in the same row order.
REANNOTATED_MAX_FAR_FRACTION = 0.05


#: Largest difference (degrees) between an image's own yaw and its row of the pose array (both
#: come from the same ``Pose_Para``; float32 storage).
YAW_TOLERANCE_DEG = 1e-2


def _check_same_rows(pts: np.ndarray, re: np.ndarray, pts_path: Path, re_path: Path) -> None:
    """Refuse re-annotated landmarks (``(M, 68, 2)``) whose rows are not those of ``pts`` (``(M, 3, 68)``).

    The re-annotation moves a few points by a few pixels; a row of another image is far off. A file
    shifted by one row (or sorted differently) has most rows far from their original landmarks.
    """
    orig = pts.transpose(0, 2, 1)[:, :, :2].astype(np.float64) - MATLAB_PIXEL_OFFSET
    with np.errstate(invalid="ignore", divide="ignore"):
        nme = np.linalg.norm(orig - re, axis=2).mean(axis=1) / metrics.bbox_size(orig)
    far = ~(nme <= REANNOTATED_FAR_NME)  # NaN (no area, non-finite values) counts as far
    if far.mean() > REANNOTATED_MAX_FAR_FRACTION:
        first = int(np.flatnonzero(far)[0])
        raise DatasetError(
            f"{re_path}: its rows are not in the row order of {pts_path}: {int(far.sum())} of {len(far)} "
            f"re-annotated landmark sets (the first at row {first}) are more than "
            f"{REANNOTATED_FAR_NME:.0%} of the face size away from the original landmarks of the same row "
            f"(matching files: about 0.1%). Use the two files of the same 3DDFA release, unmodified (rows "
            "in AFLW2000-3D file-name order)")


def attach_gt_arrays(sample: EvalSample, gt: GroundTruthArrays, source=None) -> EvalSample:
    """Find ``sample``'s row of the 3DDFA arrays by its landmark values (image pixels, 0-based) and
    attach the row, the array's yaw and the re-annotated landmarks.

    Every image is checked against its row: a :class:`DatasetError` naming the image (``source``,
    e.g. its ``.mat``; default its path or id) and the array file is raised when no row of the 68
    landmarks matches (different data) or when the pose array's yaw in that row is not the image's
    own (``sample.yaw``: the pose array is not in the landmark array's row order).
    """
    name = source if source is not None else (sample.image_path or sample.id)
    pts_file = gt.sources.get("pts68", GT_PTS68)
    raw = np.asarray(sample.landmarks, np.float64).copy()
    raw[:, :2] += MATLAB_PIXEL_OFFSET  # back to the arrays' MATLAB frame for matching
    try:
        row = int(metrics.match_rows(raw, gt.pts68, tolerance=1e-2)[0])
    except metrics.MetricInputError as e:
        raise DatasetError(f"{name}: its 68 ground-truth landmarks are in no row of {pts_file} ({e}); "
                           "evaluate AFLW2000-3D images with 3DDFA's arrays of the same release") from e
    sample.row = row
    if gt.yaw is not None:
        yaw = float(gt.yaw[row])
        if not abs(yaw - float(sample.yaw)) <= YAW_TOLERANCE_DEG:
            raise DatasetError(
                f"{name}: its landmarks are row {row} of {pts_file}, but row {row} of "
                f"{gt.sources.get('pose', GT_POSE)} has yaw {yaw:.3f} degrees, not the image's own "
                f"{float(sample.yaw):.3f}: the arrays are not in the same row order (shifted, sorted "
                "differently or from another release). Use 3DDFA's files as distributed")
        sample.yaw = yaw
    if gt.yaw_labels is not None:
        sample.yaw_labels = float(gt.yaw_labels[row])
    if gt.reannotated is not None:
        sample.reannotated = gt.reannotated[row]
    return sample


def images_without_fit(dataset_dir) -> list:
    """The images under ``dataset_dir`` (recursive, as :func:`prnet.data.annotations.list_samples`
    searches) that have no ``.mat`` fit beside them, sorted: they cannot be scored and are left out
    of the benchmark, which the run reports (a partly extracted AFLW2000-3D gives other numbers)."""
    out = []
    for dirpath, _, files in os.walk(Path(dataset_dir), followlinks=True):
        names = set(files)
        out += [Path(dirpath) / f for f in files
                if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and os.path.splitext(f)[0] + ".mat" not in names]
    return sorted(out)


def load_folder_samples(dataset_dir, *, max_images: int | None = None,
                        gt: GroundTruthArrays | None = None) -> list:
    """Samples from a folder in the original AFLW2000 layout (``imageNNNNN.jpg`` + ``.mat``).

    Ground truth from each ``.mat`` (``pt3d_68``, yaw of ``Pose_Para``). With ``gt`` (3DDFA arrays)
    each image's row is found by matching its ``pt3d_68`` values (:func:`attach_gt_arrays`). Images
    are read later, one batch at a time.
    """
    pairs = list_samples(dataset_dir)
    if max_images:
        pairs = pairs[:max_images]
    samples = []
    for image_path, mat_path in pairs:
        fit = load_fit(mat_path)
        if fit.pt3d_68 is None:
            raise DatasetError(f"{mat_path}: no 'pt3d_68' key; AFLW2000-3D fit files have the ground-truth "
                               "68 landmarks there (300W-LP files do not: evaluate on AFLW2000-3D)")
        sample = EvalSample(id=image_path.stem, yaw=float(pose_degrees(fit)[0]),
                            landmarks=np.asarray(fit.pt3d_68, np.float64), image_path=image_path, fit=fit)
        samples.append(attach_gt_arrays(sample, gt, mat_path) if gt is not None else sample)
    return samples


def bfm_dense_ground_truth(bfm_path, uv_path, template) -> Callable:
    """``dense_fn(fit, image_shape) -> (43867, 3)`` image-pixel ground truth on the UV face points.

    The fit's BFM mesh (:func:`prnet.data.posmap.image_vertices`) is rasterised into the UV layout with
    the BFM's UV coordinates (``BFM_UV.mat``), the same way the training position maps are made,
    and sampled at ``template.face_ind``. Needs face3d's ``BFM.mat`` (see :mod:`prnet.data.bfm`).
    """
    bfm = load_bfm(bfm_path, uv_path)
    if bfm.uv_coords is None:
        raise DatasetError(f"{bfm_path}: dense ground truth needs the BFM's UV coordinates: pass BFM_UV.mat")
    rasterizer = UVRasterizer(bfm.uv_coords, bfm.triangles, fill_mask=template.face_mask)

    def dense(fit, image_shape):
        verts = image_vertices(fit, bfm, int(image_shape[0]))
        return vertices_from_posmap(rasterizer(verts).astype(np.float64), template)

    return dense


def _tfds_sample(ex: dict, index: int, template, gt: GroundTruthArrays | None) -> EvalSample:
    if "pose" in ex:
        yaw = float(np.asarray(ex["pose"]).ravel()[0])
    elif "yaw" in ex:
        yaw = float(np.asarray(ex["yaw"]).ravel()[0])
    else:
        raise DatasetError("the TFDS dataset has no 'pose' (yaw, pitch, roll degrees) or 'yaw' feature: the "
                           "yaw buckets need the ground-truth yaw")
    ident = next((ex[k] for k in ("source", "id", "name", "image_id") if k in ex), str(index))
    ident = Path(ident.decode() if isinstance(ident, bytes) else str(ident)).name
    posmap = np.asarray(ex["posmap"], np.float64) if "posmap" in ex else None
    if "full_image" in ex and "landmarks_68_3d" in ex and "tform" in ex:
        # the full photo: same pipeline as a dataset folder (own crop, detector possible)
        vertices = None
        if posmap is not None:
            vertices = vertices_from_posmap(crop_to_image(posmap, np.asarray(ex["tform"], np.float64)), template)
        sample = EvalSample(id=ident, yaw=yaw, landmarks=np.asarray(ex["landmarks_68_3d"], np.float64),
                            image=np.asarray(ex["full_image"], np.uint8), vertices=vertices)
        return attach_gt_arrays(sample, gt) if gt is not None else sample
    if gt is not None:
        raise DatasetError("--gt_dir / --reannotated need image-pixel landmarks (a 'landmarks_68_3d' feature)")
    return EvalSample(id=ident, yaw=yaw, landmarks=np.asarray(ex["landmarks_68"], np.float64),
                      image=np.asarray(ex["image"], np.uint8), precropped=True,
                      vertices=None if posmap is None else vertices_from_posmap(posmap, template))


def load_tfds_samples(name: str = "prnet_aflw2000_3d", *, data_dir=None, split: str = "test",
                      max_images: int | None = None, template=None,
                      gt: GroundTruthArrays | None = None):
    """``(count, iterator of EvalSample)`` from a prepared TFDS dataset, read lazily (one at a time).

    ``prnet_aflw2000_3d`` examples hold the full photo (``full_image``), ``landmarks_68_3d`` in image
    pixels, ``pose`` (yaw first, degrees), ``tform`` and, in its ``posmap`` config
    (``prnet_aflw2000_3d/posmap``), the ground-truth ``posmap`` in crop pixels (-> dense ground truth
    in image pixels through ``inv(tform)``). Datasets of crops only (``image``, ``landmarks_68`` in
    crop pixels) are evaluated on their own crops.
    """
    import tensorflow_datasets as tfds  # heavy (imports TensorFlow): only for --tfds_name

    base = name.split("/")[0].split(":")[0]
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        count = builder.info.splits[split].num_examples
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as e:  # tfds raises several types for missing / unprepared datasets
        raise DatasetError(f"could not load TFDS dataset {name!r} (split {split!r}) from {data_dir}: {e}. "
                           f"Build it first: `tfds build tfds_builders/{base} --manual_dir ... --data_dir ...`") from e
    if max_images:
        ds = ds.take(max_images)
        count = min(count, max_images)
    if count == 0:
        raise DatasetError(f"TFDS dataset {name!r} split {split!r} is empty")
    template = template if template is not None else load_uv_template()
    return count, (_tfds_sample(ex, i, template, gt) for i, ex in enumerate(tfds.as_numpy(ds)))
