"""The AFLW2000-3D evaluation protocol of PRNet / 3DDFA: data loading, inference, metrics, reports.

Used by the ``evaluate.py`` command line tool; every step is a plain function so it can be reused
and tested. Ground truth and predictions are compared in image pixels (0-based pixel centres,
x = column, y = row, z toward the camera with an arbitrary origin that the 3D NMEs remove, see
:mod:`prnet.evaluation.metrics`); only a TFDS dataset of bare crops is compared in crop pixels (the NMEs are
the same, the crop being a similarity).

Ground-truth frames: ``pt3d_68`` of the ``.mat`` files and 3DDFA's ``AFLW2000-3D.pts68.npy`` are in
MATLAB's 1-based frame; :func:`prnet.data.annotations.load_fit` subtracts ``MATLAB_PIXEL_OFFSET`` (1 px)
from x, y (rows of the ``.npy`` are matched after adding it back). The re-annotated landmarks
(``AFLW2000-3D-Reannotated.pts68.npy``) are used as stored: on average they already sit ~1 px
up-left of the original ones (mean offset -1.2, -0.9 px over the 2000 images), i.e. 0-based.

Crops: ``gt`` = the paper's protocol, the original's landmark rule (square of 1.6x the mean side of
the bounding box of ``pt3d_68`` x, y); ``detector`` = the face detector's box that overlaps the
ground-truth landmark box most, turned into a crop by the detector's rule (:mod:`prnet.inference.detect`),
falling back to the ``gt`` crop when no face is found (counted in the results).

Runtime: ``forward`` is the network alone (batched, a first warm-up call excluded, time per image =
batch time / batch size); ``end_to_end`` per image = detection + crop + its forward share + mesh
(position map to image pixels, 68 landmarks and 43,867 vertices). Image decoding is excluded.
"""

import csv
import hashlib
import io
import itertools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from prnet.evaluation import metrics
from prnet.errors import DatasetError, ImageReadError, NoFaceFoundError, PRNetError

#: Names of the 3DDFA ground-truth arrays (rows in AFLW2000-3D file-name order).
GT_PTS68 = "AFLW2000-3D.pts68.npy"
GT_POSE = "AFLW2000-3D.pose.npy"
GT_REANNOTATED = "AFLW2000-3D-Reannotated.pts68.npy"

#: Per-image metrics: key -> table row label. Values are NME fractions internally, percentages in
#: every output file.
METRICS = {
    "nme_2d": "68 landmarks, 2D",
    "nme_3d": "68 landmarks, 3D",
    "dense_2d": "all points (dense), 2D",
    "dense_3d": "all points (dense), 3D",
    "reconstruction_3d": "3D reconstruction (rigid)",
    "nme_2d_reannotated": "68 landmarks, 2D",
}
#: The PRNet paper's Table 1 row (AFLW2000-3D, 68 landmarks, 2D NME %, gt-landmark crops).
PAPER_2D = {"0-30": 2.75, "30-60": 3.51, "60-90": 4.61, "mean_of_buckets": 3.62}
TIMING_KEYS = ("detect_ms", "crop_ms", "forward_ms", "mesh_ms", "end_to_end_ms")
RANDOM_WARNING = ("RANDOM WEIGHTS (--smoke_test_random_weights): this network is untrained; every number "
                  "below only tests the pipeline and says nothing about PRNet's accuracy.")


