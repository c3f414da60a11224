"""Weights formats: recognise any weights path and load it as a Keras ResFCN256.

Formats: a Keras ``.weights.h5`` file, a training checkpoint directory
(``tf.train.Checkpoint(model=...)``, newest via ``tf.train.latest_checkpoint``) or one TF2
checkpoint prefix, and an official TF1 checkpoint prefix (or its ``.index`` / ``.data-*`` file).
The base width (16 for the paper's network) is read from the weights.
"""

from pathlib import Path

import tensorflow as tf

from prnet.errors import WeightsFormatError, WeightsNotFoundError
from prnet.model.resfcn256 import build_resfcn256


def _size_from_shapes(shapes, source) -> int:
    """Base width from the stem conv / Conv2d_transpose_14 kernels, both shaped (4, 4, 3, size)."""
    widths = [s[3] for s in shapes if len(s) == 4 and tuple(s[:3]) == (4, 4, 3)]
    if not widths:
        raise WeightsFormatError(f"{source}: no ResFCN256 kernel of shape (4, 4, 3, size) found; "
                                 "is this a PRNet weights file or checkpoint?")
    return int(max(widths))


def _h5_shapes(path):
    import h5py

    shapes = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
    return shapes


def _is_tf2_checkpoint(prefix) -> bool:
    try:
        return any(name == "_CHECKPOINTABLE_OBJECT_GRAPH" for name, _ in tf.train.list_variables(str(prefix)))
    except (tf.errors.OpError, ValueError):
        return False


def load_keras_model(source=None, *, size: int | None = None):
    """Build ResFCN256 (inference form, no weight decay) and load weights from ``source``.

    Args:
      source: ``None`` (official weights via :func:`prnet.weights.download.ensure_official_weights`), a Keras
        ``.weights.h5`` file, a training checkpoint directory or TF2 checkpoint prefix (an object
        checkpoint holding ``model=``), or an official TF1 checkpoint prefix
        (``.../256_256_resfcn256_weight``).
      size: base width; inferred from the weights when ``None``.

    Raises:
      WeightsNotFoundError: nothing at ``source``. WeightsFormatError: unreadable or mismatched.
    """
    if source is None:
        from prnet.weights.official import ensure_official_weights

        source = ensure_official_weights()
    path = Path(source).expanduser()
    if path.name.endswith(".index") or ".data-" in path.name:  # a checkpoint file -> its prefix
        from prnet.weights.convert import checkpoint_prefix

        path = checkpoint_prefix(path)
    if path.is_dir() and tf.train.latest_checkpoint(str(path)) is None:
        from prnet.weights.convert import checkpoint_prefix, is_tf1_checkpoint

        if is_tf1_checkpoint(path):  # e.g. the original's Data/net-data folder
            path = checkpoint_prefix(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise WeightsFormatError(f"{path} is already an exported SavedModel; export from the Keras "
                                     "weights or the training checkpoint instead")
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None:
            raise WeightsNotFoundError(f"{path}: no checkpoint found in this directory (expected a "
                                       "'checkpoint' file written by tf.train.CheckpointManager)")
        return _load_tf2_checkpoint(prefix, size)
    if path.is_file() and path.suffix == ".h5":
        try:
            size = size or _size_from_shapes(_h5_shapes(path), path)
            model = build_resfcn256(weight_decay=0, size=size)
            model.load_weights(str(path))
        except (OSError, ValueError) as err:
            raise WeightsFormatError(f"{path}: cannot load as ResFCN256 Keras weights: {err}") from err
        return model
    if Path(f"{path}.index").is_file():
        if _is_tf2_checkpoint(path):
            return _load_tf2_checkpoint(str(path), size)
        from prnet.weights.convert import load_official_weights

        size = size or _size_from_shapes([s for _, s in tf.train.list_variables(str(path))], path)
        model = build_resfcn256(weight_decay=0, size=size)
        load_official_weights(model, str(path))
        return model
    raise WeightsNotFoundError(
        f"no weights at {path}: give a Keras .weights.h5 file, a training checkpoint directory, or a "
        "checkpoint prefix (the path without .index / .data-*); `prnet-convert --download` fetches "
        "the official weights")


def _load_tf2_checkpoint(prefix, size):
    # All variables, not only ``model/...``: when the optimizer is saved too (as train.py does), TF
    # files the model's kernels under ``optimizer/_trainable_variables/...``.
    shapes = [s for _, s in tf.train.list_variables(prefix)]
    size = size or _size_from_shapes(shapes, prefix)
    model = build_resfcn256(weight_decay=0, size=size)
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise WeightsFormatError(f"{prefix}: the checkpoint's model= does not match ResFCN256 "
                                 f"(size {size}): {err}") from err
    return model


def infer_base_size(weights_path) -> int:
    """Base width ``size`` of a ResFCN256 ``.weights.h5`` file (its first conv kernel is 4x4x3xsize)."""
    import h5py

    try:
        with h5py.File(str(weights_path), "r") as f:
            shape = f["layers/conv2d/vars/0"].shape
    except (OSError, KeyError) as e:
        raise WeightsFormatError(
            f"{weights_path} is not a Keras ResFCN256 weights file (.weights.h5 saved by this package): {e}") from e
    if tuple(shape[:3]) != (4, 4, 3):
        raise WeightsFormatError(f"{weights_path}: first convolution kernel has shape {tuple(shape)}, "
                                 "expected (4, 4, 3, size) as in ResFCN256")
    return int(shape[3])


def _checkpoint_dir_prefix(path: Path):
    """The checkpoint a folder holds (newest of a ``tf.train.CheckpointManager``, or a single TF1/TF2
    checkpoint), as a string prefix; None if it holds none."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(path))
    if latest is not None:
        return latest
    if _looks_like_checkpoint(path):
        from prnet.weights.convert import checkpoint_prefix

        return str(checkpoint_prefix(path))
    return None


def _looks_like_checkpoint(path: Path) -> bool:
    try:
        from prnet.weights.convert import is_tf1_checkpoint
    except ImportError:  # pragma: no cover - convert.py ships with the package
        return Path(str(path) + ".index").is_file()
    return is_tf1_checkpoint(path)
