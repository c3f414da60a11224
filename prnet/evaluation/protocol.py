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

Model, crops and mesh go through the code ``prnet-demo`` runs: :meth:`Predictor.from_weights`
(same weights formats and backends), :meth:`Predictor.face_crops` / :meth:`Predictor.warp_crops`
and :meth:`Predictor.face_results` (crop -> image pixels, landmarks, vertices).

Crops: ``gt`` = the paper's protocol, the original's landmark rule (square of 1.6x the mean side of
the bounding box of ``pt3d_68`` x, y), as the demo's crop from an annotation file; ``detector`` =
the face detector's box that overlaps the ground-truth landmark box most, turned into a crop by the
detector's rule (:mod:`prnet.inference.detect`), falling back to the ``gt`` crop when no face is
found (counted in the results).

Runtime: ``forward`` is the network alone (batched, a first warm-up call excluded, time per image =
batch time / batch size); ``end_to_end`` per image = detection + crop + its forward share + mesh
(position map to image pixels, 68 landmarks and 43,867 vertices). Image decoding is excluded.
"""

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from prnet.core.crop import landmarks_bbox
from prnet.core.files import (
    check_file_destination,
    ensure_writable_folder,
    folder_error,
    remove_stale_temporaries,
    sha256_file,
)
from prnet.errors import DatasetError, NoFaceFoundError, OutputExistsError, PRNetError
from prnet.evaluation import metrics
from prnet.evaluation.ground_truth import (
    EvalSample,
    bfm_dense_ground_truth,
    images_without_fit,
    load_folder_samples,
    load_gt_arrays,
    load_tfds_samples,
)
from prnet.evaluation.report import OUTPUT_FILES, build_results, write_outputs
from prnet.inference.detect import box_iou, make_detector
from prnet.inference.predictor import Predictor
from prnet.model.runtime import RANDOM_WEIGHTS_WARNING
from prnet.weights.official import describe_cached_weights
from prnet.weights.official import weights_path as official_weights_path

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- inference

def _overlapping(landmarks):
    """``select`` for :meth:`Predictor.face_crops`: of the detected boxes, the one overlapping the
    ground-truth landmarks' box most; none when none overlaps it."""
    gt_box = landmarks_bbox(landmarks)

    def select(boxes):
        if len(boxes) == 0:
            return boxes
        iou = box_iou(gt_box, boxes)[0]
        return boxes[[int(np.argmax(iou))]] if iou.max() > 0 else boxes[:0]

    return select


def _precropped_info():
    """The crop square of a 256x256 dataset crop itself: identity ``tform`` (crop px = image px)."""
    return [(np.array([0.0, 0.0, 255.0, 255.0]), np.array([127.5, 127.5]), 255.0, np.eye(3))]


def _crop_for(predictor: Predictor, sample: EvalSample, image, crop: str):
    """``(crops_info, crop float32 (256, 256, 3), crop_source, detect_ms, crop_ms)`` for one sample.

    The crop is :meth:`Predictor.face_crops` + :meth:`Predictor.warp_crops`, as ``prnet-demo``
    makes it: ``gt`` = from the sample's landmarks (x1.6 rule); ``detector`` = the predictor's
    detector and its ``box_rule`` (:mod:`prnet.inference.detect`), keeping the box that overlaps
    the ground-truth landmarks' box most; when none does (or none is found) the ``gt`` crop is
    used and the record says so.
    """
    if sample.precropped:
        t0 = time.perf_counter()
        out = np.asarray(image, np.float32) / 255.0
        return _precropped_info(), out, "dataset", 0.0, (time.perf_counter() - t0) * 1e3
    detect_ms, source, info = 0.0, "gt", None
    if crop == "detector":
        t0 = time.perf_counter()
        try:
            info = predictor.face_crops(image, select=_overlapping(sample.landmarks))
            source = "detector"
        except NoFaceFoundError:
            source = "gt (no face detected)"
        detect_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    if info is None:
        info = predictor.face_crops(image, landmarks=sample.landmarks)
    out = predictor.warp_crops(image, info)[0]
    return info, out, source, detect_ms, (time.perf_counter() - t1) * 1e3


def _bucket_label(yaw):
    """The :data:`metrics.YAW_BUCKETS` label of a yaw (degrees); None for None."""
    return None if yaw is None else metrics.YAW_BUCKETS[int(metrics.yaw_bucket(yaw))][0]


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


