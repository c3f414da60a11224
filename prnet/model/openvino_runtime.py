"""OpenVINO inference backend (optional: ``pip install -e ".[openvino]"``).

:class:`OpenVINOBackend` runs the project's own files in Intel's OpenVINO runtime, with the same
contract as the backends of :mod:`prnet.model.runtime`: ``backend(crops)`` with float32 crops
``[N, 256, 256, 3]`` in [0, 1] -> float32 position maps ``[N, 256, 256, 3]`` in crop pixels
(``[..., 0] = x`` column, ``[..., 1] = y`` row, ``[..., 2] = z`` toward the camera), attributes
``source`` and ``random_weights``. What it reads:

* an exported SavedModel folder (its ``serving_default`` signature, read by ``Core.read_model``'s
  own TensorFlow frontend; the other signatures are not used);
* a ``.tflite`` file (float32, float16 or int8, read directly by ``Core.read_model``; an int8 file
  keeps its own quantisation: its FakeQuantize ops run in int8 whatever ``precision`` says);
* a Keras ResFCN256 in memory (Keras weights, checkpoints): its BN-folded graph
  (:func:`prnet.model.fast.build_inference_model`) is converted in memory.

The inference precision is always set explicitly (``INFERENCE_PRECISION_HINT``): OpenVINO's CPU
plugin otherwise picks bf16 by itself on CPUs with bf16 units (AVX512_BF16, AMX), which changes the
numbers without saying so. ``precision="float32"`` -> f32, ``"bfloat16"`` -> bf16 (8 significant
bits per activation; faster on such CPUs). The precision the compiled model really uses is read
back and must be the one asked; ``source`` names it and the file. The batch dimension is dynamic,
so any ``N`` runs on one compiled model. Threads are not pinned to cores (OpenVINO pins them by
default, which stalls them when other processes share the CPU).
"""

from pathlib import Path

import numpy as np

from prnet.errors import BackendUnavailableError, OpenVINONotInstalledError, WeightsFormatError, WeightsNotFoundError
from prnet.model.fast import PRECISIONS
from prnet.model.runtime import CROP_SHAPE, TFLITE_IDENTIFIER, check_crops, check_precision

#: ``precision`` (:data:`prnet.model.fast.PRECISIONS`) -> OpenVINO ``INFERENCE_PRECISION_HINT``.
OPENVINO_PRECISIONS = dict(zip(PRECISIONS, ("f32", "bf16")))


#: Oldest OpenVINO release that runs the project's files correctly: 2024.x cannot convert TF 2.21
#: SavedModels or misreads int8 ``.tflite`` files (16 px mean error), and so does 2025.0.
MIN_OPENVINO = (2025, 1)


def import_openvino():
    """The ``openvino`` module (at least :data:`MIN_OPENVINO`); otherwise :class:`OpenVINONotInstalledError`
    (an ImportError) with the install command."""
    try:
        import openvino
    except ImportError as e:
        raise OpenVINONotInstalledError('OpenVINO is not installed: pip install -e ".[openvino]" (or pip install '
                                        '"openvino>=2025.1"), or choose another backend') from e
    version = tuple(int(p) for p in openvino.__version__.split("-")[0].split(".")[:2] if p.isdigit())
    if version < MIN_OPENVINO:
        raise OpenVINONotInstalledError(f"OpenVINO {openvino.__version__} is too old (it misreads int8 .tflite "
                                        'files): pip install -U "openvino>=2025.1" (or pip install -e ".[openvino]")')
    return openvino


def _first_line(error) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def _read_file(ov, core, path: Path):
    """``(ov.Model, description)`` of a SavedModel folder or a ``.tflite`` file."""
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise WeightsNotFoundError(f"no SavedModel at {path} (expected {path / 'saved_model.pb'})")
        try:
            return core.read_model(str(path)), f"SavedModel {path}"
        except Exception as e:  # OpenVINO raises its own types (OpConversionFailure, RuntimeError, ...)
            raise WeightsFormatError(f"OpenVINO could not read the SavedModel {path} (its serving_default "
                                     f"signature; corrupt or incomplete folder?): {_first_line(e)}") from e
    if not path.is_file():
        raise WeightsNotFoundError(f"no weights at {path}: OpenVINO reads a SavedModel folder or a .tflite file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != TFLITE_IDENTIFIER:
        raise WeightsFormatError(f"{path}: OpenVINO reads a SavedModel folder or a .tflite file (this is neither: no "
                                 f"'{TFLITE_IDENTIFIER.decode()}' identifier at bytes 4-8)")
    try:
        return core.read_model(str(path)), f"TFLite {path}"
    except Exception as e:
        raise WeightsFormatError(f"OpenVINO could not read the TFLite model {path} (corrupt or truncated?): "
                                 f"{_first_line(e)}") from e


def _convert_keras(ov, model):
    """The BN-folded graph of a Keras ResFCN256 (or a built :class:`prnet.model.fast.InferenceNet`) as an ov.Model."""
    from prnet.model.fast import build_inference_model

    net = model if hasattr(model, "weights_list") else build_inference_model(model)
    return ov.convert_model(net.__call__.get_concrete_function())


def _weights_note(ov, model) -> str:
    """`` (int8 quantised ...)`` / `` (float16 weights)`` from the model's ops, else ``""``."""
    ops = model.get_ordered_ops()
    if any(op.get_type_name() == "FakeQuantize" for op in ops):
        return " (int8 quantised: its quantised ops run in int8)"
    if any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in ops):
        return " (float16 weights)"
    return ""


