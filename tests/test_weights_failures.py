"""Damaged and wrong weights give one clear typed error (issue 14 items 9, 10 and 12, weights part).

Each test builds the damaged input itself (small size-4 networks: seconds, no downloads) and checks
the message says what is wrong and which file, without tracebacks or per-layer warning floods.
"""

import os
import re
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from prnet.errors import ExportError, WeightsFormatError, WeightsNotFoundError
from prnet.inference.predictor import Predictor
from prnet.model.resfcn256 import POSMAP_SCALE, build_resfcn256, checkpoint_name, randomize_batchnorm

from helpers import run_cli


def _small_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return randomize_batchnorm(build_resfcn256(weight_decay=0.0, size=4), seed=seed)


@pytest.fixture(scope="module")
def training_checkpoints(tmp_path_factory):
    """A CheckpointManager folder as train.py writes it (model + optimizer), two checkpoints; returns
    (folder, [prefix of ckpt-1, prefix of ckpt-2])."""
    import keras
    import tensorflow as tf

    model = _small_model(21)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    folder = tmp_path_factory.mktemp("run") / "checkpoints"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), str(folder),
                                         max_to_keep=3)
    prefixes = [manager.save(), manager.save()]
    return folder, prefixes


def _copy_checkpoints(training_checkpoints, tmp_path) -> Path:
    folder = tmp_path / "checkpoints"
    shutil.copytree(training_checkpoints[0], folder)
    return folder


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------- item 9: damaged checkpoints
def test_truncated_latest_data_file_is_a_typed_error_naming_the_file(training_checkpoints, tmp_path):
    """Used to escape as IndexError("Read less bytes than requested") from TF: a traceback, exit 1."""
    folder = _copy_checkpoints(training_checkpoints, tmp_path)
    data = folder / "ckpt-2.data-00000-of-00001"
    _truncate(data)
    with pytest.raises(WeightsFormatError, match="truncated or corrupt") as e:
        Predictor.from_weights(folder, detector=None)
    assert str(data) in str(e.value)
    assert f"pass one by its prefix, e.g. {folder / 'ckpt-1'}" in str(e.value)  # the intact older one
    Predictor.from_weights(folder / "ckpt-1", detector=None)  # which does load


def test_truncated_index_is_a_typed_error_naming_the_file(training_checkpoints, tmp_path):
    folder = _copy_checkpoints(training_checkpoints, tmp_path)
    _truncate(folder / "ckpt-2.index")
    with pytest.raises(WeightsFormatError, match="truncated or corrupt") as e:
        Predictor.from_weights(folder, detector=None)
    assert f"{folder / 'ckpt-2.index'}" in str(e.value) and "ckpt-1" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["ckpt-2.data-00000-of-00001", "ckpt-2.index"])
def test_demo_on_a_damaged_checkpoint_exits_2_with_one_message(training_checkpoints, tmp_path, samples_dir,
                                                               assets_dir, damaged):
    folder = _copy_checkpoints(training_checkpoints, tmp_path)
    _truncate(folder / damaged)
    # The UV template is given: what fails is the checkpoint (a missing template would be reported with it).
    result = run_cli("prnet.cli.demo", "--weights", folder, "--input", samples_dir / "faces" / "einstein.jpg",
                     "--output_dir", tmp_path / "out", "--assets_dir", assets_dir, "--nodownload")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "prnet-demo: error: could not read the checkpoint" in result.stderr
    assert str(folder / damaged) in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _small_official_checkpoint(cache: Path, monkeypatch):
    """A size-4 network saved as the official TF1 checkpoint in ``cache``, with its sums pinned."""
    import tensorflow as tf

    from prnet.core.files import sha256_file
    from prnet.weights import official
    from prnet.weights.download import RemoteFile

    model = _small_model(22)
    prefix = official.checkpoint_dir() / official.CHECKPOINT_PREFIX_NAME
    prefix.parent.mkdir(parents=True)
    names = [checkpoint_name(v) for v in model.weights]
    with tf.device("/cpu:0"):
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[v.numpy() for v in model.weights])
    for attr in ("WEIGHTS_INDEX", "WEIGHTS_DATA"):
        path = prefix.parent / getattr(official, attr).name
        monkeypatch.setattr(official, attr, RemoteFile(path.name, path.stat().st_size, sha256_file(path)))
    return model