@dataclass
class EvalSample:
    """One face to evaluate, ground truth in the frame of ``image`` (0-based pixels).

    ``image``/``image_path``: RGB uint8 picture (loaded lazily from the path); when ``precropped``
    it is already the 256x256 network crop (TFDS examples) and no crop is made. ``landmarks``:
    ``(68, 3)`` x, y, z; ``reannotated``: ``(68, 2)`` or None; ``vertices``: ``(43867, 3)`` dense
    ground truth on the UV face points or None; ``yaw``: ground-truth yaw, degrees; ``fit``: the
    :class:`prnet.data.annotations.Fit` it came from (for dense ground truth from a BFM), or None.
    """

    id: str
    yaw: float
    landmarks: np.ndarray
    image_path: Optional[Path] = None
    image: Optional[np.ndarray] = None
    precropped: bool = False
    reannotated: Optional[np.ndarray] = None
    vertices: Optional[np.ndarray] = None
    row: Optional[int] = None
    fit: Optional[object] = None

    def load_image(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        return read_image(self.image_path)


def read_image(path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``; :class:`ImageReadError` if unreadable."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{path}: missing or not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class GroundTruthArrays:
    """3DDFA's arrays: ``pts68`` (M, 68, 3) MATLAB frame, ``yaw`` (M,) degrees, ``reannotated`` (M, 68, 2)."""

    pts68: np.ndarray
    yaw: Optional[np.ndarray]
    reannotated: Optional[np.ndarray]
    sources: dict = field(default_factory=dict)


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: could not read {what} ({e}); get it from 3DDFA's "
                           "test.configs / aflw2000-3d ground-truth files") from e


def load_gt_arrays(gt_dir=None, reannotated=None) -> Optional[GroundTruthArrays]:
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
    sources = {"pts68": str(pts_path)}
    yaw = None
    if (gt_dir / GT_POSE).is_file():
        pose = _load_npy(gt_dir / GT_POSE, "the poses")
        yaw = pose.reshape(pose.shape[0], -1)[:, 0].astype(np.float64)  # file holds yaw (degrees) first
        if yaw.shape[0] != pts.shape[0]:
            raise DatasetError(f"{gt_dir / GT_POSE}: {yaw.shape[0]} rows but {pts.shape[0]} landmark sets")
        sources["pose"] = str(gt_dir / GT_POSE)
    re_path = Path(reannotated) if reannotated is not None else gt_dir / GT_REANNOTATED
    re = None
    if re_path.is_file():
        re = _load_npy(re_path, "the re-annotated landmarks")
        if re.shape != (pts.shape[0], 2, 68):
            raise DatasetError(f"{re_path}: expected shape ({pts.shape[0]}, 2, 68), got {re.shape}")
        re = re.transpose(0, 2, 1).astype(np.float64)
        sources["reannotated"] = str(re_path)
    elif reannotated is not None:
        raise DatasetError(f"{re_path}: re-annotated landmarks file not found")
    return GroundTruthArrays(pts.transpose(0, 2, 1).astype(np.float64), yaw, re, sources)


def attach_gt_arrays(sample: EvalSample, gt: GroundTruthArrays) -> EvalSample:
    """Find ``sample``'s row of the 3DDFA arrays by its landmark values (image pixels, 0-based) and
    attach the row, the array's yaw and the re-annotated landmarks. Raises
    :class:`prnet.evaluation.metrics.MetricInputError` if no row matches (different data)."""
    from prnet.data.annotations import MATLAB_PIXEL_OFFSET

    raw = np.asarray(sample.landmarks, np.float64).copy()
    raw[:, :2] += MATLAB_PIXEL_OFFSET  # back to the arrays' MATLAB frame for matching
    row = int(metrics.match_rows(raw, gt.pts68, tolerance=1e-2)[0])
    sample.row = row
    if gt.yaw is not None:
        sample.yaw = float(gt.yaw[row])
    if gt.reannotated is not None:
        sample.reannotated = gt.reannotated[row]
    return sample


def load_folder_samples(dataset_dir, *, max_images: Optional[int] = None,
                        gt: Optional[GroundTruthArrays] = None) -> list:
    """Samples from a folder in the original AFLW2000 layout (``imageNNNNN.jpg`` + ``.mat``).

    Ground truth from each ``.mat`` (``pt3d_68``, yaw of ``Pose_Para``). With ``gt`` (3DDFA arrays)
    each image's row is found by matching its ``pt3d_68`` values (:func:`attach_gt_arrays`). Images
    are read later, one batch at a time.
    """
    from prnet.data.annotations import list_samples, load_fit, pose_degrees

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
        samples.append(attach_gt_arrays(sample, gt) if gt is not None else sample)
    return samples


def bfm_dense_ground_truth(bfm_path, uv_path, template) -> Callable:
    """``dense_fn(fit, image_shape) -> (43867, 3)`` image-pixel ground truth on the UV face points.

    The fit's BFM mesh (:func:`prnet.data.posmap.image_vertices`) is rasterised into the UV layout with
    the BFM's UV coordinates (``BFM_UV.mat``), the same way the training position maps are made,
    and sampled at ``template.face_ind``. Needs face3d's ``BFM.mat`` (see :mod:`prnet.data.bfm`).
    """
    from prnet.data.bfm import load_bfm
    from prnet.data.posmap import UVRasterizer, image_vertices
    from prnet.core.uv import vertices_from_posmap

    bfm = load_bfm(bfm_path, uv_path)
    if bfm.uv_coords is None:
        raise DatasetError(f"{bfm_path}: dense ground truth needs the BFM's UV coordinates: pass BFM_UV.mat")
    rasterizer = UVRasterizer(bfm.uv_coords, bfm.triangles, fill_mask=template.face_mask)

    def dense(fit, image_shape):
        verts = image_vertices(fit, bfm, int(image_shape[0]))
        return vertices_from_posmap(rasterizer(verts).astype(np.float64), template)

    return dense


def _tfds_sample(ex: dict, index: int, template, gt: Optional[GroundTruthArrays]) -> EvalSample:
    from prnet.core.crop import crop_to_image
    from prnet.core.uv import vertices_from_posmap

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
                      max_images: Optional[int] = None, template=None,
                      gt: Optional[GroundTruthArrays] = None):
    """``(count, iterator of EvalSample)`` from a prepared TFDS dataset, read lazily (one at a time).

    ``prnet_aflw2000_3d`` examples hold the full photo (``full_image``), ``landmarks_68_3d`` in image
    pixels, ``pose`` (yaw first, degrees), ``tform`` and, in its ``posmap`` config
    (``prnet_aflw2000_3d/posmap``), the ground-truth ``posmap`` in crop pixels (-> dense ground truth
    in image pixels through ``inv(tform)``). Datasets of crops only (``image``, ``landmarks_68`` in
    crop pixels) are evaluated on their own crops.
    """
    import tensorflow_datasets as tfds

    from prnet.core.uv import load_uv_template

    base = name.split("/")[0].split(":")[0]
    if base.startswith("prnet_"):
        try:
            __import__(f"tfds_builders.{base}")  # registers the project's builder
        except ImportError:
            pass
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


