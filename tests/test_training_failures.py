"""Training under faults (issue #14, items 3, 9 and 12, training parts).

* Item 3: resuming never destroys checkpoints; an unreadable ``checkpoint`` index, a truncated or
  missing newest checkpoint fall back to the newest intact one; when none is intact (or the one found
  does not fit the model) training stops with a message; ``--restart`` starts over after moving
  the old checkpoints aside.
* Item 9: ``train.py`` with an unusable ``--model_dir`` and Ctrl-C: one line, exit 2 / 130, no
  traceback; an interrupt saves a checkpoint of the steps done.
* Item 12: ``train.py`` never builds a dataset implicitly: an unbuilt one stops with the command that builds it.

In-process tests use the tiny ``build_resfcn256(size=4)`` and write checkpoints directly (no
training) where the step count is all that matters.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = ["--dataset=prnet_synthetic/tiny", "--train_split=train", "--val_split=", "--model_size=4",
               "--batch_size=2", "--steps_per_epoch=1", "--noaugment", "--weight_mask=none", "--log_every=1",
               "--checkpoint_every=1", "--image_summaries=0", "--noprogress"]


def _trainer(model_dir, **overrides):
    from prnet.data.augment import NO_AUGMENTATION
    from prnet.training.config import TrainConfig
    from prnet.training.trainer import Trainer

    settings = dict(model_size=4, batch_size=2, steps_per_epoch=1, epochs=100, weight_mask="none",
                    augment=NO_AUGMENTATION, val_split=None, val_every=0, checkpoint_every=0, log_every=1000,
                    image_summaries=0, progress=False, shuffle_buffer=1)
    settings.update(overrides)
    return Trainer(TrainConfig(model_dir=str(model_dir), **settings), 1)


def _save_steps(trainer, steps):
    """Write ``ckpt-<n>`` for each n: step n, 2n examples, first kernel filled with n (to tell them apart)."""
    kernel = trainer.model.trainable_variables[0]
    for n in steps:
        trainer.optimizer.iterations.assign(n)
        trainer.examples_seen.assign(2 * n)
        kernel.assign(np.full(kernel.shape, n, np.float32))
        trainer.save_checkpoint()


def _files(ckpt_dir):
    """Every checkpoint file (not the index) with its size and SHA-256."""
    from prnet.core.files import sha256_file

    return {p.name: (p.stat().st_size, sha256_file(p)) for p in sorted(Path(ckpt_dir).glob("ckpt-*"))}


def _first_kernel_value(trainer):
    return float(np.asarray(trainer.model.trainable_variables[0].numpy()).flat[0])


# ----------------------------------------------------------------------------- item 3 (in process)


@pytest.mark.parametrize("junk", [b"model_checkpoint_path: ???\n", b"garbage \x00\xff{{"], ids=["text", "binary"])
@pytest.mark.slow  # trains a small network in-process
def test_unreadable_index_resumes_from_newest_checkpoint_and_deletes_nothing(tmp_path, junk):
    """Before: the unreadable index was "ignored", the run restarted at step 0 (or, for binary junk,
    died with a UnicodeDecodeError) and later saves replaced the old checkpoints."""
    first = _trainer(tmp_path)
    _save_steps(first, [1, 2])
    ckpt_dir = tmp_path / "checkpoints"
    before = _files(ckpt_dir)
    (ckpt_dir / "checkpoint").write_bytes(junk)

    resumed = _trainer(tmp_path)
    how = resumed.restore_or_initialize()
    assert how.startswith("resumed from") and how.split()[2].endswith("ckpt-2"), how
    assert resumed.step == 2 and int(resumed.examples_seen.numpy()) == 4 and _first_kernel_value(resumed) == 2
    assert _files(ckpt_dir) == before  # nothing deleted or rewritten
    # The index names the resumed checkpoint again; the next save rotates nothing older away.
    resumed.optimizer.iterations.assign(3)
    resumed.save_checkpoint()
    after = _files(ckpt_dir)
    assert {k: v for k, v in after.items() if k in before} == before and "ckpt-3.index" in after
    assert Path(resumed.manager.latest_checkpoint).name == "ckpt-3"


@pytest.mark.parametrize("damage", ["truncated data", "missing data", "truncated index", "index names missing"])
@pytest.mark.slow  # trains a small network in-process
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, damage):
    """Before: a traceback (DataLossError / NotFoundError from ``checkpoint.restore``)."""
    first = _trainer(tmp_path)
    _save_steps(first, [1, 2, 3])
    ckpt_dir = tmp_path / "checkpoints"
    data, index = ckpt_dir / "ckpt-3.data-00000-of-00001", ckpt_dir / "ckpt-3.index"
    if damage == "truncated data":
        os.truncate(data, data.stat().st_size // 2)
    elif damage == "missing data":
        data.unlink()
    elif damage == "truncated index":
        os.truncate(index, index.stat().st_size // 2)
    else:  # the index file names ckpt-3, whose files are gone
        data.unlink()
        index.unlink()
    before = _files(ckpt_dir)

    resumed = _trainer(tmp_path)
    how = resumed.restore_or_initialize()
    assert how.split()[2].endswith("ckpt-2"), how
    if damage != "index names missing":
        assert "skipped: ckpt-3" in how, how
    assert resumed.step == 2 and _first_kernel_value(resumed) == 2
    assert _files(ckpt_dir) == before  # the damaged files are left for the user to inspect


@pytest.mark.slow  # trains a small network in-process
def test_no_intact_checkpoint_stops_and_restart_moves_them_aside(tmp_path):
    from prnet.errors import WeightsFormatError

    first = _trainer(tmp_path)
    _save_steps(first, [1, 2])
    ckpt_dir = tmp_path / "checkpoints"
    for data in ckpt_dir.glob("ckpt-*.data-*"):
        os.truncate(data, 100)
    before = _files(ckpt_dir)
    expected = r"no intact checkpoint.*ckpt-2.*ckpt-1.*Nothing was deleted.*--restart"
    with pytest.raises(WeightsFormatError, match=expected):
        _trainer(tmp_path).restore_or_initialize()
    assert _files(ckpt_dir) == before

    restarted = _trainer(tmp_path, restart=True)
    how = restarted.restore_or_initialize()
    moved = re.search(r"moved to (\S+)", how)
    assert how.startswith("fresh") and moved, how
    assert restarted.step == 0 and not list(ckpt_dir.glob("ckpt-*"))
    assert _files(moved.group(1)) == before  # moved, not deleted


@pytest.mark.slow  # trains a small network in-process
def test_checkpoint_of_another_model_stops_with_message(tmp_path):
    from prnet.errors import WeightsFormatError

    _save_steps(_trainer(tmp_path), [1])
    with pytest.raises(WeightsFormatError, match=r"does not fit this model.*--model_size"):
        _trainer(tmp_path, model_size=8).restore_or_initialize()
    assert (tmp_path / "checkpoints" / "ckpt-1.index").is_file()


# ----------------------------------------------------------------------------- item 9 (in process)


@pytest.mark.slow
def test_interrupt_during_fit_saves_the_steps_done(tmp_path):
    """A KeyboardInterrupt between steps: the steps done are checkpointed and reported, then re-raised."""
    import tensorflow as tf

    from prnet.training.trainer import checkpoint_problem

    rng = np.random.default_rng(0)
    source = tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (4, 256, 256, 3), dtype=np.uint8),
        "posmap": rng.uniform(0, 255, (4, 256, 256, 3)).astype(np.float32),
        "landmarks_68": rng.uniform(0, 255, (4, 68, 3)).astype(np.float32)})
    trainer = _trainer(tmp_path, checkpoint_every=1000)
    real_step, calls = trainer._train_step, []

    def step_then_interrupt(iterator):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(iterator)

    trainer._train_step = step_then_interrupt
    logged = []
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(source, None, log=logged.append)
    assert any("interrupted at step 2" in line and "ckpt-2" in line for line in logged), logged
    prefix = tmp_path / "checkpoints" / "ckpt-2"
    assert checkpoint_problem(str(prefix)) is None
    resumed = _trainer(tmp_path)
    assert resumed.restore_or_initialize().startswith("resumed") and resumed.step == 2
    assert int(resumed.examples_seen.numpy()) == 4


# ----------------------------------------------------------------------------- item 12 (in process)


def test_unbuilt_dataset_is_not_built_and_the_message_says_how(tmp_path, assets_dir):
    """Before: ``tfds.load`` built (rendered) the dataset silently into ``data_dir``."""
    import tfds_builders  # noqa: F401  (registers the project's builders)
    from prnet.data.pipeline import load_split
    from prnet.errors import DatasetError

    data_dir = tmp_path / "tfds"
    with pytest.raises(DatasetError) as info:
        load_split("prnet_synthetic/tiny", "train", data_dir=str(data_dir), assets_dir=str(assets_dir))
    assert (f"prnet-build-data --dataset prnet_synthetic/tiny --data_dir {data_dir} "
            f"--assets_dir {assets_dir}") in str(info.value)
    assert not list(data_dir.rglob("*.tfrecord*"))  # nothing built
    with pytest.raises(DatasetError, match=r"prnet-build-data --dataset prnet_300w_lp .*--manual_dir"):
        load_split("prnet_300w_lp", "train", data_dir=str(data_dir))
    with pytest.raises(DatasetError, match=r"unknown dataset 'no_such_dataset_xyz'.*check --dataset"):
        load_split("no_such_dataset_xyz", "train", data_dir=str(data_dir))


# ----------------------------------------------------------------------------- train.py (subprocess)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, assets_dir):
    """``prnet_synthetic/tiny`` (16 + 8 examples), built once for this module."""
    import tfds_builders

    data_dir = tmp_path_factory.mktemp("tfds")
    tfds_builders.BUILDERS["prnet_synthetic"](config="tiny", data_dir=str(data_dir),
                                              assets_dir=str(assets_dir)).download_and_prepare()
    return data_dir


def _train_py(model_dir, data_dir, assets_dir, *extra):
    return run_cli(REPO_ROOT / "train.py", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
                   f"--assets_dir={assets_dir}", *TRAIN_FLAGS, *extra)


def _one_line_error(proc, code=2):
    assert proc.returncode == code, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("train.py: error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    return errors[0]


@pytest.mark.slow
def test_train_py_model_dir_under_a_file(tmp_path, assets_dir):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    # Checked before the dataset is even looked at (this data_dir is empty).
    line = _one_line_error(_train_py(blocker / "run", tmp_path / "tfds", assets_dir, "--epochs=1"))
    assert str(blocker / "run") in line and "is a file, not a folder" in line, line


@pytest.mark.slow
def test_train_py_unbuilt_dataset_prints_the_build_command(tmp_path, assets_dir):
    data_dir = tmp_path / "tfds"
    line = _one_line_error(_train_py(tmp_path / "run", data_dir, assets_dir, "--epochs=1"))
    assert (f"prnet-build-data --dataset prnet_synthetic/tiny --data_dir {data_dir} "
            f"--assets_dir {assets_dir}") in line, line
    assert not list(data_dir.rglob("*.tfrecord*"))


@pytest.mark.slow
def test_train_py_without_intact_checkpoint_stops(tmp_path, tiny_data, assets_dir):
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-7"\n')
    (ckpt_dir / "ckpt-7.index").write_bytes(b"\x00" * 64)
    (ckpt_dir / "ckpt-7.data-00000-of-00001").write_bytes(b"\x00" * 64)
    before = sorted(p.name for p in ckpt_dir.iterdir())
    line = _one_line_error(_train_py(tmp_path / "run", tiny_data, assets_dir, "--epochs=1"))
    assert "no intact checkpoint" in line and "--restart" in line, line
    assert sorted(p.name for p in ckpt_dir.iterdir()) == before


@pytest.mark.slow
def test_train_py_unreadable_index_resumes(tmp_path, tiny_data, assets_dir):
    """The issue's case through the command line: the rerun continues at step 2, old files untouched."""
    proc = _train_py(tmp_path / "run", tiny_data, assets_dir, "--epochs=2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt_dir = tmp_path / "run" / "checkpoints"
    before = _files(ckpt_dir)
    (ckpt_dir / "checkpoint").write_bytes(b"garbage \x00\xff{{")
    proc = _train_py(tmp_path / "run", tiny_data, assets_dir, "--epochs=3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert re.search(r"resumed from \S+ckpt-2\b.*step 2$", proc.stdout, re.M), proc.stdout
    assert "done: 3 steps" in proc.stdout
    after = _files(ckpt_dir)
    assert {k: after.get(k) for k in before} == before and "ckpt-3.index" in after


# Runs train.py in this process with SIGINT's default Python handler (an interactive shell's
# Ctrl-C; a background job would inherit SIG_IGN) and sends SIGTERM (what schedulers and `docker stop`
# send; handled as Ctrl-C) once a checkpoint exists.
_SIGINT_LAUNCHER = r"""
import os, runpy, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
index = os.path.join(sys.argv[1], "checkpoints", "checkpoint")

def interrupt():
    while not os.path.exists(index):
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=interrupt, daemon=True).start()
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_train_py_sigterm_saves_and_exits_130(tmp_path, tiny_data, assets_dir):
    """Before (issue #20, reliability row 7): SIGTERM killed the run (exit 143) and lost the steps since the
    last checkpoint; now it is Ctrl-C: a checkpoint of the steps done, exit 130, one summary line."""
    from prnet.training.trainer import checkpoint_problem

    model_dir = tmp_path / "run"
    proc = run_cli(["-c", _SIGINT_LAUNCHER, model_dir, REPO_ROOT / "train.py", f"--model_dir={model_dir}",
                    f"--data_dir={tiny_data}", f"--assets_dir={assets_dir}", *TRAIN_FLAGS, "--epochs=100000",
                    "--checkpoint_every=3"])
    assert proc.returncode == 130, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr and "train.py: interrupted (SIGTERM)" in proc.stderr, proc.stderr[-4000:]
    match = re.search(r"interrupted by SIGTERM at step (\d+) .*last checkpoint: (\S+ckpt-(\d+));", proc.stdout)
    assert match and match.group(1) == match.group(3), proc.stdout[-2000:]
    assert int(match.group(1)) >= 3 and checkpoint_problem(match.group(2)) is None
