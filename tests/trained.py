"""A small TRAINED network for tests: ``train.py``'s overfit run, done once per session.

Tests of reduced precision need trained weights (issue #13): a random deep network amplifies
rounding (every reduced-precision path diverged by 100+ px there). :func:`overfit_run` runs
``train.py`` (a subprocess, as users run it) on the first 8 ``prnet_synthetic/tiny`` examples with
a quarter-width ResFCN256 (``--model_size=4``) until it fits them: its weights, BatchNorm statistics
and activations are those of a trained network. ``tests/test_training.py`` checks the run itself
(loss curve, validation, baselines); ``tests/test_precision_accuracy.py`` uses its weights.
Synthetic renders of the mean face: for tests only, not a face model. ``conftest.py`` offers it as
the session fixture ``overfit_run``; import as ``from trained import ...`` (like ``helpers``).

The run: 8 fixed examples, the whole set as one batch (so BatchNorm's training-mode statistics are
those of the 8 examples, which its moving averages converge to with momentum 0.9), no augmentation,
no weight decay, Adam at a constant 2e-3 (>= 3e-3 kills the 3-channel ReLU layers at the end of the
decoder: the output collapses to a constant map). The first ~90 steps only reach the mean map.
Measured at 500 steps (inference mode, vs the mean map): loss 0.26x / NME 0.41x with oneDNN
(TensorFlow's default, pinned below), 0.19x / 0.47x with TF_ENABLE_ONEDNN_OPTS=0.
"""

import dataclasses
import subprocess
from pathlib import Path

import numpy as np

import tfds_builders

from helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET, SPLIT, SIZE = "prnet_synthetic/tiny", "train[:8]", 4
OVERFIT_STEPS = 500
OVERFIT_FLAGS = [f"--dataset={DATASET}", f"--train_split={SPLIT}", f"--val_split={SPLIT}",
                 f"--model_size={SIZE}", "--batch_size=8", "--learning_rate=2e-3", "--lr_decay_epochs=1000000",
                 "--weight_decay=0", "--bn_momentum=0.9", "--noaugment", "--weight_mask=paper",
                 "--shuffle_buffer=8", "--log_every=10", "--val_every=100", "--checkpoint_every=0",
                 "--image_summaries=2", "--noprogress", f"--epochs={OVERFIT_STEPS}"]


@dataclasses.dataclass
class OverfitRun:
    """``model_dir`` (train.py's output: ``final.weights.h5``, ``train/``, ``validation/``, ``checkpoints/``),
    ``data_dir`` (the TFDS folder with ``prnet_synthetic/tiny``), ``proc`` (train.py's CompletedProcess)."""

    model_dir: Path
    data_dir: Path
    assets_dir: Path
    proc: subprocess.CompletedProcess

    @property
    def weights(self) -> Path:
        return self.model_dir / "final.weights.h5"

    def examples(self) -> dict:
        """The 8 examples it was trained on, exactly as the trainer reads them (no augmentation):
        ``{"image": float32 [8,256,256,3] in [0,1], "posmap": crop px, "landmarks_68": [8,68,3] crop px}``."""
        from prnet.data.pipeline import eval_pipeline, load_split

        batch = next(iter(eval_pipeline(load_split(DATASET, SPLIT, str(self.data_dir), self.assets_dir), 8)))
        return {k: np.asarray(batch[k].numpy()) for k in ("image", "posmap", "landmarks_68")}

    def model(self):
        """The final weights in a fresh Keras model."""
        from prnet.weights.formats import load_keras_model

        return load_keras_model(self.weights)


def overfit_run(workdir, assets_dir) -> OverfitRun:
    """Build ``prnet_synthetic/tiny`` into ``workdir/tfds`` (train.py never builds) and run train.py's
    overfit recipe into ``workdir/run`` (TF_ENABLE_ONEDNN_OPTS unset: TensorFlow's default, oneDNN on)."""
    workdir = Path(workdir)
    tfds_builders.BUILDERS["prnet_synthetic"](config="tiny", data_dir=str(workdir / "tfds"),
                                              assets_dir=str(assets_dir)).download_and_prepare()
    proc = run_cli(REPO_ROOT / "train.py", f"--model_dir={workdir / 'run'}", f"--data_dir={workdir / 'tfds'}",
                   f"--assets_dir={assets_dir}", *OVERFIT_FLAGS, env={"TF_ENABLE_ONEDNN_OPTS": None})
    return OverfitRun(workdir / "run", workdir / "tfds", Path(assets_dir), proc)
