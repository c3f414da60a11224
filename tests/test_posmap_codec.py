"""Compact position-map storage (prnet.data.posmap_codec, prnet.data.posmap_feature.CompactPosmap):
round-trip max error, size against float32, refusal of unstorable maps, TF == NumPy decoding."""

import numpy as np
import pytest
import tensorflow as tf

from prnet.data import posmap_codec
from prnet.data.posmap_feature import CompactPosmap
from prnet.data.synthetic import render_example
from prnet.errors import DatasetError


@pytest.fixture(scope="module")
def rendered_maps(uv_template):
    """Two real-looking maps: the synthetic generator's exact float posmaps (faces at random poses)."""
    return [render_example(seed, uv_template)["posmap"] for seed in (3, 11)]


def test_round_trip_max_error_on_rendered_maps(rendered_maps):
    for p in rendered_maps:
        data = posmap_codec.encode(p)
        back = posmap_codec.decode_np(data)
        assert back.dtype == np.float32 and back.shape == p.shape
        err = np.abs(back.astype(np.float64) - p.astype(np.float64))
        assert err.max() <= posmap_codec.MAX_ERROR + 1e-6 <= 0.01
        assert (back[p == 0] == 0).all()                           # background stays exactly 0
        assert len(data) <= p.astype(np.float32).nbytes / 4        # at most a quarter of float32


def test_round_trip_whole_range_random_values():
    """Uniform values over the whole storable range (the worst case for rounding) and its two ends."""
    rng = np.random.default_rng(0)
    p = rng.uniform(posmap_codec.LOW, posmap_codec.HIGH, size=(64, 64, 3))
    p[0, 0] = [posmap_codec.LOW, posmap_codec.HIGH, 0.0]
    back = posmap_codec.decode_np(posmap_codec.encode(p), p.shape)
    assert np.abs(back - p).max() <= posmap_codec.MAX_ERROR + 1e-6
    assert tuple(back[0, 0]) == (posmap_codec.LOW, posmap_codec.HIGH, 0.0)


def test_tf_decoding_equals_numpy_decoding(rendered_maps):
    data = posmap_codec.encode(rendered_maps[0])
    np.testing.assert_array_equal(posmap_codec.decode_tf(tf.constant(data)).numpy(), posmap_codec.decode_np(data))
    # Worst case for the differences: random values over the whole range (every residual wraps).
    noisy = np.random.default_rng(1).uniform(posmap_codec.LOW, posmap_codec.HIGH, (32, 48, 3))
    noisy_data = posmap_codec.encode(noisy)
    np.testing.assert_array_equal(posmap_codec.decode_tf(tf.constant(noisy_data), noisy.shape).numpy(),
                                  posmap_codec.decode_np(noisy_data, noisy.shape))
    feature = CompactPosmap()
    decoded = feature.decode_example(tf.constant(feature.encode_example(rendered_maps[0]))).numpy()
    np.testing.assert_array_equal(decoded, posmap_codec.decode_np(data))


@pytest.mark.parametrize("bad, words", [(1000.0, "outside the storable"), (-300.0, "outside the storable"),
                                        (np.nan, "NaN"), (np.inf, "NaN")])
def test_unstorable_maps_are_refused_not_clipped(bad, words):
    p = np.zeros((8, 8, 3), np.float32)
    p[2, 3, 1] = bad
    with pytest.raises(DatasetError, match=words):
        posmap_codec.encode(p)


def test_corrupt_or_mis_shaped_data_is_refused(rendered_maps):
    data = posmap_codec.encode(rendered_maps[0])
    with pytest.raises(DatasetError, match="not a compressed position map"):
        posmap_codec.decode_np(b"junk" + data)
    with pytest.raises(DatasetError, match="wrong shape"):
        posmap_codec.decode_np(data, (128, 128, 3))


def test_feature_json_round_trip_and_shape_check():
    feature = CompactPosmap(shape=(32, 32, 3))
    again = CompactPosmap.from_json_content(feature.to_json_content())
    assert again.get_tensor_info() == feature.get_tensor_info()
    with pytest.raises(ValueError, match="shape"):
        feature.encode_example(np.zeros((16, 16, 3), np.float32))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 0, 3)), "empty"), (np.zeros((4, 0, 3), np.float32), "empty"),
    (np.full((2, 2, 3), "1.0"), "real numbers"), (np.zeros((2, 2, 3), np.complex128), "complex"),
    (np.zeros((2, 2, 3), bool), "real numbers"),
])
def test_unusable_maps_raise_dataset_error(bad, words):
    """Empty, string, boolean and complex maps: the project's error with an accurate line, never NumPy's
    ValueError nor a silently dropped imaginary part (reliability review row 27)."""
    with pytest.raises(DatasetError, match=words):
        posmap_codec.encode(bad)


@pytest.mark.parametrize("value", [767.99, posmap_codec.HIGH + 1e-9, -256.001, 768.0])
def test_out_of_range_message_is_consistent(value):
    """The message's numbers agree with the rule: the offending value printed is outside the printed closed
    range (767.99 was reported as "[768.0, 768.0] outside [-256, 768]")."""
    import re

    with pytest.raises(DatasetError) as err:
        posmap_codec.encode(np.full((4, 4, 3), value))
    text = str(err.value)
    shown, lo, hi = (float(x) for x in re.search(r"value (\S+) crop px is outside the storable range (\S+) <= v <= "
                                                  r"(\S+)", text).groups())
    assert shown == value and not lo <= shown <= hi
    assert (lo, hi) == (posmap_codec.LOW, posmap_codec.HIGH)
    posmap_codec.encode(np.full((4, 4, 3), hi))  # the printed bound itself is storable
