"""Weights formats: the one place that recognises a weights path and loads it.

:func:`detect_format` names what a path holds (:class:`WeightsKind`):

* ``KERAS_WEIGHTS``: a Keras ``.weights.h5`` file of ResFCN256 (converted official weights, train.py's outputs);
* ``KERAS_MODEL``: a whole saved Keras model ``.keras`` whose output is the sigmoid map, as ResFCN256's;
* ``TF2_CHECKPOINT``: an object checkpoint holding ``model=`` (``tf.train.Checkpoint``): a training
  checkpoint folder (the newest checkpoint of its ``tf.train.CheckpointManager``, e.g.
  ``<model_dir>/checkpoints``), or one checkpoint prefix (or its ``.index`` / ``.data-*`` file);
* ``TF1_CHECKPOINT``: the official name-based TF1 checkpoint: its prefix
  ``.../256_256_resfcn256_weight``, its ``.index`` / ``.data-*`` file, or a folder holding only it;
* ``SAVED_MODEL``: an exported SavedModel folder (``saved_model.pb``);
* ``TFLITE``: a ``.tflite`` file;
* ``ONNX``: a ``.onnx`` file (``export.py --formats=onnx``).

:func:`load_keras_model` builds a Keras ResFCN256 from the Keras-loadable kinds (base width read
from the weights), :func:`load_weights_into` fills an existing model (``train.py --init_from``) and
:func:`load_backend` returns the inference backend of :mod:`prnet.model.runtime` for any kind. The
official weights (no path at all) are fetched by :mod:`prnet.weights.official` and run by
:mod:`prnet.inference.backends`.
"""

import enum
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import tensorflow as tf

from prnet.errors import WeightsFolderError, WeightsFormatError, WeightsNotFoundError
from prnet.model.onnx_runtime import ONNXRuntimeBackend
from prnet.model.openvino_runtime import OpenVINOBackend
from prnet.model.resfcn256 import build_resfcn256
from prnet.model.runtime import (
    FastGraphBackend,
    KerasBackend,
    SavedModelBackend,
    TFLiteBackend,
    auto_choice,
    check_precision,
    saved_model_precision,
)
from prnet.weights.convert import (
    READ_ERRORS,
    check_checkpoint_files,
    checkpoint_prefix,
    data_file_error,
    is_tf1_checkpoint,
    load_official_weights,
    open_checkpoint,
)

logger = logging.getLogger(__name__)

#: Values of ``backend`` for :func:`load_backend` (and ``prnet-demo --backend``): ``auto`` runs each
#: format in its own runtime (the official weights: the fastest accurate path for the machine,
#: :func:`prnet.model.runtime.auto_choice`); ``keras`` / ``saved_model`` / ``tflite`` / ``onnxruntime``
#: require that runtime; ``openvino`` runs any format in OpenVINO (optional package: ``pip install -e ".[openvino]"``;
#: ``onnxruntime``: ``pip install -e ".[onnx]"``).
BACKENDS = ("auto", "keras", "saved_model", "tflite", "openvino", "onnxruntime")


class WeightsKind(enum.Enum):
    """What a weights path holds; the value is the name used in messages."""

    KERAS_WEIGHTS = "Keras weights"
    KERAS_MODEL = "Keras model"
    TF2_CHECKPOINT = "checkpoint"
    TF1_CHECKPOINT = "TF1 checkpoint"
    SAVED_MODEL = "SavedModel"
    TFLITE = "TFLite"
    ONNX = "ONNX"


_KERAS_KINDS = (WeightsKind.KERAS_WEIGHTS, WeightsKind.KERAS_MODEL, WeightsKind.TF2_CHECKPOINT,
                WeightsKind.TF1_CHECKPOINT)