# ----------------------------------------------------------------------------- inference

def _crop_for(sample: EvalSample, image, crop: str, detector):
    """``(tform, crop float32, crop_source, detect_ms, crop_ms)`` for one sample.

    Detector boxes are turned into a crop by the detector's ``box_rule`` (see :mod:`prnet.inference.detect`):
    ``"detector"`` (default) = the original's x1.58 rule, ``"bbox"`` = the landmark-box x1.6 rule.
    Of several faces, the box overlapping the ground-truth landmarks' box most is used; when none
    overlaps it (or none is found) the ``gt`` crop is used and the record says so.
    """
    from prnet.core.crop import (box_from_bbox, box_from_detector, box_from_landmarks, crop_transform,
                            landmarks_bbox, warp_crop)
    from prnet.inference.detect import box_iou

    if sample.precropped:
        t0 = time.perf_counter()
        out = np.asarray(image, np.float32) / 255.0
        return np.eye(3), out, "dataset", 0.0, (time.perf_counter() - t0) * 1e3
    detect_ms, source = 0.0, "gt"
    t0 = time.perf_counter()
    center = size = None
    if crop == "detector":
        try:
            boxes = np.asarray(detector(image), np.float64).reshape(-1, 4)
        except NoFaceFoundError:
            boxes = np.zeros((0, 4))
        iou = box_iou(landmarks_bbox(sample.landmarks), boxes)[0] if len(boxes) else np.zeros(0)
        if len(boxes) and iou.max() > 0:
            rule = box_from_bbox if getattr(detector, "box_rule", "detector") == "bbox" else box_from_detector
            center, size = rule(boxes[int(np.argmax(iou))])
            source = "detector"
        else:
            source = "gt (no face detected)"
        detect_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    if center is None:
        center, size = box_from_landmarks(sample.landmarks)
    tform = crop_transform(center, size)
    out = warp_crop(image, tform)
    return tform, out, source, detect_ms, (time.perf_counter() - t1) * 1e3


