"""TFLite export of the fast network (float32, float16 weights, full-integer int8) and a runner.

A model has one input ``[N, 256, 256, 3]`` float32 RGB crops in ``[0, 1]`` and one output, the
position map in crop pixels (x = column, y = row, z toward the camera on the x/y scale).
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.core.files import atomic_write
from prnet.errors import ExportError
from prnet.model.runtime import tflite_interpreter
from prnet.serving.saved_model import _as_net

#: TFLite variants written by :func:`convert_tflite`.
QUANTIZATIONS = ("float32", "float16", "int8")


def convert_tflite(model_or_net, output_path, *, quantization: str = "float32", representative=None,
                   overwrite: bool = False) -> Path:
    """Convert the fast network to a ``.tflite`` file, atomically.

    The model has one input ``[N, 256, 256, 3]`` float32 crops in ``[0, 1]`` (batch 1 by default,
    resizable) and one output, the position map in crop pixels (float32).

    Args:
      quantization: ``"float32"``; ``"float16"`` (fp16 weights, dequantised at load); or ``"int8"``
        (full-integer kernels and activations, float32 input/output via quantize/dequantize ops).
      representative: for int8, an iterable of float32 crops ``(256, 256, 3)`` in ``[0, 1]`` used to
        calibrate activation ranges (e.g. :func:`representative_crops`); ~50-200 typical faces.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    net = _as_net(model_or_net)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.__call__.get_concrete_function()], net)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        crops = [np.asarray(c, np.float32).reshape(CROP_SIZE, CROP_SIZE, 3) for c in (representative or [])]
        if not crops:
            raise ExportError("int8 TFLite needs representative crops for calibration (see "
                              "prnet.serving.saved_model.representative_crops or export.py --calibration)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([c[None]] for c in crops)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = converter.convert()
    if quantization == "int8":
        _check_runs(data, crops[0])
    return atomic_write(output_path, data, overwrite=overwrite)


def _check_runs(data: bytes, crop):
    """Run the converted model once with the default (XNNPACK) delegate; raise ExportError if it cannot."""
    interpreter, _ = tflite_interpreter(model_content=data, num_threads=1)
    try:
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], crop[None])
        interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        raise ExportError(
            f"the int8 model does not run with TFLite's XNNPACK delegate ({err}). This happens when a layer's "
            "activations are (nearly) constant on all calibration crops, which gives out-of-range requantisation "
            "scales (typical of untrained weights): calibrate a trained model on more, representative face "
            "crops") from err


def tflite_predict(path, crops, num_threads: int = 2, runtime: str = "auto") -> np.ndarray:
    """Run a ``.tflite`` position-map model on float32 crops ``[N, 256, 256, 3]``; returns crop px.

    Handles float and quantized input/output tensors through their quantization parameters.
    ``runtime``: the interpreter (:func:`prnet.model.runtime.tflite_interpreter`).
    """
    interpreter, _ = tflite_interpreter(path, num_threads=num_threads, runtime=runtime)
    crops = np.asarray(crops, np.float32)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(crops.shape))
    interpreter.allocate_tensors()
    x = crops
    scale, zero = inp["quantization"]
    if inp["dtype"] != np.float32:
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(crops / scale + zero), info.min, info.max).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    scale, zero = out["quantization"]
    return (y.astype(np.float32) - zero) * scale if out["dtype"] != np.float32 else y