class OpenVINOBackend:
    """Run PRNet in OpenVINO (see the module docstring for what it reads and why precision is explicit).

    One call at a time: the backend holds one infer request (as :class:`prnet.model.runtime.TFLiteBackend`
    holds one interpreter). ``compiled_model`` is the ``openvino.CompiledModel`` (its properties say
    what was compiled: ``INFERENCE_PRECISION_HINT``, ``INFERENCE_NUM_THREADS``).

    Args:
      weights: a SavedModel folder, a ``.tflite`` file, or a Keras ResFCN256 (converted in memory).
      precision: ``"float32"`` or ``"bfloat16"`` (OpenVINO inference precision).
      num_threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, every core).
      random_weights: True if the weights are untrained (smoke tests only).
      name: what the weights are, for ``source`` (default: ``"SavedModel <path>"`` / ``"TFLite <path>"`` /
        ``"in-memory Keras model"``).
      device: OpenVINO device (``"CPU"``).

    Raises:
      OpenVINONotInstalledError: ``openvino`` is not installed.
      BackendUnavailableError: ``precision`` cannot run on this device (bfloat16 without bf16 units).
      WeightsNotFoundError / WeightsFormatError: nothing at the path, or a file OpenVINO cannot read,
        or a model that is not ``[N, 256, 256, 3] -> [N, 256, 256, 3]``.
    """

    def __init__(self, weights, *, precision: str = "float32", num_threads=None, random_weights: bool = False,
                 name: str | None = None, device: str = "CPU"):
        check_precision(precision, auto=False)
        ov = import_openvino()
        core = ov.Core()
        if precision == "bfloat16":
            capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in capabilities:
                raise BackendUnavailableError(
                    f"OpenVINO cannot run bfloat16 on this {device} (it has no bf16 units; its capabilities: "
                    f"{', '.join(capabilities)}): use precision float32 (--precision=float32)")
        if isinstance(weights, (str, Path)):
            model, description = _read_file(ov, core, Path(weights).expanduser())
        else:
            model, description = _convert_keras(ov, weights), "in-memory Keras model (BN-folded graph)"
        where = name or description
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise WeightsFormatError(f"{where}: the model must have one input and one output, has "
                                     f"{len(model.inputs)} and {len(model.outputs)}")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or [str(d) for d in shape][1:] != \
                [str(d) for d in CROP_SHAPE]:
            raise WeightsFormatError(f"{where}: input shape {shape} is not [N, 256, 256, 3]")
        if shape[0].is_static:  # any batch size on one compiled model
            model.reshape({model.inputs[0]: ov.PartialShape([-1, *CROP_SHAPE])})
        # No thread pinning: pinned threads wait for their core when other processes share the CPU (measured on
        # 2 busy vCPUs: float32 batch 8, 122.6 ms/image pinned, 48.8 unpinned, interleaved); TF does not pin either.
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            config["ENABLE_CPU_PINNING"] = False
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        try:
            self.compiled_model = core.compile_model(model, device, config)
        except Exception as e:
            raise WeightsFormatError(f"OpenVINO could not compile {where}: {_first_line(e)}") from e
        used = self.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if used != OPENVINO_PRECISIONS[precision]:  # never run another precision silently
            raise BackendUnavailableError(f"OpenVINO would run {where} in {used}, not the {precision} asked, on "
                                          f"this {device}: use another precision")
        self._request = self.compiled_model.create_infer_request()
        self.precision, self.device, self.num_threads = precision, device, num_threads
        self.random_weights = bool(random_weights)
        self.source = (f"OpenVINO {ov.__version__.split('-')[0]} ({device}, {precision}) "
                       f"{name or description}{_weights_note(ov, model)}")

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        self._request.infer({0: crops})
        y = np.array(self._request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused
        if y.shape != crops.shape:
            raise WeightsFormatError(f"{self.source}: output shape {list(y.shape)} is not [N, 256, 256, 3]")
        return y