def _mesh(posmap_crop, tform, template):
    """Crop-pixel position map -> image-pixel ``(landmarks (68,3), vertices (43867,3))``."""
    from prnet.core.crop import crop_to_image
    from prnet.core.uv import landmarks_from_posmap, vertices_from_posmap

    posmap = crop_to_image(posmap_crop, tform)
    return landmarks_from_posmap(posmap, template), vertices_from_posmap(posmap, template)


def _score(sample: EvalSample, landmarks, vertices, gt_vertices=None) -> dict:
    gt = sample.landmarks[None]
    row = {
        "nme_2d": float(metrics.landmark_nme(landmarks[None], gt, dims=2)[0]),
        "nme_3d": float(metrics.landmark_nme(landmarks[None], gt, dims=3)[0]),
        "nme_2d_reannotated": None, "dense_2d": None, "dense_3d": None, "reconstruction_3d": None,
    }
    if sample.reannotated is not None:
        row["nme_2d_reannotated"] = float(metrics.landmark_nme(landmarks[None, :, :2],
                                                               sample.reannotated[None], dims=2)[0])
    if gt_vertices is not None:
        gv = np.asarray(gt_vertices, np.float64)[None]
        row["dense_2d"] = float(metrics.dense_nme(vertices[None], gv, dims=2)[0])
        row["dense_3d"] = float(metrics.dense_nme(vertices[None], gv, dims=3)[0])
        row["reconstruction_3d"] = float(metrics.reconstruction_nme(vertices[None], gv)[0])
    return row


def run_inference(predict_posmaps: Callable, samples, template, *, crop: str = "gt",
                  detector: Optional[Callable] = None, batch_size: int = 8, dense_fn: Optional[Callable] = None,
                  progress: bool = True, total: Optional[int] = None) -> list:
    """Crop, predict, reconstruct and score every sample; returns one record (dict) per sample.

    ``samples``: any iterable of :class:`EvalSample` (read lazily, ``batch_size`` at a time; ``total``
    for the progress bar). ``predict_posmaps(crops float32 [N,256,256,3] in [0,1]) -> [N,256,256,3]``
    crop-pixel position maps (e.g. ``Predictor.predict_posmaps``). ``detector(image) -> boxes (x0, y0, x1, y1)`` is
    needed for ``crop='detector'``. ``dense_fn(fit, image_shape) -> (43867, 3)`` (e.g.
    :func:`bfm_dense_ground_truth`) supplies dense ground truth for samples that have none.
    Records hold ``id, yaw, bucket, crop, row``, the NME fractions
    of :data:`METRICS` (None when the ground truth is missing) and the per-image timings (ms).
    """
    from tqdm import tqdm

    if crop not in ("gt", "detector"):
        raise ValueError(f"crop must be 'gt' or 'detector', got {crop!r}")
    if crop == "detector" and detector is None:
        raise ValueError("crop='detector' needs a detector(image) -> boxes callable")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if total is None and hasattr(samples, "__len__"):
        total = len(samples)
    samples = iter(samples)
    records, warm = [], False
    bar = tqdm(total=total, desc="evaluating", unit="img", disable=not progress)
    while True:
        batch = list(itertools.islice(samples, batch_size))
        if not batch:
            break
        if not warm:  # graph tracing / allocation: a first, untimed call
            predict_posmaps(np.zeros((len(batch), 256, 256, 3), np.float32))
            warm = True
        prepared = []
        dense = []
        for s in batch:
            image = s.load_image()
            prepared.append(_crop_for(s, image, crop, detector))
            gv = s.vertices
            if gv is None and dense_fn is not None and s.fit is not None:
                gv = np.asarray(dense_fn(s.fit, image.shape), np.float64)
            dense.append(gv)
        crops = np.stack([p[1] for p in prepared])
        t0 = time.perf_counter()
        posmaps = np.asarray(predict_posmaps(crops))
        forward_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        if posmaps.shape != crops.shape:
            raise PRNetError(f"the model returned shape {posmaps.shape} for crops of shape {crops.shape}")
        for s, (tform, _, source, detect_ms, crop_ms), pos, gv in zip(batch, prepared, posmaps, dense):
            t1 = time.perf_counter()
            landmarks, vertices = _mesh(pos, tform, template)
            mesh_ms = (time.perf_counter() - t1) * 1e3
            record = {"id": s.id, "row": s.row, "yaw": s.yaw, "bucket": metrics.YAW_BUCKETS[
                int(metrics.yaw_bucket(s.yaw))][0], "crop": source}
            record.update(_score(s, landmarks, vertices, gv))
            record.update(detect_ms=detect_ms, crop_ms=crop_ms, forward_ms=forward_ms, mesh_ms=mesh_ms,
                          end_to_end_ms=detect_ms + crop_ms + forward_ms + mesh_ms)
            records.append(record)
        bar.update(len(batch))
    bar.close()
    if not records:
        raise DatasetError("no samples to evaluate")
    return records


