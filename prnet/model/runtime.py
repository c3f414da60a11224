"""Inference backends: float32 crops ``[N, 256, 256, 3]`` in [0, 1] -> position maps in crop pixels.

Every backend is a callable ``backend(crops) -> posmaps`` (NumPy in, NumPy float32 out, same
``N``) with two attributes: ``source`` (where its weights came from, for messages and output
headers) and ``random_weights`` (True only for an untrained smoke-test network). Position maps are
in crop pixels: ``[..., 0] = x`` (column), ``[..., 1] = y`` (row), ``[..., 2] = z`` (toward the
camera, same scale; see :func:`prnet.core.crop.crop_to_image`).

* :class:`KerasBackend` - a Keras ResFCN256 (``prnet.model.resfcn256``) run in inference mode.
* :class:`FastGraphBackend` - a Keras ResFCN256 run as the BN-folded graph of :mod:`prnet.model.fast`,
  in float32 or bfloat16 (``precision``, one of :data:`prnet.model.fast.PRECISIONS`).
* :class:`SavedModelBackend` - an exported SavedModel: signature ``serving_default``, input
  ``images`` float32 ``[N, 256, 256, 3]`` in [0, 1], output ``posmap`` in crop pixels; its
  ``precision`` is the file's own (``"bfloat16"`` for export.py's ``saved_model_bf16``).
* :class:`TFLiteBackend` - a ``.tflite`` file with one image input and one posmap output, float32
  or int8/uint8 (quantised with the tensors' own scale / zero point).
"""

import os
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.errors import WeightsFormatError, WeightsNotFoundError
from prnet.model.fast import PRECISIONS, build_inference_model
from prnet.model.resfcn256 import BASE_SIZE, build_resfcn256, to_posmap

CROP_SHAPE = (CROP_SIZE, CROP_SIZE, 3)
#: Warning carried by every output of a network with untrained weights (the one wording; derive others).
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS \u2014 NOT A FACE MODEL"
#: The same in ASCII, for ``.obj`` files and text drawn into images (``cv2.putText`` has no em dash).
RANDOM_WEIGHTS_WARNING_ASCII = RANDOM_WEIGHTS_WARNING.replace("\u2014", "-")


