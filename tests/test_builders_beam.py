"""Apache Beam generation of ``prnet_300w_lp``: a Beam build (DirectRunner) of the real samples' manual
dir gives exactly the examples of the plain build (same keys, same records, same decoded values)."""

import glob

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

beam = pytest.importorskip("apache_beam", reason="the data extra (pip install -e '.[data]') installs apache-beam")


def _build(manual, data_dir, beam_options=None):
    from tfds_builders.prnet_300w_lp import Builder

    b = Builder(data_dir=str(data_dir), validation_percent=50.0)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), try_download_gcs=False, beam_options=beam_options))
    return b


def _records(builder):
    files = sorted(glob.glob(f"{builder.data_dir}/*.tfrecord*"))
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(files))


def _examples(builder):
    out = {}
    for split in builder.info.splits:
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            out[(split, ex["source"].decode())] = ex
    return out


@pytest.mark.slow  # builds a TFDS dataset twice
def test_beam_build_equals_plain_build(lp_manual_dir, tmp_path):
    plain = _build(lp_manual_dir, tmp_path / "plain")
    options = beam.options.pipeline_options.PipelineOptions(runner="DirectRunner")
    with_beam = _build(lp_manual_dir, tmp_path / "beam", options)
    assert plain.use_beam is False and with_beam.use_beam is True
    assert {k: v.num_examples for k, v in plain.info.splits.items()} == \
        {k: v.num_examples for k, v in with_beam.info.splits.items()}
    a, b = _examples(plain), _examples(with_beam)
    assert len(a) == 8 and a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key} {name}")
    assert _records(plain) == _records(with_beam)   # the serialised records, byte for byte


@pytest.mark.slow  # builds a TFDS dataset twice
def test_synthetic_beam_build_equals_plain_build(assets_dir, tmp_path):
    from tfds_builders.prnet_synthetic import Builder, SyntheticBuilderConfig

    config = SyntheticBuilderConfig(name="beam_check", description="3 + 2", num_train=3, num_validation=2)
    built = []
    for name, options in (("plain", None), ("beam", beam.options.pipeline_options.PipelineOptions(
            runner="DirectRunner"))):
        b = Builder(data_dir=str(tmp_path / name), config=config, assets_dir=assets_dir)
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False,
                                                                            beam_options=options))
        assert b.use_beam is (options is not None)
        built.append(b)
    assert _records(built[0]) == _records(built[1]) and len(_records(built[0])) == 5
