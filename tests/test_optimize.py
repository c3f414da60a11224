"""The BN-folded inference graph (prnet.model.fast) equals the Keras training graph."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from prnet.model.fast import _subpixel_2x2, _subpixel_3x3, build_inference_model
from prnet.model.resfcn256 import POSMAP_SCALE, build_resfcn256, randomize_batchnorm


@pytest.fixture(scope="module")
def sample_crops(samples_dir):
    from prnet.serving.calibration import representative_crops

    crops = np.stack(representative_crops(samples_dir / "faces", limit=3))
    assert crops.shape == (3, 256, 256, 3) and crops.dtype == np.float32
    return crops


def _relative_error(pred, ref):
    return float(np.abs(pred - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("stride1,stride2,residual", [
    ("conv", "transpose", "affine"), ("conv", "subpixel", "affine"), ("transpose", "subpixel3x3", "concat"),
    ("conv", "subpixel", "concat"), ("transpose", "transpose", "affine"),
])
def test_every_rewrite_matches_training_graph_small(stride1, stride2, residual, sample_crops):
    keras.utils.set_random_seed(1)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0, size=4), seed=1)
    ref = model(sample_crops[:2], training=False).numpy() * POSMAP_SCALE
    assert ref.std() > 1.0  # a map that varies, so the comparison can fail
    net = build_inference_model(model, stride1=stride1, stride2=stride2, residual=residual)
    pred = net(tf.constant(sample_crops[:2])).numpy()
    assert pred.shape == (2, 256, 256, 3) and pred.dtype == np.float32
    assert _relative_error(pred, ref) <= 1e-4


@pytest.mark.slow  # the full-size network (8.26 GFLOP/image), built twice
def test_full_size_default_matches_training_graph(sample_crops):
    keras.utils.set_random_seed(2)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0), seed=2)
    ref = model(sample_crops, training=False).numpy() * POSMAP_SCALE
    assert ref.std() > 1.0
    for kwargs in ({}, {"stride2": "transpose"}):
        pred = build_inference_model(model, **kwargs)(tf.constant(sample_crops)).numpy()
        assert _relative_error(pred, ref) <= 1e-4, kwargs


def test_folding_reads_weights_once():
    model = randomize_batchnorm(build_resfcn256(weight_decay=0, size=4))
    net = build_inference_model(model)
    x = tf.random.uniform([1, 256, 256, 3], seed=3)
    before = net(x).numpy()
    layer = model.get_layer("Conv")
    layer.kernel.assign(layer.kernel * 2.0)
    np.testing.assert_array_equal(net(x).numpy(), before)


def _transposed_reference(kernel, x):
    """Stride-2 SAME 4x4 transposed conv straight from the definition, in numpy (NHWC, kernel (4,4,out,in))."""
    n, h, w, _ = x.shape
    out = np.zeros((n, 2 * h + 2, 2 * w + 2, kernel.shape[2]))  # rows -1 .. 2h, offset 1
    for i in range(h):
        for j in range(w):
            for ky in range(4):
                for kx in range(4):
                    # output o = 2 i + k - 1 (pad 1 before)
                    out[:, 2 * i + ky, 2 * j + kx] += x[:, i, j] @ kernel[ky, kx].T
    return out[:, 1:2 * h + 1, 1:2 * w + 1]


def test_subpixel_kernels_against_definition():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(4, 4, 3, 2))
    x = rng.normal(size=(1, 5, 6, 2))
    ref = _transposed_reference(kernel, x)
    tf_ref = tf.nn.conv2d_transpose(x, kernel, [1, 10, 12, 3], 2, "SAME").numpy()
    np.testing.assert_allclose(tf_ref, ref, atol=1e-9)
    z = tf.nn.conv2d(np.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), _subpixel_2x2(kernel), 1, "VALID").numpy()
    phases = [z[:, py:py + 5, px:px + 6, (2 * py + px) * 3:(2 * py + px + 1) * 3] for py in (0, 1) for px in (0, 1)]
    np.testing.assert_allclose(tf.nn.depth_to_space(np.concatenate(phases, -1), 2).numpy(), ref, atol=1e-9)
    y3 = tf.nn.depth_to_space(tf.nn.conv2d(x, _subpixel_3x3(kernel), 1, "SAME"), 2).numpy()
    np.testing.assert_allclose(y3, ref, atol=1e-9)


def test_bad_arguments():
    model = build_resfcn256(weight_decay=0, size=4)
    with pytest.raises(ValueError, match="stride2 must be one of"):
        build_inference_model(model, stride2="fft")
    other = keras.Sequential([keras.Input((256, 256, 3)), keras.layers.Conv2D(3, 1)])
    with pytest.raises(ValueError, match="build_resfcn256"):
        build_inference_model(other)
