"""Train the full-size reference model on ``prnet_synthetic/medium`` (CPU is fine), for judging reduced precision.

Random weights cannot judge a reduced-precision path: a random deep network amplifies rounding, so every
bf16 / fp16 / int8 path diverges from float32 by 100+ px there. This script trains the full-size ResFCN256
(``--model_size=16``, 13 M parameters) on 4,000 synthetic examples until its validation NME is far below the
mean-map baseline, so that ``benchmarks/bench_precision.py`` can measure each path on trained weights.

The weights are for tests and benchmarks only: they are trained on synthetic renders of the mean face, NOT a
face model; keep them out of git (the default ``--model_dir`` is under /tmp).

  python benchmarks/train_reference.py                              # build the data if missing, then train
  python benchmarks/train_reference.py --epochs=12 --model_dir=/tmp/prnet_reference

Then: ``python benchmarks/bench_precision.py --weights=/tmp/prnet_reference/final.weights.h5``.
Re-running resumes (train.py's checkpoints). Prints the machine line and both commands.
"""

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "/tmp/prnet_reference/tfds", "TFDS data folder for prnet_synthetic/medium "
                    "(built here when missing: 4,256 renders, ~4 min on 2 cores).")
flags.DEFINE_string("model_dir", "/tmp/prnet_reference/run", "train.py --model_dir (checkpoints, TensorBoard, "
                    "final.weights.h5); outside the repository.")
flags.DEFINE_string("assets_dir", str(REPO.parent / "shared" / "prnet-assets" / "uv-data"),
                    "UV template folder (uv-data).")
flags.DEFINE_integer("epochs", 12, "Epochs of 4,000 examples.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_float("learning_rate", 4e-4, "Initial Adam learning rate (higher than the paper's 1e-4: a short run).")
flags.DEFINE_float("lr_decay_epochs", 3.0, "Halve the learning rate every this many epochs.")
flags.DEFINE_integer("num_workers", 2, "Processes rendering the data set.")
flags.DEFINE_float("bn_momentum", 0.99, "BatchNorm moving-average momentum. The original's 0.999 needs several "
                   "thousand steps before the inference-mode statistics are usable; a short CPU run cannot wait.")
flags.DEFINE_bool("augment", False, "The paper's augmentation (train.py --augment). Off by default: the synthetic "
                  "renders already vary pose, light and background, and a short CPU run converges sooner without it.")
flags.DEFINE_float("weight_decay", 0.0, "L2 weight decay (the paper's 2e-4 slows a short run; 4,000 examples of one "
                   "mean face are not what it guards against).")
flags.DEFINE_string("mixed_precision", "none", "train.py --mixed_precision (none: float32 training).")


def train_command() -> list:
    """The train.py command of the reference recipe (the paper's loss, mask and augmentation)."""
    return [sys.executable, str(REPO / "train.py"), "--dataset=prnet_synthetic/medium",
            f"--data_dir={FLAGS.data_dir}", f"--assets_dir={FLAGS.assets_dir}", f"--model_dir={FLAGS.model_dir}",
            "--model_size=16", f"--batch_size={FLAGS.batch_size}", f"--epochs={FLAGS.epochs}",
            f"--learning_rate={FLAGS.learning_rate}", f"--lr_decay_epochs={FLAGS.lr_decay_epochs}",
            f"--bn_momentum={FLAGS.bn_momentum}", f"--mixed_precision={FLAGS.mixed_precision}",
            f"--weight_decay={FLAGS.weight_decay}", "--augment" if FLAGS.augment else "--noaugment",
            "--val_every=500", "--checkpoint_every=250",
            "--log_every=50", "--image_summaries=2"]


def main(argv):
    del argv
    from machine import machine_description

    import tfds_builders

    print(machine_description())
    builder = tfds_builders.BUILDERS["prnet_synthetic"](config="medium", data_dir=FLAGS.data_dir,
                                                      assets_dir=FLAGS.assets_dir, num_workers=FLAGS.num_workers)
    start = time.perf_counter()
    builder.download_and_prepare()
    print(f"data: prnet_synthetic/medium in {FLAGS.data_dir} ({time.perf_counter() - start:.0f} s)")
    command = train_command()
    print("command:", shlex.join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.call(command)
    print(f"train.py exited {code} after {time.perf_counter() - start:.0f} s; weights: "
          f"{Path(FLAGS.model_dir) / 'final.weights.h5'} (synthetic: for tests and benchmarks only)")
    return code


if __name__ == "__main__":
    app.run(main)
