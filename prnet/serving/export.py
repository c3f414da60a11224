"""Write a whole export set (SavedModel, TFLite variants, ONNX) and measure it against Keras."""

import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from prnet.core.files import TEMPORARY_NAME, atomic_path, ensure_writable_folder, folder_error, remove_stale_temporaries
from prnet.errors import ExportError, OutputExistsError, OutputFolderError
from prnet.model.fast import build_inference_model
from prnet.model.resfcn256 import to_posmap
from prnet.serving.calibration import representative_crops
from prnet.serving.onnx import convert_onnx, import_tf2onnx
from prnet.serving.saved_model import (
    DEFAULT_MAX_FACES,
    DEFAULT_MAX_IMAGE_PIXELS,
    _as_net,
    check_max_faces,
    check_max_image_pixels,
    export_saved_model,
    make_detector_graph,
)
from prnet.serving.tflite import QUANTIZATIONS, convert_tflite, tflite_predict

#: The SavedModel formats and the precision of their network (:func:`prnet.model.fast.build_inference_model`):
#: ``saved_model_bf16`` is the BN-folded graph in bfloat16 (float32 output layer), same signatures and
#: float32 inputs / outputs as ``saved_model``.
SAVED_MODEL_FORMATS = {"saved_model": "float32", "saved_model_bf16": "bfloat16"}
#: Every format an export set can hold, in writing order (``onnx``: ``prnet.onnx``, :mod:`prnet.serving.onnx`).
FORMATS = ("saved_model", "saved_model_bf16") + QUANTIZATIONS + ("onnx",)
#: What :func:`export_all` (and export.py) write unless told otherwise: ``saved_model_bf16`` and ``onnx``
#: (an optional extra) are opt-in.
DEFAULT_FORMATS = ("saved_model",) + QUANTIZATIONS


def entry_name(fmt: str) -> str:
    """The name of a format's output inside the export folder (``saved_model/``, ``saved_model_bf16/``,
    ``prnet_<q>.tflite``, ``prnet.onnx``)."""
    if fmt == "onnx":
        return "prnet.onnx"
    return fmt if fmt in SAVED_MODEL_FORMATS else f"prnet_{fmt}.tflite"


