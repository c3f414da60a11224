"""prnet-train (or ``python train.py``): train PRNet's ResFCN256 on a TFDS dataset (the paper's recipe;
logic in prnet/training/).

Examples::

    # CPU smoke run on the synthetic set (tiny model, a few minutes):
    prnet-train --dataset=prnet_synthetic/small --output_dir=/tmp/prnet_smoke \\
        --model_size=4 --batch_size=8 --epochs=2 --assets_dir=PATH/uv-data
    # The paper's setup on 300W-LP, all GPUs, mixed precision:
    prnet-train --dataset=prnet_300w_lp --val_split=... --output_dir=runs/prnet \\
        --strategy=mirrored --mixed_precision=mixed_float16 --epochs=30

    # Two machines (same command on both, TF_CONFIG's task index 0 on the first, 1 on the second;
    # --output_dir on a filesystem both see; --batch_size is global):
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \
        prnet-train --dataset=prnet_300w_lp --output_dir=/shared/runs/prnet --strategy=multi_worker

Re-running with the same --output_dir (the run folder; --model_dir is its deprecated alias) resumes
from the newest intact checkpoint (same step, learning rate and data position): an unreadable
checkpoint index or a truncated newest checkpoint falls back to the previous one; when checkpoints
exist but none can be resumed from, training stops and says so (--restart starts over after moving
the old checkpoints aside; --keep_checkpoints counts the previous runs' checkpoints too).
TensorBoard logs go to <output_dir>/train and
<output_dir>/validation (validation NME there as a fraction of the face size; the log prints
percent); the final weights to <output_dir>/final.weights.h5 (loadable by
prnet.inference.predictor.Predictor when --model_size=16).

The dataset must be built first (training never builds or downloads one; the message gives the
command, e.g. `prnet-build-data --dataset prnet_synthetic/small --data_dir DIR`).
Ctrl-C or SIGTERM (what schedulers and `docker stop` send) saves a checkpoint of the steps done,
prints the step reached and exits with 130. One run at a time per --output_dir: a second one stops
with a message naming the first (<output_dir>/train.lock; a lock left by a run that died on this
host is taken over). Exit codes: 0 done; 1 training diverged (a non-finite loss, validation or
weights: nothing non-finite is saved, the last checkpoint stays intact); 2 a setup problem (one
line on stderr: flags, dataset, --output_dir or its lock, checkpoints, workers of TF_CONFIG that
never came up); 130 interrupted.
"""

from absl import flags

from prnet.cli import common, import_tensorflow_quietly  # first: sets TensorFlow's log level before it loads

common.define_dataset_flags(default="prnet_synthetic")
common.define_assets_flags()
common.define_output_dir_flag(help="The run folder: checkpoints, TensorBoard logs, final.weights.h5 (created if "
                              "missing; the same folder resumes). Required.", model_dir=True)
common.define_model_size_flag(default=16, size_alias=False)
flags.DEFINE_string("train_split", "train", "Training split (TFDS split syntax, e.g. 'train[:90%]').")
flags.DEFINE_string("val_split", "validation", "Validation split; empty string disables validation.")
common.define_flag(flags.DEFINE_integer, "batch_size", 16, "Global batch size (split evenly over the replicas).",
                   lower_bound=1)
flags.DEFINE_integer("epochs", 30, "Number of epochs to train (total, counting resumed ones).")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: training examples // batch_size).")
flags.DEFINE_float("learning_rate", 1e-4, "Initial Adam learning rate.")
flags.DEFINE_float("lr_decay_epochs", 5.0, "Multiply the learning rate by --lr_decay_factor every this many epochs.")
flags.DEFINE_float("lr_decay_factor", 0.5, "Learning-rate decay factor (staircase).")
flags.DEFINE_enum("weight_mask", "paper", ["paper", "uniform", "none"],
                  "Loss weights: paper = 16:4:3:0 (landmarks:eyes-nose-mouth:face:neck), uniform = face mask, "
                  "none = every pixel 1.")