# ----------------------------------------------------------------------------- summary

def _percent(summary: dict) -> dict:
    def p(v):
        return None if v is None else 100.0 * v
    return {"buckets": {k: p(v) for k, v in summary["buckets"].items()}, "counts": summary["counts"],
            "mean_of_buckets": p(summary["mean_of_buckets"]), "mean": p(summary["mean"]),
            "median": p(summary["median"]), "count": summary["count"]}


def summarize(records: Sequence[dict]) -> dict:
    """NME summaries (percent) per metric with yaw buckets, and timing statistics (ms)."""
    yaw = np.array([r["yaw"] for r in records], np.float64)
    out = {"nme_percent": {}, "runtime_ms": {}}
    for key in METRICS:
        values = [r[key] for r in records]
        have = np.array([v is not None for v in values])
        if not have.any():
            continue
        errors = np.array([v for v in values if v is not None], np.float64)
        out["nme_percent"][key] = _percent(metrics.bucket_summary(errors, yaw[have]))
    for key in TIMING_KEYS:
        t = np.array([r[key] for r in records], np.float64)
        out["runtime_ms"][key] = {"mean": float(t.mean()), "median": float(np.median(t))}
    out["crop_sources"] = {s: sum(r["crop"] == s for r in records) for s in sorted({r["crop"] for r in records})}
    return out


def _fmt(v, width=9):
    return f"{'-':>{width}}" if v is None else f"{v:{width}.2f}"


