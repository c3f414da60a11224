"""Training settings: the run configuration (the flags of ``train.py``), device strategy and the
learning-rate schedule of the paper (Adam at 1e-4, halved every 5 epochs)."""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from prnet.data.augment import AugmentConfig
from prnet.errors import TrainingConfigError
from prnet.model.resfcn256 import WEIGHT_DECAY
from prnet.training import losses
from prnet.training.guards import DEFAULT_WORKER_TIMEOUT_S, float_problems, wait_for_peers

STRATEGIES = ("default", "mirrored", "one_device", "multi_worker")


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
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S  # multi_worker: seconds to wait for the other workers

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
        problems = float_problems(self)
        if problems:
            raise TrainingConfigError("; ".join(f"{name} {why}" for name, why in problems))


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


def make_strategy(name: str, worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S, log=print) -> tf.distribute.Strategy:
    """``default`` (no distribution), ``mirrored`` (all GPUs, else all logical CPUs), ``one_device``,
    ``multi_worker`` (``MultiWorkerMirroredStrategy`` over the cluster of ``TF_CONFIG``: all GPUs of
    every worker, or its CPU; must be made before any other TensorFlow op of the process). Before
    that one starts, :func:`prnet.training.guards.wait_for_peers` waits up to ``worker_timeout`` s
    for the other workers (``log`` says whom it waits for; Ctrl-C / SIGTERM stop the wait)."""
    if name == "multi_worker":
        return _multi_worker_strategy(worker_timeout, log)
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


def _multi_worker_strategy(worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S, log=print) -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG", "")
    try:
        tf_config = json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError as e:
        raise TrainingConfigError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from e
    workers = ((tf_config or {}).get("cluster") or {}).get("worker")
    task = (tf_config or {}).get("task") or {}
    if not workers or "type" not in task or "index" not in task:
        raise TrainingConfigError(
            "--strategy=multi_worker needs TF_CONFIG with the cluster and this process's task, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
            '"index": 0}}\' on the first machine and "index": 1 on the second (README, train.py)')
    wait_for_peers(tf_config, worker_timeout, log)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise TrainingConfigError(f"cannot start MultiWorkerMirroredStrategy ({e}); it must be created before "
                                  "any other TensorFlow op of the process, with a valid TF_CONFIG") from e


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: always outside ``multi_worker``; there, the
    ``chief`` task, or worker 0 when the cluster has no chief (TensorFlow's convention)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def learning_rate_schedule(base_lr: float, steps_per_epoch: int, decay_epochs: float = 5.0,
                           factor: float = 0.5):
    """``lr(step) = base_lr * factor ** floor(step / (decay_epochs * steps_per_epoch))``: the paper's
    "halved every 5 epochs". ``step`` counts optimizer updates from 0."""
    return keras.optimizers.schedules.ExponentialDecay(
        base_lr, decay_steps=max(decay_epochs * steps_per_epoch, 1), decay_rate=factor, staircase=True)