def check_formats(formats) -> tuple:
    """The requested formats, deduplicated in order; :class:`ExportError` for an unknown or empty list."""
    formats = tuple(dict.fromkeys(str(f).strip() for f in formats if str(f).strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown format {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
                          f"{', '.join(FORMATS)} (comma-separated)")
    return formats


def check_output_dir(output_dir, overwrite: bool = False) -> Path:
    """Check, before any work, that an export set can be written to ``output_dir``; its absolute path.

    The folder is written as a whole (see :func:`export_all`), so it must be new or empty, or, with
    ``overwrite``, hold only a previous export set (``saved_model/``, ``prnet_*.tflite``): other
    files would be lost with it. Its parent must be writable (the new set is staged beside it).
    Raises :class:`OutputExistsError` or :class:`prnet.errors.OutputFolderError`.
    """
    out = Path(output_dir).expanduser().absolute()
    if os.path.lexists(out):
        if not out.is_dir():
            raise OutputFolderError(f"cannot write the export set to {out}: it is a file, not a folder; "
                                    "choose another --output_dir")
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            raise OutputExistsError(f"{out} already exists and is not empty; pass --overwrite (overwrite=True) "
                                    "to replace the export set in it, or choose a new folder")
        set_names = {entry_name(f) for f in FORMATS}
        foreign = [n for n in entries if n not in set_names and not TEMPORARY_NAME.match(n)]
        if foreign:
            raise OutputExistsError(f"{out} holds files that are not part of an export set "
                                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); an "
                                    "export replaces the whole folder, so choose a new or empty --output_dir")
    ensure_writable_folder(out.parent)
    return out


def export_all(model, output_dir, *, formats=DEFAULT_FORMATS, calibration=None, kpt_ind=None, optimize=True,
               overwrite=False, progress=True, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               detector="blazeface", max_faces: int = DEFAULT_MAX_FACES, template=None) -> dict:
    """Write an export set, the requested formats, as the folder ``output_dir``: ``saved_model/``,
    ``saved_model_bf16/`` and ``prnet_<q>.tflite`` (default: :data:`DEFAULT_FORMATS`).

    ``saved_model_bf16`` is always the BN-folded graph in bfloat16 (``optimize`` applies to the
    float32 formats), with every signature of ``saved_model``.

    Everything is checked first (formats, ``max_image_pixels``, the destination by :func:`check_output_dir`,
    calibration data, the landmark template), then the whole set is written into a hidden temporary folder
    beside ``output_dir`` and replaces it in one step: the folder holds either the previous complete set or the
    new one, never a mix (``overwrite`` replaces every file of the old set, also formats not exported again).
    Returns ``{format: path}``. ``calibration`` is a :func:`representative_crops` source or a list of crops
    (needed for ``int8``); ``max_image_pixels``, ``detector`` (the face detector of the SavedModel's
    ``predict_images_detect``: ``"blazeface"`` or None), ``max_faces`` and ``template`` (the UV template; adds
    the ``pose`` output): see :func:`prnet.serving.saved_model.export_saved_model`.
    """
    formats = check_formats(formats)
    max_image_pixels = check_max_image_pixels(max_image_pixels)
    max_faces = check_max_faces(max_faces)
    saved_models = [f for f in formats if f in SAVED_MODEL_FORMATS]
    if saved_models:
        detector = make_detector_graph(detector)  # DetectorUnavailableError before anything is written
    output_dir = check_output_dir(output_dir, overwrite)
    if "onnx" in formats:
        import_tf2onnx()  # ONNXRuntimeNotInstalledError before anything is written
    crops = None
    if "int8" in formats:
        crops = calibration if isinstance(calibration, list) else (
            representative_crops(calibration) if calibration is not None else None)
        if not crops:
            raise ExportError("int8 needs calibration data: pass --calibration=tfds:prnet_synthetic or a "
                              "folder of face images")
    if kpt_ind is None and template is None and saved_models:
        from prnet.core.uv import load_uv_template

        template = load_uv_template()
    net = build_inference_model(model) if optimize else _as_net(model, optimize=False)
    nets = {"saved_model": net, "saved_model_bf16": build_inference_model(model, precision="bfloat16")
            if "saved_model_bf16" in formats else None}
    remove_stale_temporaries(output_dir.parent, suffix=f"-{output_dir.name}")  # of killed exports
    try:
        with atomic_path(output_dir, overwrite=True, directory=True) as tmp:
            for fmt in tqdm(formats, desc="export", disable=not progress):
                if fmt in SAVED_MODEL_FORMATS:
                    export_saved_model(nets[fmt], tmp / entry_name(fmt), kpt_ind=kpt_ind,
                                       max_image_pixels=max_image_pixels, detector=detector, max_faces=max_faces,
                                       template=template)
                elif fmt == "onnx":
                    convert_onnx(net, tmp / entry_name(fmt))
                else:
                    convert_tflite(net, tmp / entry_name(fmt), quantization=fmt, representative=crops)
            check_output_dir(output_dir, overwrite)  # nobody wrote there meanwhile
    except OSError as err:
        if isinstance(err, OutputFolderError):
            raise
        raise folder_error(err, output_dir, " (writing the export set; the previous one is unchanged)") from err
    return {fmt: output_dir / entry_name(fmt) for fmt in formats}


def _dir_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_exports(model, written: dict, crops) -> list:
    """Size and position-map error (crop px) of each export against the Keras ``model``.

    Returns rows ``{"format", "path", "size_mb", "max_abs_px", "mean_abs_px"}``; the reference is
    ``to_posmap(model(crops))`` (the training graph in inference mode).
    """

    crops = np.asarray(crops, np.float32)
    reference = np.concatenate([model(crops[i:i + 4], training=False).numpy() for i in range(0, len(crops), 4)])
    reference = to_posmap(reference)
    rows = []
    for fmt, path in written.items():
        if fmt in SAVED_MODEL_FORMATS:
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            pred = np.concatenate([fn(images=tf.constant(crops[i:i + 4]))["posmap"].numpy()
                                   for i in range(0, len(crops), 4)])
        elif fmt == "onnx":
            from prnet.model.onnx_runtime import ONNXRuntimeBackend

            pred = ONNXRuntimeBackend(path)(crops)
        else:
            pred = np.concatenate([tflite_predict(path, crops[i:i + 1]) for i in range(len(crops))])
        err = np.abs(pred - reference)
        rows.append({"format": fmt, "path": str(path), "size_mb": _dir_size(path) / 2**20,
                     "max_abs_px": float(err.max()), "mean_abs_px": float(err.mean())})
    return rows
