"""Training: LR schedule, deterministic/resumable input stream, exact resume, MirroredStrategy on
two logical CPUs vs the default strategy, and ``train.py`` overfitting a few ``prnet_synthetic`` examples.

The resume/strategy run executes in a subprocess (this file with a worker argument): two logical
CPU devices need a fresh process. The overfit run is ``train.py`` itself. All use the tiny
``build_resfcn256(size=4)`` (same architecture at 1/4 width) to stay fast on a CPU.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from trained import EXAMPLES, OVERFIT_STEPS, VAL_EVERY

REPO_ROOT = Path(__file__).resolve().parents[1]


def _random_source(n=12, seed=0):
    """In-memory dataset with the builders' features; example i's posmap is smooth, image random."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    posmaps = []
    for i in range(n):
        a, b = rng.uniform(0.3, 0.6, 2)
        posmaps.append(np.stack([60 + a * xx, 50 + b * yy, 20 + 10 * np.sin(xx / 40 + i)], -1))
    data = {
        "image": rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8),
        "posmap": np.stack(posmaps).astype(np.float32),
        "landmarks_68": rng.uniform(60, 200, (n, 68, 3)).astype(np.float32),
    }
    return tf.data.Dataset.from_tensor_slices(data)


def _run_worker(mode, tmp_path, *args):
    # TF_ENABLE_ONEDNN_OPTS unset: TensorFlow's default (oneDNN on), whatever other tests set.
    proc = run_cli(Path(__file__), mode, tmp_path, *args, env={"TF_ENABLE_ONEDNN_OPTS": None})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------- in-process tests


def test_learning_rate_halves_every_5_epochs():
    from prnet.training.config import learning_rate_schedule

    schedule = learning_rate_schedule(1e-4, steps_per_epoch=10, decay_epochs=5)
    expected = {0: 1e-4, 49: 1e-4, 50: 5e-5, 99: 5e-5, 100: 2.5e-5, 149: 2.5e-5, 150: 1.25e-5}
    for step, lr in expected.items():
        np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6, err_msg=f"step {step}")