@pytest.mark.slow
def test_read_only_cache_with_the_checkpoint_converts_in_memory(tmp_path, monkeypatch):
    """Item 9: a cache holding the checkpoint but not the converted weights, that cannot be written:
    the (verified) checkpoint is converted in memory with a warning, instead of a PermissionError.
    (Tests run as root, which ignores permission bits: the write is made to fail as on a read-only
    cache; and the stand-in checkpoint is a size-4 network, which the size-16 converter refuses, so
    the conversion into the cache is replaced by that failure.)"""
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    model = _small_official_checkpoint(tmp_path / "cache", monkeypatch)

    def read_only(prefix, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(official, "convert_checkpoint", read_only)
    with pytest.warns(RuntimeWarning, match="converted in memory"):
        predictor = Predictor.from_weights(None, precision="float32", detector=None, download=False)
    assert predictor.backend_name == "Keras" and "converted in memory" in predictor.source
    crops = np.random.default_rng(5).random((1, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_posmaps(crops), model(crops, training=False).numpy() * POSMAP_SCALE,
                               atol=1e-4)
    with pytest.raises(ExportError, match="not writable"):
        Predictor.from_weights(None, backend="saved_model", detector=None, download=False)
    assert not official.weights_path().exists()


# ----------------------------------------------------------------------------- item 12: clear messages
def test_random_bytes_named_tflite(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsFormatError, match="is not a TFLite model") as e:
        Predictor.from_weights(path, detector=None)
    assert "codec" not in str(e.value)


def test_saved_model_without_variables(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(100.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="images")])
    def serve(images):
        return {"posmap": images * module.scale}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    shutil.rmtree(tmp_path / "sm" / "variables")
    with pytest.raises(WeightsFormatError, match="is incomplete") as e:
        Predictor.from_weights(tmp_path / "sm", detector=None)
    assert f"{tmp_path / 'sm' / 'variables'}/ is missing" in str(e.value)
    assert "device" not in str(e.value)


def test_h5_of_another_model_gives_one_short_message(tmp_path):
    """Another network whose first layer is a 4x4 conv on RGB (so a width is read from it): Keras
    used to print a warning per layer and the message listed every layer (~6000 characters)."""
    import keras

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(16, 4, use_bias=False)(inputs)
    for _ in range(20):
        x = keras.layers.Conv2D(8, 3, padding="same")(x)
    keras.Model(inputs, x).save_weights(str(tmp_path / "other.weights.h5"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsFormatError, match="does not hold the weights of a ResFCN256") as e:
            Predictor.from_weights(tmp_path / "other.weights.h5", detector=None)
    assert len(str(e.value)) < 600 and "List of objects" not in str(e.value)
    assert str(tmp_path / "other.weights.h5") in str(e.value)
    assert not [w for w in caught if "keras" in w.filename], [str(w.message)[:100] for w in caught[:3]]


def test_checkpoint_prefix_without_its_data_file(training_checkpoints, tmp_path):
    folder = _copy_checkpoints(training_checkpoints, tmp_path)
    data = folder / "ckpt-2.data-00000-of-00001"
    data.unlink()
    for path in (folder / "ckpt-2", folder, folder / "ckpt-2.index"):
        with pytest.raises(WeightsNotFoundError, match=re.escape(f"data file missing: {data}")):
            Predictor.from_weights(path, detector=None)


def test_tf1_checkpoint_shard_missing(tmp_path):
    """A sharded checkpoint with one shard gone names that shard."""
    from prnet.weights.convert import check_checkpoint_files

    (tmp_path / "ck.index").write_bytes(b"x")
    (tmp_path / "ck.data-00000-of-00002").write_bytes(b"x")
    missing = tmp_path / "ck.data-00001-of-00002"
    with pytest.raises(WeightsNotFoundError, match=re.escape(f"data file missing: {missing} ")):
        check_checkpoint_files(tmp_path / "ck")
    (tmp_path / "ck.data-00001-of-00002").write_bytes(b"x")
    assert check_checkpoint_files(tmp_path / "ck") == tmp_path / "ck"


# ----------------------------------------------------------------------------- item 10: permissions
def _modes(root: Path) -> dict:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_cached_export_and_weights_follow_the_umask(tmp_path, monkeypatch, umask):
    """Everything the cache gets (converted weights, SavedModel export and its folders, stamp) is
    readable as the umask allows (e.g. by a TF Serving account), not 0o600 / 0o700 temp modes."""
    from prnet.inference.backends import ensure_official_saved_model
    from prnet.model.resfcn256 import save_weights_atomic
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    old = os.umask(umask)
    try:
        save_weights_atomic(_small_model(23), official.weights_path())
        export = ensure_official_saved_model(download=False, kpt_ind=np.zeros((68, 2), np.int64), progress=False)
    finally:
        os.umask(old)
    modes = _modes(export)
    modes.update({p.name: stat.S_IMODE(p.stat().st_mode)
                  for p in (official.weights_path(), export.with_name(export.name + ".json"))})
    assert any(k.endswith("variables") for k in modes) and "resfcn256.weights.h5" in modes
    for name, mode in modes.items():
        is_dir = (tmp_path / "cache" / name).is_dir()
        assert mode == (0o777 if is_dir else 0o666) & ~umask, (name, oct(mode))


def test_a_file_at_the_cache_name_is_official_only_with_its_conversion_stamp(tmp_path, monkeypatch):
    """Battery row 20: any file at <cache>/resfcn256.weights.h5 was announced as the official weights and
    recorded "official": true. Now only a conversion stamp naming the pinned checkpoint and the file's
    own SHA-256 makes it official."""
    from prnet.evaluation.protocol import describe_weights
    from prnet.weights import official

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path))
    weights = official.weights_path()
    weights.write_bytes(b"random full-size weights, say")
    for official_flag, text in (official.describe_cached_weights(weights),):
        assert official_flag is False and text == f"weights at {weights} (not verified as the official conversion)"
    record = describe_weights(None)
    assert record["official"] is False and "not verified" in record["description"]

    official.write_official_stamp(weights, tmp_path / "official-checkpoint" / official.CHECKPOINT_PREFIX_NAME)
    assert official.describe_cached_weights(weights) == (True, f"official PRNet weights {weights}")
    record = describe_weights(None)
    assert record["official"] is True and record["description"] == "official PRNet weights"

    weights.write_bytes(b"another file copied over it later")  # the stamp no longer matches
    assert official.describe_cached_weights(weights)[0] is False
    official.write_official_stamp(weights, "x")
    stamp = official.stamp_path(weights)
    stamp.write_text(stamp.read_text().replace(official.WEIGHTS_DATA.sha256, "0" * 64))  # another checkpoint
    assert official.is_verified_official(weights) is False
    stamp.write_text("{not json")
    assert official.is_verified_official(weights) is False
