"""Import the official PRNet TF1 checkpoint into the Keras model of :mod:`prnet.model.resfcn256`.

The authors' release is a TF1 ``tf.train.Saver`` checkpoint: the prefix
``256_256_resfcn256_weight`` with the files ``<prefix>.index`` (names, dtypes, shapes) and
``<prefix>.data-00000-of-00001`` (values). Its 245 model variables live under ``resfcn256/``
with ``tf.contrib.layers`` names (``Conv/weights``, ``resBlock_3/Conv_1/BatchNorm/gamma``,
``Conv2d_transpose_16/BatchNorm/moving_variance``, ...); the Adam slots (``*/Adam``,
``*/Adam_1``) and ``beta1_power`` / ``beta2_power`` are optimizer state and are ignored.

Layouts: TF1 conv kernels are ``[h, w, in, out]`` and ``tf.nn.conv2d_transpose`` kernels are
``[h, w, out, in]``; Keras ``Conv2D`` / ``Conv2DTranspose`` use exactly the same layouts, so the
values are copied unchanged (checked per layer, never assumed). ``tf.contrib.layers.batch_norm``
uses epsilon 0.001; the Keras model must use the same (checked too).
"""

import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from prnet.errors import CheckpointMismatchError, WeightsFormatError, WeightsNotFoundError
from prnet.model.resfcn256 import build_resfcn256, checkpoint_name, save_weights_atomic

#: File name prefix of the official checkpoint (``<prefix>.index``, ``<prefix>.data-00000-of-00001``).
OFFICIAL_PREFIX_NAME = "256_256_resfcn256_weight"
#: ``tf.contrib.layers.batch_norm`` default epsilon, used by the original network.
TF1_BN_EPSILON = 1e-3
#: Checkpoint entries that are optimizer state, not model weights.
_IGNORED = re.compile(r"(^|/)(beta1_power|beta2_power)$|/Adam(_\d+)?$")
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def is_ignored_variable(name: str) -> bool:
    """True for optimizer state in a TF1 checkpoint (Adam slots, ``beta1_power``, ``beta2_power``)."""
    return bool(_IGNORED.search(name))