def format_tables(results: dict) -> str:
    """The papers' layout: rows = metrics, columns = |yaw| buckets, mean of buckets, plain mean."""
    nme = results["summary"]["nme_percent"]
    labels = [lab for lab, _, _ in metrics.YAW_BUCKETS]
    first = next(iter(nme.values()))
    header = (f"{'NME (%), by |yaw| (deg)':<34}"
              + "".join(f"{lab + ' n=' + str(first['counts'][lab]):>14}" for lab in labels)
              + f"{'Mean':>9}{'Mean(all)':>11}")
    rule = "-" * len(header)

    def row(label, s):
        return (f"{label:<34}" + "".join(f"{_fmt(s['buckets'][lab], 14)}" for lab in labels)
                + _fmt(s["mean_of_buckets"]) + _fmt(s["mean"], 11))

    lines = []
    random = results["model"].get("random_weights")
    if random:
        lines += ["!" * len(header), "WARNING: " + RANDOM_WARNING, "!" * len(header)]
    data = results["data"]
    lines += [f"AFLW2000-3D ({data['count']} images, crop: {data['crop']}), model: {results['model']['description']}",
              "Table 1: ground truth of the fits (pt3d_68; dense = fit's face points). "
              "Mean = mean of the 3 bucket means.", rule, header, rule]
    for key in ("nme_2d", "nme_3d", "dense_2d", "dense_3d", "reconstruction_3d"):
        if key in nme:
            lines.append(row(METRICS[key], nme[key]))
    lines.append(f"{'PRNet paper (Table 1), 2D':<34}" + "".join(f"{_fmt(PAPER_2D[lab], 14)}" for lab in labels)
                 + _fmt(PAPER_2D["mean_of_buckets"]) + _fmt(None, 11))
    lines.append(rule)
    if "nme_2d_reannotated" in nme:
        lines += ["Table 2: re-annotated landmarks (AFLW2000-3D-Reannotated.pts68.npy)", rule, header, rule,
                  row(METRICS["nme_2d_reannotated"], nme["nme_2d_reannotated"]), rule]
    rt = results["summary"]["runtime_ms"]
    lines.append(f"Runtime per image ({results['runtime']['device']}, batch {results['runtime']['batch_size']}): "
                 f"network forward mean {rt['forward_ms']['mean']:.2f} ms / "
                 f"median {rt['forward_ms']['median']:.2f} ms; "
                 f"end-to-end (detect {rt['detect_ms']['mean']:.2f} + crop {rt['crop_ms']['mean']:.2f} + network + "
                 f"mesh {rt['mesh_ms']['mean']:.2f}) mean {rt['end_to_end_ms']['mean']:.2f} ms / median "
                 f"{rt['end_to_end_ms']['median']:.2f} ms")
    if random:
        lines.append("WARNING: " + RANDOM_WARNING)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- outputs