def test_stream_is_deterministic_and_skip_resumes_it():
    from prnet.data.augment import AugmentConfig
    from prnet.data.pipeline import train_pipeline

    src = _random_source(10)
    cfg = AugmentConfig(occluder_prob=1.0)
    full = [b for _, b in zip(range(6), train_pipeline(src, 4, augment_config=cfg, seed=5, shuffle_buffer=10))]
    again = [b for _, b in zip(range(6), train_pipeline(src, 4, augment_config=cfg, seed=5, shuffle_buffer=10))]
    resumed = [b for _, b in zip(range(2), train_pipeline(src, 4, augment_config=cfg, seed=5, shuffle_buffer=10,
                                                          skip_examples=16))]
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    for a, b in zip(full[4:], resumed):  # examples 16.. of the stream, augmented identically
        for key in ("image", "posmap", "landmarks_68"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert full[0]["image"].shape == (4, 256, 256, 3) and full[0]["image"].dtype.name == "float32"
    # Each pass over the 10 examples is a permutation, reshuffled between passes (identify examples
    # by their posmap's sin phase, which augmentation does not change up to scale).
    other = [b for _, b in zip(range(5), train_pipeline(src, 4, augment_config=cfg, seed=6, shuffle_buffer=10))]
    assert not np.array_equal(other[0]["posmap"].numpy(), full[0]["posmap"].numpy())


def test_prepare_example_decodes_encoded_images():
    import tensorflow as tf

    from prnet.data.pipeline import prepare_example

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ex = {"image": tf.io.encode_png(image), "posmap": np.zeros((256, 256, 3), np.float32),
          "landmarks_68": np.zeros((68, 3), np.float32)}
    out = prepare_example(ex)
    np.testing.assert_allclose(out["image"].numpy() * 255, image, atol=1e-3)


def test_bad_settings_raise_typed_errors(tmp_path):
    import tfds_builders
    from prnet.data.pipeline import load_split
    from prnet.errors import AssetsNotFoundError, DatasetError, TrainingConfigError
    from prnet.training.config import TrainConfig

    with pytest.raises(TrainingConfigError, match="strategy"):
        TrainConfig(model_dir=str(tmp_path), strategy="tpu")
    with pytest.raises(TrainingConfigError, match="weight mask"):
        TrainConfig(model_dir=str(tmp_path), weight_mask="half")
    with pytest.raises(TrainingConfigError):
        TrainConfig(model_dir=str(tmp_path), batch_size=0)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_split("no_such_dataset_xyz", "train", data_dir=str(tmp_path / "empty"))
    # Never built implicitly (it would need the UV template): the message gives the build command.
    with pytest.raises(DatasetError, match="build it first with: prnet-build-data --dataset prnet_synthetic"):
        load_split("prnet_synthetic/tiny", "train", data_dir=str(tmp_path / "empty"),
                   assets_dir=str(tmp_path / "no-assets"))
    with pytest.raises(AssetsNotFoundError):  # the builder needs the UV template to build itself
        tfds_builders.BUILDERS["prnet_synthetic"](config="tiny", data_dir=str(tmp_path / "empty"),
                                                  assets_dir=str(tmp_path / "no-assets")).download_and_prepare()


# ----------------------------------------------------------------------------- subprocess tests


@pytest.mark.slow
def test_resume_and_mirrored_match(tmp_path):
    r = _run_worker("resume_mirrored", tmp_path)
    # Resume: same step, LR and data position; the next step's loss equals the uninterrupted run's.
    assert r["resumed_step"] == 1 and r["resumed_examples"] == 2
    np.testing.assert_allclose(r["resumed_lr"], 5e-4, rtol=1e-6)  # halved after epoch 1 (lr_decay_epochs=1)
    np.testing.assert_allclose(r["resumed_losses"], r["full_losses"][1:], rtol=1e-6, atol=1e-7)
    assert r["resume_weight_diff"] < 1e-6
    assert len(set(r["full_losses"])) == 2  # the steps really differ
    # Two logical CPUs under MirroredStrategy == default strategy on the same global batch.
    assert r["replicas"] == 2
    # rtol 1e-6: the model keeps its output layer (and so the loss) in float32 under any policy.
    np.testing.assert_allclose(r["mirrored_losses"], r["default_losses"], rtol=1e-6)
    assert r["mirrored_weight_diff"] < 1e-6
    assert r["weights_changed"] > 1e-4  # a step moves the weights by far more than the tolerance
    assert os.path.isfile(tmp_path / "full" / "final.weights.h5")


def _scalars(event_dir):
    """TensorBoard scalars written by the trainer: ``{tag: [(step, value), ...]}`` sorted by step."""
    import tensorflow as tf

    out = {}
    for f in sorted(Path(event_dir).glob("events*")):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                value = float(tf.make_ndarray(v.tensor)) if v.metadata.plugin_data.plugin_name == "scalars" else None
                out.setdefault(v.tag, []).append((event.step, value))
    return {k: sorted(v, key=lambda sv: sv[0]) for k, v in out.items()}


def _weighted_loss(pred_px, true_px, weights):
    """Paper loss in numpy: mean over (u, v, c) of W * ((pred - true) / (256 * 1.1))^2, per example."""
    diff = (pred_px.astype(np.float64) - true_px) / (256 * 1.1)
    return (weights[None, :, :, None] * diff ** 2).mean(axis=(1, 2, 3))


def _nme_2d(pred_posmaps, true_landmarks, kpt_ind):
    """68-landmark 2D NME in numpy: landmarks read at the UV key points (kpt_ind is (col, row)),
    mean point distance / sqrt(w * h) of the true landmarks' x,y box, per example."""
    pred = pred_posmaps[:, kpt_ind[:, 1], kpt_ind[:, 0], :2].astype(np.float64)
    true = true_landmarks[..., :2].astype(np.float64)
    size = np.sqrt(np.prod(true.max(axis=1) - true.min(axis=1), axis=-1))
    return np.linalg.norm(pred - true, axis=-1).mean(axis=-1) / size


@pytest.mark.slow
def test_train_py_overfits_a_few_synthetic_examples(overfit_run, uv_template):
    """``train.py`` on ``EXAMPLES`` ``prnet_synthetic`` examples (the session's overfit run, ``tests/trained.py``: built
    into a temp data_dir first, train.py never builds): the training loss falls by a clear margin and far
    below that of the best constant prediction (the mean map of the 8), and the final weights in inference
    mode place the 68 landmarks of the same examples clearly better than the mean map does. Baselines
    are computed here, in numpy."""
    import tensorflow as tf

    from prnet.model.resfcn256 import build_resfcn256

    model_dir, proc = overfit_run.model_dir, overfit_run.proc
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "final training loss" in proc.stdout

    # The examples, exactly as the trainer reads them (no augmentation), and the baselines.
    data = overfit_run.examples()
    images, posmaps, landmarks = (data[k] for k in ("image", "posmap", "landmarks_68"))
    assert images.shape == (EXAMPLES, 256, 256, 3) and len({float(p.sum()) for p in posmaps}) == EXAMPLES
    weights = uv_template.weight_mask.astype(np.float64)
    mean_map = np.broadcast_to(posmaps.mean(axis=0, keepdims=True), posmaps.shape)
    base_loss = _weighted_loss(mean_map, posmaps, weights).mean()
    base_nme = _nme_2d(mean_map, landmarks, uv_template.kpt_ind).mean()
    assert 0 < base_loss and 0.1 < base_nme < 1  # the poses really differ

    # Training loss (training-mode BatchNorm; logged at every epoch end, i.e. every step here).
    scalars = _scalars(model_dir / "train")
    assert [s for s, _ in scalars["posmap_loss"]] == list(range(1, OVERFIT_STEPS + 1))
    curve = np.array([v for _, v in scalars["posmap_loss"]])
    first, last = curve[:10].mean(), curve[-10:].mean()
    # The final weights, in a fresh model, in inference mode (moving BatchNorm statistics).
    model = build_resfcn256(weight_decay=0.0, size=4)
    model.load_weights(model_dir / "final.weights.h5")
    pred = model(tf.constant(images), training=False).numpy() * (256 * 1.1)
    loss = _weighted_loss(pred, posmaps, weights).mean()
    nme = _nme_2d(pred, landmarks, uv_template.kpt_ind).mean()
    print(f"mean-map baseline: loss {base_loss:.6f}, NME {base_nme:.4f}; trained: training loss "
          f"{first:.6f} -> {last:.6f}, inference loss {loss:.6f}, NME {nme:.4f}")
    # The training loss drops by a clear margin, well below the best constant prediction's.
    assert last < 0.4 * first, (first, last)
    assert last < 0.35 * base_loss, (last, base_loss)
    # No weight decay: the total loss is the posmap loss.
    np.testing.assert_allclose([v for _, v in scalars["loss"]], curve, rtol=1e-6)
    # Inference mode: overfit, i.e. far below the mean map's loss, and the landmarks much better placed.
    assert loss < 0.35 * base_loss, (loss, base_loss)
    assert nme < 0.6 * base_nme, (nme, base_nme)

    # The trainer's own validation (same examples, prnet.evaluation.metrics) agrees with this evaluation.
    val = _scalars(model_dir / "validation")
    assert [s for s, _ in val["nme_2d"]] == list(range(VAL_EVERY, OVERFIT_STEPS + 1, VAL_EVERY))
    np.testing.assert_allclose(val["nme_2d"][-1][1], nme, rtol=1e-3)
    np.testing.assert_allclose(val["posmap_loss"][-1][1], loss, rtol=1e-3)
    assert {"learning_rate", "examples_per_second", "nme_3d", "input", "posmap_predicted", "posmap_true",
            "landmarks_true_green_pred_red"} <= set(scalars) | set(val)
    assert (model_dir / "checkpoints" / "checkpoint").is_file()

# ----------------------------------------------------------------------------- workers


def _worker_resume_mirrored(tmp):
    """Three Trainers, each traced once (the tracing of the train step dominates this test's time): the
    uninterrupted run (2 steps on the default strategy, saving a checkpoint after step 1 as a periodic
    checkpoint does), a brand-new Trainer resumed from that checkpoint (1 step), and MirroredStrategy on
    2 logical CPUs (2 steps) against the uninterrupted run's steps (same global batch of 2).

    All in float64: at initialisation this network's gradients are chaotic in float32 (a 1e-6 relative
    change of the input moves some by >10 %: near-constant BatchNorm channels), so float32 round-off of a
    differently ordered sum (two replicas' halves) would hide or fake a mismatch; float64 leaves only
    real differences. Grappler's graph rewrites are off (they take a third of the first step's time and
    change no result of this comparison: every run here is traced and run with the same settings)."""
    import keras
    import tensorflow as tf

    from prnet.data.augment import AugmentConfig
    from prnet.training.config import TrainConfig, configure_cpu_devices
    from prnet.training.trainer import Trainer

    configure_cpu_devices(2)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    keras.mixed_precision.set_dtype_policy("float64")
    src = _random_source(8)
    base = dict(model_size=4, batch_size=2, steps_per_epoch=1, epochs=2, learning_rate=1e-3, lr_decay_epochs=1,
                weight_mask="none", augment=AugmentConfig(occluder_prob=1.0), seed=1, shuffle_buffer=8,
                log_every=1, val_every=0, checkpoint_every=0, progress=False)
    quiet = dict(log=lambda *_: None)
    full = Trainer(TrainConfig(model_dir=f"{tmp}/full", **base), 1)
    assert full.restore_or_initialize() == "fresh" and full.model.weights[0].dtype == "float64"
    initial = [w.numpy().copy() for w in full.model.weights]
    iterator = full.make_iterator(src)
    full_losses = [h["loss"] for h in full.train_steps(iterator, 1)]
    full.save_checkpoint()  # ckpt-1: what a periodic checkpoint of an uninterrupted run leaves
    full_losses += [h["loss"] for h in full.train_steps(iterator, 1)]
    full_weights = [w.numpy().copy() for w in full.model.weights]
    full.lock.release()

    # A brand-new Trainer resumes from ckpt-1 (the run's folder, as a restarted process would).
    resumed = Trainer(TrainConfig(model_dir=f"{tmp}/full", **base), 1)
    how = resumed.restore_or_initialize()
    assert how.startswith("resumed") and how.split()[2].endswith("ckpt-1"), how
    out = {"resumed_step": resumed.step, "resumed_examples": int(resumed.examples_seen.numpy()),
           "resumed_lr": resumed.learning_rate()}
    out["resumed_losses"] = [h["loss"] for h in resumed.fit(src, None, **quiet)["losses"]]
    out["full_losses"] = full_losses
    out["resume_weight_diff"] = max(float(np.abs(a - b.numpy()).max())
                                    for a, b in zip(full_weights, resumed.model.weights))

    # MirroredStrategy, 2 replicas of 1 example: the same 2 steps as the uninterrupted run.
    mirrored = Trainer(TrainConfig(model_dir=f"{tmp}/mirrored", strategy="mirrored", **base), 1)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(initial, mirrored.model.weights))
    out["replicas"] = mirrored.strategy.num_replicas_in_sync
    out["default_losses"] = full_losses
    out["mirrored_losses"] = [h["loss"] for h in mirrored.train_steps(mirrored.make_iterator(src), 2)]
    out["mirrored_weight_diff"] = max(float(np.abs(a - b.numpy()).max())
                                      for a, b in zip(full_weights, mirrored.model.weights))
    out["weights_changed"] = max(float(np.abs(a - b).max()) for a, b in zip(full_weights, initial))
    return out


if __name__ == "__main__":
    mode, tmp_dir, *rest = sys.argv[1:]
    worker = {"resume_mirrored": _worker_resume_mirrored}[mode]
    print("RESULT " + json.dumps(worker(tmp_dir, *rest)))