def run_inference(predictor: Predictor, samples, *, crop: str = "gt", batch_size: int = 8,
                  dense_fn: Callable | None = None, progress: bool = True, total: int | None = None,
                  refine: bool = True) -> list:
    """Crop, predict, reconstruct and score every sample; returns one record (dict) per sample.

    ``predictor``: the :class:`Predictor` users run (its backend, UV template, crops and crop ->
    image mapping; its detector for ``crop='detector'``). ``samples``: any iterable of
    :class:`EvalSample` (read lazily, ``batch_size`` at a time; ``total`` for the progress bar).
    ``dense_fn(fit, image_shape) -> (43867, 3)`` (e.g. :func:`bfm_dense_ground_truth`) supplies
    dense ground truth for samples that have none. Records hold ``id, yaw, bucket, crop, row`` (yaw and
    bucket of the fitted pose), ``yaw_labels, bucket_labels`` (the AFLW-label split; None without
    3DDFA's ``AFLW2000-3D-new.pose.npy``), the
    NME fractions of :data:`METRICS` (None when the ground truth is missing) and the per-image
    timings (ms). ``refine``: detector crops get the predictor's landmark re-cropping
    (:meth:`Predictor.refine_many`, ``predictor.refine_passes`` passes), as in ``prnet-demo``;
    ``refine_ms`` is its time (second crop, network and mesh).
    """
    if crop not in ("gt", "detector"):
        raise ValueError(f"crop must be 'gt' or 'detector', got {crop!r}")
    if crop == "detector":
        try:
            predictor.detector  # noqa: B018  (built here, not timed)
        except NoFaceFoundError as e:
            raise ValueError(f"crop='detector' needs a predictor with a face detector: {e}") from e
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
            predictor.predict_posmaps(np.zeros((len(batch), 256, 256, 3), np.float32))
            warm = True
        prepared, images, dense = [], [], []
        for s in batch:
            image = s.load_image()
            images.append(image)
            prepared.append(_crop_for(predictor, s, image, crop))
            gv = s.vertices
            if gv is None and dense_fn is not None and s.fit is not None:
                gv = np.asarray(dense_fn(s.fit, image.shape), np.float64)
            dense.append(gv)
        crops = np.stack([p[1] for p in prepared])
        t0 = time.perf_counter()
        posmaps = np.asarray(predictor.predict_posmaps(crops))
        forward_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        if posmaps.shape != crops.shape:
            raise PRNetError(f"the model returned shape {posmaps.shape} for crops of shape {crops.shape}")
        faces, mesh_ms = [], []
        for image, (info, *_), pos in zip(images, prepared, posmaps):
            t1 = time.perf_counter()
            faces.append(predictor.face_results(image, info, pos[None])[0])
            mesh_ms.append((time.perf_counter() - t1) * 1e3)
        # landmark re-cropping of detector crops, as prnet-demo does (Predictor(refine=...))
        todo = [i for i, p in enumerate(prepared) if p[2] == "detector"] if refine else []
        refine_ms = np.zeros(len(batch))
        if todo:
            t1 = time.perf_counter()
            refined = predictor.refine_many([images[i] for i in todo], [[faces[i]] for i in todo])
            refine_ms[todo] = (time.perf_counter() - t1) * 1e3 / len(todo)
            for i, (face,) in zip(todo, refined):
                faces[i] = face
        for k, (s, face, (_, _, source, detect_ms, crop_ms), gv) in enumerate(zip(batch, faces, prepared, dense)):
            record = {"id": s.id, "row": s.row, "yaw": s.yaw, "bucket": _bucket_label(s.yaw),
                      "yaw_labels": s.yaw_labels, "bucket_labels": _bucket_label(s.yaw_labels), "crop": source}
            record.update(_score(s, face.landmarks, face.vertices, gv))
            record.update(detect_ms=detect_ms, crop_ms=crop_ms, forward_ms=forward_ms, mesh_ms=mesh_ms[k],
                          refine_ms=float(refine_ms[k]),
                          end_to_end_ms=detect_ms + crop_ms + forward_ms + mesh_ms[k] + float(refine_ms[k]))
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
    weights: str | None = None
    random_weights: bool = False
    precision: str = "auto"
    backend: str = "auto"
    dataset_dir: str | None = None
    tfds_name: str | None = None
    data_dir: str | None = None
    split: str = "test"
    crop: str = "gt"
    detector: str = "auto"
    refine: bool = True
    detector_model: str | None = None
    gt_dir: str | None = None
    reannotated: str | None = None
    bfm: str | None = None
    bfm_uv: str | None = None
    assets_dir: str | None = None
    max_images: int | None = None
    batch_size: int = 8
    progress: bool = True


def describe_weights(weights=None, *, random_weights: bool = False) -> dict:
    """What ``results.json`` records about the weights :meth:`Predictor.from_weights` was given:
    path, SHA-256 (a file, a SavedModel folder or a checkpoint prefix), random flag, official flag.
    ``weights=None`` = the official weights (their converted Keras file in the cache)."""
    if random_weights:
        return {"weights": None, "sha256": None, "random_weights": True,
                "description": f"{RANDOM_WEIGHTS_WARNING} (smoke test, untrained)"}
    if weights is None:  # the cache's converted weights: official only with a matching conversion stamp
        path = official_weights_path()
        official, text = describe_cached_weights(path)
        description = "official PRNet weights" if official else text
    else:
        path, official = Path(weights).expanduser(), False
        description = path.name
    return {"weights": str(path.resolve()), "sha256": sha256_file(path), "random_weights": False,
            "official": official, "description": description}


