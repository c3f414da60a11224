"""Shared fixtures. Real reference data is read from ``../shared`` (never copied into the repo);
tests that need it skip with a clear reason when it is absent, or fail with that reason when
``PRNET_REQUIRE_SHARED=1`` (CI: missing reference data is an error there, not a skip)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The suite's references are float32: on a CPU with bf16 units the `auto` default would run bf16 (within its
# own bound, not within the float32 tolerances asserted here). Every test and its subprocesses see this CPU's
# flags without the bf16 ones (prnet.model.runtime.AUTO_CPU_FLAGS_ENV); the bf16 rule is tested with explicit
# flags (tests/test_auto_backend.py).
def _cpu_flags_without_bf16() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    flags = {f for line in lines if line.split(":")[0].strip() in ("flags", "Features")
             for f in line.split(":", 1)[1].split()}
    return " ".join(sorted(f for f in flags if "bf16" not in f)) or "none"


os.environ.setdefault("PRNET_AUTO_CPU_FLAGS", _cpu_flags_without_bf16())


def _shared_dir() -> Path:
    return Path(os.environ.get("PRNET_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


def _require(path: Path) -> Path:
    """``path`` if it exists; else skip the test, or fail it when ``PRNET_REQUIRE_SHARED=1``."""
    if not path.exists():
        reason = f"reference data not found at {path} (set PRNET_SHARED_DIR to the shared/ folder)"
        if os.environ.get("PRNET_REQUIRE_SHARED", "").strip() == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the project root (real reference data)."""
    return _require(_shared_dir())


@pytest.fixture(scope="session")
def assets_dir(shared_dir) -> Path:
    """The original PRNet ``uv-data`` folder."""
    return _require(shared_dir / "prnet-assets" / "uv-data")


@pytest.fixture(scope="session")
def uv_template(assets_dir):
    from prnet.core.uv import load_uv_template

    return load_uv_template(assets_dir)


@pytest.fixture(scope="session")
def official_index(shared_dir) -> Path:
    """The real ``.index`` file of the official checkpoint (names and shapes, no values)."""
    return _require(shared_dir / "reference" / "official-checkpoint" / "256_256_resfcn256_weight.index")


@pytest.fixture(scope="session")
def samples_dir(shared_dir) -> Path:
    return _require(shared_dir / "samples")


@pytest.fixture(scope="session")
def blazeface_path():
    """The BlazeFace back-camera model file (the default detector's), or a skip when its package is missing."""
    from prnet.errors import DetectorUnavailableError
    from prnet.model.blazeface import model_path

    try:
        return model_path("back")
    except DetectorUnavailableError as e:
        pytest.skip(f"BlazeFace model files unavailable: {e}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real ~/.cache/prnet from tests."""
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "prnet-cache"))


@pytest.fixture(scope="session")
def small_model():
    """The suite's one small network: a size-4 ResFCN256 (random weights, seed 0) with trained-like
    BatchNorm statistics (``randomize_batchnorm``), so that its outputs vary like a trained network's.
    Read-only: tests must not train or modify it."""
    import keras

    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm

    keras.utils.set_random_seed(0)
    return randomize_batchnorm(build_resfcn256(weight_decay=0, size=4), seed=0)


@pytest.fixture(scope="session")
def small_export(small_model, samples_dir, uv_template, tmp_path_factory) -> dict:
    """``small_model`` exported once per session (once per xdist worker that needs it): ``{format: path}``
    for ``saved_model`` (default caps, BlazeFace detection signature, landmark indices) and the float32,
    float16 and int8 TFLite files (int8 calibrated on 12 real sample crops). Read-only."""
    from prnet.serving.calibration import representative_crops
    from prnet.serving.export import export_all

    out = tmp_path_factory.mktemp("small_export") / "export"
    return export_all(small_model, out, calibration=representative_crops(samples_dir, limit=12),
                      kpt_ind=uv_template.kpt_ind, progress=False)


@pytest.fixture(scope="session")
def bfm_files(shared_dir, tmp_path_factory) -> Path:
    """A folder with ``BFM.mat`` (face3d format: the REAL mean face + REAL 68-landmark bases spread to
    all vertices -- not the real BFM) and the real ``BFM_UV.mat`` (53,215-vertex topology)."""
    import numpy as np

    from prnet.data.bfm import landmark_interpolated_model, write_bfm_mat

    d = shared_dir / "reference" / "bfm-mean"
    model = landmark_interpolated_model(d / "bfm_mean_53215.npz", d / "bfm_kpt68_bases.npz")
    out = tmp_path_factory.mktemp("bfm")
    write_bfm_mat(out / "BFM.mat", model, exp_mean=np.load(d / "bfm_mean_53215.npz")["exp_mean"])
    os.symlink(shared_dir / "reference" / "bfm-uv" / "BFM_UV_53215.mat", out / "BFM_UV.mat")
    return out


