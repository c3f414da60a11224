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
from prnet.data import posmap_codec
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


PROJECT_BUILDERS = ("prnet_synthetic", "prnet_300w_lp", "prnet_aflw2000_3d")  # built by prnet-build-data


def build_command(name: str, data_dir=None, assets_dir=None) -> str:
    """The shell command that builds dataset ``name`` (``NAME[/CONFIG][:VERSION]``) into ``data_dir``:
    ``prnet-build-data ...`` for the project's builders, ``tfds build ...`` for any other."""
    import shlex

    base, _, config = name.split(":")[0].partition("/")
    if base in PROJECT_BUILDERS:
        parts = ["prnet-build-data", "--dataset", f"{base}/{config}" if config else base]
        if data_dir:
            parts += ["--data_dir", os.fspath(data_dir)]
        if base == "prnet_synthetic":
            if assets_dir:
                parts += ["--assets_dir", os.fspath(assets_dir)]
        else:
            parts += ["--manual_dir", "MANUAL_DIR"]  # the downloaded originals (see the builder's README)
    else:
        parts = ["tfds", "build", name.split(":")[0]] + (["--data_dir", os.fspath(data_dir)] if data_dir else [])
    return " ".join(p if p == "MANUAL_DIR" else shlex.quote(p) for p in parts)


def load_split(name: str, split: str, data_dir=None, assets_dir=None, shuffle_files: bool = False,
               seed: int = 0) -> tf.data.Dataset:
    """Read one split of a dataset that is already built (e.g. ``prnet_synthetic/tiny``, ``prnet_300w_lp``).

    Never builds or downloads anything: a dataset that is not prepared in ``data_dir`` raises
    :class:`DatasetError` with the exact command that builds it (:func:`build_command`), an unknown
    dataset or split raises it with what to check. Images, and position maps stored as
    :class:`~prnet.data.posmap_feature.CompactPosmap`, are left encoded (decoded later in
    :func:`prepare_example`, after shuffling/skipping/sharding: ~4.5x less memory per buffered
    example). ``assets_dir`` is passed to builders that take it.
    """
    import tensorflow_datasets as tfds

    kwargs = {}
    if assets_dir and _accepts_assets_dir(name):
        kwargs["assets_dir"] = os.fspath(assets_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, **kwargs)
    except PRNetError:
        raise
    except Exception as e:  # tfds raises many unrelated types (DatasetNotFoundError, ValueError, AssertionError)
        raise DatasetError(
            f"unknown dataset {name!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"check --dataset (the project's: {', '.join(PROJECT_BUILDERS)}, with /config, e.g. "
            "prnet_synthetic/tiny)") from e
    if not builder.is_prepared():
        raise DatasetError(
            f"dataset {name!r} is not built in {data_dir or 'the default TFDS data_dir'} "
            f"({builder.data_dir} is missing or incomplete); build it first with: "
            f"{build_command(name, data_dir, assets_dir)}")
    from prnet.data.posmap_feature import CompactPosmap

    decoders = {"image": tfds.decode.SkipDecoding()}
    features = builder.info.features
    if isinstance(features, tfds.features.FeaturesDict) and "posmap" in features and \
            isinstance(features["posmap"], CompactPosmap):
        decoders["posmap"] = tfds.decode.SkipDecoding()
    try:
        return builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                  read_config=tfds.ReadConfig(shuffle_seed=seed), decoders=decoders)
    except PRNetError:
        raise
    except Exception as e:
        raise DatasetError(
            f"could not load split {split!r} of dataset {name!r} in {builder.data_dir}: {str(e).rstrip('.')}. "
            "Check "
            f"--train_split/--val_split (splits: {', '.join(builder.info.splits.keys()) or 'none'}) and "
            "--data_dir.") from e


def prepare_example(example: dict):
    """TFDS example -> ``{"image": float32 [256,256,3] in [0,1], "posmap": float32 crop px,
    "landmarks_68": float32 [68,3] crop px}`` (decodes encoded images and compact position maps,
    :mod:`prnet.data.posmap_codec`)."""
    image = example["image"]
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    image = tf.ensure_shape(to_float_image(image), (CROP_SIZE, CROP_SIZE, 3))
    posmap = example["posmap"]
    posmap = posmap_codec.decode_tf(posmap) if posmap.dtype == tf.string else tf.cast(posmap, tf.float32)
    posmap = tf.ensure_shape(posmap, (CROP_SIZE, CROP_SIZE, 3))
    landmarks = tf.ensure_shape(tf.cast(example["landmarks_68"], tf.float32), (68, 3))
    return {"image": image, "posmap": posmap, "landmarks_68": landmarks}


def _keep_features(example):
    return {k: example[k] for k in ("image", "posmap", "landmarks_68")}


def train_pipeline(source: tf.data.Dataset, global_batch_size: int, *,
                   augment_config: AugmentConfig = AugmentConfig(), seed: int = 0,
                   shuffle_buffer: int = 512, skip_examples: int = 0, num_shards: int = 1,
                   shard_index: int = 0, output_batch: int = None) -> tf.data.Dataset:
    """Endless stream of augmented training batches (``drop_remainder``), deterministic given ``seed``.

    ``source`` -> seeded shuffle (reshuffled each pass) -> repeat -> enumerate -> skip
    ``skip_examples`` (resume; before any decoding) -> parallel map (decode, augment with the
    stateless seed ``(seed, index)``) -> batch -> prefetch.

    Sharding (multi-worker training, one pipeline per worker): with ``num_shards > 1`` every global
    batch of ``global_batch_size`` consecutive stream examples is cut into ``num_shards`` equal
    slices and this pipeline keeps slice ``shard_index`` (batches of ``global_batch_size //
    num_shards``), dropping the others before decoding. The shards of one step together are exactly
    the global batch of the unsharded stream; each worker reads the whole (undecoded) stream but
    decodes and augments only its own slice. ``output_batch`` (default: the slice size) cuts the
    slice into batches for the worker's local replicas (e.g. ``global / replicas``).
    """
    if num_shards < 1 or not 0 <= shard_index < num_shards or global_batch_size % num_shards:
        raise DatasetError(f"cannot cut a global batch of {global_batch_size} into {num_shards} equal shards "
                           f"(shard {shard_index}); make the batch size a multiple of the number of workers")
    local_batch = global_batch_size // num_shards
    output_batch = output_batch or local_batch
    if local_batch % output_batch:
        raise DatasetError(f"a worker's slice of {local_batch} examples cannot be cut into batches of {output_batch}")
    ds = source.map(_keep_features)
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    if skip_examples:
        ds = ds.skip(skip_examples)
    if num_shards > 1:
        ds = ds.filter(lambda index, _: tf.equal((index // local_batch) % num_shards, shard_index))

    def _map(index, example):
        ex = prepare_example(example)
        if augment_config.enabled:
            aug_seed = tf.stack([tf.constant(seed, tf.int64), index])
            image, posmap, landmarks = augment(ex["image"], ex["posmap"], aug_seed, augment_config,
                                               landmarks=ex["landmarks_68"])
            ex = {"image": image, "posmap": posmap, "landmarks_68": landmarks}
        return ex

    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(output_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


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