flags.DEFINE_float("weight_decay", 2e-4, "L2 weight decay on conv kernels (TF1 semantics: wd * sum(w^2) / 2).")
flags.DEFINE_bool("augment", True, "Master switch of the data augmentation (--aug_* select the parts).")
flags.DEFINE_bool("aug_rotate", True, "Rotate crop and map about the crop centre, uniform in +-max_rotation.")
flags.DEFINE_float("max_rotation", 45.0, "Maximum rotation, degrees.")
flags.DEFINE_bool("aug_translate", True, "Translate crop and map by up to +-max_translation of the crop side.")
flags.DEFINE_float("max_translation", 0.1, "Maximum translation, fraction of the crop side per axis.")
flags.DEFINE_bool("aug_scale", True, "Scale crop and map (x, y and z) about the crop centre.")
flags.DEFINE_list("scale_range", ["0.9", "1.2"], "Scale range min,max.")
flags.DEFINE_bool("aug_color", True, "Scale each colour channel of the crop by a factor in --color_range.")
flags.DEFINE_list("color_range", ["0.6", "1.4"], "Per-channel colour factor range min,max.")
flags.DEFINE_bool("aug_occlude", True, "Paste a random textured patch over the crop (image only).")
flags.DEFINE_float("occluder_prob", 0.5, "Probability of an occluder per example.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "one_device", "multi_worker"],
                  "tf.distribute strategy: mirrored = all GPUs (or all logical CPUs without GPUs); multi_worker = "
                  "MultiWorkerMirroredStrategy over the machines of TF_CONFIG (run the same command on each; "
                  "--output_dir must be one shared folder; only the chief writes there).")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into N logical devices (to try --strategy=mirrored on CPU).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Keras mixed-precision policy (the output layer stays float32; float16 uses loss scaling).")
flags.DEFINE_bool("xla", False, "JIT-compile the forward/backward pass with XLA.")
flags.DEFINE_bool("sync_batchnorm", True, "With several replicas, compute BatchNorm statistics over the global batch.")
flags.DEFINE_float("bn_momentum", None, "Override the BatchNorm moving-average momentum (default: the original's "
                   "0.999; e.g. 0.9 for short runs, whose moving statistics would otherwise lag).")
flags.DEFINE_string("init_from", None,
                    "Initial weights (ignored when resuming), any format prnet.weights.formats reads: a "
                    "Keras .weights.h5 (e.g. converted official weights) or .keras file, a training checkpoint "
                    "folder or TF2 prefix, or an official TF1 checkpoint prefix.")
flags.DEFINE_bool("restart", False,
                  "Start over instead of resuming: the existing <output_dir>/checkpoints folder is moved to "
                  "checkpoints.old-<time> (not deleted) and training begins at step 0 (from --init_from if given).")
flags.DEFINE_integer("log_every", 100, "Steps between training-loss/learning-rate logs.")
flags.DEFINE_integer("val_every", 1000, "Steps between validations (0 = only at the end).")
flags.DEFINE_integer("val_examples", None, "Use at most this many validation examples (default: all).")
flags.DEFINE_integer("checkpoint_every", 1000,
                     "Steps between checkpoints (0 = at every epoch end); one is always saved at the end.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints to keep.")
flags.DEFINE_integer("shuffle_buffer", 512, "Shuffle buffer, examples (~1 MB of RAM each).")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights, the shuffle and the augmentation.")
flags.DEFINE_integer("image_summaries", 3, "Validation examples shown in TensorBoard image summaries (0 = none).")
flags.DEFINE_float("worker_timeout", 600.0,
                   "--strategy=multi_worker: seconds to wait for every other worker of TF_CONFIG to start "
                   "(the wait says whom it waits for; Ctrl-C or SIGTERM stops it).")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism (slower; bitwise-reproducible runs).")
common.define_flag(flags.DEFINE_bool, "progress", True, "Show a progress bar (on stderr).")
FLAGS = flags.FLAGS


def _pair(values, name):
    try:
        lo, hi = (float(v) for v in values)
    except ValueError as e:
        raise common.ToolError(f"--{name} must be two numbers min,max, got {values}") from e
    return lo, hi


#: Ranges of the float flags that are not TrainConfig fields (those are checked by
#: prnet.training.config.FLOAT_RANGES): name -> (low, high, low inclusive, high inclusive).
AUGMENT_RANGES = {
    "max_rotation": (0.0, 180.0, True, True),
    "max_translation": (0.0, 1.0, True, True),
    "occluder_prob": (0.0, 1.0, True, True),
}
#: The pairs: name -> (low bound of min, low inclusive).
PAIR_RANGES = {"scale_range": (0.0, False), "color_range": (0.0, True)}


