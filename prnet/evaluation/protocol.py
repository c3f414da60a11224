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

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from prnet.evaluation import metrics
from prnet.evaluation.ground_truth import (EvalSample, bfm_dense_ground_truth, load_folder_samples,
                                         load_gt_arrays, load_tfds_samples)
from prnet.evaluation.report import build_results, file_sha256, write_outputs
from prnet.errors import DatasetError, NoFaceFoundError, PRNetError


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
        from prnet.weights.official import ensure_official_weights

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
