"""Training settings: the run configuration (the flags of ``train.py``), device strategy and the
learning-rate schedule of the paper (Adam at 1e-4, halved every 5 epochs)."""

import dataclasses

import keras
import tensorflow as tf

from prnet.data.augment import AugmentConfig
from prnet.errors import TrainingConfigError
from prnet.model.resfcn256 import WEIGHT_DECAY
from prnet.training import losses

STRATEGIES = ("default", "mirrored", "one_device")


PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")


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
    restart: bool = False  # start over: move existing checkpoints aside instead of resuming from them
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


def learning_rate_schedule(base_lr: float, steps_per_epoch: int, decay_epochs: float = 5.0,
                           factor: float = 0.5):
    """``lr(step) = base_lr * factor ** floor(step / (decay_epochs * steps_per_epoch))``: the paper's
    "halved every 5 epochs". ``step`` counts optimizer updates from 0."""
    return keras.optimizers.schedules.ExponentialDecay(
        base_lr, decay_steps=max(decay_epochs * steps_per_epoch, 1), decay_rate=factor, staircase=True)