def checkpoint_prefix(path) -> Path:
    """Normalise a checkpoint path: the prefix itself, ``<prefix>.index``, ``<prefix>.data-*``, or a
    folder holding exactly one ``*.index`` (such as the original's ``Data/net-data``)."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / "saved_model.pb").exists():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        return path
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    match = _DATA_SUFFIX.search(name)
    if match:
        return path.with_name(name[: match.start()])
    return path


def is_tf1_checkpoint(path) -> bool:
    """True if ``path`` names a TF1 (name-based) checkpoint: its prefix, ``.index`` or ``.data-*``
    file, or a folder with a single checkpoint (not a SavedModel). Requires the ``.index`` file
    and at least one ``.data-*`` shard next to it."""
    prefix = checkpoint_prefix(path)
    if not prefix.with_name(prefix.name + ".index").is_file():
        return False
    return any(prefix.parent.glob(prefix.name + ".data-*-of-*"))


_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


def missing_data_files(prefix) -> list:
    """The data shards ``<prefix>.data-NNNNN-of-MMMMM`` a checkpoint lacks (``[]`` when all are there).

    With no shard at all the one shard of a single-file checkpoint (``-00000-of-00001``) is
    named; with some shards present, the ones missing from their ``-of-MMMMM`` count.
    """
    prefix = Path(prefix)
    found = {}
    for path in prefix.parent.glob(prefix.name + ".data-*-of-*"):
        match = _SHARD.search(path.name)
        if match and path.name[: match.start()] == prefix.name:
            found[(int(match.group(1)), int(match.group(2)))] = path
    if not found:
        return [prefix.with_name(prefix.name + ".data-00000-of-00001")]
    total = max(count for _, count in found)
    return [prefix.with_name(f"{prefix.name}.data-{i:05d}-of-{total:05d}") for i in range(total)
            if (i, total) not in found]


def check_checkpoint_files(prefix) -> Path:
    """Check that the checkpoint ``prefix`` has its ``.index`` and every data shard; returns the prefix.

    Raises :class:`WeightsNotFoundError`: ``"checkpoint index missing: <path>"`` or
    ``"data file missing: <path>"`` (each missing shard named).
    """
    prefix = checkpoint_prefix(prefix)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise WeightsNotFoundError(
            f"checkpoint index missing: {index} does not exist. Pass the checkpoint prefix, e.g. "
            f"'.../{OFFICIAL_PREFIX_NAME}' (the folder must hold {OFFICIAL_PREFIX_NAME}.index and "
            f"{OFFICIAL_PREFIX_NAME}.data-00000-of-00001)."
        )
    missing = missing_data_files(prefix)
    if missing:
        raise WeightsNotFoundError(
            f"data file missing: {', '.join(map(str, missing))} (the checkpoint {prefix} has its .index but not "
            "this data file: copy it next to the index; the official one is fetched by `prnet-convert --download`)"
        )
    return prefix


def open_checkpoint(prefix):
    """A ``tf.train.load_checkpoint`` reader of the checkpoint ``prefix``, its files checked first.

    Raises :class:`WeightsNotFoundError` (index or data file missing, see
    :func:`check_checkpoint_files`) or :class:`WeightsFormatError` (unreadable index).
    """
    prefix = check_checkpoint_files(prefix)
    try:
        return tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
        raise WeightsFormatError(f"could not read the checkpoint index {prefix}.index (truncated or corrupt?): "
                                 f"{e}") from e


#: What reading a tensor of a truncated or corrupt data file raises (``IndexError``: "Read less bytes than requested").
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, RuntimeError, OSError)


def data_file_error(prefix, error) -> WeightsFormatError:
    """The error for a data file that could not be read (truncated or corrupt), naming the file(s)."""
    prefix = Path(prefix)
    files = sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))
    names = ", ".join(map(str, files)) or f"{prefix}.data-*"
    return WeightsFormatError(f"could not read the checkpoint {prefix}: its data file {names} is truncated or "
                              f"corrupt ({type(error).__name__}: {error}); copy it again, or pass another checkpoint")


def read_checkpoint_shapes(prefix) -> dict:
    """``{name: shape tuple}`` of every variable in a checkpoint (reads the ``.index`` only)."""
    reader = open_checkpoint(prefix)
    return {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}


def _check_model_conventions(model):
    """Fail if the Keras model's layer conventions differ from the TF1 original's."""
    problems = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if abs(layer.epsilon - TF1_BN_EPSILON) > 1e-12:
                problems.append(f"{layer.name}: BatchNorm epsilon {layer.epsilon} != {TF1_BN_EPSILON}")
            if not (layer.center and layer.scale):
                problems.append(f"{layer.name}: BatchNorm must have beta and gamma (center=scale=True)")
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            # TF1 conv2d_transpose kernels are [h, w, out, in]; Keras must store the same layout.
            if layer.kernel.shape[2] != layer.filters:
                problems.append(f"{layer.name}: transposed-conv kernel {tuple(layer.kernel.shape)} is not "
                                f"[h, w, out={layer.filters}, in]")
        elif isinstance(layer, keras.layers.Conv2D):
            if layer.kernel.shape[3] != layer.filters:
                problems.append(f"{layer.name}: conv kernel {tuple(layer.kernel.shape)} is not [h, w, in, out]")
        if getattr(layer, "use_bias", False):
            problems.append(f"{layer.name}: has a bias; the original network has none")
    if problems:
        raise CheckpointMismatchError("the Keras model does not follow the original's conventions:\n  "
                                      + "\n  ".join(problems))


def match_variables(model, checkpoint_shapes: dict) -> dict:
    """Map every model weight to a checkpoint variable: ``{checkpoint name: keras variable}``.

    Raises :class:`CheckpointMismatchError` listing every model weight missing from the
    checkpoint, every checkpoint variable that is neither used nor optimizer state, and every
    shape mismatch.
    """
    mapping, missing, mismatched = {}, [], []
    for variable in model.weights:
        name = checkpoint_name(variable)
        if name in mapping:
            raise CheckpointMismatchError(f"two model weights map to the checkpoint variable {name}")
        if name not in checkpoint_shapes:
            missing.append(f"{name} (model weight {variable.path}, shape {tuple(variable.shape)})")
            continue
        if tuple(checkpoint_shapes[name]) != tuple(variable.shape):
            mismatched.append(f"{name}: checkpoint {list(checkpoint_shapes[name])} vs model "
                              f"{list(variable.shape)} ({variable.path})")
        mapping[name] = variable
    unmapped = sorted(n for n in checkpoint_shapes if n not in mapping and not is_ignored_variable(n))
    if missing or unmapped or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model weight(s) missing from the checkpoint:\n    " + "\n    ".join(missing))
        if unmapped:
            parts.append(f"{len(unmapped)} checkpoint variable(s) not mapped to the model:\n    "
                         + "\n    ".join(f"{n} {list(checkpoint_shapes[n])}" for n in unmapped))
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es):\n    " + "\n    ".join(mismatched))
        raise CheckpointMismatchError(
            "the checkpoint does not match ResFCN256 (is it the official PRNet checkpoint, and the "
            "model built with size=16?):\n  " + "\n  ".join(parts))
    return mapping


def load_official_weights(model, prefix) -> int:
    """Copy the weights of the TF1 checkpoint ``prefix`` into ``model`` (ResFCN256, ``size=16``).

    ``prefix`` may also be the ``.index`` or ``.data-*`` path. Every model weight must be found
    with the same shape, and every checkpoint variable other than optimizer state must be used;
    otherwise :class:`CheckpointMismatchError` lists all problems. Returns the number of values
    copied. Nothing is assigned unless the whole checkpoint matches and reads cleanly.
    """
    prefix = checkpoint_prefix(prefix)
    reader = open_checkpoint(prefix)
    _check_model_conventions(model)
    mapping = match_variables(model, reader.get_variable_to_shape_map())
    values = {}
    for name in mapping:
        try:
            value = reader.get_tensor(name)
        except READ_ERRORS as e:
            raise data_file_error(prefix, e) from e
        value = np.asarray(value, dtype=np.float32)
        if not np.all(np.isfinite(value)):
            raise WeightsFormatError(f"{prefix}: variable {name} contains NaN or infinite values")
        if name.endswith("moving_variance") and np.any(value < 0):
            raise WeightsFormatError(f"{prefix}: {name} has negative variances")
        values[name] = value
    for name, variable in mapping.items():
        variable.assign(values[name])
    return int(sum(v.size for v in values.values()))


def convert_checkpoint(prefix, output_path) -> Path:
    """Convert the official TF1 checkpoint to a Keras weights file (``*.weights.h5``).

    The output is written to a temporary file in the same folder and moved into place only
    after it is complete, so a failure never leaves a partial ``output_path``. Returns the
    output path. Load it with ``build_resfcn256().load_weights(path)``.
    """
    output_path = Path(output_path).expanduser()
    if not output_path.name.endswith(".weights.h5"):
        raise WeightsFormatError(f"output file must end with '.weights.h5' (Keras weights), got {output_path}")
    model = build_resfcn256(weight_decay=0.0)
    load_official_weights(model, prefix)
    return save_weights_atomic(model, output_path)
