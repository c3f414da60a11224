"""Structure of the Keras ResFCN256 against the original and the real official checkpoint index."""

import numpy as np
import pytest
import tensorflow as tf

from prnet.model import resfcn256 as prnet_model


@pytest.fixture(scope="module")
def resfcn():
    return prnet_model.build_resfcn256()


def _layers_of(m, cls):
    return [layer for layer in m.layers if type(layer) is cls]


def test_parameter_count_matches_original(resfcn):
    trainable = sum(int(np.prod(w.shape)) for w in resfcn.trainable_weights)
    assert trainable == 13_353_618
    assert resfcn.input_shape == (None, 256, 256, 3)
    assert resfcn.output_shape == (None, 256, 256, 3)


def test_layer_structure(resfcn):
    convs = _layers_of(resfcn, tf.keras.layers.Conv2D)
    deconvs = _layers_of(resfcn, tf.keras.layers.Conv2DTranspose)
    assert len(deconvs) == 17
    # 1 stem conv + 10 blocks x 3 convs + 5 shortcuts (the blocks that change stride/channels).
    assert len([c for c in convs if not c.name.endswith("shortcut")]) == 31
    assert len([c for c in convs if c.name.endswith("shortcut")]) == 5
    assert [d.filters for d in deconvs] == [512, 256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 16, 16, 3, 3, 3]
    assert [d.strides[0] for d in deconvs] == [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 2, 1, 1, 1, 1]
    for layer in convs + deconvs:
        assert not layer.use_bias, layer.name
        assert layer.padding == "same"
    for bn in _layers_of(resfcn, tf.keras.layers.BatchNormalization):
        assert bn.epsilon == pytest.approx(1e-3) and bn.scale and bn.center
    assert resfcn.layers[-1].activation.__name__ == "sigmoid"
    # One L2 term per convolution kernel.
    assert len(resfcn.losses) == len(convs) + len(deconvs)


def test_every_official_variable_maps_with_its_shape(resfcn, official_index):
    prefix = str(official_index)[: -len(".index")]
    official = {
        name: tuple(shape)
        for name, shape in tf.train.list_variables(prefix)
        if not name.endswith(("/Adam", "/Adam_1")) and not name.endswith("_power")
    }
    ours = {prnet_model.checkpoint_name(w): tuple(w.shape) for w in resfcn.weights}
    assert len(official) == 245
    assert set(ours) == set(official)
    assert {n: s for n, s in ours.items() if official[n] != s} == {}


def test_output_range_and_scale():
    m = prnet_model.build_resfcn256(weight_decay=0.0, size=4)
    x = np.random.default_rng(0).random((2, 256, 256, 3), dtype=np.float32)
    y = m(x, training=False).numpy()
    assert y.shape == (2, 256, 256, 3) and y.min() >= 0.0 and y.max() <= 1.0
    assert len(m.losses) == 0
    assert prnet_model.POSMAP_SCALE == pytest.approx(281.6)
    np.testing.assert_allclose(prnet_model.from_posmap(prnet_model.to_posmap(y)), y, rtol=1e-6)


def test_weight_decay_matches_tf1_l2_regularizer():
    """tcl.l2_regularizer(2e-4) adds 2e-4 * sum(w**2) / 2 per kernel."""
    m = prnet_model.build_resfcn256(size=4)
    kernels = [w for w in m.trainable_weights if w.path.endswith("kernel")]
    expected = sum(prnet_model.WEIGHT_DECAY * float(np.sum(np.square(k.numpy()))) / 2 for k in kernels)
    assert float(sum(m.losses)) == pytest.approx(expected, rel=1e-5)


def test_strided_shortcut_equals_a_strided_1x1_convolution():
    m = prnet_model.build_resfcn256(weight_decay=0.0, size=4)
    block_in = m.get_layer("Conv.relu").output
    sub = tf.keras.Model(m.input, [block_in, m.get_layer("resBlock.shortcut").output])
    x = np.random.default_rng(2).random((1, 256, 256, 3), dtype=np.float32)
    inp, out = sub(x)
    kernel = m.get_layer("resBlock.shortcut").kernel
    ref = tf.nn.conv2d(inp, kernel, strides=2, padding="SAME")
    assert out.shape == (1, 128, 128, 8)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
