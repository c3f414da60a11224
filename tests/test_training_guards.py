"""Training under faults and misuse, round 3 (issue #20; reproductions: shared/reviews/2026-12-07/reliability.md
rows 7, 8, 9, 12, 13, 15, 28): SIGTERM, two runs on one folder, NaN / out-of-range flags, non-finite
weights, a half-written checkpoint folder, an unreachable multi-worker peer, the checkpoint rotation.

Mechanism tests: no training. The guards (:mod:`prnet.training.guards`) are tested without
TensorFlow; the trainer's parts on the tiny ``build_resfcn256(size=4)`` with checkpoints written
directly (``test_training_failures._save_steps``).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def _trainer(model_dir, **overrides):
    from test_training_failures import _trainer as make

    return make(model_dir, **overrides)


def _save_steps(trainer, steps):
    from test_training_failures import _save_steps as save

    save(trainer, steps)


def _names(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ----------------------------------------------------------------------------- row 7: SIGTERM


def test_sigterm_inside_the_block_is_a_ctrl_c_and_is_held_during_a_save():
    from prnet.core.files import interrupts_deferred
    from prnet.training.guards import last_stop_signal, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    last_stop_signal[0] = None
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises long before
    assert last_stop_signal[0] == "SIGTERM"
    # Within a save (interrupts_deferred), the SIGTERM waits until the save is complete.
    done = []
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                done.append("save finished")
    assert done == ["save finished"]
    assert signal.getsignal(signal.SIGTERM) == before  # restored
    last_stop_signal[0] = None


@pytest.mark.slow  # trains a small network in-process
def test_sigterm_during_fit_saves_the_steps_done(tmp_path):
    """Before: SIGTERM killed the run at once and the steps since the last checkpoint were lost."""
    from prnet.training.guards import last_stop_signal
    from prnet.training.trainer import checkpoint_problem

    trainer = _trainer(tmp_path, checkpoint_every=1000)
    trainer.restore_or_initialize()

    def three_steps_then_sigterm(*_):
        trainer.optimizer.iterations.assign(3)  # as if 3 steps were trained
        trainer.examples_seen.assign(6)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    trainer._fit = three_steps_then_sigterm
    logged = []
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(None, None, log=logged.append)
    assert any("interrupted by SIGTERM at step 3" in line and "ckpt-3" in line for line in logged), logged
    assert checkpoint_problem(str(tmp_path / "checkpoints" / "ckpt-3")) is None
    assert not (tmp_path / "train.lock").exists()  # released
    last_stop_signal[0] = None


# ----------------------------------------------------------------------------- row 8: the folder lock


def _lock_file(folder, **info):
    from prnet.training.guards import LOCK_NAME

    (Path(folder) / LOCK_NAME).write_text(json.dumps(info))


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    from prnet.errors import TrainingConfigError
    from prnet.training.guards import LOCK_NAME, RunLock, _process_start

    host = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, pid=sleeper.pid, host=host, process_start=_process_start(sleeper.pid),
                   started="2026-12-07 10:00:00 UTC", command="train.py --output_dir run")
        with pytest.raises(TrainingConfigError) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {sleeper.pid} on host {host}" in message and "2026-12-07 10:00:00" in message, message
        assert "train.py --output_dir run" in message and "another --output_dir" in message
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == sleeper.pid  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is gone (same pid file, dead process): taken over with a note.
    lock = RunLock(tmp_path).acquire()
    assert lock.note and "no longer running" in lock.note and str(sleeper.pid) in lock.note
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # A holder on another host cannot be checked from here: refused.
    _lock_file(tmp_path, pid=_dead_pid(), host=host + "-elsewhere", started="yesterday")
    with pytest.raises(TrainingConfigError, match=f"on host {host}-elsewhere.*delete .*{LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    # A pid that is alive but started after the lock was written is another process: stale.
    _lock_file(tmp_path, pid=os.getppid(), host=host, process_start=-1, started="yesterday")
    lock = RunLock(tmp_path).acquire()
    assert lock.note
    lock.release()


@pytest.mark.slow  # a subprocess (that stops before TensorFlow loads)
def test_second_train_py_on_a_folder_refuses_naming_the_holder(tmp_path):
    """Before: both runs exited 0, one silently overwriting the other's checkpoints. Refused before
    TensorFlow loads (about a second)."""
    from prnet.training.guards import _process_start

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, pid=sleeper.pid, host=socket.gethostname(), process_start=_process_start(sleeper.pid),
                   started="2026-12-07 10:00:00 UTC", command="train.py first")
        proc = run_cli(REPO_ROOT / "train.py", f"--output_dir={tmp_path}",
                       "--dataset=prnet_synthetic/tiny", f"--data_dir={tmp_path / 'none'}")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("train.py: error:")]
    assert len(errors) == 1 and f"pid {sleeper.pid}" in errors[0] and "in use by another training run" in errors[0]
    assert "Traceback" not in proc.stderr and _names(tmp_path) == ["train.lock"]


@pytest.mark.slow  # trains a small network in-process
def test_trainer_takes_the_lock_and_fit_releases_it(tmp_path):
    from prnet.errors import TrainingConfigError
    from prnet.training.guards import LOCK_NAME, _process_start

    trainer = _trainer(tmp_path)
    trainer.restore_or_initialize()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    trainer.lock.release()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, pid=sleeper.pid, host=socket.gethostname(), process_start=_process_start(sleeper.pid))
        _save_steps(trainer, [1])
        before = _names(tmp_path / "checkpoints")
        with pytest.raises(TrainingConfigError, match=f"pid {sleeper.pid}"):
            _trainer(tmp_path, restart=True).restore_or_initialize()
        assert _names(tmp_path / "checkpoints") == before  # --restart moved nothing while another run holds it
    finally:
        sleeper.kill()
        sleeper.wait()


# ----------------------------------------------------------------------------- rows 9, 14, 15: flags, NaN


@pytest.mark.slow  # a subprocess (that stops before TensorFlow loads)
def test_train_py_refuses_out_of_range_float_flags_before_tensorflow(tmp_path):
    """Before: --bn_momentum=nan trained into an all-NaN model (exit 0); --max_translation=nan was answered
    with "lower --learning_rate"; --weight_decay=nan gave a traceback. NaN itself is refused for every
    float flag by prnet.cli.common.check_float_flags; the ranges are train.py's: all named in one line."""
    bad = ["--bn_momentum=1", "--max_rotation=200", "--max_translation=2", "--scale_range=0,1",
           "--color_range=1.5,1", "--lr_decay_factor=0", "--worker_timeout=0"]
    proc = run_cli(REPO_ROOT / "train.py", f"--output_dir={tmp_path / 'run'}", *bad)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("train.py: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    for flag in bad:
        assert flag.split("=")[0] in errors[0], (flag, errors[0])
    assert "--learning_rate" not in errors[0]
    assert not (tmp_path / "run").exists()  # refused before any work


def test_train_config_refuses_non_finite_and_out_of_range_values(tmp_path):
    from prnet.errors import TrainingConfigError
    from prnet.training.config import TrainConfig

    for field, value in [("bn_momentum", float("nan")), ("bn_momentum", 1.0), ("learning_rate", float("nan")),
                         ("weight_decay", float("inf")), ("lr_decay_epochs", float("nan")),
                         ("lr_decay_factor", 1.5), ("worker_timeout", -1.0)]:
        with pytest.raises(TrainingConfigError, match=field):
            TrainConfig(model_dir=str(tmp_path), **{field: value})
    TrainConfig(model_dir=str(tmp_path), bn_momentum=0.0, weight_decay=0.0)  # the edges that are allowed


@pytest.mark.slow  # trains a small network in-process
def test_non_finite_weights_are_never_saved(tmp_path):
    """Before: NaN BatchNorm statistics were saved into checkpoints and final.weights.h5 (exit 0)."""
    import keras

    from prnet.errors import TrainingDivergedError
    from prnet.training.trainer import checkpoint_problem

    trainer = _trainer(tmp_path)
    _save_steps(trainer, [1])
    before = _names(tmp_path / "checkpoints")
    bn = next(layer for layer in trainer.model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, np.nan, np.float32))
    trainer.optimizer.iterations.assign(2)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.save_checkpoint()
    message = str(info.value)
    assert "moving_variance" in message and "NaN" in message and "ckpt-1" in message and "intact" in message
    assert _names(tmp_path / "checkpoints") == before and checkpoint_problem(str(tmp_path / "checkpoints" / "ckpt-1")) \
        is None
    with pytest.raises(TrainingDivergedError, match="final.weights.h5"):
        trainer.check_finite("final.weights.h5")


