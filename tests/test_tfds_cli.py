"""The README's front door: the real ``tfds build`` command (TFDS's own CLI, in a fresh process) on the
project's builder folders, then ``tfds.load`` of what it wrote.

Needs the ``data`` extra (``pip install -e ".[data]"``: apache-beam and mlcroissant, which TFDS's CLI
imports at start-up); CI installs it. ``prnet_synthetic/tiny`` needs the real UV template
(``PRNET_ASSETS_DIR``); ``prnet_300w_lp`` is built from the 8 real samples plus the BFM fixture.
"""

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders  # noqa: F401  (registers the builders for tfds.builder)
from prnet.core.uv import load_uv_template
from prnet.data.pipeline import load_split, prepare_example
from prnet.data.synthetic import render_example

from helpers import REPO, run_cli

pytestmark = pytest.mark.slow  # every test runs the `tfds build` command (a TensorFlow process)


def _tfds_build(*args, env=None):
    if shutil.which("tfds") is None:
        pytest.fail("the `tfds` command is not on PATH: pip install -e \".[data]\"")
    proc = run_cli("tfds", "build", *args, env=env)
    assert proc.returncode == 0, f"tfds build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_tfds_build_synthetic_tiny(tmp_path, assets_dir):
    data_dir = tmp_path / "data"
    _tfds_build(REPO / "tfds_builders" / "prnet_synthetic", "--config", "tiny", "--data_dir", data_dir,
                env={"PRNET_ASSETS_DIR": assets_dir})
    builder = tfds.builder("prnet_synthetic/tiny", data_dir=str(data_dir))
    assert builder.info.splits["train"].num_examples == 16
    assert builder.info.splits["validation"].num_examples == 8
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
    assert ex["posmap"].dtype == np.float32 and ex["posmap"].shape == (256, 256, 3)
    # The stored map decodes to the generator's exact float map within the codec's 1/128 px.
    exact = render_example(int(ex["seed"]), load_uv_template(assets_dir))["posmap"]
    assert np.abs(ex["posmap"] - exact).max() <= 1 / 128 + 1e-6
    # The training pipeline defers the posmap decoding (load_split) and gets the same float map.
    raw = next(iter(load_split("prnet_synthetic/tiny", "train", data_dir)))
    assert raw["posmap"].dtype == tf.string
    np.testing.assert_array_equal(prepare_example(raw)["posmap"].numpy(), ex["posmap"])


def test_tfds_build_300w_lp_manual_dir(tmp_path, lp_manual_dir):
    data_dir = tmp_path / "data"
    _tfds_build(REPO / "tfds_builders" / "prnet_300w_lp", "--manual_dir", lp_manual_dir, "--data_dir", data_dir)
    builder = tfds.builder("prnet_300w_lp", data_dir=str(data_dir))
    total = sum(s.num_examples for s in builder.info.splits.values())
    assert total == 8   # the 8 real samples, split by subject
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        assert ex["posmap"].dtype == np.float32 and ex["image"].std() > 20