def check_flags():
    """Every float flag finite and in range, before TensorFlow loads (:class:`common.ToolError`, exit 2)."""
    import math
    from types import SimpleNamespace

    from prnet.training.guards import FLOAT_RANGES, float_problems, range_text

    values = SimpleNamespace(**{name: FLAGS[name].value for name in FLOAT_RANGES if name in FLAGS})
    problems = [(f"--{name}", why) for name, why in float_problems(values)]
    for name, bounds in AUGMENT_RANGES.items():
        value = FLAGS[name].value
        low, high, low_in, high_in = bounds
        if not (math.isfinite(value) and (value >= low if low_in else value > low)
                and (value <= high if high_in else value < high)):
            problems.append((f"--{name}", f"must be a finite number {range_text(*bounds)}, got {value}"))
    for name, (low, low_in) in PAIR_RANGES.items():
        lo, hi = _pair(FLAGS[name].value, name)
        if not (math.isfinite(lo) and math.isfinite(hi) and (lo >= low if low_in else lo > low) and lo <= hi):
            problems.append((f"--{name}", f"must be finite min,max with {'0 <=' if low_in else '0 <'} min <= max, "
                                          f"got {','.join(FLAGS[name].value)}"))
    if problems:
        common.fail("; ".join(f"{name} {why}" for name, why in problems))


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        common.fail("--output_dir (the run folder) is required")
    check_flags()
    if FLAGS.strategy == "multi_worker":
        return _train()  # only the chief locks the folder, known once the workers have met
    from prnet.core.files import ensure_writable_folder
    from prnet.training.guards import RunLock

    ensure_writable_folder(FLAGS.output_dir)
    with RunLock(FLAGS.output_dir) as lock:  # before TensorFlow loads: a second run stops at once
        if lock.note:
            common.say(f"note: {lock.note}")
        return _train()


def _train():
    import_tensorflow_quietly("tfds_builders")  # no start-up banners; registers the project's TFDS builders
    from prnet.data.augment import NO_AUGMENTATION, AugmentConfig
    from prnet.errors import PRNetError, TrainingDivergedError
    from prnet.training import config as train_config
    from prnet.training import guards, trainer

    try:
        if FLAGS.cpu_devices:
            train_config.configure_cpu_devices(FLAGS.cpu_devices)
        augment = NO_AUGMENTATION
        if FLAGS.augment:
            augment = AugmentConfig(
                rotate=FLAGS.aug_rotate, max_rotation_deg=FLAGS.max_rotation, translate=FLAGS.aug_translate,
                max_translation=FLAGS.max_translation, scale=FLAGS.aug_scale,
                scale_range=_pair(FLAGS.scale_range, "scale_range"), color=FLAGS.aug_color,
                color_range=_pair(FLAGS.color_range, "color_range"), occlude=FLAGS.aug_occlude,
                occluder_prob=FLAGS.occluder_prob)
        config = train_config.TrainConfig(
            model_dir=FLAGS.output_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, assets_dir=FLAGS.assets_dir,
            train_split=FLAGS.train_split, val_split=FLAGS.val_split or None, batch_size=FLAGS.batch_size,
            epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch, learning_rate=FLAGS.learning_rate,
            lr_decay_epochs=FLAGS.lr_decay_epochs, lr_decay_factor=FLAGS.lr_decay_factor,
            weight_mask=FLAGS.weight_mask, weight_decay=FLAGS.weight_decay, augment=augment,
            strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision, xla=FLAGS.xla,
            sync_batchnorm=FLAGS.sync_batchnorm, bn_momentum=FLAGS.bn_momentum, init_from=FLAGS.init_from,
            restart=FLAGS.restart, model_size=FLAGS.model_size,
            log_every=FLAGS.log_every, val_every=FLAGS.val_every, val_examples=FLAGS.val_examples,
            checkpoint_every=FLAGS.checkpoint_every, keep_checkpoints=FLAGS.keep_checkpoints,
            shuffle_buffer=FLAGS.shuffle_buffer, seed=FLAGS.seed, image_summaries=FLAGS.image_summaries,
            deterministic=FLAGS.deterministic, progress=FLAGS.progress, worker_timeout=FLAGS.worker_timeout)
        summary = trainer.train(config)
    except TrainingDivergedError as e:  # the run went, but produced nothing worth saving
        common.fail(e, common.EXIT_PARTIAL)
    except PRNetError as e:
        common.fail(e)
    except KeyboardInterrupt:
        if guards.last_stop_signal[0] != "SIGTERM":
            raise  # Ctrl-C: run_tool's summary line
        common.say("interrupted (SIGTERM); the step reached and the checkpoint saved are printed above")
        return common.EXIT_INTERRUPTED
    if summary["losses"]:
        print(f"final training loss {summary['losses'][-1]['loss']:.6f}")
    return 0


def run(prog_name: str = None):
    """Console entry point ``prnet-train`` (and ``python train.py``)."""
    common.run_tool("prnet-train", main, prog_name,  # Ctrl-C: the trainer saved a checkpoint and said so
                    interrupted="the step reached and the checkpoint saved are printed above")


if __name__ == "__main__":
    run()
