"""ONNX Runtime inference backend (optional: ``pip install -e ".[onnx]"``).

:class:`ONNXRuntimeBackend` runs a ``prnet.onnx`` written by ``export.py --formats=onnx``
(:mod:`prnet.serving.onnx`) with the contract of the backends of :mod:`prnet.model.runtime`:
``backend(crops)`` with float32 crops ``[N, 256, 256, 3]`` in [0, 1] (NHWC, RGB) -> float32 position
maps ``[N, 256, 256, 3]`` in crop pixels (``[..., 0] = x`` column, ``[..., 1] = y`` row, ``[..., 2] = z``
toward the camera); attributes ``source``, ``random_weights`` and ``precision`` (``"float32"``). The
file has one input and one output with a dynamic batch dimension, so any ``N`` runs on one session.
"""

from pathlib import Path

import numpy as np

from prnet.errors import BackendUnavailableError, ONNXRuntimeNotInstalledError, WeightsFormatError, WeightsNotFoundError
from prnet.model.runtime import CROP_SHAPE, check_crops


def import_onnxruntime():
    """The ``onnxruntime`` module; otherwise :class:`ONNXRuntimeNotInstalledError` (an ImportError) saying how to
    install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ONNXRuntimeNotInstalledError('ONNX Runtime is not installed: pip install -e ".[onnx]" (or pip install '
                                           'onnxruntime), or choose another backend') from e
    return onnxruntime


def _first_line(error) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


class ONNXRuntimeBackend:
    """Run a ``.onnx`` position-map model in ONNX Runtime (its CPU execution provider unless ``providers``).

    ``num_threads``: intra-op threads (default: ONNX Runtime's, one per core). Raises
    :class:`ONNXRuntimeNotInstalledError` without the package, :class:`WeightsNotFoundError` for a
    missing file, :class:`WeightsFormatError` for a file ONNX Runtime cannot load or whose input /
    output is not ``[N, 256, 256, 3]``.
    """

    precision = "float32"

    def __init__(self, path, *, num_threads=None, random_weights: bool = False, providers=None,
                 source: str | None = None):
        ort = import_onnxruntime()
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            if isinstance(e, (BackendUnavailableError, ImportError)):
                raise
            raise WeightsFormatError(f"could not load the ONNX model {path} (corrupt, or not an ONNX file?): "
                                     f"{_first_line(e)}") from e
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise WeightsFormatError(f"ONNX model {path} must have one input and one output, has {len(ins)} and "
                                     f"{len(outs)}")
        if tuple(ins[0].shape[1:]) != CROP_SHAPE or tuple(outs[0].shape[1:]) != CROP_SHAPE:
            raise WeightsFormatError(f"ONNX model {path}: input {ins[0].shape} / output {outs[0].shape} are not "
                                     "[N, 256, 256, 3]")
        self._input, self._output = ins[0].name, outs[0].name
        self.source = source or f"ONNX {path}"
        self.random_weights = bool(random_weights)

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        return np.asarray(self._session.run([self._output], {self._input: crops})[0], dtype=np.float32)