def check_crops(crops) -> np.ndarray:
    """Validate and return crops as a contiguous float32 ``[N, 256, 256, 3]`` array."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        raise ValueError("crops must be batched: [N, 256, 256, 3] (add a leading axis for one crop)")
    if crops.ndim != 4 or crops.shape[1:] != CROP_SHAPE:
        raise ValueError(f"crops must have shape [N, 256, 256, 3], got {list(crops.shape)}")
    if crops.dtype == np.uint8:
        raise ValueError("crops must be float32 in [0, 1] (divide uint8 images by 255)")
    return np.ascontiguousarray(crops, dtype=np.float32)


class KerasBackend:
    """Run a Keras model whose output is the sigmoid map (:func:`prnet.model.resfcn256.to_posmap` -> crop pixels).

    Args:
      model: a ``keras.Model`` mapping ``[N, 256, 256, 3]`` to ``[N, 256, 256, 3]`` in [0, 1].
      source: description of where the weights came from.
      random_weights: True if the weights are untrained (smoke tests only).
    """

    precision = "float32"

    def __init__(self, model, source: str = "in-memory Keras model", random_weights: bool = False):
        self.model, self.source, self.random_weights = model, source, bool(random_weights)
        spec = tf.TensorSpec([None, *CROP_SHAPE], tf.float32)
        self._fn = tf.function(lambda x: to_posmap(model(x, training=False)), input_signature=[spec])

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        return np.asarray(self._fn(crops), dtype=np.float32)


#: The accuracy each numeric format of the network is held to against the float32 network (README,
#: "Reduced precision"; ``tests/test_precision_accuracy.py`` checks every exported path on a trained
#: network): ``(posmap_px, nme_change)`` = the largest mean distance between its position map and
#: float32's over the face pixels of the UV map, in crop pixels (256 x 256 crop), and the largest
#: relative change of the 68-landmark NME (0.02 = 2 %, the issue's rule for a path that may be a
#: default). float32 covers every float32 export (SavedModel, TFLite, OpenVINO): round-off only.
#: int8 depends on the network's width: +0.5 / +1.7 % NME (synthetic / real crops) on the full-size
#: reference model, +12 / +17 % (OpenVINO / TFLite) on the quarter-width test network; its bound
#: covers both, and int8 is never a default (measure your model with benchmarks/bench_precision.py).
ACCURACY_BOUNDS = {"float32": (0.01, 0.001), "float16": (1.0, 0.02), "bfloat16": (5.0, 0.02), "int8": (25.0, 0.20)}


#: What ``precision=`` / ``--precision`` accept: ``"auto"`` (:func:`auto_precision`) or one of
#: :data:`prnet.model.fast.PRECISIONS`.
PRECISION_CHOICES = ("auto",) + PRECISIONS


def check_precision(precision: str, *, auto: bool = True) -> str:
    """Return ``precision`` if it is one of :data:`PRECISION_CHOICES` (without ``"auto"`` when
    ``auto`` is false: :data:`prnet.model.fast.PRECISIONS`); raise ValueError otherwise."""
    choices = PRECISION_CHOICES if auto else PRECISIONS
    if precision not in choices:
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    return precision


# ----------------------------------------------------------------------------- the automatic choice

#: ``/proc/cpuinfo`` flags of CPU units that compute in bf16 (oneDNN uses them for bf16 convolutions).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


#: Environment variable: the CPU flags the ``auto`` rule sees instead of ``/proc/cpuinfo``'s (space or comma
#: separated), e.g. ``PRNET_AUTO_CPU_FLAGS=avx2`` takes the float32 path on a CPU with bf16 units. The test
#: suite sets it to this CPU's flags without the bf16 units, so that its float32 references hold on every
#: CPU kind (the bf16 rule is tested with explicit flags).
AUTO_CPU_FLAGS_ENV = "PRNET_AUTO_CPU_FLAGS"


def cpu_flags(cpuinfo: str | None = None) -> frozenset:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the text ``cpuinfo``); empty when unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def gpu_names() -> list:
    """``["NVIDIA H100 80GB HBM3 (compute 9.0)", ...]``: the GPUs TensorFlow sees (empty on CPU-only machines)."""
    names = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):
            details = {}
        name = details.get("device_name", device.name)
        cc = details.get("compute_capability")
        names.append(f"{name} (compute {cc[0]}.{cc[1]})" if cc else name)
    return names


def _gpu_has_bf16(name: str) -> bool:
    """bf16 tensor cores: NVIDIA compute capability 8.0 (Ampere) and later."""
    try:
        major = int(name.rsplit("(compute ", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return False
    return major >= 8


class AutoChoice(NamedTuple):
    """What ``backend="auto"`` / ``precision="auto"`` resolved to, and why (for the ``using weights:`` line)."""

    backend: str  #: ``"tflite"`` or ``"saved_model"`` (a :data:`prnet.weights.formats.BACKENDS` value)
    precision: str  #: ``"float32"`` or ``"bfloat16"``
    hardware: str  #: what was seen, e.g. ``"CPU without bf16 units (AVX2)"``
    reason: str  #: why that path: the measurement behind the rule

    @property
    def text(self) -> str:
        """E.g. ``"auto: TFLite float32 on a CPU without bf16 units (AVX2): ..."``."""
        name = {"tflite": "TFLite", "saved_model": "SavedModel"}.get(self.backend, self.backend)
        return f"auto: {name} {self.precision} on a {self.hardware}: {self.reason}"


def auto_choice(*, flags=None, gpus=None) -> AutoChoice:
    """The fastest path of float32 accuracy (or within the bf16 bound, where bf16 units exist) for this
    machine, by a rule measured on both CPU kinds (docs/performance.md, "The default path"):

    * a GPU: the SavedModel, bf16 on compute capability >= 8.0 (bf16 tensor cores), else float32
      (TFLite would run on the CPU);
    * a CPU with bf16 units (``avx512_bf16`` / ``amx_bf16`` in ``/proc/cpuinfo``): the frozen bf16 graph
      as a SavedModel, 1.6-1.8x faster than any float32 path there (AVX-512 EPYC: 19.5 / 12.6 ms/image
      at batch 1 / 8 against 22.7 / 21.8 for TFLite float32); its accuracy is within
      ``ACCURACY_BOUNDS["bfloat16"]`` (+-0.1 % NME on the trained reference model);
    * any other CPU: TFLite float32 (XNNPACK), the fastest float32 runtime measured on both CPU kinds
      (AVX2 EPYC: 50 vs 80 ms/image for the SavedModel, 61 for OpenVINO float32; AVX-512: 22.7 vs 31.4 and 24.7).

    int8 and float16 are never chosen. ``flags`` (a set of CPU flags) and ``gpus`` (:func:`gpu_names`)
    default to this machine's (flags: :data:`AUTO_CPU_FLAGS_ENV` when set, else ``/proc/cpuinfo``).
    """
    if flags is None:
        override = os.environ.get(AUTO_CPU_FLAGS_ENV)
        flags = cpu_flags() if override is None else frozenset(override.replace(",", " ").split())
    else:
        flags = frozenset(flags)
    gpus = gpu_names() if gpus is None else list(gpus)
    if gpus:
        if all(_gpu_has_bf16(g) for g in gpus):
            return AutoChoice("saved_model", "bfloat16", f"GPU {gpus[0]} with bf16 tensor cores",
                              "bf16, within the bf16 accuracy bound (+-0.1 % NME)")
        return AutoChoice("saved_model", "float32", f"GPU {gpus[0]} without bf16", "float32 on the GPU")
    units = [f for f in BF16_CPU_FLAGS if f in flags]
    if units:
        return AutoChoice("saved_model", "bfloat16", f"CPU with bf16 units ({', '.join(units)})",
                          "bf16 measured 1.6-1.8x faster than every float32 path there, within the bf16 accuracy "
                          "bound (+-0.1 % NME)")
    kind = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return AutoChoice("tflite", "float32", f"CPU without bf16 units ({kind})",
                      "XNNPACK measured the fastest float32 path on CPUs (1.4-1.6x the SavedModel at batch 1)")


def auto_precision(precision: str, *, can_bf16: bool = True, choice: AutoChoice | None = None) -> str:
    """``precision`` itself, or for ``"auto"`` the precision of :func:`auto_choice` (``"float32"`` when the
    runtime asked for cannot run bf16: ``can_bf16=False``)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    precision = (choice or auto_choice()).precision
    return precision if can_bf16 else "float32"


