"""Multi-worker training (``strategy="multi_worker"``): two worker processes on 127.0.0.1 (CPU, one
replica each) against one process with the same global batch, then a resume after both workers exited.

Each run executes this file as a script (``python tests/test_multi_worker.py MODE ...``): a
``MultiWorkerMirroredStrategy`` must be created first thing in a fresh process. The tiny model
(``model_size=4``) runs in float64, as in ``test_training.py``: at initialisation this network's
gradients are chaotic in float32 (near-constant BatchNorm channels), so float32 round-off of a
differently ordered sum (two workers' halves all-reduced vs one batch) would hide or fake a mismatch.
In float64 that round-off is ~1e-16 relative, so the weights must agree to 1e-9 after each of the
2 Adam steps (a step moves them by > 1e-4): anything larger is a real difference (other examples, other BatchNorm
statistics, a missed step).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
CONFIG = dict(model_size=4, batch_size=4, steps_per_epoch=1, learning_rate=1e-3, weight_mask="none", seed=1,
              shuffle_buffer=8, log_every=1, val_every=0, checkpoint_every=0, progress=False)
TOLERANCE = 1e-9
#: The float32 loss sums N = global batch x 256 x 256 x 3 terms; a reduction reordered (two workers' halves vs one
#: batch, or another CPU's vector width) moves a float32 sum by about log2(N) roundings of float32's epsilon
#: (pairwise / blocked summation): 20 x 1.19e-7 = 2.4e-6 here. Seen: 1 ulp (1.1e-7) between an AVX2 and an
#: AVX-512 CPU.
LOSS_RTOL = float(np.ceil(np.log2(CONFIG["batch_size"] * 256 * 256 * 3)) * np.finfo(np.float32).eps)


def _free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _spawn(mode, model_dir, epochs, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, __file__, mode, str(model_dir), str(epochs)], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc):
    try:
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"worker timed out:\n{out[-2000:]}\n{err[-4000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"worker failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _run_workers(model_dir, epochs):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [_spawn("multi", model_dir, epochs, {"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)]
    return [_result(p) for p in procs]


def _checkpoint(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a)


@pytest.mark.slow  # three TensorFlow processes start (MultiWorkerMirroredStrategy traces a large graph)
def test_two_workers_equal_one_process_and_resume(tmp_path):
    reference = _spawn("single", tmp_path / "single", 2)          # 2 steps in one process
    first = _run_workers(tmp_path / "multi", 1)                      # step 1 on two workers, then all exit
    second = _run_workers(tmp_path / "multi", 2)                     # a new launch resumes: step 2
    ref = _result(reference)

    assert [r["chief"] for r in first] == [True, False]
    assert all(r["how"] == "fresh" for r in first) and all(r["steps"] == 1 for r in first)
    assert all(r["how"].startswith("resumed from") and r["how"].endswith("ckpt-1") for r in second)
    assert all(r["replicas"] == 2 for r in first + second)
    # Only the chief wrote into model_dir: its checkpoints, TensorBoard and final weights.
    assert first[0]["final_weights"] and first[1]["final_weights"] is None
    names = sorted(os.listdir(tmp_path / "multi" / "checkpoints"))
    assert names == sorted(["checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001",
                            "ckpt-2.index", "ckpt-2.data-00000-of-00001"]), names
    assert sorted(os.listdir(tmp_path / "multi")) == ["checkpoints", "final.weights.h5", "train", "validation"]

    # Same losses as one process with the same global batch of 4 (two examples per worker), and the same
    # weights and optimizer state.
    # The losses are float32 (the output layer stays float32 under any policy), so they agree to float32
    # round-off of a differently ordered sum, not to 1e-9: the weights below carry the exactness claim.
    np.testing.assert_allclose([r["losses"] for r in first][0] + second[0]["losses"], ref["losses"],
                               rtol=LOSS_RTOL)
    for step in (1, 2):
        single = _checkpoint(tmp_path / "single" / "checkpoints" / f"ckpt-{step}")
        multi = _checkpoint(tmp_path / "multi" / "checkpoints" / f"ckpt-{step}")
        assert _max_difference(single, multi) < TOLERANCE, step
    moved = _max_difference(_checkpoint(tmp_path / "single" / "checkpoints" / "ckpt-2"),
                            _checkpoint(tmp_path / "single" / "checkpoints" / "ckpt-1"))
    assert moved > 1e-4   # the second step really changes the weights


def test_multi_worker_needs_tf_config(monkeypatch):
    from prnet.errors import TrainingConfigError
    from prnet.training.config import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainingConfigError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TrainingConfigError, match="not valid JSON"):
        make_strategy("multi_worker")


def test_sharded_pipeline_slices_make_the_global_batch():
    """The workers' slices of each step, put side by side, are the unsharded stream's global batch."""
    from test_training import _random_source

    from prnet.data.augment import NO_AUGMENTATION
    from prnet.data.pipeline import train_pipeline

    src = _random_source(6)
    kwargs = dict(augment_config=NO_AUGMENTATION, seed=3, shuffle_buffer=6, skip_examples=4)
    whole = [b["landmarks_68"].numpy() for b in train_pipeline(src, 4, **kwargs).take(3)]
    parts = [[b["landmarks_68"].numpy() for b in train_pipeline(src, 4, num_shards=2, shard_index=i, **kwargs)
              .take(3)] for i in range(2)]
    for step in range(3):
        np.testing.assert_array_equal(np.concatenate([parts[0][step], parts[1][step]]), whole[step])
    # Two local replicas per worker: each worker's slice comes as two batches of one, in order.
    halves = [[b["landmarks_68"].numpy() for b in train_pipeline(src, 4, num_shards=2, shard_index=i, output_batch=1,
                                                                  **kwargs).take(6)] for i in range(2)]
    for step in range(3):
        pieces = halves[0][2 * step:2 * step + 2] + halves[1][2 * step:2 * step + 2]
        np.testing.assert_array_equal(np.concatenate(pieces), whole[step])


def _worker(mode, model_dir, epochs):
    import tensorflow as tf

    from prnet.training.config import make_strategy

    # Grappler's graph rewrites take a third of the first step's time and change nothing compared here
    # (every process runs with the same settings). A configuration, not an op: the strategy still comes first.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    strategy = make_strategy("multi_worker" if mode == "multi" else "default")  # first: before any TF op
    import keras
    from test_training import _random_source

    from prnet.training.config import TrainConfig
    from prnet.training.trainer import Trainer

    keras.mixed_precision.set_dtype_policy("float64")
    config = TrainConfig(model_dir=model_dir, strategy="multi_worker" if mode == "multi" else "default",
                         epochs=int(epochs), **CONFIG)
    trainer = Trainer(config, CONFIG["steps_per_epoch"], strategy=strategy)
    how = trainer.restore_or_initialize()
    summary = trainer.fit(_random_source(8), None, log=lambda *_: None)
    return {"chief": trainer.is_chief, "how": how, "steps": summary["steps"], "losses": [h["loss"] for h in
            summary["losses"]], "final_weights": summary["final_weights"],
            "replicas": strategy.num_replicas_in_sync}


if __name__ == "__main__":
    import time
    t0 = time.time()
    r = _worker(*sys.argv[1:])
    print("RESULT " + json.dumps(r), flush=True)
    print("ELAPSED", time.time() - t0, flush=True)
