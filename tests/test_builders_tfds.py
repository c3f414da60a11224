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


# ---------------------------------------------------------------- manual-folder layout, per-config builds (#22)

DUMMY = Path(__file__).resolve().parents[1] / "tfds_builders"


def _aflw_manual_without_bfm(tmp_path) -> Path:
    import shutil

    manual = tmp_path / "manual"
    shutil.copytree(DUMMY / "prnet_aflw2000_3d" / "dummy_data" / "AFLW2000", manual / "AFLW2000")
    return manual


def test_missing_manual_files_are_named_with_the_command_that_makes_them(tmp_path):
    """Before generating anything: the missing folder or file, and the download or command that makes it."""
    from prnet.errors import DatasetError

    manual = _aflw_manual_without_bfm(tmp_path)
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    with pytest.raises(DatasetError) as e:
        PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").download_and_prepare(download_config=config)
    message = str(e.value)
    assert f"BFM.mat missing in {manual}" in message and "prnet-prepare-bfm --raw_dir" in message
    assert f"--output_dir {manual / 'BFM'}" in message
    with pytest.raises(DatasetError) as e:
        Prnet300wLp(data_dir=tmp_path / "tfds", config="default").download_and_prepare(download_config=config)
    assert "300W_LP/ missing" in str(e.value) and "300W-LP.zip" in str(e.value) and "BFM.mat missing" in str(e.value)
    assert not Prnet300wLp(data_dir=tmp_path / "tfds", config="default").is_prepared()
    (manual / "BFM").mkdir()
    (manual / "BFM" / "BFM.mat").write_bytes(b"")
    with pytest.raises(DatasetError, match="BFM_UV.mat missing beside"):
        PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").download_and_prepare(download_config=config)


def _as_tfds_build(monkeypatch, *argv):
    """Make the builders see a `tfds build` process with this command line (the CLI module loaded)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorflow_datasets.scripts.cli.build", types.ModuleType("build"))
    monkeypatch.setattr(sys, "argv", ["tfds", "build", *argv])


def test_tfds_build_without_config_builds_what_it_can_and_names_the_rest(tmp_path, monkeypatch, capsys):
    """TFDS's `tfds build` loop (every config, in order): `default` is built, `posmap` is not, with one line
    saying why; after the last config the summary and exit status 1 (some built), never a traceback."""
    manual = _aflw_manual_without_bfm(tmp_path)
    _as_tfds_build(monkeypatch, "tfds_builders/prnet_aflw2000_3d", "--manual_dir", str(manual))
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    PrnetAflw20003d(data_dir=tmp_path / "tfds", config="default").download_and_prepare(download_config=config)
    with pytest.raises(SystemExit) as e:
        PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").download_and_prepare(download_config=config)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "tfds build: prnet_aflw2000_3d/posmap not built: BFM.mat missing" in err
    assert "prnet_aflw2000_3d: built default; not built:" in err and "Traceback" not in err
    assert PrnetAflw20003d(data_dir=tmp_path / "tfds", config="default").is_prepared()
    assert not PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").is_prepared()


def test_tfds_build_of_a_named_config_that_cannot_be_built_exits_2(tmp_path, monkeypatch, capsys):
    manual = _aflw_manual_without_bfm(tmp_path)
    _as_tfds_build(monkeypatch, "tfds_builders/prnet_aflw2000_3d", "--config", "posmap", "--manual_dir", str(manual))
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    with pytest.raises(SystemExit) as e:
        PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").download_and_prepare(download_config=config)
    assert e.value.code == 2
    assert capsys.readouterr().err.count("not built") == 1
    # Named as name/config: the same.
    _as_tfds_build(monkeypatch, "prnet_aflw2000_3d/posmap", "--manual_dir", str(manual))
    with pytest.raises(SystemExit):
        PrnetAflw20003d(data_dir=tmp_path / "tfds", config="posmap").download_and_prepare(download_config=config)
