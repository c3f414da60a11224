"""The ``tf.data`` input pipeline: TFDS splits -> decoded, augmented, batched training examples.

Examples are dicts with ``image`` (``[256, 256, 3]`` uint8 crop, or its PNG/JPEG bytes),
``posmap`` (``[256, 256, 3]`` float32, crop pixels: x = column, y = row, z toward the camera) and
``landmarks_68`` (``[68, 3]`` float32, crop pixels) -- the features of the project's TFDS
builders. The stream is deterministic given a seed (seeded shuffle, stateless per-example
augmentation seeds ``(seed, example index)``), so a resumed run sees exactly the batches of an
uninterrupted one.

The project's builders must be registered with TFDS before :func:`load_split` can find them:
the applications do that by importing ``tfds_builders``.
"""

import os

import numpy as np
import tensorflow as tf

from prnet.core.crop import CROP_SIZE
from prnet.data.augment import AugmentConfig, augment, to_float_image
from prnet.errors import DatasetError, PRNetError


def _accepts_assets_dir(name: str) -> bool:
    """Whether the builder of ``name`` takes an ``assets_dir`` argument (e.g. ``prnet_synthetic``)."""
    import inspect

    import tensorflow_datasets as tfds

    try:
        cls = tfds.builder_cls(name.split("/")[0].split(":")[0])
    except Exception:  # unknown dataset: tfds.load reports it
        return False
    return "assets_dir" in inspect.signature(cls.__init__).parameters


def load_split(name: str, split: str, data_dir=None, assets_dir=None, shuffle_files: bool = False,
               seed: int = 0) -> tf.data.Dataset:
    """``tfds.load`` one split of a dataset (e.g. ``prnet_synthetic/tiny``, ``prnet_300w_lp``).

    Images are left encoded (decoded later in :func:`prepare_example`, after shuffling/skipping).
    ``assets_dir`` is passed to builders that take it (``builder_kwargs``) when given. Raises
    :class:`DatasetError` with instructions when the dataset is not built or the split is unknown.
    """
    import tensorflow_datasets as tfds

    kwargs = {}
    if assets_dir and _accepts_assets_dir(name):
        kwargs["builder_kwargs"] = {"assets_dir": os.fspath(assets_dir)}
    try:
        return tfds.load(name, split=split, data_dir=data_dir, shuffle_files=shuffle_files,
                         read_config=tfds.ReadConfig(shuffle_seed=seed),
                         decoders={"image": tfds.decode.SkipDecoding()}, **kwargs)
    except PRNetError:
        raise
    except Exception as e:  # tfds raises many unrelated types (DatasetNotFoundError, ValueError, AssertionError)
        raise DatasetError(
            f"could not load split {split!r} of dataset {name!r} (data_dir={data_dir}): {e}. Build it "
            "first, e.g. `prnet-build-data --dataset prnet_synthetic --config small --data_dir DIR "
            "[--assets_dir DIR]`, or "
            "check --dataset/--train_split/--val_split/--data_dir.") from e


def prepare_example(example: dict):
    """TFDS example -> ``{"image": float32 [256,256,3] in [0,1], "posmap": float32 crop px,
    "landmarks_68": float32 [68,3] crop px}`` (decodes encoded images)."""
    image = example["image"]
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    image = tf.ensure_shape(to_float_image(image), (CROP_SIZE, CROP_SIZE, 3))
    posmap = tf.ensure_shape(tf.cast(example["posmap"], tf.float32), (CROP_SIZE, CROP_SIZE, 3))
    landmarks = tf.ensure_shape(tf.cast(example["landmarks_68"], tf.float32), (68, 3))
    return {"image": image, "posmap": posmap, "landmarks_68": landmarks}


def _keep_features(example):
    return {k: example[k] for k in ("image", "posmap", "landmarks_68")}


def train_pipeline(source: tf.data.Dataset, global_batch_size: int, *,
                   augment_config: AugmentConfig = AugmentConfig(), seed: int = 0,
                   shuffle_buffer: int = 512, skip_examples: int = 0) -> tf.data.Dataset:
    """Endless stream of augmented training batches (``drop_remainder``), deterministic given ``seed``.

    ``source`` -> seeded shuffle (reshuffled each pass) -> repeat -> enumerate -> skip
    ``skip_examples`` (resume; before any decoding) -> parallel map (decode, augment with the
    stateless seed ``(seed, index)``) -> batch -> prefetch.
    """
    ds = source.map(_keep_features)
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    if skip_examples:
        ds = ds.skip(skip_examples)

    def _map(index, example):
        ex = prepare_example(example)
        if augment_config.enabled:
            aug_seed = tf.stack([tf.constant(seed, tf.int64), index])
            image, posmap, landmarks = augment(ex["image"], ex["posmap"], aug_seed, augment_config,
                                               landmarks=ex["landmarks_68"])
            ex = {"image": image, "posmap": posmap, "landmarks_68": landmarks}
        return ex

    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(global_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(source: tf.data.Dataset, batch_size: int, max_examples: int = None) -> tf.data.Dataset:
    """Validation batches (no augmentation, last batch kept), at most ``max_examples`` examples."""
    ds = source.map(_keep_features)
    if max_examples:
        ds = ds.take(max_examples)
    ds = ds.map(prepare_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def count_examples(ds: tf.data.Dataset) -> int:
    """Number of examples of a finite dataset (cardinality when known, else counted)."""
    n = int(ds.cardinality())
    if n >= 0:
        return n
    if n == tf.data.INFINITE_CARDINALITY:
        raise DatasetError("the training dataset is infinite: pass steps_per_epoch")
    return int(ds.reduce(np.int64(0), lambda c, _: c + 1))