@pytest.mark.slow  # trains a small network in-process
def test_divergence_message_names_the_facts_not_a_flag(tmp_path):
    """Before: "training diverged at step 2: loss nan; lower --learning_rate" whatever the cause (row 15)."""
    import tensorflow as tf

    from prnet.errors import TrainingDivergedError

    trainer = _trainer(tmp_path, log_every=1)
    _save_steps(trainer, [1])
    trainer.restore_or_initialize()
    kernel = trainer.model.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.inf, np.float32))

    def nan_step(_):
        trainer.optimizer.iterations.assign_add(1)
        return {"loss": tf.constant(np.nan), "posmap_loss": tf.constant(np.nan)}

    trainer._train_step = nan_step
    trainer.make_iterator = lambda source: None
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(None, None, log=lambda *_: None)
    message = str(info.value)
    assert message.startswith("training diverged at step 2: the training loss is nan"), message
    assert kernel.path in message and "infinity" in message and "ckpt-1" in message and "intact" in message
    assert "flags" not in message.lower() or "finite and in range" in message
    assert _names(tmp_path / "checkpoints") == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]


# ----------------------------------------------------------------------------- row 12: ckpt-N_temp


@pytest.mark.slow  # trains a small network in-process
def test_half_written_checkpoint_folder_is_removed_on_the_next_start(tmp_path):
    """Before: ``checkpoints/ckpt-3_temp/`` (TensorFlow's shard folder of a save that hit a full disk)
    stayed forever."""
    trainer = _trainer(tmp_path)
    _save_steps(trainer, [1, 2])
    temp = tmp_path / "checkpoints" / "ckpt-3_temp"
    temp.mkdir()
    (temp / "part-00000-of-00001.data-00000-of-00001.tempstate123").write_bytes(b"\0" * 1000)
    (tmp_path / "checkpoints" / "ckpt-9_temp_notes").mkdir()  # not TensorFlow's: kept
    how = _trainer(tmp_path).restore_or_initialize()
    assert how.startswith("resumed from") and "removed ckpt-3_temp" in how, how
    assert not temp.exists() and (tmp_path / "checkpoints" / "ckpt-9_temp_notes").is_dir()


