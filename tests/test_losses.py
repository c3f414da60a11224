"""The weighted position-map loss against hand computations (numpy), per weight-mask mode."""

import numpy as np
import pytest
import tensorflow as tf

from prnet.model.resfcn256 import POSMAP_SCALE
from prnet.training import losses


def _numpy_loss(true_px, pred_norm, weights):
    """Independent reference: mean over pixels and channels of w * (pred - true / scale)^2."""
    diff = pred_norm.astype(np.float64) - true_px.astype(np.float64) / (256 * 1.1)
    return (weights[None, :, :, None] * diff ** 2).sum(axis=(1, 2, 3)) / (256 * 256 * 3)


def test_single_pixel_hand_example():
    # One pixel off by 28.16 px (= 0.1 normalised) in x only, with weight 1: loss = 0.01 / (256*256*3).
    true = np.zeros((1, 256, 256, 3), np.float32)
    pred = np.zeros((1, 256, 256, 3), np.float32)
    pred[0, 10, 20, 0] = 0.1
    weights = np.zeros((256, 256), np.float32)
    weights[10, 20] = 1.0
    got = losses.posmap_loss(losses.normalize_posmap(true), pred, weights).numpy()
    assert got.shape == (1,)
    np.testing.assert_allclose(got, [0.01 / 196608], rtol=1e-6)
    # The same error on a zero-weight pixel costs nothing.
    weights[10, 20], weights[11, 20] = 0.0, 1.0
    assert losses.posmap_loss(true, pred, weights).numpy()[0] == 0.0


@pytest.mark.parametrize("mode", losses.WEIGHT_MASK_MODES)
def test_modes_match_numpy(mode, uv_template):
    rng = np.random.default_rng(1)
    true = (rng.random((3, 256, 256, 3)) * 250).astype(np.float32)
    pred = rng.random((3, 256, 256, 3)).astype(np.float32)
    weights = losses.loss_weights(mode, uv_template)
    expected_w = {"paper": uv_template.weight_mask, "uniform": uv_template.face_mask,
                  "none": np.ones((256, 256))}[mode]
    np.testing.assert_array_equal(weights, expected_w.astype(np.float32))
    got = losses.posmap_loss(losses.normalize_posmap(true), pred, weights).numpy()
    np.testing.assert_allclose(got, _numpy_loss(true, pred, expected_w), rtol=1e-5)


def test_paper_mask_ratios(uv_template):
    w = losses.loss_weights("paper", uv_template)
    levels, counts = np.unique(np.round(w[w > 0] * 255).astype(int), return_counts=True)
    # 16 : 4 : 3 (255 : 64 : 48), and 0 outside the face (neck, background); the PNG has a few
    # anti-aliased in-between levels at region borders.
    main = dict(zip(levels, counts))
    assert main[48] > 30000 and main[64] > 10000 and main[255] >= 68
    assert (main[48] + main[64]) / counts.sum() > 0.97 and levels.min() == 48 and levels.max() == 255
    assert np.all(w[uv_template.face_mask == 0] == 0)
    kpt = uv_template.kpt_ind
    assert np.all(w[kpt[:, 1], kpt[:, 0]] == 1.0)
    u = losses.loss_weights("uniform", uv_template)
    assert set(np.unique(u)) == {0.0, 1.0} and u.sum() == 43867


def test_per_example_weights_and_reduction():
    rng = np.random.default_rng(2)
    true = rng.random((2, 256, 256, 3)).astype(np.float32)
    pred = rng.random((2, 256, 256, 3)).astype(np.float32)
    w = rng.random((2, 256, 256)).astype(np.float32)
    got = losses.posmap_loss(true, pred, w).numpy()
    ref = (w[..., None] * (pred.astype(np.float64) - true) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # float16 predictions are evaluated in float32
    half = losses.posmap_loss(true, tf.cast(pred, tf.float16), w[0])
    assert half.dtype == tf.float32


def test_total_loss_global_batch_and_weight_decay():
    per_example = tf.constant([1.0, 2.0, 3.0, 6.0])
    # Default strategy: sum / global batch (here the global batch is 8, e.g. one of two replicas' halves).
    assert float(losses.total_loss(per_example, 8)) == pytest.approx(12.0 / 8)
    assert float(losses.total_loss(per_example, 4, [tf.constant(0.5), tf.constant(0.25)])) == pytest.approx(3.75)


@pytest.mark.slow  # the full-size network
def test_model_weight_decay_is_tf1_l2_regularizer():
    """The trainer's weight decay is the model's own regularisation losses: TF1's
    ``l2_regularizer(2e-4)`` = 2e-4 * sum(w^2) / 2 over every conv kernel (nothing else)."""
    from prnet.model.resfcn256 import WEIGHT_DECAY, build_resfcn256

    model = build_resfcn256(weight_decay=WEIGHT_DECAY, size=4)
    kernels = [v.numpy().astype(np.float64) for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(model.losses) == len(kernels) > 40
    expected = 2e-4 * sum((k ** 2).sum() for k in kernels) / 2
    got = float(tf.add_n(model.losses))
    assert got == pytest.approx(expected, rel=1e-5)
    per_example = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(losses.total_loss(per_example, 4, model.losses)) == pytest.approx(3.0 + expected, rel=1e-6)
    assert build_resfcn256(weight_decay=0.0, size=4).losses == []


def test_bad_inputs():
    with pytest.raises(losses.LossConfigError, match="paper"):
        losses.loss_weights("bogus")
    with pytest.raises(losses.LossConfigError, match="256"):
        losses.posmap_loss(np.zeros((1, 256, 256, 3)), np.zeros((1, 256, 256, 3)), np.ones((128, 128)))
    assert losses.loss_weights("none").sum() == 256 * 256
    assert POSMAP_SCALE == pytest.approx(281.6)
