"""Training of ResFCN256 as in the paper: custom loop under ``tf.distribute``, resumable.

Recipe (defaults): Adam, learning rate 1e-4 halved every 5 epochs (staircase), global batch 16,
the weighted position-map MSE of :mod:`prnet.training.losses` plus L2 weight decay 2e-4 on every kernel
(the model's own regularisation losses, ``model.losses``: TF1's ``l2_regularizer``, i.e.
``2e-4 * sum(w ** 2) / 2``), the augmentation of :mod:`prnet.data.augment`.

Data: any ``tf.data.Dataset`` of dicts with ``image`` (``[256, 256, 3]`` uint8 crop, or its
PNG/JPEG bytes), ``posmap`` (``[256, 256, 3]`` float32, crop pixels) and ``landmarks_68``
(``[68, 3]`` float32, crop pixels) -- the features of the project's TFDS builders
(:func:`load_split`).

Distribution: the per-replica loss is ``sum(per-example) / global_batch`` plus the weight decay
divided by the replica count (:func:`prnet.training.losses.total_loss`); gradients are summed over replicas
by the optimizer. With several replicas BatchNorm is synchronised (``sync_batchnorm``) so that its
statistics are those of the global batch, as on one device.

Resume: checkpoints (``<model_dir>/checkpoints``) hold the model (incl. BatchNorm statistics),
the optimizer (incl. its step counter, which drives the learning-rate schedule and the epoch) and
the number of examples consumed. The input stream is deterministic (seeded shuffle, stateless
per-example augmentation seeds ``(seed, example index)``), and a resumed run skips the consumed
examples before decoding/augmenting them, so it continues with exactly the batches the
uninterrupted run would have seen.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from prnet.training import losses
from prnet.data.augment import AugmentConfig, augment, to_float_image
from prnet.errors import DatasetError, PRNetError, WeightsFormatError, WeightsNotFoundError
from prnet.model.resfcn256 import POSMAP_SCALE, RESOLUTION, WEIGHT_DECAY, build_resfcn256, save_weights_atomic

STRATEGIES = ("default", "mirrored", "one_device")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")


class TrainingConfigError(PRNetError, ValueError):
    """Inconsistent training settings (unknown strategy, batch not divisible by replicas, ...)."""


@dataclasses.dataclass
class TrainConfig:
    """All settings of a training run (the flags of ``train.py``)."""

    model_dir: str
    dataset: str = "prnet_synthetic"
    data_dir: str = None
    assets_dir: str = None  # uv-data folder (template for the loss mask and validation landmarks)
    train_split: str = "train"
    val_split: str = "validation"  # None or "" disables validation
    batch_size: int = 16  # global
    epochs: int = 30
    steps_per_epoch: int = None  # default: train examples // batch_size
    learning_rate: float = 1e-4
    lr_decay_epochs: float = 5.0
    lr_decay_factor: float = 0.5
    weight_mask: str = "paper"
    weight_decay: float = WEIGHT_DECAY
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    strategy: str = "default"
    mixed_precision: str = "none"
    xla: bool = False
    sync_batchnorm: bool = True
    bn_momentum: float = None  # None = the original's 0.999; e.g. 0.9 for short runs (tests, smoke runs)
    init_from: str = None
    model_size: int = 16
    log_every: int = 100
    val_every: int = 1000  # steps; 0 = only at the end
    val_examples: int = None  # None = the whole validation split
    checkpoint_every: int = 1000  # steps; 0 = at every epoch end; always at the end
    keep_checkpoints: int = 3
    shuffle_buffer: int = 512  # examples (~1 MB each once decoded)
    seed: int = 0
    image_summaries: int = 3
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
    progress: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise TrainingConfigError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.mixed_precision not in PRECISIONS:
            raise TrainingConfigError(f"unknown mixed precision {self.mixed_precision!r}; choose one of {PRECISIONS}")
        if self.weight_mask not in losses.WEIGHT_MASK_MODES:
            raise TrainingConfigError(f"unknown weight mask {self.weight_mask!r}; "
                                      f"choose one of {losses.WEIGHT_MASK_MODES}")
        for name in ("batch_size", "epochs", "model_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise TrainingConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainingConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.learning_rate <= 0 or self.lr_decay_epochs <= 0 or not 0 < self.lr_decay_factor <= 1:
            raise TrainingConfigError("need learning_rate > 0, lr_decay_epochs > 0, 0 < lr_decay_factor <= 1")


# ----------------------------------------------------------------------------- devices, strategy


def configure_cpu_devices(count: int):
    """Split the physical CPU into ``count`` logical devices (to test ``MirroredStrategy`` on CPU).

    Must run before TensorFlow initialises its devices (before any op); raises
    :class:`TrainingConfigError` otherwise.
    """
    if count < 1:
        raise TrainingConfigError(f"cpu_devices must be >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        raise TrainingConfigError(f"cannot create {count} logical CPU devices: TensorFlow is already "
                                  f"initialised ({e}); configure them first thing in the process") from e


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (no distribution), ``mirrored`` (all GPUs, else all logical CPUs), ``one_device``."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    raise TrainingConfigError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


# ----------------------------------------------------------------------------- learning rate


def learning_rate_schedule(base_lr: float, steps_per_epoch: int, decay_epochs: float = 5.0,
                           factor: float = 0.5):
    """``lr(step) = base_lr * factor ** floor(step / (decay_epochs * steps_per_epoch))``: the paper's
    "halved every 5 epochs". ``step`` counts optimizer updates from 0."""
    return keras.optimizers.schedules.ExponentialDecay(
        base_lr, decay_steps=max(decay_epochs * steps_per_epoch, 1), decay_rate=factor, staircase=True)


# ----------------------------------------------------------------------------- input pipeline


def _register_builder(name: str):
    """Import ``tfds_builders.<name>`` (registers the project's builders with TFDS), if it exists."""
    module = name.split("/")[0].split(":")[0]
    try:
        __import__(f"tfds_builders.{module}")
    except ModuleNotFoundError as e:
        if e.name not in (f"tfds_builders.{module}", "tfds_builders"):
            raise


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

    _register_builder(name)
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
    image = tf.ensure_shape(to_float_image(image), (RESOLUTION, RESOLUTION, 3))
    posmap = tf.ensure_shape(tf.cast(example["posmap"], tf.float32), (RESOLUTION, RESOLUTION, 3))
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


# ----------------------------------------------------------------------------- weights


def load_initial_weights(model: keras.Model, path) -> None:
    """Initialise ``model`` from a Keras ``.weights.h5`` file (e.g. converted official weights) or
    an official TF1 checkpoint prefix (via :func:`prnet.weights.convert.load_official_weights`)."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise WeightsNotFoundError(f"--init_from: no such file {path}")
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as e:
            raise WeightsFormatError(f"--init_from {path} does not match this model (model_size "
                                     f"must equal the one the weights were trained with): {e}") from e
        return
    from prnet.weights.convert import is_tf1_checkpoint, load_official_weights

    if not is_tf1_checkpoint(path):
        raise WeightsNotFoundError(
            f"--init_from {path}: neither a Keras '.weights.h5' file nor a TF1 checkpoint prefix "
            "(<prefix>.index + <prefix>.data-*). Convert the official weights with `prnet-convert` "
            "or pass the checkpoint prefix.")
    load_official_weights(model, path)


# ----------------------------------------------------------------------------- summaries


def _summary_metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


def write_scalar(name: str, value: float, step: int):
    """A TensorBoard scalar in the default writer (raw ``tf.summary.write``: no tensorboard package needed)."""
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_summary_metadata("scalars"))


def write_images(name: str, images: np.ndarray, step: int):
    """TensorBoard images (``[N, H, W, 3]`` float in [0, 1] or uint8) as PNGs, in the default writer."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    pngs = [tf.io.encode_png(im) for im in images]
    tensor = tf.stack([tf.as_string(images.shape[2]), tf.as_string(images.shape[1])] + pngs)
    tf.summary.write(name, tensor, step=step, metadata=_summary_metadata("images"))


# ----------------------------------------------------------------------------- trainer


def _draw_landmarks(image: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """uint8 overlay: true landmarks green, predicted red (crop pixels)."""
    import cv2

    canvas = np.ascontiguousarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    for points, colour in ((true, (0, 255, 0)), (pred, (255, 0, 0))):
        for x, y in np.round(points[:, :2]).astype(int):
            cv2.circle(canvas, (int(x), int(y)), 2, colour, -1)
    return canvas


class Trainer:
    """Model, optimizer, checkpoint and the distributed train step of one training run.

    ``steps_per_epoch`` fixes the epoch length (learning-rate schedule, epoch-end checkpoints).
    ``template`` (:class:`prnet.core.uv.UVTemplate`) is loaded from ``config.assets_dir`` when needed
    (``paper``/``uniform`` masks, validation landmarks). Side effects on the process: seeds Python,
    NumPy and TF RNGs with ``config.seed`` (``keras.utils.set_random_seed``) so that the initial
    weights are reproducible; ``config.deterministic`` enables TF op determinism process-wide.
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int, template=None, strategy=None):
        self.config = config
        self.steps_per_epoch = int(steps_per_epoch)
        self._template = template
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or make_strategy(config.strategy)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise TrainingConfigError(f"global batch size {config.batch_size} is not divisible by the "
                                      f"{replicas} replicas")
        if config.xla and config.sync_batchnorm and replicas > 1:
            raise TrainingConfigError("--xla cannot compile synchronised BatchNorm across replicas (its "
                                      "all-reduce is a merge_call); use --nosync_batchnorm with --xla, or drop --xla")
        self.global_batch_size = config.batch_size
        keras.utils.set_random_seed(config.seed)  # same initial weights for the same seed
        previous_policy = keras.mixed_precision.dtype_policy()
        if config.mixed_precision != "none":
            keras.mixed_precision.set_dtype_policy(config.mixed_precision)
        try:
            with self.strategy.scope():
                # The model's kernel regularisers are TF1's l2_regularizer (wd * sum(w^2) / 2); their
                # losses (model.losses) are added to the loss in _loss_and_grads.
                self.model = build_resfcn256(weight_decay=config.weight_decay, size=config.model_size)
                for layer in self.model.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.synchronized = bool(config.sync_batchnorm and replicas > 1)
                        if config.bn_momentum is not None:
                            layer.momentum = float(config.bn_momentum)
                self.lr_schedule = learning_rate_schedule(config.learning_rate, self.steps_per_epoch,
                                                          config.lr_decay_epochs, config.lr_decay_factor)
                optimizer = keras.optimizers.Adam(self.lr_schedule)
                if config.mixed_precision == "mixed_float16":
                    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
                self.optimizer = optimizer
                self.optimizer.build(self.model.trainable_variables)
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
        self.examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples_seen")
        self.loss_weights = tf.constant(losses.loss_weights(config.weight_mask, self._get_template()
                                                            if config.weight_mask != "none" else None))
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              examples_seen=self.examples_seen)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(config.model_dir, "checkpoints"),
            max_to_keep=config.keep_checkpoints, step_counter=self.optimizer.iterations)
        self._train_step = tf.function(self._distributed_step)
        self._grad_fn = tf.function(self._loss_and_grads, jit_compile=True) if config.xla else self._loss_and_grads
        self._predict_fn = tf.function(lambda x: self.model(x, training=False))

    # -- state

    def _get_template(self):
        if self._template is None:
            from prnet.core.uv import load_uv_template

            self._template = load_uv_template(self.config.assets_dir)
        return self._template

    @property
    def step(self) -> int:
        """Optimizer updates done so far (also restored from checkpoints)."""
        return int(self.optimizer.iterations.numpy())

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def learning_rate(self, step: int = None) -> float:
        return float(self.lr_schedule(self.step if step is None else step))

    def restore_or_initialize(self) -> str:
        """Resume from the latest checkpoint in ``model_dir`` if any, else apply ``init_from``.

        Returns what happened: ``"resumed from <path>"``, ``"initialised from <path>"`` or ``"fresh"``.
        """
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            return f"resumed from {latest}"
        if self.config.init_from:
            load_initial_weights(self.model, self.config.init_from)
            return f"initialised from {self.config.init_from}"
        return "fresh"

    def save_checkpoint(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    # -- steps

    def _loss_and_grads(self, images, targets):
        with tf.GradientTape() as tape:
            prediction = self.model(images, training=True)
            per_example = losses.posmap_loss(targets, prediction, self.loss_weights)
            data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            loss = losses.total_loss(per_example, self.global_batch_size, self.model.losses)
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return loss, data_loss, grads

    def _replica_step(self, batch):
        targets = losses.normalize_posmap(batch["posmap"])  # float32; the loss casts to its dtype
        loss, data_loss, grads = self._grad_fn(batch["image"], targets)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss, data_loss

    def _distributed_step(self, iterator):
        batch = next(iterator)
        loss, data_loss = self.strategy.run(self._replica_step, args=(batch,))
        self.examples_seen.assign_add(self.global_batch_size)
        reduce = tf.distribute.ReduceOp.SUM
        return {"loss": self.strategy.reduce(reduce, loss, axis=None),
                "posmap_loss": self.strategy.reduce(reduce, data_loss, axis=None)}

    def make_iterator(self, source: tf.data.Dataset):
        """Distributed iterator over the training stream, positioned after the consumed examples."""
        ds = train_pipeline(source, self.global_batch_size, augment_config=self.config.augment,
                            seed=self.config.seed, shuffle_buffer=self.config.shuffle_buffer,
                            skip_examples=int(self.examples_seen.numpy()))
        return iter(self.strategy.experimental_distribute_dataset(ds))

    def train_steps(self, iterator, count: int) -> list:
        """Run ``count`` steps; returns their losses ``[{"loss", "posmap_loss"}]`` as floats."""
        outs = [self._train_step(iterator) for _ in range(count)]
        return [{k: float(v) for k, v in o.items()} for o in outs]

    # -- validation

    def predict_posmaps(self, images) -> np.ndarray:
        """``[N, 256, 256, 3]`` crops in [0, 1] -> position maps in crop pixels (inference mode)."""
        return self._predict_fn(tf.convert_to_tensor(images, tf.float32)).numpy().astype(np.float32) * POSMAP_SCALE

    def evaluate(self, val_ds: tf.data.Dataset) -> dict:
        """68-landmark NME (fraction; 2D and 3D, :func:`prnet.evaluation.metrics.landmark_nme`) and the
        posmap loss on prepared, batched validation data (:func:`eval_pipeline`)."""
        from prnet.evaluation.metrics import landmark_nme
        from prnet.core.uv import landmarks_from_posmap

        template = self._get_template()
        nme2, nme3, loss = [], [], []
        for batch in val_ds:
            posmaps = self.predict_posmaps(batch["image"])
            pred = landmarks_from_posmap(posmaps, template)
            true = batch["landmarks_68"].numpy()
            nme2.append(landmark_nme(pred, true, dims=2))
            nme3.append(landmark_nme(pred, true, dims=3))
            loss.append(losses.posmap_loss(losses.normalize_posmap(batch["posmap"]),
                                           posmaps / POSMAP_SCALE, self.loss_weights).numpy())
        if not nme2:
            raise DatasetError("the validation split is empty")
        return {"nme_2d": float(np.mean(np.concatenate(nme2))), "nme_3d": float(np.mean(np.concatenate(nme3))),
                "posmap_loss": float(np.mean(np.concatenate(loss)))}

    def image_summaries(self, batch: dict, step: int, count: int):
        """TensorBoard images: input, predicted map, true map (maps / POSMAP_SCALE), landmark overlay."""
        from prnet.core.uv import landmarks_from_posmap

        images = batch["image"][:count].numpy()
        posmaps = self.predict_posmaps(images)
        true = batch["posmap"][:count].numpy()
        template = self._get_template()
        pred_lm = landmarks_from_posmap(posmaps, template)
        overlay = np.stack([_draw_landmarks(im, p, t)
                            for im, p, t in zip(images, pred_lm, batch["landmarks_68"][:count].numpy())])
        write_images("input", images, step)
        write_images("posmap_predicted", posmaps / POSMAP_SCALE, step)
        write_images("posmap_true", true / POSMAP_SCALE, step)
        write_images("landmarks_true_green_pred_red", overlay, step)

    # -- the loop

    def fit(self, train_source: tf.data.Dataset, val_source: tf.data.Dataset = None, log=print) -> dict:
        """Train until ``config.epochs`` epochs are done (resuming from ``step``); validate, log and
        checkpoint along the way; write ``<model_dir>/final.weights.h5``. Returns a summary dict with
        the per-step ``losses`` of this call, ``val`` (last validation) and ``final_weights``."""
        from tqdm import tqdm

        cfg = self.config
        total_steps = cfg.epochs * self.steps_per_epoch
        os.makedirs(cfg.model_dir, exist_ok=True)
        train_writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, "train"))
        val_writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, "validation"))
        val_ds = eval_pipeline(val_source, cfg.batch_size, cfg.val_examples) if val_source is not None else None
        summary_batch = next(iter(val_ds)) if val_ds is not None and cfg.image_summaries else None
        step = self.step
        iterator = self.make_iterator(train_source) if step < total_steps else None
        history, last_val = [], None
        bar = tqdm(total=total_steps * self.global_batch_size, initial=step * self.global_batch_size,
                   unit="ex", disable=not cfg.progress, dynamic_ncols=True, desc="train")

        def validate(step):
            nonlocal last_val
            if val_ds is None:
                return
            last_val = self.evaluate(val_ds)
            with val_writer.as_default():
                for k, v in last_val.items():
                    write_scalar(k, v, step)
                if cfg.image_summaries:
                    self.image_summaries(summary_batch, step, cfg.image_summaries)
            val_writer.flush()
            log(f"step {step} epoch {step / self.steps_per_epoch:.2f}: validation " +
                ", ".join(f"{k}={v:.5f}" for k, v in last_val.items()))

        try:
            while step < total_steps:
                # Run up to the next event (log / validation / checkpoint / epoch end) without syncing.
                events = [cfg.log_every, self.steps_per_epoch]
                events += [cfg.val_every] if cfg.val_every else []
                events += [cfg.checkpoint_every] if cfg.checkpoint_every else []
                next_event = min(min((step // e + 1) * e for e in events), total_steps)
                t0 = time.perf_counter()
                pending = []
                for _ in range(next_event - step):
                    pending.append(self._train_step(iterator))
                    bar.update(self.global_batch_size)
                chunk = [{k: float(v) for k, v in o.items()} for o in pending]
                elapsed = time.perf_counter() - t0
                history.extend(chunk)
                step = next_event
                lr = self.learning_rate(step)
                mean_loss = float(np.mean([c["loss"] for c in chunk]))
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"training diverged at step {step}: loss {mean_loss}")
                bar.set_postfix(loss=f"{mean_loss:.5f}", lr=f"{lr:.2e}", epoch=step // self.steps_per_epoch)
                with train_writer.as_default():
                    write_scalar("loss", mean_loss, step)
                    write_scalar("posmap_loss", float(np.mean([c["posmap_loss"] for c in chunk])), step)
                    write_scalar("learning_rate", lr, step)
                    write_scalar("examples_per_second", len(chunk) * self.global_batch_size / elapsed, step)
                if (cfg.val_every and step % cfg.val_every == 0) and step < total_steps:
                    validate(step)
                if (step % cfg.checkpoint_every == 0 if cfg.checkpoint_every else step % self.steps_per_epoch == 0):
                    self.save_checkpoint()
        finally:
            bar.close()
            train_writer.flush()
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(f"-{step}"):
            self.save_checkpoint()
        validate(step)
        final = save_weights_atomic(self.model, os.path.join(cfg.model_dir, "final.weights.h5"))
        log(f"done: {step} steps ({step / self.steps_per_epoch:.2f} epochs); weights: {final}")
        return {"losses": history, "val": last_val, "final_weights": str(final), "steps": step}


def steps_per_epoch_for(config: TrainConfig, train_source: tf.data.Dataset) -> int:
    """``config.steps_per_epoch`` or ``examples // batch_size`` (at least 1)."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    n = count_examples(train_source)
    if n < config.batch_size:
        raise DatasetError(f"the training split has {n} examples, fewer than one batch of {config.batch_size}")
    return n // config.batch_size


def train(config: TrainConfig, train_source: tf.data.Dataset = None, val_source: tf.data.Dataset = None,
          log=print) -> dict:
    """Run a whole training: load the splits with TFDS unless datasets are given, build the
    :class:`Trainer`, resume or initialise, :meth:`Trainer.fit`. Returns ``fit``'s summary."""
    if train_source is None:
        train_source = load_split(config.dataset, config.train_split, config.data_dir, config.assets_dir,
                                  shuffle_files=True, seed=config.seed)
        if config.val_split:
            val_source = load_split(config.dataset, config.val_split, config.data_dir, config.assets_dir)
    trainer = Trainer(config, steps_per_epoch_for(config, train_source))
    log(f"{trainer.restore_or_initialize()}; strategy {type(trainer.strategy).__name__} with "
        f"{trainer.strategy.num_replicas_in_sync} replica(s), global batch {config.batch_size}, "
        f"{trainer.steps_per_epoch} steps/epoch, step {trainer.step}")
    return trainer.fit(train_source, val_source, log=log)