def file_sha256(path) -> Optional[str]:
    """SHA-256 of a weights file, of a SavedModel folder (all files, sorted by relative path), or of
    a TF1 checkpoint prefix (``prefix.index`` + ``prefix.data-*``); None if nothing is there."""
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((str(p.relative_to(path)), p) for p in path.rglob("*") if p.is_file())
    else:
        files = sorted((p.name, p) for p in path.parent.glob(path.name + ".*") if p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for name, p in files:
        if len(files) > 1:
            h.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable, binary: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


CSV_COLUMNS = ("id", "row", "yaw", "bucket", "crop") + tuple(f"{k}_percent" for k in METRICS) + TIMING_KEYS


def per_image_rows(records: Sequence[dict]) -> list:
    """Records as output rows: keys :data:`CSV_COLUMNS`, NMEs in percent (None = no ground truth)."""
    rows = []
    for r in records:
        row = {k: r[k] for k in ("id", "row", "yaw", "bucket", "crop")}
        row.update({f"{k}_percent": None if r[k] is None else 100.0 * r[k] for k in METRICS})
        row.update({k: r[k] for k in TIMING_KEYS})
        rows.append(row)
    return rows


def write_csv(path, records: Sequence[dict]):
    """Per-image ``results.csv``: id, 3DDFA row, yaw (deg), bucket, crop source, NMEs (%), timings (ms);
    empty cells where there is no value."""
    def cell(v):
        if v is None:
            return ""
        return f"{v:.6f}" if isinstance(v, float) else v

    def write(f):
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in per_image_rows(records):
            w.writerow([cell(row[k]) for k in CSV_COLUMNS])
    _atomic_write(Path(path), write)


def plot_ced(path, records: Sequence[dict], title: str, keys=None):
    """Cumulative error distribution PNG: NME (%) on x, fraction of images on y, one curve per metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in (keys or METRICS) if any(r[k] is not None for r in records)]
    fig = Figure(figsize=(7, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # 0..10 % as the papers' plots, widened to show at least 95 % of the images of every curve
    p95 = max(np.percentile([100 * r[k] for r in records if r[k] is not None], 95) for k in keys)
    top = max(10.0, 1.1 * float(p95))
    thresholds = np.linspace(0, top, 400)
    for k in keys:
        errors = np.array([100 * r[k] for r in records if r[k] is not None])
        x, y = metrics.ced_curve(errors, thresholds)
        suffix = " (re-annotated)" if k == "nme_2d_reannotated" else ""
        ax.plot(x, y, label=f"{METRICS[k]}{suffix}: mean {errors.mean():.2f}%")
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of images")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write(Path(path), lambda f: f.write(buf.getvalue()), binary=True)


def write_outputs(output_dir, results: dict, records: Sequence[dict]) -> dict:
    """Write ``results.csv``, ``ced.png``, ``table.txt`` and ``results.json`` (summary + per-image rows,
    written last), each atomically; return their paths."""
    out = Path(output_dir)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "ced": out / "ced.png",
             "table": out / "table.txt"}
    write_csv(paths["csv"], records)
    title = "AFLW2000-3D CED, " + results["model"]["description"]
    if results["model"].get("random_weights"):
        title = "RANDOM WEIGHTS - meaningless numbers\n" + title
    plot_ced(paths["ced"], records, title)
    _atomic_write(paths["table"], lambda f: f.write(results["table"] + "\n"))
    payload = dict(results, per_image=per_image_rows(records))
    # written last: a results.json means the whole set is complete
    _atomic_write(paths["json"], lambda f: json.dump(payload, f, indent=2))
    return paths


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


def build_results(records, *, model: dict, data: dict, batch_size: int) -> dict:
    """Everything ``results.json`` holds: model, data, protocol, summary (percent), runtime, table."""
    results = {
        "model": model,
        "data": dict(data, count=len(records)),
        "protocol": {
            "unit": "NME in percent",
            "normalisation": "sqrt(w*h) of the ground-truth x,y bounding box: of the 68 landmarks for "
                             "landmark NMEs, of the ground-truth face points for dense/reconstruction NMEs",
            "nme_3d": "each point set's own minimum z subtracted first",
            "reconstruction_3d": "prediction rigidly aligned (rotation + translation, Kabsch) to the ground truth "
                                 "on the same UV points, then mean 3D distance",
            "yaw_buckets": "|yaw| <= 30, 30 < |yaw| <= 60, |yaw| > 60 degrees (3DDFA's rule; >90 in the last)",
            "mean": "mean_of_buckets = mean of the three bucket means (the papers' 'Mean'); mean = over all images",
            "crop": "gt: square 1.6x the mean side of the pt3d_68 x,y bounding box; detector: the detector box "
                    "by its rule (dlib-CNN-like boxes: x1.58, centre moved down 0.14x; calibrated landmark boxes: "
                    "x1.6), the box overlapping the gt landmarks most; falls back to gt when no face is found",
            "frames": "fit landmarks shifted by -1 px (MATLAB 1-based -> 0-based); re-annotations used as stored",
        },
        "summary": summarize(records),
        "runtime": {"device": device_name(), "batch_size": batch_size,
                    "forward": "network only, batched, warm-up excluded, batch time / batch size",
                    "end_to_end": "detection + crop + network share + mesh (landmarks, vertices); no image decode"},
    }
    if model.get("random_weights"):
        results["warning"] = RANDOM_WARNING
    results["table"] = format_tables(results)
    return results


# ----------------------------------------------------------------------------- the whole run

@dataclass
class EvalConfig:
    """Everything ``evaluate.py`` passes in (see its ``--help`` for each field's meaning)."""

    output_dir: str
    weights: Optional[str] = None
    random_weights: bool = False
    dataset_dir: Optional[str] = None
    tfds_name: Optional[str] = None
    data_dir: Optional[str] = None
    split: str = "test"
    crop: str = "gt"
    detector: str = "auto"
    detector_model: Optional[str] = None
    gt_dir: Optional[str] = None
    reannotated: Optional[str] = None
    bfm: Optional[str] = None
    bfm_uv: Optional[str] = None
    assets_dir: Optional[str] = None
    max_images: Optional[int] = None
    batch_size: int = 8
    progress: bool = True


def load_model(weights=None, *, random_weights: bool = False, batch_size: int = 8):
    """``(predictor, model_info)``: a :class:`prnet.inference.predictor.Predictor` and what ``results.json``
    records about it (weights path, SHA-256, random flag, backend). ``weights=None`` = the official
    weights (:func:`prnet.weights.download.ensure_official_weights`)."""
    from prnet.inference.predictor import Predictor

    if random_weights:
        if weights is not None:
            raise ValueError("random weights and a weights path exclude each other")
        predictor = Predictor.from_weights(None, smoke_test_random_weights=True, batch_size=batch_size)
        return predictor, {"weights": None, "sha256": None, "random_weights": True,
                           "description": "RANDOM WEIGHTS (smoke test, untrained)"}
    official = weights is None
    if official:
        from prnet.weights.download import ensure_official_weights

        weights = ensure_official_weights()
    predictor = Predictor.from_weights(str(weights), batch_size=batch_size)
    path = Path(weights)
    return predictor, {"weights": str(path.resolve()), "sha256": file_sha256(path), "random_weights": False,
                       "official": official,
                       "description": ("official PRNet weights" if official else path.name)}


def _predict_fn(predictor) -> Callable:
    return predictor.predict_posmaps if hasattr(predictor, "predict_posmaps") else predictor


def evaluate(config: EvalConfig, predictor=None, model_info: Optional[dict] = None) -> dict:
    """Run the protocol end to end; write the outputs; return the results (plus ``outputs`` paths).

    ``predictor``/``model_info`` may be given directly (anything with ``predict_posmaps`` or a
    callable crops -> posmaps); otherwise they come from :func:`load_model`.
    """
    from prnet.core.uv import load_uv_template

    if (config.dataset_dir is None) == (config.tfds_name is None):
        raise ValueError("give exactly one of dataset_dir or tfds_name")
    template = load_uv_template(config.assets_dir)
    data = {"crop": config.crop, "max_images": config.max_images}
    detector = dense_fn = None
    gt = load_gt_arrays(config.gt_dir, config.reannotated)
    data["gt_arrays"] = gt.sources if gt else None
    if config.dataset_dir is not None:
        samples = load_folder_samples(config.dataset_dir, max_images=config.max_images, gt=gt)
        total = len(samples)
        data.update(source="folder", dataset_dir=str(Path(config.dataset_dir).resolve()))
        if config.bfm is not None:
            dense_fn = bfm_dense_ground_truth(config.bfm, config.bfm_uv, template)
            data.update(dense_ground_truth={"bfm": str(config.bfm), "bfm_uv": str(config.bfm_uv)})
    else:
        if config.bfm is not None:
            raise ValueError("--bfm applies to --dataset_dir; a TFDS dataset brings its own posmaps "
                             "(build prnet_aflw2000_3d with --config=posmap)")
        total, samples = load_tfds_samples(config.tfds_name, data_dir=config.data_dir, split=config.split,
                                           max_images=config.max_images, template=template, gt=gt)
        data.update(source="tfds", tfds_name=config.tfds_name, data_dir=config.data_dir, split=config.split,
                    dense_ground_truth="the dataset's posmap feature, if any")
    if config.crop == "detector":
        from prnet.inference.detect import make_detector

        kwargs = {"model_path": config.detector_model} if config.detector == "dlib_cnn" else {}
        detector = make_detector(config.detector, **kwargs)
        data.update(detector=getattr(detector, "name", config.detector),
                    detector_box_rule=getattr(detector, "box_rule", "detector"))
    if predictor is None:
        predictor, model_info = load_model(config.weights, random_weights=config.random_weights,
                                           batch_size=config.batch_size)
    model_info = dict(model_info or {"description": "in-memory model", "random_weights": False})
    if getattr(predictor, "random_weights", False):
        model_info["random_weights"] = True
    if getattr(predictor, "source", None):
        model_info.setdefault("source", str(predictor.source))
    records = run_inference(_predict_fn(predictor), samples, template, crop=config.crop, detector=detector,
                            batch_size=config.batch_size, dense_fn=dense_fn, progress=config.progress,
                            total=total)
    records.sort(key=lambda r: r["id"])
    results = build_results(records, model=model_info, data=data, batch_size=config.batch_size)
    results["outputs"] = {k: str(v) for k, v in write_outputs(config.output_dir, results, records).items()}
    return results