def evaluate(config: EvalConfig, predictor: Predictor | None = None, model_info: dict | None = None) -> dict:
    """Run the protocol end to end; write the outputs; return the results (plus ``outputs`` paths).

    The model is ``Predictor.from_weights(config.weights, ...)``, as in ``prnet-demo`` (the official
    weights through their cached SavedModel export when ``config.weights`` is None), with the UV
    template of ``config.assets_dir`` and, for ``crop='detector'``, the face detector
    ``config.detector``. ``predictor``/``model_info`` may be given directly instead (its own
    template and detector are used).

    Checked before the model is loaded and any image is processed: that ``config.output_dir`` can
    be written (:class:`prnet.errors.OutputFolderError`), the ground-truth arrays and, for a dataset
    folder, every sample's ``.mat`` and its row of the arrays (:class:`prnet.errors.DatasetError`).
    Stale temporaries a killed run left in ``output_dir`` are removed.
    """
    if (config.dataset_dir is None) == (config.tfds_name is None):
        raise ValueError("give exactly one of dataset_dir or tfds_name")
    output_dir = ensure_writable_folder(config.output_dir)
    for name in OUTPUT_FILES.values():  # a folder named like an output is refused now, never replaced later
        try:
            check_file_destination(output_dir / name)
        except OutputExistsError as e:
            raise OutputExistsError(f"{e.blocking} is {e.kind}, not a file: prnet-evaluate writes {name} there "
                                    "and never replaces a folder; choose another --output_dir (or move it "
                                    "away)") from e
    remove_stale_temporaries(output_dir)
    gt = load_gt_arrays(config.gt_dir, config.reannotated)
    unpaired = []
    if config.dataset_dir is not None:
        samples = load_folder_samples(config.dataset_dir, max_images=config.max_images, gt=gt)
        unpaired = images_without_fit(config.dataset_dir)
        if unpaired:
            logger.warning("%d image(s) under %s have no .mat fit beside them and are left out of the benchmark: "
                           "%s", len(unpaired), config.dataset_dir, ", ".join(p.name for p in unpaired[:10])
                           + (", ..." if len(unpaired) > 10 else ""))
    if predictor is None:
        if config.random_weights and config.weights is not None:
            raise ValueError("random weights and a weights path exclude each other")
        detector = None
        if config.crop == "detector":
            kwargs = {"model_path": config.detector_model} if config.detector == "dlib_cnn" else {}
            detector = make_detector(config.detector, **kwargs)
        predictor = Predictor.from_weights(config.weights, smoke_test_random_weights=config.random_weights,
                                           precision=config.precision, backend=config.backend,
                                           detector=detector, template=config.assets_dir,
                                           batch_size=config.batch_size, refine=config.refine)
        model_info = describe_weights(config.weights, random_weights=config.random_weights)
    template = predictor.template
    data = {"crop": config.crop, "max_images": config.max_images}
    dense_fn = None
    data["gt_arrays"] = gt.sources if gt else None
    if config.dataset_dir is not None:
        total = len(samples)
        data.update(source="folder", dataset_dir=str(Path(config.dataset_dir).resolve()))
        data["images_without_mat"] = {"count": len(unpaired), "files": [str(p) for p in unpaired]}
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
        detector = predictor.detector
        data.update(detector=getattr(detector, "name", config.detector),
                    detector_box_rule=getattr(detector, "box_rule", "detector"),
                    refine_passes=predictor.refine_passes if config.refine else 0)
    model_info = dict(model_info or {"description": "in-memory model", "random_weights": False})
    if predictor.random_weights:
        model_info["random_weights"] = True
    model_info.setdefault("source", predictor.source)
    model_info.setdefault("backend", predictor.backend_name)
    if getattr(predictor.backend, "precision", None):  # TFLite files: their own quantisation, not recorded here
        model_info.setdefault("precision", predictor.backend.precision)
    records = run_inference(predictor, samples, crop=config.crop, batch_size=config.batch_size, dense_fn=dense_fn,
                            progress=config.progress, total=total, refine=config.refine)
    records.sort(key=lambda r: r["id"])
    results = build_results(records, model=model_info, data=data, batch_size=config.batch_size)
    try:
        written = write_outputs(output_dir, results, records)
    except OSError as e:  # e.g. the disk filled up during the run: name the user's folder, not a temporary
        raise folder_error(e, output_dir) from e
    results["outputs"] = {k: str(v) for k, v in written.items()}
    return results