# ----------------------------------------------------------------------------- row 13: multi-worker peers


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tf_config(own, peer, index=0):
    workers = [f"127.0.0.1:{own}", f"127.0.0.1:{peer}"] if index == 0 else [f"127.0.0.1:{peer}", f"127.0.0.1:{own}"]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


def test_wait_for_peers_says_whom_it_waits_for_and_times_out():
    """Before: MultiWorkerMirroredStrategy waited forever for an unreachable peer, silently, ignoring signals."""
    from prnet.errors import TrainingConfigError
    from prnet.training.guards import wait_for_peers

    own, peer = _free_port(), _free_port()
    logged = []
    t0 = time.monotonic()
    with pytest.raises(TrainingConfigError) as info:
        wait_for_peers(_tf_config(own, peer), timeout=1.0, log=logged.append, poll=0.1)
    assert 1.0 <= time.monotonic() - t0 < 10
    assert f"worker 1 at 127.0.0.1:{peer}" in logged[0] and "--worker_timeout" in logged[0], logged
    assert f"gave up after 1 s waiting for worker 1 at 127.0.0.1:{peer}" in str(info.value)
    # While it waits, this worker's own address accepts connections (so that the peer sees it come up).
    seen = []

    def probe():
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", own), timeout=2):
            seen.append(True)
        with socket.socket() as server:  # then the peer comes up
            server.bind(("127.0.0.1", peer))
            server.listen(1)
            time.sleep(1.5)

    thread = threading.Thread(target=probe)
    thread.start()
    wait_for_peers(_tf_config(own, peer), timeout=20, log=logged.append, poll=0.1)
    thread.join()
    assert seen == [True] and logged[-1] == "all 2 workers of TF_CONFIG are up"
    # This worker's own port taken by another program: said at once.
    with socket.socket() as blocker:
        blocker.bind(("", own))
        blocker.listen(1)
        with pytest.raises(TrainingConfigError, match=f"127.0.0.1:{own} is in use"):
            wait_for_peers(_tf_config(own, peer), timeout=5, log=logged.append)


def test_wait_for_peers_stops_on_sigterm():
    from prnet.training.guards import last_stop_signal, sigterm_as_interrupt, wait_for_peers

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            timer.start()
            wait_for_peers(_tf_config(_free_port(), _free_port()), timeout=60, log=lambda *_: None, poll=0.1)
    assert time.monotonic() - t0 < 10 and last_stop_signal[0] == "SIGTERM"
    last_stop_signal[0] = None


@pytest.mark.slow  # starts TensorFlow in a subprocess
def test_train_py_multi_worker_with_an_unreachable_peer_times_out(tmp_path):
    own, peer = _free_port(), _free_port()
    proc = run_cli(REPO_ROOT / "train.py", f"--output_dir={tmp_path / 'run'}", "--strategy=multi_worker",
                   "--worker_timeout=3", "--dataset=prnet_synthetic/tiny", f"--data_dir={tmp_path / 'none'}",
                   env={"TF_CONFIG": json.dumps(_tf_config(own, peer))}, timeout=300)
    assert proc.returncode == 2, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert f"waiting for worker 1 at 127.0.0.1:{peer}" in proc.stdout, proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("train.py: error:")]
    assert len(errors) == 1 and "gave up after 3 s" in errors[0] and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- row 28: the rotation


@pytest.mark.parametrize("index", ["intact", "unreadable"])
@pytest.mark.slow  # trains a small network in-process
def test_resume_rotates_the_previous_runs_checkpoints_alike(tmp_path, index):
    """docs/training.md: --keep_checkpoints counts every checkpoint of the folder, the previous run's
    included, after a normal resume and after a fallback one alike. Before: a normal resume rotated them
    away, a resume that repaired the index kept them forever (and README said neither happens)."""
    _save_steps(_trainer(tmp_path, keep_checkpoints=3), [1, 2, 3])
    if index == "unreadable":
        (tmp_path / "checkpoints" / "checkpoint").write_bytes(b"garbage \x00\xff")
    resumed = _trainer(tmp_path, keep_checkpoints=3)
    assert resumed.restore_or_initialize().split()[2].endswith("ckpt-3")
    for step in (4, 5):
        resumed.optimizer.iterations.assign(step)
        resumed.save_checkpoint()
    assert [n for n in _names(tmp_path / "checkpoints") if n.endswith(".index")] == \
        ["ckpt-3.index", "ckpt-4.index", "ckpt-5.index"]
