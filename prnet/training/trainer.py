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

Resuming destroys no checkpoint: :meth:`Trainer.restore_or_initialize` resumes from
the newest *intact* ``ckpt-<step>`` (found by scanning the folder, so an unreadable or missing
``checkpoint`` index file does not matter; a truncated or missing newest data file falls back to
the previous checkpoint) and stops with :class:`prnet.errors.WeightsFormatError` when checkpoints
exist but none can be resumed from. ``config.restart`` starts over instead, after moving the old
``checkpoints`` folder aside (``checkpoints.old-<time>``). Later saves rotate ``keep_checkpoints``
over the folder's checkpoints, the previous runs' included (after a resume that repaired the index
too: it lists the older checkpoints with their times); a damaged checkpoint skipped on resume is not
listed, so it is never rotated away. The chief holds ``<model_dir>/train.lock``
(:class:`prnet.training.guards.RunLock`) from :meth:`Trainer.restore_or_initialize` to the end of
:meth:`Trainer.fit`, and removes the ``ckpt-<step>_temp`` folders of failed saves when it starts.
A ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM: :func:`prnet.training.guards.sigterm_as_interrupt`) during
:meth:`Trainer.fit` saves a checkpoint of the steps done (every step is one atomic graph
execution, so the state is consistent), logs what was finished and is re-raised. Non-finite model
variables are never saved (:class:`prnet.errors.TrainingDivergedError` names the first one); a
non-finite training loss or validation stops the run the same way.

