"""The three TFDS builders under ``tfds.testing.DatasetBuilderTestCase`` (the TFDS convention).

Each builder reads its ``tfds_builders/<name>/dummy_data/`` folder as the manual dir: small fake
samples in the real 300W-LP / AFLW2000-3D layouts plus a stand-in ``BFM.mat`` / ``BFM_UV.mat``,
written by ``python -m tfds_builders.make_dummy_data`` (synthetic, committed). ``prnet_synthetic``
needs the real UV template from ``../shared`` (the ``assets_dir`` fixture). The real-sample checks
are in ``test_builders_real.py``.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.prnet_300w_lp import Builder as Prnet300wLp
from tfds_builders.prnet_aflw2000_3d import Builder as PrnetAflw20003d
from tfds_builders.prnet_synthetic import Builder as PrnetSynthetic
from tfds_builders.prnet_synthetic import SyntheticBuilderConfig


class Prnet300wLpTest(tfds.testing.DatasetBuilderTestCase):
    """Both configs; subjects of the dummy data are split 4 train / 2 validation by the builder's
    default rule (SHA-1 of the subject, 5 % validation), a ``_Flip`` always with its original."""

    DATASET_CLASS = Prnet300wLp
    SPLITS = {"train": 4, "validation": 2}
    BUILDER_CONFIG_NAMES_TO_TEST = ["default", "jitter"]


class PrnetAflw20003dTest(tfds.testing.DatasetBuilderTestCase):
    """``default`` (no BFM needed) and ``posmap`` (reads the dummy BFM.mat / BFM_UV.mat)."""

    DATASET_CLASS = PrnetAflw20003d
    SPLITS = {"test": 3}
    BUILDER_CONFIG_NAMES_TO_TEST = ["default", "posmap"]


class PrnetSyntheticTest(tfds.testing.DatasetBuilderTestCase):
    """A 3 + 2 example config (the builder's own are 24+ examples: slower, same code)."""

    DATASET_CLASS = PrnetSynthetic
    SPLITS = {"train": 3, "validation": 2}
    BUILDER_CONFIG_NAMES_TO_TEST = [SyntheticBuilderConfig(name="dummy", description="3 + 2 test examples.",
                                                           num_train=3, num_validation=2)]
    # The UV template is read with numpy/pathlib, which the os/np.load mocks would reject.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False

    @pytest.fixture(autouse=True)
    def _uv_assets(self, assets_dir):
        """Runs before unittest's setUp: the builder is made there with the real ``uv-data`` folder."""
        self.assets = assets_dir

    def _make_builder(self, config=None):
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION, assets_dir=self.assets)


def test_dummy_data_is_small_and_synthetic():
    """Committed test data stays small (< 300 KB) and in the layouts the builders scan."""
    root = Path(__file__).resolve().parents[1] / "tfds_builders"
    files = [p for p in root.glob("*/dummy_data/**/*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 300 * 1024
    names = {p.relative_to(root).as_posix() for p in files}
    for folder in ("prnet_300w_lp/dummy_data/300W_LP/AFW", "prnet_300w_lp/dummy_data/300W_LP/AFW_Flip",
                   "prnet_aflw2000_3d/dummy_data/AFLW2000"):
        stems = {n[len(folder) + 1:].rsplit(".", 1)[0] for n in names if n.startswith(folder + "/")}
        assert stems and all({f"{folder}/{s}.jpg", f"{folder}/{s}.mat"} <= names for s in stems), folder
    for name in ("prnet_300w_lp", "prnet_aflw2000_3d"):
        assert {f"{name}/dummy_data/BFM.mat", f"{name}/dummy_data/BFM_UV.mat"} <= names
    from scipy.io import loadmat

    mat = loadmat(root / "prnet_aflw2000_3d/dummy_data/AFLW2000/image00002.mat")
    assert mat["pt3d_68"].shape == (3, 68) and mat["Pose_Para"].shape == (1, 7)
    assert mat["Shape_Para"].shape == (199, 1) and mat["Exp_Para"].shape == (29, 1)
    assert np.all(np.isfinite(mat["pt3d_68"]))
