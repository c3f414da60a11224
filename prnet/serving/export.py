"""Write a whole export set (SavedModel and TFLite variants) and measure it against Keras."""

from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from prnet.errors import ExportError
from prnet.model.fast import build_inference_model
from prnet.model.resfcn256 import to_posmap
from prnet.serving.calibration import representative_crops
from prnet.serving.saved_model import _as_net, export_saved_model
from prnet.serving.tflite import QUANTIZATIONS, convert_tflite, tflite_predict


def export_all(model, output_dir, *, formats=("saved_model",) + QUANTIZATIONS, calibration=None,
               kpt_ind=None, optimize=True, overwrite=False, progress=True) -> dict:
    """Write the requested formats under ``output_dir``: ``saved_model/`` and ``prnet_<q>.tflite``.

    Returns ``{format: path}``. ``calibration`` is a :func:`representative_crops` source or a list
    of crops (needed for ``int8``).
    """

    net = build_inference_model(model) if optimize else _as_net(model, optimize=False)
    output_dir = Path(output_dir).expanduser()
    written = {}
    crops = None
    if "int8" in formats:
        crops = calibration if isinstance(calibration, list) else (
            representative_crops(calibration) if calibration is not None else None)
        if not crops:
            raise ExportError("int8 needs calibration data: pass --calibration=tfds:prnet_synthetic or a "
                              "folder of face images")
    for fmt in tqdm(formats, desc="export", disable=not progress):
        if fmt == "saved_model":
            written[fmt] = export_saved_model(net, output_dir / "saved_model", kpt_ind=kpt_ind,
                                              overwrite=overwrite)
        elif fmt in QUANTIZATIONS:
            written[fmt] = convert_tflite(net, output_dir / f"prnet_{fmt}.tflite", quantization=fmt,
                                          representative=crops, overwrite=overwrite)
        else:
            raise ExportError(f"unknown format {fmt!r}; choose from saved_model, {', '.join(QUANTIZATIONS)}")
    return written


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
        if fmt == "saved_model":
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            pred = np.concatenate([fn(images=tf.constant(crops[i:i + 4]))["posmap"].numpy()
                                   for i in range(0, len(crops), 4)])
        else:
            pred = np.concatenate([tflite_predict(path, crops[i:i + 1]) for i in range(len(crops))])
        err = np.abs(pred - reference)
        rows.append({"format": fmt, "path": str(path), "size_mb": _dir_size(path) / 2**20,
                     "max_abs_px": float(err.max()), "mean_abs_px": float(err.mean())})
    return rows
