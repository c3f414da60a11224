"""A small TRAINED network for tests: ``train.py``'s overfit run, done once per session.

Tests of reduced precision need trained weights (issue #13): a random deep network amplifies
rounding (every reduced-precision path diverged by 100+ px there). :class:`PendingOverfitRun` runs
``train.py`` (a subprocess, as users run it) on the first :data:`EXAMPLES` ``prnet_synthetic/tiny``
examples with a quarter-width ResFCN256 (``--model_size=4``) until it fits them: its weights, BatchNorm
statistics and activations are those of a trained network. ``tests/test_training.py`` checks the run
itself (loss curve, validation, baselines); ``tests/test_precision_accuracy.py`` uses its weights.
Synthetic renders of the mean face: for tests only, not a face model. ``conftest.py`` offers it as
the session fixture ``overfit_run``; import as ``from trained import ...`` (like ``helpers``).

The run: 4 fixed examples, the whole set as one batch (so BatchNorm's training-mode statistics are
those of the 4 examples, which its moving averages converge to with momentum 0.9), no augmentation,
no weight decay, Adam at a constant 2e-3 (>= 3e-3 kills the 3-channel ReLU layers at the end of the
decoder: the output collapses to a constant map), 200 steps, one checkpoint at the end (each step is
an epoch here: the default "every epoch end" would write one per step).

Cost, not a wall-clock guess: the run must stay a small share of the suite on a 2-core AVX2-only CPU.
The earlier recipe (8 examples in a batch of 8, 500 steps) took over 17 CPU-minutes there under load
and outgrew its 900 s limit; this one computes 5x fewer example-steps (4 x 200 against 8 x 500) and
fits better, because 4 examples are memorised sooner. Inference-mode validation NME of one run
(AVX2, oneDNN; the mean map of the 4 scores 28.0 %): 39.9 % at step 50, 41.1 % at 100, 22.4 % at 150,
6.3 % at 200 (loss 0.00017 against the mean map's 0.00299). 8 examples in batches of 4 stayed at
26 % NME after 200 steps (BatchNorm statistics of half-batches). oneDNN (TensorFlow's default) is
pinned below.
"""

import dataclasses
import subprocess
from pathlib import Path

import numpy as np

import tfds_builders

from helpers import HANG_GUARD_S, cli_command

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES, SIZE, OVERFIT_STEPS, VAL_EVERY = 4, 4, 200, 50
DATASET, SPLIT = "prnet_synthetic/tiny", f"train[:{EXAMPLES}]"
OVERFIT_FLAGS = [f"--dataset={DATASET}", f"--train_split={SPLIT}", f"--val_split={SPLIT}",
                 f"--model_size={SIZE}", f"--batch_size={EXAMPLES}", "--learning_rate=2e-3",
                 "--lr_decay_epochs=1000000", "--weight_decay=0", "--bn_momentum=0.9", "--noaugment",
                 "--weight_mask=paper", f"--shuffle_buffer={EXAMPLES}", "--log_every=10", f"--val_every={VAL_EVERY}",
                 f"--checkpoint_every={OVERFIT_STEPS}", "--image_summaries=2", "--noprogress",
                 f"--epochs={OVERFIT_STEPS}"]


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
        """The :data:`EXAMPLES` examples it was trained on, exactly as the trainer reads them (no augmentation):
        ``{"image": float32 [N,256,256,3] in [0,1], "posmap": crop px, "landmarks_68": [N,68,3] crop px}``."""
        from prnet.data.pipeline import eval_pipeline, load_split

        batch = next(iter(eval_pipeline(load_split(DATASET, SPLIT, str(self.data_dir), self.assets_dir), EXAMPLES)))
        return {k: np.asarray(batch[k].numpy()) for k in ("image", "posmap", "landmarks_68")}

    def model(self):
        """The final weights in a fresh Keras model."""
        from prnet.weights.formats import load_keras_model

        return load_keras_model(self.weights)


class PendingOverfitRun:
    """train.py's overfit recipe running in a background process (started by ``conftest.py`` when the
    session's first test starts, so that it overlaps the tests that do not need it); :meth:`result` waits.

    Builds ``prnet_synthetic/tiny`` into ``workdir/tfds`` first (train.py never builds; in this process,
    about 10 s), then starts train.py into ``workdir/run`` (TF_ENABLE_ONEDNN_OPTS unset: TensorFlow's
    default, oneDNN on), its output going to ``workdir/train.out`` / ``train.err`` (a pipe could fill up
    and stall it while nobody reads)."""

    def __init__(self, workdir, assets_dir):
        self.workdir, self.assets_dir = Path(workdir), Path(assets_dir)
        tfds_builders.BUILDERS["prnet_synthetic"](config="tiny", data_dir=str(self.workdir / "tfds"),
                                                  assets_dir=str(assets_dir)).download_and_prepare()
        self.args, env = cli_command(REPO_ROOT / "train.py", f"--model_dir={self.workdir / 'run'}",
                                     f"--data_dir={self.workdir / 'tfds'}", f"--assets_dir={assets_dir}",
                                     *OVERFIT_FLAGS, env={"TF_ENABLE_ONEDNN_OPTS": None}, background=True)
        with open(self.workdir / "train.out", "w") as out, open(self.workdir / "train.err", "w") as err:
            self._proc = subprocess.Popen(self.args, stdout=out, stderr=err, text=True, env=env, cwd=str(REPO_ROOT))
        self._result = None

    def result(self) -> OverfitRun:
        """Wait for the run (at most :data:`helpers.HANG_GUARD_S`) and return it."""
        if self._result is None:
            try:
                code = self._proc.wait(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                self.stop()
                raise
            proc = subprocess.CompletedProcess(self.args, code, (self.workdir / "train.out").read_text(),
                                               (self.workdir / "train.err").read_text())
            self._result = OverfitRun(self.workdir / "run", self.workdir / "tfds", self.assets_dir, proc)
        return self._result

    def stop(self):
        """End the run if it is still going (the session ended without needing it)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