@pytest.fixture(scope="session")
def lp_manual_dir(samples_dir, bfm_files, tmp_path_factory) -> Path:
    """A 300W-LP manual dir: ``300W_LP/`` links to the 8 real samples' folders, plus ``bfm_files``."""
    manual = tmp_path_factory.mktemp("manual_lp")
    (manual / "300W_LP").mkdir()
    for folder in ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip"):
        os.symlink(samples_dir / "300w-lp" / folder, manual / "300W_LP" / folder)
    for name in ("BFM.mat", "BFM_UV.mat"):
        os.symlink(bfm_files / name, manual / name)
    return manual


#: The session's one overfit run (tests/trained.py), started by :func:`_overfit_in_background`.
_OVERFIT = {}
#: Running under pytest-xdist (a worker process, or the controller that was given ``-n``).
_XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _uses_overfit_run(item) -> bool:
    return "overfit_run" in getattr(item, "fixturenames", ())


#: Fixtures that train or export a network (tens of seconds each): every test that uses one, directly or
#: through another fixture, is marked ``slow`` (deselected by the fast lane ``pytest -m "not slow"``).
SLOW_FIXTURES = frozenset({
    "overfit_run",       # train.py's overfit run (tests/trained.py)
    "small_export",      # the session's export set of small_model (test_export, test_openvino)
    "exported",          # export sets: test_export, test_openvino, test_precision_accuracy
    "export_set",        # test_bf16
    "saved_model",       # test_serving_detect, test_serving_failures
    "mean_face_model",   # a constant SavedModel (test_swap)
    "cli_run",           # evaluate.py in a subprocess (test_evaluate)
})


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Tests using a :data:`SLOW_FIXTURES` fixture are marked ``slow``. The modules whose tests use the
    session's overfit run go last (each kept whole, in order), so that the run, started in the background
    at the first test, overlaps every other test."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    late = {item.module for item in items if _uses_overfit_run(item)}
    if _XDIST:
        # pytest-xdist (CI: -n 2 --dist loadgroup). The tests that need the overfit run go first, as one group
        # on one worker, which trains while the other worker takes the rest of the suite. Every other test is
        # grouped by its module, so that a module's fixtures (its exports) are built on one worker only.
        for item in items:
            item.add_marker(pytest.mark.xdist_group("overfit_run" if _uses_overfit_run(item) else item.module.__name__))
        items[:] = [i for i in items if _uses_overfit_run(i)] + [i for i in items if not _uses_overfit_run(i)]
    else:
        items[:] = [i for i in items if i.module not in late] + [i for i in items if i.module in late]


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item):
    """Tell ``helpers`` whether the test about to run is marked ``slow``: one that is not may not start a
    subprocess (``helpers.run_cli`` refuses), so the fast lane stays free of TensorFlow start-ups."""
    import helpers

    helpers.FAST_TEST = None if item.get_closest_marker("slow") else item.nodeid


@pytest.fixture(scope="session", autouse=True)
def _overfit_in_background(request, tmp_path_factory):
    """Start train.py's overfit run (``trained.PendingOverfitRun``) at the session's first test when a
    collected test needs it (not under pytest-xdist); end it at the session's end if it is still going."""
    assets = _shared_dir() / "prnet-assets" / "uv-data"
    # Under xdist every worker sees every item: the run starts where its group runs (overfit_run itself).
    if not _XDIST and assets.is_dir() and any(_uses_overfit_run(item) for item in request.session.items):
        from trained import PendingOverfitRun

        _OVERFIT["pending"] = PendingOverfitRun(tmp_path_factory.mktemp("overfit"), assets)
    yield
    if "pending" in _OVERFIT:
        _OVERFIT.pop("pending").stop()


@pytest.fixture(scope="session")
def overfit_run(assets_dir, tmp_path_factory):
    """train.py's overfit run of a small network (``tests/trained.py``), once per session, started in the
    background at the first test: the trained weights for reduced-precision tests, and the run that
    test_training checks."""
    from trained import PendingOverfitRun

    if "pending" not in _OVERFIT:  # e.g. requested through getfixturevalue
        _OVERFIT["pending"] = PendingOverfitRun(tmp_path_factory.mktemp("overfit"), assets_dir)
    return _OVERFIT["pending"].result()
