"""Official-checkpoint conversion: a checkpoint with exactly the real index's names and shapes,
random values, converted to Keras and compared with an independent TF1-style graph."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from prnet.errors import CheckpointMismatchError, WeightsFormatError, WeightsNotFoundError
from prnet.weights.convert import (
    checkpoint_prefix,
    convert_checkpoint,
    is_ignored_variable,
    is_tf1_checkpoint,
    load_official_weights,
)

from helpers import run_cli

PREFIX_NAME = "256_256_resfcn256_weight"
# The original predictor.py's decoder strides (independent of prnet.model.resfcn256).
DECODER_STRIDES = (1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 2, 1, 1, 1, 1)
ENCODER_STRIDES = (2, 1, 2, 1, 2, 1, 2, 1, 2, 1)
POSMAP_SCALE_ORIGINAL = 256 * 1.1  # the original's MaxPos


def _real_variables(official_index):
    prefix = str(official_index)[: -len(".index")]
    return tf.train.list_variables(prefix)


def _resfcn256_tf1(x, weight, bn):
    """The original ResFCN256 forward pass written with raw TF ops (independent of prnet.model.resfcn256).

    ``weight(name)`` returns a checkpoint tensor by its TF1 name; ``bn(x, scope)`` applies the
    BatchNorm of ``scope`` in inference form.
    """
    def conv(x, scope, stride):
        return tf.nn.conv2d(x, weight(f"{scope}/weights"), [1, stride, stride, 1], "SAME")

    def conv_bn_relu(x, scope, stride):
        return tf.nn.relu(bn(conv(x, scope, stride), scope))

    x = conv_bn_relu(x, "resfcn256/Conv", 1)
    for i, stride in enumerate(ENCODER_STRIDES):
        scope = "resfcn256/resBlock" + ("" if i == 0 else f"_{i}")
        shortcut = x
        if weight(f"{scope}/shortcut/weights", optional=True) is not None:
            shortcut = conv(x, f"{scope}/shortcut", stride)
        y = conv_bn_relu(x, f"{scope}/Conv", 1)
        y = conv_bn_relu(y, f"{scope}/Conv_1", stride)
        y = conv(y, f"{scope}/Conv_2", 1)
        x = tf.nn.relu(bn(y + shortcut, scope))
    for i, stride in enumerate(DECODER_STRIDES):
        scope = "resfcn256/Conv2d_transpose" + ("" if i == 0 else f"_{i}")
        kernel = weight(f"{scope}/weights")  # TF1 layout [h, w, out, in]
        in_shape = tf.shape(x)
        out_shape = tf.stack([in_shape[0], in_shape[1] * stride, in_shape[2] * stride, kernel.shape[2]])
        x = tf.nn.conv2d_transpose(x, kernel, out_shape, [1, stride, stride, 1], "SAME")
        x = bn(x, scope)
        x = tf.sigmoid(x) if i == len(DECODER_STRIDES) - 1 else tf.nn.relu(x)
    return x


def _bn_inference(get):
    """BatchNorm in inference form, (x - mean) / sqrt(var + 1e-3) * gamma + beta (tf.contrib's epsilon),
    evaluated as TF1's ``tf.nn.batch_normalization`` does: x * inv + (beta - mean * inv) with
    inv = gamma / sqrt(var + eps). The evaluation order matters at the 1e-4 px level: this random
    deep network amplifies 1-ulp rounding differences to ~2e-3 px, so a different order (or
    ``fused_batch_norm``) agrees only to ~3e-3 px, while this order matches Keras exactly."""
    def bn(x, scope):
        p = f"{scope}/BatchNorm/"
        inv = tf.math.rsqrt(get(p + "moving_variance") + 1e-3) * get(p + "gamma")
        return x * inv + (get(p + "beta") - get(p + "moving_mean") * inv)
    return bn


def _bn_literal(get):
    """The same BatchNorm written literally: (x - mean) / sqrt(var + 1e-3) * gamma + beta."""
    def bn(x, scope):
        p = f"{scope}/BatchNorm/"
        return (x - get(p + "moving_mean")) / tf.sqrt(get(p + "moving_variance") + 1e-3) * get(p + "gamma") \
            + get(p + "beta")
    return bn


def _random_values(variables, seed=0):
    """Random weights a trained network could have: He-normal kernels, gamma ~ 1, beta ~ 1, and
    BatchNorm moving statistics calibrated on random images (as training would leave them), so
    activations stay O(1) through all 27 layers and the output sigmoid is not saturated.
    (beta ~ 1 keeps most ReLUs open: with beta ~ 0 this random 44-layer network is chaotic and
    turns 1e-6 relative input noise into ~0.6 px of output change; with beta ~ 1, ~0.004 px.)"""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in variables:
        shape = tuple(shape)
        if is_ignored_variable(name):
            values[name] = np.full(shape, 0.01, np.float32)  # optimizer state: ignored by the converter
        elif name.endswith("/weights"):
            transposed = "Conv2d_transpose" in name  # [h, w, out, in] vs [h, w, in, out]
            fan_in = shape[0] * shape[1] * (shape[3] if transposed else shape[2])
            values[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        elif name.endswith("/gamma"):
            values[name] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif name.endswith("/beta"):
            values[name] = rng.normal(1.0, 0.1, shape).astype(np.float32)
        elif name.endswith("/moving_mean") or name.endswith("/moving_variance"):
            values[name] = None  # calibrated below
        else:
            raise AssertionError(f"unexpected variable in the real index: {name}")

    def get(name, optional=False):
        if optional and name not in values:
            return None
        return tf.constant(values[name])

    def calibrating_bn(x, scope):
        mean, var = (t.numpy() for t in tf.nn.moments(x, axes=[0, 1, 2]))
        p = f"{scope}/BatchNorm/"
        values[p + "moving_mean"] = (mean * rng.uniform(0.95, 1.05, mean.shape)).astype(np.float32)
        values[p + "moving_variance"] = (var * rng.uniform(0.9, 1.1, var.shape) + 1e-2).astype(np.float32)
        return _bn_inference(get)(x, scope)

    calib = rng.uniform(0.0, 1.0, (2, 256, 256, 3)).astype(np.float32)
    _resfcn256_tf1(tf.constant(calib), get, calibrating_bn)
    assert all(v is not None for v in values.values())
    return values


def _write_tf1_checkpoint(prefix, values):
    """Write a name-based checkpoint with exactly these raw names (what a TF1 Saver writes)."""
    names = sorted(values)
    with tf.device("/cpu:0"):
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(values[n]) for n in names])
    return Path(prefix)


def _reference_posmap(prefix, image):
    """ResFCN256 as a TF1 graph (tf.compat.v1, graph mode), variables restored by name with a Saver."""
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = {n: s for n, s in reader.get_variable_to_shape_map().items() if not is_ignored_variable(n)}
    graph = tf.Graph()
    with graph.as_default():
        variables = {n: tf.compat.v1.get_variable(f"v{i}", shape=s, dtype=tf.float32, trainable=False)
                     for i, (n, s) in enumerate(sorted(shapes.items()))}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        x_in = tf.compat.v1.placeholder(tf.float32, [None, 256, 256, 3])

        def get(name, optional=False):
            return variables.get(name) if optional else variables[name]

        out = _resfcn256_tf1(x_in, get, _bn_inference(get))
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, str(prefix))
            return sess.run(out, {x_in: image}) * POSMAP_SCALE_ORIGINAL


@pytest.fixture(scope="module")
def fake_official(official_index, tmp_path_factory):
    """A checkpoint with the real index's variable names and shapes and random values."""
    variables = _real_variables(official_index)
    values = _random_values(variables)
    prefix = tmp_path_factory.mktemp("ckpt") / PREFIX_NAME
    _write_tf1_checkpoint(prefix, values)
    return prefix, variables, values


def test_written_checkpoint_has_the_real_names_and_shapes(fake_official, official_index):
    prefix, variables, _ = fake_official
    assert sorted(tf.train.list_variables(str(prefix))) == sorted(variables)
    model_vars = [(n, s) for n, s in variables if not is_ignored_variable(n)]
    assert len(model_vars) == 245
    assert sum(int(np.prod(s)) for n, s in model_vars if "moving_" not in n) == 13_353_618
    # Same variables, dtypes and shapes as the release: the data file has the official size.
    assert Path(f"{prefix}.data-00000-of-00001").stat().st_size == 160_290_984
    assert Path(f"{prefix}.index").stat().st_size == official_index.stat().st_size


def test_is_tf1_checkpoint(fake_official, tmp_path):
    prefix = fake_official[0]
    assert is_tf1_checkpoint(prefix)
    assert is_tf1_checkpoint(f"{prefix}.index")
    assert is_tf1_checkpoint(f"{prefix}.data-00000-of-00001")
    assert checkpoint_prefix(f"{prefix}.data-00000-of-00001") == prefix
    assert checkpoint_prefix(prefix.parent) == prefix and is_tf1_checkpoint(prefix.parent)  # Data/net-data style
    assert not is_tf1_checkpoint(tmp_path / "nothing")
    (tmp_path / "only.index").write_bytes(b"x")
    assert not is_tf1_checkpoint(tmp_path / "only")  # index without data file
    (tmp_path / "m.weights.h5").write_bytes(b"x")
    assert not is_tf1_checkpoint(tmp_path / "m.weights.h5")


@pytest.mark.slow  # converts the full-size checkpoint
def test_converted_model_equals_independent_tf1_graph(fake_official, tmp_path):
    from prnet.model.resfcn256 import build_resfcn256

    prefix, _, values = fake_official
    out = convert_checkpoint(prefix, tmp_path / "resfcn256.weights.h5")
    assert out.is_file() and not list(tmp_path.glob("*.tmp*"))

    model = build_resfcn256(weight_decay=0.0)
    model.load_weights(str(out))
    # Weights arrive unchanged (same layouts, including the [h, w, out, in] transposed kernels).
    from prnet.model.resfcn256 import checkpoint_name

    for variable in model.weights:
        np.testing.assert_array_equal(variable.numpy(), values[checkpoint_name(variable)])

    image = np.random.default_rng(1).uniform(0.0, 1.0, (2, 256, 256, 3)).astype(np.float32)
    keras_pos = model(image, training=False).numpy() * POSMAP_SCALE_ORIGINAL
    ref_pos = _reference_posmap(prefix, image)
    assert keras_pos.shape == ref_pos.shape == (2, 256, 256, 3)
    # The random network must not saturate the sigmoid everywhere, or the comparison is vacuous.
    sig = ref_pos / POSMAP_SCALE_ORIGINAL
    assert np.mean((sig > 0.01) & (sig < 0.99)) > 0.5, "sigmoid saturated: test weights too large"
    assert ref_pos.std() > 1.0
    assert np.abs(keras_pos - ref_pos).max() <= 1e-4
    # The literal BN formula differs only by float rounding (amplified by the deep random network).
    def get(name, optional=False):
        return None if optional and name not in values else tf.constant(values[name])

    literal = _resfcn256_tf1(tf.constant(image), get, _bn_literal(get)).numpy() * POSMAP_SCALE_ORIGINAL
    assert np.abs(literal - ref_pos).max() < 0.05


def _mutated(fake_official, tmp_path, mutate):
    _, _, values = fake_official
    values = dict(values)
    mutate(values)
    return _write_tf1_checkpoint(tmp_path / PREFIX_NAME, values)


@pytest.fixture(scope="module")
def full_model():
    from prnet.model.resfcn256 import build_resfcn256

    return build_resfcn256(weight_decay=0.0)


def test_missing_variable_is_reported(fake_official, tmp_path, full_model):
    name = "resfcn256/resBlock_7/Conv_1/BatchNorm/moving_variance"
    prefix = _mutated(fake_official, tmp_path, lambda v: v.pop(name))
    before = full_model.weights[0].numpy().copy()
    with pytest.raises(CheckpointMismatchError, match="resBlock_7/Conv_1/BatchNorm/moving_variance") as e:
        load_official_weights(full_model, prefix)
    assert "missing" in str(e.value)
    np.testing.assert_array_equal(full_model.weights[0].numpy(), before)  # nothing assigned


def test_unknown_variable_is_reported(fake_official, tmp_path, full_model):
    prefix = _mutated(fake_official, tmp_path,
                      lambda v: v.__setitem__("resfcn256/extra_head/weights", np.zeros((1, 1, 3, 3), np.float32)))
    with pytest.raises(CheckpointMismatchError, match="resfcn256/extra_head/weights") as e:
        load_official_weights(full_model, prefix)
    assert "not mapped" in str(e.value)


def test_wrong_shape_is_reported(fake_official, tmp_path, full_model):
    name = "resfcn256/Conv2d_transpose_4/weights"  # real: [4, 4, 128, 256]
    prefix = _mutated(fake_official, tmp_path,
                      lambda v: v.__setitem__(name, np.zeros((4, 4, 256, 128), np.float32)))
    with pytest.raises(CheckpointMismatchError, match="Conv2d_transpose_4/weights") as e:
        load_official_weights(full_model, prefix)
    assert "[4, 4, 256, 128]" in str(e.value)


def test_small_model_cannot_load_official_weights(fake_official):
    from prnet.model.resfcn256 import build_resfcn256

    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_official_weights(build_resfcn256(weight_decay=0.0, size=4), fake_official[0])


def test_missing_files_give_typed_errors(fake_official, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        convert_checkpoint(tmp_path / "nope" / PREFIX_NAME, tmp_path / "out.weights.h5")
    with pytest.raises(WeightsFormatError, match=r"\.weights\.h5"):
        convert_checkpoint(fake_official[0], tmp_path / "out.h5")
    # An index whose data file is missing.
    (tmp_path / f"{PREFIX_NAME}.index").write_bytes(Path(f"{fake_official[0]}.index").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="data file missing: " + str(tmp_path / PREFIX_NAME)
                       + r"\.data-00000-of-00001"):
        convert_checkpoint(tmp_path / PREFIX_NAME, tmp_path / "out.weights.h5")
    assert not (tmp_path / "out.weights.h5").exists()


def test_truncated_data_file_fails_cleanly(fake_official, tmp_path):
    src = fake_official[0]
    dst = tmp_path / PREFIX_NAME
    Path(f"{dst}.index").write_bytes(Path(f"{src}.index").read_bytes())
    data = Path(f"{src}.data-00000-of-00001").read_bytes()
    Path(f"{dst}.data-00000-of-00001").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsFormatError):
        convert_checkpoint(dst, tmp_path / "out.weights.h5")
    assert list(tmp_path.glob("*.h5")) == []


@pytest.mark.slow
def test_cli_converts_and_fails_cleanly(fake_official, tmp_path):
    prefix = fake_official[0]
    out = tmp_path / "cli.weights.h5"
    ok = run_cli("prnet.cli.convert", "--checkpoint", prefix, "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and out.stat().st_size > 50e6

    (tmp_path / "bad").mkdir()
    bad_prefix = _mutated(fake_official, tmp_path / "bad", lambda v: v.pop("resfcn256/Conv/weights"))
    bad_out = tmp_path / "bad.weights.h5"
    bad = run_cli("prnet.cli.convert", "--checkpoint", bad_prefix, "--output", str(bad_out))
    assert bad.returncode != 0
    assert "resfcn256/Conv/weights" in bad.stderr and "Traceback" not in bad.stderr
    assert not bad_out.exists() and not list(tmp_path.glob(".*tmp*"))


@pytest.fixture(scope="module")
def fake_pins(fake_official):
    """Pinned-file records of the stand-in checkpoint (its real size and SHA-256), to monkeypatch over
    ``official.WEIGHTS_INDEX`` / ``WEIGHTS_DATA``: the real 160 MB data file is not available here."""
    from prnet.core.files import sha256_file
    from prnet.weights.download import RemoteFile

    pins = {}
    for attr, suffix in (("WEIGHTS_INDEX", ".index"), ("WEIGHTS_DATA", ".data-00000-of-00001")):
        path = Path(f"{fake_official[0]}{suffix}")
        pins[attr] = RemoteFile(path.name, path.stat().st_size, sha256_file(path))
    return pins


def _checkpoint_in_cache(fake_official, cache):
    folder = cache / "official-checkpoint"
    folder.mkdir(parents=True)
    for suffix in (".index", ".data-00000-of-00001"):
        (folder / f"{PREFIX_NAME}{suffix}").symlink_to(f"{fake_official[0]}{suffix}")
    return folder


def test_ensure_official_weights_converts_a_checkpoint_placed_in_the_cache(fake_official, fake_pins, tmp_path,
                                                                           monkeypatch):
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    for attr, remote in fake_pins.items():
        monkeypatch.setattr(official, attr, remote)
    _checkpoint_in_cache(fake_official, tmp_path / "cache")
    path = official.ensure_official_weights(download=False)
    assert path == tmp_path / "cache" / "resfcn256.weights.h5" and path.stat().st_size > 50e6
    assert official.ensure_official_weights(download=False) == path  # cached now


def test_cached_checkpoint_that_is_not_the_official_one_is_not_converted(fake_official, tmp_path, monkeypatch):
    """Issue 14 item 4: a checkpoint with the real names and shapes but other values, put in the
    cache, used to be converted and labelled "official PRNet weights"; it is refused, by checksum."""
    from prnet.inference.predictor import Predictor
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    folder = _checkpoint_in_cache(fake_official, tmp_path / "cache")
    with pytest.raises(WeightsFormatError, match="checksum mismatch") as e:
        official.ensure_official_weights(download=False)
    data = folder / f"{PREFIX_NAME}.data-00000-of-00001"
    assert f"{data} is not the official file" in str(e.value)
    assert f"expected {official.WEIGHTS_DATA.sha256}" in str(e.value)
    with pytest.raises(WeightsFormatError, match=f"{data} is not the official file"):
        Predictor.from_weights(None, download=False, detector=None)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["official-checkpoint"]  # nothing converted


@pytest.mark.slow  # converts the full-size checkpoint
def test_truncated_converted_weights_are_rebuilt_from_the_checkpoint(fake_official, fake_pins, tmp_path,
                                                                     monkeypatch):
    """Issue 14 items 4 and 10: a cached resfcn256.weights.h5 cut short (disk full, copy interrupted) is
    converted again from the (verified) checkpoint instead of failing on every run; the converted
    file gets the usual permissions (0o666 & ~umask), not the temporary file's 0o600."""
    import os

    from prnet.model.resfcn256 import build_resfcn256, checkpoint_name
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    for attr, remote in fake_pins.items():
        monkeypatch.setattr(official, attr, remote)
    _checkpoint_in_cache(fake_official, tmp_path / "cache")
    weights = official.ensure_official_weights(download=False)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # e.g. a copy cut short
    old_umask = os.umask(0o027)
    try:
        assert official.ensure_official_weights(download=False) == weights
    finally:
        os.umask(old_umask)
    assert weights.stat().st_mode & 0o777 == 0o640
    model = build_resfcn256(weight_decay=0.0)
    model.load_weights(str(weights))
    values = fake_official[2]
    for variable in model.weights[:5]:
        np.testing.assert_array_equal(variable.numpy(), values[checkpoint_name(variable)])


def test_model_conventions_are_checked(fake_official):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="Conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="Conv.BatchNorm")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(CheckpointMismatchError) as e:
        load_official_weights(model, fake_official[0])
    assert "epsilon 1e-05" in str(e.value) and "bias" in str(e.value)


@pytest.mark.slow
def test_cli_download_checks_files_already_in_cache_and_verify_reports(fake_official, assets_dir, tmp_path):
    """Offline `--download`: the UV template from PRNET_ASSETS_DIR, a checkpoint placed in the cache
    that is not the official one (issue 14 item 4): refused by checksum, nothing converted."""
    cache = tmp_path / "cache"
    folder = _checkpoint_in_cache(fake_official, cache)
    env = {"PRNET_CACHE_DIR": str(cache), "PRNET_ASSETS_DIR": str(assets_dir)}
    refused = run_cli("prnet.cli.convert", "--download", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr  # a setup error
    assert "checksum mismatch" in refused.stderr
    assert f"{folder / (PREFIX_NAME + '.data-00000-of-00001')} is not the official file" in refused.stderr
    assert not (cache / "resfcn256.weights.h5").exists()
    report = run_cli("prnet.cli.convert", "--verify", env=env)
    # The random stand-in checkpoint is not the official one: the report must say so.
    assert report.returncode == 1
    assert "MISMATCH 256_256_resfcn256_weight.data-00000-of-00001" in report.stdout
    assert f"ok       face_ind.txt  {assets_dir / 'face_ind.txt'}" in report.stdout  # the real uv-data in use