@dataclass(frozen=True)
class WeightsFormat:
    """A recognised weights path: its ``kind`` and the ``path`` that is loaded (the file or
    folder; for a checkpoint its prefix, the newest one of a training checkpoint folder)."""

    kind: WeightsKind
    path: Path

    @property
    def runtime(self) -> str:
        """``"Keras"``, ``"SavedModel"``, ``"TFLite"`` or ``"ONNX"``: what runs it (see :mod:`prnet.model.runtime`)."""
        return "Keras" if self.kind in _KERAS_KINDS else self.kind.value

    @property
    def description(self) -> str:
        """E.g. ``"Keras weights /x/best.weights.h5"``, ``"checkpoint /run/checkpoints/ckpt-3"``."""
        return f"{self.kind.value} {self.path}"


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`; raise ValueError otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _is_tf2_checkpoint(prefix) -> bool:
    try:
        return any(name == "_CHECKPOINTABLE_OBJECT_GRAPH" for name, _ in tf.train.list_variables(str(prefix)))
    except (tf.errors.OpError, ValueError):
        return False


def _checkpoint(prefix) -> WeightsFormat:
    prefix = Path(prefix)
    return WeightsFormat(WeightsKind.TF2_CHECKPOINT if _is_tf2_checkpoint(prefix) else WeightsKind.TF1_CHECKPOINT,
                         prefix)


def detect_format(path) -> WeightsFormat:
    """Recognise the weights at ``path`` (see the module doc); nothing is loaded.

    Raises:
      WeightsNotFoundError: nothing at ``path``.
      WeightsFolderError: a folder without ``saved_model.pb`` and without a checkpoint (both a
        :class:`WeightsNotFoundError` and a :class:`WeightsFormatError`).
      WeightsFormatError: a file of no known kind.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return WeightsFormat(WeightsKind.SAVED_MODEL, p)
        latest = tf.train.latest_checkpoint(str(p))
        if latest is not None:
            return _checkpoint(latest)
        if is_tf1_checkpoint(p):  # a folder with one checkpoint, e.g. the original's Data/net-data
            return _checkpoint(checkpoint_prefix(p))
        hint = ""
        if (p / "checkpoints").is_dir() or (p / "final.weights.h5").is_file():
            hint = f" (a training run folder: pass {p / 'checkpoints'} or {p / 'final.weights.h5'})"
        raise WeightsFolderError(
            f"{p}: no checkpoint found in this directory (no 'checkpoint' file written by "
            f"tf.train.CheckpointManager, no <prefix>.index) and no saved_model.pb{hint}: pass a SavedModel "
            "folder, a training checkpoint folder, a .weights.h5, a .tflite file or a checkpoint prefix")
    if p.is_file():
        if p.suffix == ".tflite":
            return WeightsFormat(WeightsKind.TFLITE, p)
        if p.suffix == ".onnx":
            return WeightsFormat(WeightsKind.ONNX, p)
        if p.suffix == ".keras":
            return WeightsFormat(WeightsKind.KERAS_MODEL, p)
        if p.suffix == ".h5":
            return WeightsFormat(WeightsKind.KERAS_WEIGHTS, p)
    prefix = checkpoint_prefix(p)
    if prefix.with_name(prefix.name + ".index").is_file():  # a missing .data file is reported on loading
        return _checkpoint(prefix)
    if not p.exists():
        raise WeightsNotFoundError(
            f"no weights at {p}: give a Keras .weights.h5 file, a SavedModel folder, a .tflite file, a training "
            "checkpoint directory, or a checkpoint prefix (the path without .index / .data-*); without a path "
            "the official weights are used (`prnet-convert --download` fetches them)")
    raise WeightsFormatError(f"unrecognised weights file {p}: expected .weights.h5, .keras, .tflite, a SavedModel "
                             "folder, a training checkpoint folder or a checkpoint prefix (with .index and "
                             ".data-* files)")


def _size_from_shapes(shapes, source) -> int:
    """Base width from the stem conv / Conv2d_transpose_14 kernels, both shaped (4, 4, 3, size)."""
    widths = [s[3] for s in shapes if len(s) == 4 and tuple(s[:3]) == (4, 4, 3)]
    if not widths:
        raise WeightsFormatError(f"{source}: no ResFCN256 kernel of shape (4, 4, 3, size) found; "
                                 "is this a PRNet weights file or checkpoint?")
    return int(max(widths))


def _variable_shapes(fmt: WeightsFormat) -> list:
    if fmt.kind is WeightsKind.KERAS_WEIGHTS:
        shapes = []
        try:
            with h5py.File(fmt.path, "r") as f:
                f.visititems(lambda _, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
        except OSError as e:
            raise WeightsFormatError(f"{fmt.path} is not a Keras weights file (.weights.h5): {e}") from e
        return shapes
    try:  # all variables: train.py's checkpoints also file the kernels under optimizer/...
        return list(open_checkpoint(fmt.path).get_variable_to_shape_map().values())
    except (WeightsFormatError, WeightsNotFoundError) as e:
        raise type(e)(f"{e}{_older_checkpoints(Path(fmt.path))}") from e


def check_keras_weights_file(path) -> int:
    """Read every array of a Keras ``.weights.h5`` file; returns the ResFCN256 base width it holds.

    Raises :class:`WeightsFormatError` when the file is truncated, corrupt or not ResFCN256 weights
    (e.g. a converted file cut short by a full disk). Reads the whole file (~50 MB for the
    official weights).
    """
    path = Path(path)
    shapes = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]  # noqa: B018  (read the values: a truncated file fails here)
            shapes.append(obj.shape)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise WeightsFormatError(f"{path} is not a readable Keras weights file (truncated or corrupt?): "
                                 f"{_first_line(e)}") from e
    return _size_from_shapes(shapes, path)


def infer_base_size(path) -> int:
    """Base width ``size`` of ResFCN256 weights (``.weights.h5`` or checkpoint): its first conv kernel
    is ``(4, 4, 3, size)`` (16 for the paper's network)."""
    fmt = path if isinstance(path, WeightsFormat) else detect_format(path)
    if fmt.kind not in _KERAS_KINDS or fmt.kind is WeightsKind.KERAS_MODEL:
        raise WeightsFormatError(f"{fmt.path} is a {fmt.kind.value}: the base width is read from Keras weights "
                                 "or a checkpoint")
    return _size_from_shapes(_variable_shapes(fmt), fmt.path)


def _load_keras_file(path: Path):
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as e:  # corrupt archive, unknown layers, ...
        raise WeightsFormatError(f"could not load the Keras model {path}: {e}") from e


def _first_line(error) -> str:
    """The first line of an error's message, without Keras' example object (the rest lists every layer)."""
    lines = str(error).strip().splitlines()
    return lines[0].split(" Example error message")[0][:300] if lines else type(error).__name__


def _load_weights_h5(model, path: Path) -> None:
    """``model.load_weights(path)`` with Keras' per-layer warnings captured: a file of another model
    gives one short :class:`WeightsFormatError`, not a warning per layer and a list of every layer."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except (ValueError, KeyError, OSError, TypeError, AttributeError) as e:
            raise WeightsFormatError(
                f"{path} does not hold the weights of a ResFCN256 of base width {_model_width(model)}: "
                f"{_first_line(e)} (is it the weights file of another model? give PRNet weights: the converted "
                "official weights or a train.py output)") from e
    for w in caught:
        logger.debug("loading %s: %s", path, w.message)


def _model_width(model) -> str:
    kernels = [tuple(v.shape) for v in model.weights if len(v.shape) == 4 and tuple(v.shape[:3]) == (4, 4, 3)]
    return str(kernels[0][3]) if kernels else "?"


def _older_checkpoints(prefix: Path) -> str:
    """`` (other checkpoints in <folder>: ckpt-1, ...)`` for a training checkpoint folder, else ``""``."""
    try:
        state = tf.train.get_checkpoint_state(str(prefix.parent))
    except (tf.errors.OpError, ValueError):
        return ""
    others = [Path(p).name for p in (state.all_model_checkpoint_paths if state else []) if Path(p).name != prefix.name]
    others = [n for n in others if _complete(prefix.parent / n)]
    if not others:
        return ""
    return f" (other checkpoints in {prefix.parent}: {', '.join(others)}; pass one by its prefix, e.g. " \
           f"{prefix.parent / others[-1]})"


def _complete(prefix) -> bool:
    try:
        check_checkpoint_files(prefix)
    except WeightsNotFoundError:
        return False
    return True


def _read_tf2_checkpoint(model, prefix: Path) -> None:
    check_checkpoint_files(prefix)
    try:
        status = tf.train.Checkpoint(model=model).read(str(prefix))
    except READ_ERRORS as e:
        error = data_file_error(prefix, e)
        raise WeightsFormatError(f"{error}{_older_checkpoints(prefix)}") from e
    status.assert_existing_objects_matched().expect_partial()


def _fill(model, fmt: WeightsFormat) -> None:
    """Load the weights of ``fmt`` (a Keras-loadable kind) into ``model``."""
    try:
        if fmt.kind is WeightsKind.KERAS_WEIGHTS:
            _load_weights_h5(model, fmt.path)
        elif fmt.kind is WeightsKind.KERAS_MODEL:
            model.set_weights(_load_keras_file(fmt.path).get_weights())
        elif fmt.kind is WeightsKind.TF2_CHECKPOINT:
            _read_tf2_checkpoint(model, fmt.path)
        else:
            load_official_weights(model, fmt.path)
    except (WeightsFormatError, WeightsNotFoundError):
        raise
    except (AssertionError, ValueError, KeyError, OSError, tf.errors.OpError) as e:
        raise WeightsFormatError(f"{fmt.description} does not match this ResFCN256 (the base width must equal "
                                 f"the weights'): {e}") from e


def _require_keras(fmt: WeightsFormat) -> None:
    if fmt.kind not in _KERAS_KINDS:
        raise WeightsFormatError(f"{fmt.path} is a {fmt.kind.value}, not Keras weights or a checkpoint: give the "
                                 ".weights.h5 file or the checkpoint it was made from")


def _load_keras(fmt: WeightsFormat, size):
    _require_keras(fmt)
    if fmt.kind is WeightsKind.KERAS_MODEL:
        return _load_keras_file(fmt.path)
    model = build_resfcn256(weight_decay=0.0, size=size or infer_base_size(fmt))
    _fill(model, fmt)
    return model


def load_keras_model(path, *, size: int | None = None):
    """A Keras model from Keras-loadable weights: ResFCN256 (inference form, no weight decay) with the
    weights of a ``.weights.h5`` file or a checkpoint (TF2 or official TF1), or a whole ``.keras`` model.

    ``size``: base width; read from the weights when None.

    Raises:
      WeightsNotFoundError: nothing at ``path``. WeightsFormatError: unreadable, mismatched, or not a
      Keras-loadable kind (a SavedModel or .tflite).
    """
    return _load_keras(detect_format(path), size)


def load_weights_into(model, path) -> WeightsFormat:
    """Load the weights at ``path`` (``.weights.h5``, ``.keras``, or a TF2 / official TF1 checkpoint)
    into the existing ``model`` (e.g. ``train.py --init_from``); returns the format found.

    Raises WeightsNotFoundError / WeightsFormatError (the model's width must equal the weights').
    """
    fmt = detect_format(path)
    _require_keras(fmt)
    _fill(model, fmt)
    return fmt


def check_file_precision(fmt: WeightsFormat, file_precision: str, precision: str) -> None:
    """:class:`WeightsFormatError` unless an exported file's own precision is the one asked for."""
    if file_precision == precision:
        return
    if precision == "bfloat16":
        how = ("export a bfloat16 SavedModel with `export.py --formats=saved_model_bf16` and pass its "
               "saved_model_bf16 folder, or pass the Keras weights (.weights.h5 / checkpoint) it was exported "
               "from (their bf16 graph is built in-process)")
        if fmt.kind is WeightsKind.TFLITE:
            raise WeightsFormatError(f"{fmt.description} cannot run in bfloat16: TFLite files have no bfloat16 "
                                     f"variant; {how}")
    else:
        how = f"pass --precision={file_precision} (Python: precision={file_precision!r}) to run it as exported"
    raise WeightsFormatError(f"{fmt.description} is a {file_precision} export, but precision {precision} was "
                             f"asked for: {how}")


def load_backend(path, backend: str = "auto", *, num_threads=None, precision: str = "auto"):
    """The inference backend (:mod:`prnet.model.runtime`) for the weights at ``path``.

    ``backend``: ``"auto"`` runs each kind in its own runtime (SavedModel, TFLite, ONNX Runtime for a
    ``.onnx``, else Keras); ``"keras"`` / ``"saved_model"`` / ``"tflite"`` / ``"onnxruntime"`` require
    that runtime and raise WeightsFormatError otherwise. ``num_threads``: TFLite interpreter (ONNX
    Runtime, OpenVINO) threads.
    ``precision`` (:data:`prnet.model.runtime.PRECISION_CHOICES`): for Keras weights and checkpoints,
    ``"float32"`` runs the Keras model and ``"bfloat16"`` their BN-folded bf16 graph in-process
    (:class:`prnet.model.runtime.FastGraphBackend`); ``"auto"`` (the default) is bfloat16 where
    :func:`prnet.model.runtime.auto_choice` picks it (CPUs with bf16 units, bf16 GPUs) under
    ``backend="auto"``, else float32 (``backend="keras"``: always float32). An exported file runs at
    its own precision (a SavedModel: ``"bfloat16"`` for ``saved_model_bf16``, else ``"float32"``; a
    ``.tflite`` / ``.onnx``: ``"float32"``, whatever it was quantised to); ``"auto"`` takes it, and
    asking for another one raises :class:`WeightsFormatError` saying what to pass instead: the
    precision in use is always the one asked for, so results recorded with it (``evaluate.py``) are
    never mislabelled. ``backend="openvino"``:
    :class:`prnet.model.openvino_runtime.OpenVINOBackend` reads a SavedModel,
    a ``.tflite`` (an int8 file keeps its int8 ops) or Keras weights (their BN-folded graph) and
    runs it at ``precision`` (OpenVINO's inference precision, set explicitly; ``"auto"`` as for Keras
    weights; ``num_threads``: its threads). Raises :class:`prnet.errors.OpenVINONotInstalledError` /
    :class:`prnet.errors.ONNXRuntimeNotInstalledError` without the package.
    """
    check_backend(backend)
    check_precision(precision)
    fmt = detect_format(path)
    choice = None
    if precision == "auto" and (backend == "openvino" or backend == "auto" and fmt.runtime == "Keras"):
        choice = auto_choice()
        precision = choice.precision
    if backend == "openvino":  # OpenVINO's own inference precision, whatever the file's (see the docstring)
        if fmt.kind is WeightsKind.ONNX:
            raise WeightsFormatError(f"backend 'openvino' runs SavedModels, .tflite files and Keras weights, not "
                                     f"{fmt.description}: use --backend onnxruntime (or auto)")
        if fmt.runtime == "Keras":
            runner = OpenVINOBackend(_load_keras(fmt, None), precision=precision, num_threads=num_threads,
                                     name=f"{fmt.description} (BN-folded graph converted in memory)")
        else:
            runner = OpenVINOBackend(fmt.path, precision=precision, num_threads=num_threads)
        return _with_choice(runner, choice)
    required = {"keras": "Keras", "saved_model": "SavedModel", "tflite": "TFLite", "onnxruntime": "ONNX"}.get(backend)
    if required and fmt.runtime != required:
        hints = {"keras": "pass Keras weights (.weights.h5), a .keras file or a checkpoint",
                 "saved_model": "pass a SavedModel folder (export one with export.py), or omit the path for the "
                                "official weights",
                 "tflite": "pass a .tflite file (export.py --formats=float32), or omit the path for the official "
                           "weights",
                 "onnxruntime": "pass a .onnx file (export.py --formats=onnx), or omit the path for the official "
                                "weights"}
        raise WeightsFormatError(f"backend {backend!r} cannot run {path} ({fmt.runtime}): {hints[backend]}")
    if fmt.kind is WeightsKind.SAVED_MODEL:
        own = saved_model_precision(fmt.path)
        check_file_precision(fmt, own, own if precision == "auto" else precision)  # before the (slow) loading
        return SavedModelBackend(fmt.path)
    if fmt.kind is WeightsKind.TFLITE:
        check_file_precision(fmt, "float32", "float32" if precision == "auto" else precision)
        return TFLiteBackend(fmt.path, num_threads=num_threads)
    if fmt.kind is WeightsKind.ONNX:
        check_file_precision(fmt, "float32", "float32" if precision == "auto" else precision)
        return ONNXRuntimeBackend(fmt.path, num_threads=num_threads)
    if precision == "bfloat16":
        return _with_choice(FastGraphBackend(_load_keras(fmt, None), precision, source=fmt.description), choice)
    return _with_choice(KerasBackend(_load_keras(fmt, None), source=fmt.description), choice)


def _with_choice(runner, choice):
    """``runner`` with ``choice`` (why ``precision="auto"`` resolved as it did) as its ``choice`` attribute."""
    if choice is not None:
        runner.choice = f"precision auto: {choice.precision} on a {choice.hardware}"
    return runner