class FastGraphBackend:
    """Run a Keras ResFCN256 as the BN-folded graph :func:`prnet.model.fast.build_inference_model`.

    ``precision="bfloat16"``: bf16 weights and activations, the 3-channel output layer, its sigmoid
    and the scale in float32 (see :mod:`prnet.model.fast`); the output is float32 crop pixels as
    for every backend. ``source`` is ``"<source> (BN-folded graph, <precision>)"``. The weights are
    read once, when the backend is built, and frozen into the graph as constants: oneDNN then
    reorders each kernel into its blocked layout once and caches it, instead of on every call
    (bf16, 2-core AMD EPYC, batch 1: 17.5 vs 21.3 ms/image, the same outputs; batch 8 within noise).
    ``fn``: the frozen graph itself, float32 tensor ``[N, 256, 256, 3]`` -> posmap tensor.
    """

    def __init__(self, model, precision: str = "bfloat16", source: str = "in-memory Keras model",
                 random_weights: bool = False):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        self.precision = check_precision(precision, auto=False)
        net = build_inference_model(model, precision=precision)
        frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
        self.fn = lambda images: tf.nest.flatten(frozen(images))[0]
        self.source = f"{source} (BN-folded graph, {precision})"
        self.random_weights = bool(random_weights)

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        return np.asarray(self.fn(tf.constant(crops)), dtype=np.float32)


def saved_model_precision(path) -> str:
    """``"bfloat16"`` if the SavedModel folder ``path`` holds bfloat16 variables (export.py's
    ``saved_model_bf16``), else ``"float32"``; read from its variables index, nothing is loaded."""
    try:
        dtypes = tf.train.load_checkpoint(str(Path(path) / "variables" / "variables")).get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError):
        return "float32"
    return "bfloat16" if tf.bfloat16 in dtypes.values() else "float32"