Multi-worker (``strategy="multi_worker"``, ``MultiWorkerMirroredStrategy`` over ``TF_CONFIG``): every
worker runs the same program. Only the chief (:func:`prnet.training.config.is_chief`) writes into
``model_dir`` (checkpoints, index repairs, TensorBoard, validation, ``final.weights.h5``); the others
save their checkpoints and summaries to temporary folders that are deleted (the saves take part in
the workers' collective ops, as TensorFlow requires). All workers resume from the chief's
``<model_dir>/checkpoints``: ``model_dir`` must be the same shared folder on every machine (NFS,
GCS...). Each worker decodes and augments only its slice of every global batch
(:func:`prnet.data.pipeline.train_pipeline` ``num_shards``), so a step sees the same examples as
one process with the same global batch.
"""

import logging
import math
import os
import re
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from prnet.core.files import atomic_write, ensure_writable_folder, interrupts_deferred
from prnet.data.pipeline import count_examples, eval_pipeline, load_split, train_pipeline
from prnet.errors import (
    DatasetError,
    OutputFolderError,
    TrainingConfigError,
    TrainingDivergedError,
    WeightsFormatError,
)
from prnet.model.resfcn256 import build_resfcn256, from_posmap, save_weights_atomic, to_posmap
from prnet.training import losses
from prnet.training.config import TrainConfig, is_chief, learning_rate_schedule, make_strategy
from prnet.training.guards import RunLock, last_stop_signal, sigterm_as_interrupt
from prnet.training.summaries import _draw_landmarks, write_images, write_scalar
from prnet.weights.formats import load_weights_into

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- checkpoint files

CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's default prefix: <model_dir>/checkpoints/ckpt-<step>
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.index$")
#: TensorFlow writes a checkpoint's shards into ``ckpt-<step>_temp/`` and merges them; a failed save
#: (full disk, kill) leaves that folder behind.
_TEMP_RE = re.compile(rf"^{CHECKPOINT_NAME}-\d+_temp$")


def checkpoint_dir(model_dir) -> str:
    return os.path.join(os.fspath(model_dir), "checkpoints")


def check_model_dir(model_dir) -> None:
    """Create ``model_dir`` and its ``checkpoints`` folder and check that files can be written there;
    :class:`OutputFolderError` naming the folder if not (run before any data is loaded)."""
    ensure_writable_folder(model_dir)
    ensure_writable_folder(checkpoint_dir(model_dir))


def _read_index(ckpt_dir: str):
    """The ``checkpoint`` index file of ``ckpt_dir``: ``(state or None, problem or None)``; problem is
    set when the file exists but cannot be read (TensorFlow would only log "Checkpoint ignored")."""
    if not os.path.exists(os.path.join(ckpt_dir, "checkpoint")):
        return None, None
    try:
        state = tf.train.get_checkpoint_state(ckpt_dir)
    except Exception as e:  # UnicodeDecodeError on binary junk, OpError, ParseError
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if state is None or not state.model_checkpoint_path:
        return None, "not a checkpoint index"
    return state, None


def _step_of(prefix: str):
    """``ckpt-<step>`` prefix -> step (None for another name)."""
    match = _CHECKPOINT_RE.match(os.path.basename(prefix) + ".index")
    return int(match.group(1)) if match else None


def find_checkpoints(ckpt_dir: str) -> list:
    """Prefixes of the ``ckpt-<step>`` checkpoints in ``ckpt_dir`` (by their ``.index`` files), newest step first."""
    try:
        names = os.listdir(ckpt_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), os.path.abspath(os.path.join(ckpt_dir, m.group(0)[:-len(".index")])))
             for m in map(_CHECKPOINT_RE.match, names) if m]
    return [prefix for _, prefix in sorted(found, reverse=True)]


def checkpoint_problem(prefix: str):
    """``None`` if the checkpoint ``prefix`` is complete and every tensor reads back with its checksum,
    else what is wrong (one line). Reads the whole checkpoint once (tensor by tensor)."""
    if not os.path.isfile(prefix + ".index"):
        return "its .index file is missing"
    if not tf.io.gfile.glob(prefix + ".data-*"):
        return "its data file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # DataLossError, OutOfRangeError, NotFoundError, ... (truncated or corrupt)
        text = str(e).strip().splitlines()
        return f"unreadable ({type(e).__name__}: {text[0] if text else ''})"
    return None


def remove_half_written(ckpt_dir: str) -> list:
    """Delete the ``ckpt-<step>_temp`` folders a failed save left in ``ckpt_dir`` (call it only while
    holding the run's lock: a running save owns its folder); returns their names."""
    removed = []
    try:
        names = sorted(os.listdir(ckpt_dir))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(ckpt_dir, name)
        if _TEMP_RE.match(name) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(name)
                logger.warning("removed %s, left half-written by a checkpoint save that failed", path)
    return removed


def first_non_finite(variables):
    """Path (or name) of the first of ``variables`` holding a NaN or infinity, with what it holds;
    None when all are finite."""
    for v in variables:
        values = np.asarray(v.numpy())
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            what = "NaN" if np.isnan(values).any() else "infinity"
            return f"{getattr(v, 'path', None) or v.name} ({what})"
    return None


def _move_aside(ckpt_dir: str):
    """Rename a non-empty ``ckpt_dir`` to ``<ckpt_dir>.old-<time>``; returns the new path (None if nothing to move)."""
    if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = f"{ckpt_dir}.old-{stamp}", 1
    while os.path.lexists(target):
        n += 1
        target = f"{ckpt_dir}.old-{stamp}-{n}"
    os.rename(ckpt_dir, target)
    return target


# ----------------------------------------------------------------------------- trainer

#: What to try after a divergence. The flags were checked for finite, in-range values before training
#: (prnet.training.config.FLOAT_RANGES), so a NaN flag cannot be the cause.
DIVERGENCE_ADVICE = ("The settings are finite and in range, so the cause is the optimisation or the data: try a "
                     "lower --learning_rate or --bn_momentum, --mixed_precision=none, or check the dataset for "
                     "non-finite values; the same command resumes from the last checkpoint")


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
        self.strategy = strategy or make_strategy(config.strategy, config.worker_timeout)
        self.is_chief = is_chief(self.strategy)
        self.lock = RunLock(config.model_dir)  # taken by restore_or_initialize (chief), released by fit
        self._temp_dirs = []  # a non-chief worker's throw-away output folders
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
        self.checkpoint_dir = os.path.abspath(checkpoint_dir(config.model_dir))
        self._manager = None  # made on first use, after restore_or_initialize has read the folder
        self._restored = False
        self._saved_step = None  # step of the checkpoint resumed from or last saved (same on every worker)
        self._train_step = tf.function(self._distributed_step)
        self._grad_fn = tf.function(self._loss_and_grads, jit_compile=True) if config.xla else self._loss_and_grads
        self._predict_fn = tf.function(lambda x: self.model(x, training=False))

    # -- state

    def _output_dir(self, *parts) -> str:
        """``<model_dir>/<parts>`` on the chief; a new temporary folder on other workers."""
        if self.is_chief:
            return os.path.join(self.config.model_dir, *parts)
        path = tempfile.mkdtemp(prefix="prnet-worker-" + "-".join(parts) + "-")
        self._temp_dirs.append(path)
        return path

    def _remove_temp_dirs(self):
        for path in self._temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._temp_dirs = []

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

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """The ``tf.train.CheckpointManager`` of ``<model_dir>/checkpoints`` (rotates ``keep_checkpoints``)."""
        if self._manager is None:
            _, problem = _read_index(self.checkpoint_dir) if self.is_chief else (None, None)
            if problem:
                raise WeightsFormatError(f"{os.path.join(self.checkpoint_dir, 'checkpoint')} is unreadable "
                                         f"({problem}); call restore_or_initialize() first, which recovers from it")
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self.checkpoint_dir if self.is_chief else self._output_dir("checkpoints"),
                max_to_keep=self.config.keep_checkpoints if self.is_chief else 1,
                checkpoint_name=CHECKPOINT_NAME, step_counter=self.optimizer.iterations)
        return self._manager

    def restore_or_initialize(self) -> str:
        """Resume from the newest intact checkpoint in ``<model_dir>/checkpoints`` if any, else apply
        ``init_from``; with ``config.restart`` move the old checkpoints aside first.

        Never deletes a checkpoint. Candidates are the ``ckpt-<step>`` files found in the folder (newest
        first) and the one the ``checkpoint`` index names; each is read back completely before it is
        used, so a truncated or missing newest checkpoint falls back to the previous one, and an
        unreadable index does not hide the checkpoints. When the index was unreadable or named another
        checkpoint it is rewritten to name the one resumed from. Raises :class:`WeightsFormatError` when
        checkpoints exist but none is intact, or the intact one does not fit this model.

        Returns what happened: ``"resumed from <path>"`` (plus the checkpoints skipped),
        ``"initialised from <path>"`` or ``"fresh"`` (plus where old checkpoints were moved).
        """
        self._restored = True
        self._manager = None
        ckpt_dir, notes = self.checkpoint_dir, []
        if self.is_chief:
            self.lock.acquire()  # TrainingConfigError naming the holder when another run uses the folder
            if self.lock.note:
                notes.append(self.lock.note)
            removed = remove_half_written(ckpt_dir)
            if removed:
                notes.append(f"removed {', '.join(removed)} (half-written by a checkpoint save that failed)")
        if self.config.restart and not self.is_chief:
            pass  # the chief moves the old checkpoints aside; this worker starts fresh like it
        elif self.config.restart:
            moved = _move_aside(ckpt_dir)
            if moved:
                notes.append(f"--restart: the old checkpoints were moved to {moved}")
                logger.warning("starting over: the old checkpoints were moved to %s", moved)
        else:
            chosen, skipped = self._resume_point(ckpt_dir)
            if chosen:
                try:
                    self.checkpoint.restore(chosen).assert_existing_objects_matched()
                except (AssertionError, ValueError, tf.errors.OpError) as e:
                    text = str(e).strip().splitlines()
                    raise WeightsFormatError(
                        f"checkpoint {chosen} does not fit this model ({type(e).__name__}: "
                        f"{text[0] if text else ''}); resume with the settings it was trained with "
                        "(--model_size, --mixed_precision, ...), use another --model_dir, or pass --restart to "
                        "start over (the old checkpoints are moved aside, not deleted)") from e
                self._saved_step = self.step
                how = f"resumed from {chosen}"
                if skipped:
                    how += " (skipped: " + "; ".join(f"{os.path.basename(p)} {why}" for p, why in skipped) + ")"
                return "; ".join([how, *notes])
        how = "fresh"
        if self.config.init_from:
            load_weights_into(self.model, self.config.init_from)  # .weights.h5, .keras or a TF2/TF1 checkpoint
            how = f"initialised from {self.config.init_from}"
        return "; ".join([how, *notes])

    def _resume_point(self, ckpt_dir: str):
        """``(prefix to resume from or None, [(skipped prefix, why)])``; raises when checkpoints exist
        but none is intact. Repairs the index file when it does not name the chosen checkpoint."""
        state, index_problem = _read_index(ckpt_dir)
        index_path = os.path.join(ckpt_dir, "checkpoint")
        listed = os.path.abspath(state.model_checkpoint_path) if state else None
        candidates = find_checkpoints(ckpt_dir)
        if listed and listed not in candidates:
            candidates.insert(0, listed)
        skipped = []
        for prefix in candidates:
            problem = checkpoint_problem(prefix)
            if problem is None:
                break
            skipped.append((prefix, problem))
            logger.warning("checkpoint %s skipped: %s", prefix, problem)
        else:
            if not candidates and not os.path.exists(index_path):
                return None, []  # nothing to resume from: a new run
            details = [f"{os.path.basename(p)}: {why}" for p, why in skipped]
            if index_problem:
                details.append(f"index file 'checkpoint': {index_problem}")
            if not candidates:
                details.append("no ckpt-<step>.index files")
            raise WeightsFormatError(
                f"cannot resume from {ckpt_dir}: no intact checkpoint ({'; '.join(details)}). Nothing was "
                "deleted. Restore the files, use another --model_dir, or pass --restart to start over (the old "
                "checkpoints are moved aside, not deleted)")
        if (index_problem or listed != prefix) and self.is_chief:
            # Name the resumed checkpoint in the index, with the older ones and their times, so that
            # --keep_checkpoints rotates them as after a normal resume; the skipped (damaged) newer
            # ones are not listed, so they stay for inspection.
            step = _step_of(prefix)
            kept = [p for p in reversed(find_checkpoints(ckpt_dir)) if step is not None and _step_of(p) < step]
            kept.append(prefix)
            times = [os.path.getmtime(p + ".index") for p in kept]
            text = f'model_checkpoint_path: "{os.path.basename(prefix)}"\n'
            text += "".join(f'all_model_checkpoint_paths: "{os.path.basename(p)}"\n' for p in kept)
            text += "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in times)
            text += f"last_preserved_timestamp: {min(times) - 1.0!r}\n"
            atomic_write(index_path, text)
            logger.warning("checkpoint index %s %s; rewritten to name %s", index_path,
                           f"was unreadable ({index_problem})" if index_problem else
                           f"named {listed or 'nothing'}", prefix)
        return prefix, skipped

    def save_checkpoint(self) -> str:
        """Save ``ckpt-<step>`` (rotating old ones); :class:`OutputFolderError` when it cannot be written,
        :class:`TrainingDivergedError` (nothing written) when a model variable is not finite."""
        self.check_finite(f"checkpoint {CHECKPOINT_NAME}-{self.step}")
        try:
            with interrupts_deferred():  # a Ctrl-C during the save is delivered once it is complete
                path = self.manager.save(checkpoint_number=self.step)
            self._saved_step = self.step
            if not self.is_chief:  # saved only to take part in the collective ops; the chief's copy counts
                shutil.rmtree(self.manager.directory, ignore_errors=True)
            return path
        except (tf.errors.OpError, OSError) as e:
            text = str(e).strip().splitlines()
            raise OutputFolderError(
                f"could not write checkpoint {CHECKPOINT_NAME}-{self.step} in {self.checkpoint_dir} "
                f"({text[0] if text else type(e).__name__}); free disk space or fix the folder's permissions. "
                f"The last checkpoint ({self.manager.latest_checkpoint or 'none'}) is intact") from e

    def check_finite(self, what: str):
        """Raise :class:`TrainingDivergedError` naming the first non-finite model variable (weights or
        BatchNorm statistics), before ``what`` is written; the last checkpoint stays as it is."""
        bad = first_non_finite(self.model.weights)
        if bad:
            latest = self._manager.latest_checkpoint if self._manager is not None else None
            raise TrainingDivergedError(
                f"refusing to save {what}: the model variable {bad} is not finite (training diverged at step "
                f"{self.step}); nothing was written, the last checkpoint ({latest or 'none'}) is intact. "
                f"{DIVERGENCE_ADVICE}")

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
        """Distributed iterator over the training stream, positioned after the consumed examples
        (multi-worker: one pipeline per worker, holding its slice of each global batch)."""
        def pipeline(num_shards=1, shard_index=0, output_batch=None):
            return train_pipeline(source, self.global_batch_size, augment_config=self.config.augment,
                                  seed=self.config.seed, shuffle_buffer=self.config.shuffle_buffer,
                                  skip_examples=int(self.examples_seen.numpy()), num_shards=num_shards,
                                  shard_index=shard_index, output_batch=output_batch)

        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            def per_worker(context: tf.distribute.InputContext):
                # One batch per local replica per step, taken in turn from this worker's slice.
                return pipeline(context.num_input_pipelines, context.input_pipeline_id,
                                context.get_per_replica_batch_size(self.global_batch_size))

            options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
            return iter(self.strategy.distribute_datasets_from_function(per_worker, options))
        return iter(self.strategy.experimental_distribute_dataset(pipeline()))

    def train_steps(self, iterator, count: int) -> list:
        """Run ``count`` steps; returns their losses ``[{"loss", "posmap_loss"}]`` as floats."""
        outs = [self._train_step(iterator) for _ in range(count)]
        return [{k: float(v) for k, v in o.items()} for o in outs]

    # -- validation

    def predict_posmaps(self, images) -> np.ndarray:
        """``[N, 256, 256, 3]`` crops in [0, 1] -> position maps in crop pixels (inference mode)."""
        return to_posmap(self._predict_fn(tf.convert_to_tensor(images, tf.float32)).numpy().astype(np.float32))

    def evaluate(self, val_ds: tf.data.Dataset) -> dict:
        """68-landmark NME (fraction; 2D and 3D, :func:`prnet.evaluation.metrics.landmark_nme`) and the
        posmap loss on prepared, batched validation data (:func:`eval_pipeline`)."""
        from prnet.core.uv import landmarks_from_posmap
        from prnet.evaluation.metrics import landmark_nme

        template = self._get_template()
        nme2, nme3, loss = [], [], []
        for batch in val_ds:
            posmaps = self.predict_posmaps(batch["image"])
            pred = landmarks_from_posmap(posmaps, template)
            true = batch["landmarks_68"].numpy()
            nme2.append(landmark_nme(pred, true, dims=2))
            nme3.append(landmark_nme(pred, true, dims=3))
            loss.append(losses.posmap_loss(losses.normalize_posmap(batch["posmap"]),
                                           from_posmap(posmaps), self.loss_weights).numpy())
        if not nme2:
            raise DatasetError("the validation split is empty")
        return {"nme_2d": float(np.mean(np.concatenate(nme2))), "nme_3d": float(np.mean(np.concatenate(nme3))),
                "posmap_loss": float(np.mean(np.concatenate(loss)))}

    def image_summaries(self, batch: dict, step: int, count: int):
        """TensorBoard images: input, predicted map, true map (:func:`from_posmap` of the maps), landmark overlay."""
        from prnet.core.uv import landmarks_from_posmap

        images = batch["image"][:count].numpy()
        posmaps = self.predict_posmaps(images)
        true = batch["posmap"][:count].numpy()
        template = self._get_template()
        pred_lm = landmarks_from_posmap(posmaps, template)
        overlay = np.stack([_draw_landmarks(im, p, t)
                            for im, p, t in zip(images, pred_lm, batch["landmarks_68"][:count].numpy())])
        write_images("input", images, step)
        write_images("posmap_predicted", from_posmap(posmaps), step)
        write_images("posmap_true", from_posmap(true), step)
        write_images("landmarks_true_green_pred_red", overlay, step)

    # -- the loop

    def fit(self, train_source: tf.data.Dataset, val_source: tf.data.Dataset = None, log=print) -> dict:
        """Train until ``config.epochs`` epochs are done (resuming from ``step``); validate, log and
        checkpoint along the way; write ``<model_dir>/final.weights.h5``. Returns a summary dict with
        the per-step ``losses`` of this call, ``val`` (last validation) and ``final_weights``.

        Calls :meth:`restore_or_initialize` first unless it was called already. On ``KeyboardInterrupt``
        saves a checkpoint of the steps done (unless one exists for this step), logs
        ``"interrupted at step N ...; last checkpoint: ..."`` and re-raises."""
        from tqdm import tqdm

        cfg = self.config
        total_steps = cfg.epochs * self.steps_per_epoch
        check_model_dir(cfg.model_dir)
        if not self._restored:
            log(self.restore_or_initialize())
        try:
            with sigterm_as_interrupt():  # SIGTERM (schedulers, docker stop) saves the steps done too
                return self._fit(train_source, val_source, total_steps, log, tqdm)
        except KeyboardInterrupt:
            self._interrupted(log)
            raise
        finally:
            self._remove_temp_dirs()
            self.lock.release()

    def _interrupted(self, log):
        """Save what was finished after a Ctrl-C (one graph execution per step: the state is consistent)."""
        step = self.step
        latest = self.manager.latest_checkpoint
        if step > 0 and not (latest and os.path.basename(latest) == f"{CHECKPOINT_NAME}-{step}"):
            try:
                latest = self.save_checkpoint()
            except (OutputFolderError, TrainingDivergedError) as e:
                log(f"could not save a checkpoint on interrupt: {e}")
            except KeyboardInterrupt:  # a second Ctrl-C, held until the save was complete
                latest = self.manager.latest_checkpoint
        by = f" by {last_stop_signal[0]}" if last_stop_signal[0] else ""
        log(f"interrupted{by} at step {step} ({step / self.steps_per_epoch:.2f} epochs, "
            f"{int(self.examples_seen.numpy())} examples); last checkpoint: {latest or 'none'}"
            + ("; run the same command to resume from it" if latest else ""))

    def _fit(self, train_source, val_source, total_steps, log, tqdm):
        cfg = self.config
        train_writer = tf.summary.create_file_writer(self._output_dir("train"))
        val_writer = tf.summary.create_file_writer(self._output_dir("validation"))
        if not self.is_chief:
            val_source = None  # the chief validates (the weights are the same on every worker)
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
            if not all(math.isfinite(v) for v in last_val.values()):
                bad = first_non_finite(self.model.weights)
                raise TrainingDivergedError(
                    f"validation at step {step} is not finite ({', '.join(f'{k}={v}' for k, v in last_val.items())})"
                    + (f": the model variable {bad} is not finite" if bad else "")
                    + f"; nothing was saved after the last checkpoint ({self.manager.latest_checkpoint or 'none'}), "
                    f"which is intact. {DIVERGENCE_ADVICE}")
            with val_writer.as_default():
                for k, v in last_val.items():  # NME as a fraction of the face size (logs: percent)
                    write_scalar(k, v, step, "fraction of the face size (x100: %)" if k.startswith("nme") else "")
                if cfg.image_summaries:
                    self.image_summaries(summary_batch, step, cfg.image_summaries)
            val_writer.flush()
            log(f"step {step} epoch {step / self.steps_per_epoch:.2f}: validation " +
                ", ".join(f"{k}={100 * v:.2f}%" if k.startswith("nme") else f"{k}={v:.5f}"
                          for k, v in last_val.items()))

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
                    bad = first_non_finite(self.model.weights)
                    raise TrainingDivergedError(
                        f"training diverged at step {step}: the training loss is {mean_loss}"
                        + (f" and the model variable {bad} is not finite" if bad else "")
                        + f" (learning rate {lr:g}); nothing was saved after the last checkpoint "
                        f"({self.manager.latest_checkpoint or 'none'}), which is intact. {DIVERGENCE_ADVICE}")
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
        if self._saved_step != step:  # decided alike on every worker: the saves are collective
            self.save_checkpoint()
        validate(step)
        final = None
        if self.is_chief:
            self.check_finite("final.weights.h5")
            final = save_weights_atomic(self.model, os.path.join(cfg.model_dir, "final.weights.h5"))
        log(f"done: {step} steps ({step / self.steps_per_epoch:.2f} epochs); weights: "
            f"{final or 'written by the chief worker'}")
        return {"losses": history, "val": last_val, "final_weights": final and str(final), "steps": step}


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
    """Run a whole training: check that ``model_dir`` is writable, load the splits with TFDS unless
    datasets are given (never building them: :func:`load_split` says how), build the
    :class:`Trainer`, resume or initialise, :meth:`Trainer.fit`. Returns ``fit``'s summary."""
    check_model_dir(config.model_dir)
    last_stop_signal[0] = None
    with sigterm_as_interrupt():
        return _train(config, train_source, val_source, log)


def _train(config, train_source, val_source, log):
    lock, trainer = RunLock(config.model_dir), None
    try:
        # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op of the process.
        strategy = make_strategy(config.strategy, config.worker_timeout, log)
        if is_chief(strategy):
            lock.acquire()  # before any data is read: a second run on the folder stops here
        if train_source is None:
            train_source = load_split(config.dataset, config.train_split, config.data_dir, config.assets_dir,
                                      shuffle_files=True, seed=config.seed)
            if config.val_split:
                val_source = load_split(config.dataset, config.val_split, config.data_dir, config.assets_dir)
        trainer = Trainer(config, steps_per_epoch_for(config, train_source), strategy=strategy)
        trainer.lock = lock  # the one taken above (and any note about a stale lock taken over)
        strategy_name = type(trainer.strategy).__name__  # tf.distribute's default one is a private class
        strategy_name = "default" if strategy_name.startswith("_") else strategy_name
        log(f"{trainer.restore_or_initialize()}; strategy {strategy_name} with "
            f"{trainer.strategy.num_replicas_in_sync} replica(s), global batch {config.batch_size}, "
            f"{trainer.steps_per_epoch} steps/epoch, step {trainer.step}")
        return trainer.fit(train_source, val_source, log=log)
    except KeyboardInterrupt:
        if trainer is None or not trainer._restored:
            log("interrupted before training started: no step done, no checkpoint written")
        raise
    finally:
        if trainer is not None:
            trainer.lock.release()
        lock.release()