class SavedModelBackend:
    """Run an exported SavedModel directory (signature ``serving_default``: ``images`` -> ``posmap``).

    ``precision``: the file's own (:func:`saved_model_precision`; pass it for a SavedModel whose weights
    are frozen into its graph, which has no variables to read it from). ``source`` defaults to
    ``"SavedModel <path>"``, plus ``" (bfloat16)"`` for a bf16 export."""

    def __init__(self, path, random_weights: bool = False, source: str | None = None, precision: str | None = None):
        path = Path(path).expanduser()
        if not (path / "saved_model.pb").is_file():
            raise WeightsNotFoundError(f"no SavedModel at {path} (expected {path / 'saved_model.pb'})")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as e:  # TF raises many types for corrupt protos
            missing = _missing_saved_model_files(path)
            if missing:
                raise WeightsFormatError(
                    f"the SavedModel {path} is incomplete: {missing} is missing (copy the whole SavedModel "
                    "folder, with its variables/ subfolder, or export it again)") from e
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsFormatError(f"could not load the SavedModel {path} (corrupt?): {reason}") from e
        signatures = getattr(loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise WeightsFormatError(f"SavedModel {path} has no 'serving_default' signature "
                                     f"(found: {sorted(signatures)}); export it with `export.py`")
        fn = signatures["serving_default"]
        inputs = fn.structured_input_signature[1]
        if "images" not in inputs or "posmap" not in fn.structured_outputs:
            raise WeightsFormatError(
                f"SavedModel {path}: serving_default must take 'images' and return 'posmap', got inputs "
                f"{sorted(inputs)} and outputs {sorted(fn.structured_outputs)}")
        self._loaded, self._fn = loaded, fn  # keep ``loaded`` alive: the signature refers to its variables
        self.precision = check_precision(precision, auto=False) if precision else saved_model_precision(path)
        suffix = " (bfloat16)" if self.precision == "bfloat16" else ""
        self.source, self.random_weights = source or f"SavedModel {path}{suffix}", bool(random_weights)

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        return np.asarray(self._fn(images=tf.constant(crops))["posmap"], dtype=np.float32)


def _missing_saved_model_files(path: Path) -> str:
    """The first of ``variables/``, its ``variables.index`` and its data shards that a SavedModel
    folder lacks (``""`` if none): what a SavedModel copied without its subfolder looks like."""
    variables = path / "variables"
    if not variables.is_dir():
        return f"the folder {variables}/"
    if not (variables / "variables.index").is_file():
        return str(variables / "variables.index")
    if not any(variables.glob("variables.data-*-of-*")):
        return str(variables / "variables.data-00000-of-00001")
    return ""


#: TFLite interpreters :func:`tflite_interpreter` can use: ``auto`` = ``litert`` when installed, else ``tf``.
TFLITE_RUNTIMES = ("auto", "litert", "tf")


def tflite_interpreter(model_path=None, *, model_content=None, num_threads=None, runtime: str = "auto"):
    """A TFLite interpreter for a ``.tflite`` file (``model_path``) or its bytes (``model_content``).

    ``runtime``: ``"litert"`` - ``ai_edge_litert.interpreter.Interpreter`` (``pip install
    ai-edge-litert``, or the project's ``[litert]`` extra); ``"tf"`` - TensorFlow's
    ``tf.lite.Interpreter`` (deprecated since TF 2.20; its deprecation warning is silenced);
    ``"auto"`` - LiteRT when installed, else TensorFlow's. Both run the same kernels (XNNPACK on
    CPU). Returns ``(interpreter, name)`` with ``name`` ``"ai_edge_litert"`` or ``"tf.lite"``.
    Load errors propagate as the interpreter raises them (``ValueError`` / ``RuntimeError``).
    """
    if runtime not in TFLITE_RUNTIMES:
        raise ValueError(f"runtime must be one of {TFLITE_RUNTIMES}, got {runtime!r}")
    kwargs = {"model_path": None if model_path is None else str(model_path), "model_content": model_content,
              "num_threads": num_threads}
    if runtime != "tf":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            if runtime == "litert":
                raise ImportError("the LiteRT interpreter is not installed: pip install ai-edge-litert "
                                  "(or pip install -e \".[litert]\")") from None
        else:
            return Interpreter(**kwargs), "ai_edge_litert"
    import warnings

    with warnings.catch_warnings():  # TF >= 2.20: "tf.lite.Interpreter is deprecated ... use ai_edge_litert"
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return tf.lite.Interpreter(**kwargs), "tf.lite"


#: A TFLite model is a FlatBuffer with this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


class TFLiteBackend:
    """Run a ``.tflite`` model: one input ``[N, 256, 256, 3]``, one output posmap in crop pixels.

    Float32 tensors pass through; int8 / uint8 tensors are quantised as ``q = round(x / scale) +
    zero_point`` on input and dequantised as ``(q - zero_point) * scale`` on output, with each
    tensor's own parameters. The input is resized to the batch size of each call. ``runtime``:
    see :func:`tflite_interpreter` (``self.runtime`` names the interpreter in use).
    """

    def __init__(self, path, num_threads=None, random_weights: bool = False, runtime: str = "auto"):
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"TFLite model not found: {path}")
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:8] != TFLITE_IDENTIFIER:
            raise WeightsFormatError(
                f"{path} is not a TFLite model (no '{TFLITE_IDENTIFIER.decode()}' FlatBuffer identifier at "
                "bytes 4-8): give a .tflite file written by export.py (or a TFLite converter), or another weights "
                "format")
        try:
            self._interp, self.runtime = tflite_interpreter(path, num_threads=num_threads, runtime=runtime)
        except (ValueError, RuntimeError) as e:  # UnicodeDecodeError is a ValueError
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsFormatError(f"could not load the TFLite model {path} (corrupt or truncated?): "
                                     f"{reason}") from e
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise WeightsFormatError(f"TFLite model {path} must have one input and one output, "
                                     f"has {len(ins)} and {len(outs)}")
        if tuple(ins[0]["shape"][1:]) != CROP_SHAPE:
            raise WeightsFormatError(f"TFLite model {path}: input shape {list(ins[0]['shape'])} is not "
                                     f"[N, 256, 256, 3]")
        self._in, self._out = ins[0], outs[0]
        self._batch = None
        self.source, self.random_weights = f"TFLite {path}", bool(random_weights)

    @staticmethod
    def _qparams(detail):
        scale, zero = detail.get("quantization", (0.0, 0))
        return float(scale), int(zero)

    def _run_batch(self, crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        if self._batch != n:
            self._interp.resize_tensor_input(self._in["index"], [n, *CROP_SHAPE])
            self._interp.allocate_tensors()
            self._batch = n
        dtype = self._in["dtype"]
        x = crops
        if dtype in (np.int8, np.uint8):
            scale, zero = self._qparams(self._in)
            info = np.iinfo(dtype)
            x = np.clip(np.round(crops / scale) + zero, info.min, info.max).astype(dtype)
        else:
            x = crops.astype(dtype)
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        out_detail = self._interp.get_output_details()[0]
        y = self._interp.get_tensor(out_detail["index"])
        if y.dtype in (np.int8, np.uint8, np.int16):
            scale, zero = self._qparams(out_detail)
            y = (y.astype(np.float32) - zero) * scale
        y = np.asarray(y, dtype=np.float32)
        if y.shape != (n, *CROP_SHAPE):
            raise WeightsFormatError(f"{self.source}: output shape {list(y.shape)} is not [N, 256, 256, 3]")
        return y

    def __call__(self, crops) -> np.ndarray:
        crops = check_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, *CROP_SHAPE), np.float32)
        return self._run_batch(crops)


def random_weights_backend(size: int = BASE_SIZE, seed: int = 0, precision: str = "float32"):
    """An UNTRAINED ResFCN256 (seeded with ``keras.utils.set_random_seed(seed)``), for smoke tests of
    the pipeline only: ``random_weights`` is True and the source says :data:`RANDOM_WEIGHTS_WARNING`.
    ``precision="bfloat16"``: run as the bf16 :class:`FastGraphBackend` (else a :class:`KerasBackend`;
    ``"auto"`` is float32 here: a smoke test checks the pipeline, not the speed, and random weights
    amplify bf16 rounding without bound)."""
    precision = "float32" if check_precision(precision) == "auto" else precision
    keras.utils.set_random_seed(seed)
    model = build_resfcn256(weight_decay=0.0, size=size)
    source = f"random weights (seed {seed}) - {RANDOM_WEIGHTS_WARNING}"
    if precision != "float32":
        return FastGraphBackend(model, precision, source=source, random_weights=True)
    return KerasBackend(model, source=source, random_weights=True)
