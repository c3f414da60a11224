"""The test suite's own machinery: the shared-data switch of conftest and the CLI runner of helpers."""

import sys

import pytest
from conftest import _require

from helpers import REPO, run_cli


def test_missing_shared_data_skips_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("PRNET_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="reference data not found at .*nowhere"):
        _require(tmp_path / "nowhere")
    assert _require(tmp_path) == tmp_path


def test_missing_shared_data_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("PRNET_REQUIRE_SHARED", "1")
    with pytest.raises(pytest.fail.Exception, match="reference data not found at .*nowhere"):
        _require(tmp_path / "nowhere")
    assert _require(tmp_path) == tmp_path


def test_run_cli_targets_and_environment(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nprint(sys.argv[1:], os.environ.get('TF_CPP_MIN_LOG_LEVEL'),"
                      " os.environ.get('DROPPED'), os.environ.get('ADDED'), os.getcwd())\n")
    out = run_cli(script, "a", 1, env={"ADDED": "x", "DROPPED": None}, cwd=tmp_path).stdout.split()
    assert out == ["['a',", "'1']", "2", "None", "x", str(tmp_path)]
    mod = run_cli("json.tool", "--help")   # dotted name: python -m
    assert mod.returncode == 0 and "json.tool" in mod.stdout
    code = run_cli(["-c", "import sys; print([p for p in sys.path if p and not p.endswith('fastlane')][0])"])
    assert code.stdout.strip() == str(REPO)                 # the working tree first on the path


def test_fast_lane_subprocess_may_not_import_tensorflow():
    """A test not marked slow (this one) gets a child where ``import tensorflow`` fails, and run_cli fails
    the test even when the child swallowed the ImportError; a light child runs normally."""
    with pytest.raises(RuntimeError, match="not marked slow but its subprocess imported TensorFlow"):
        run_cli(["-c", "try:\n    import tensorflow\nexcept ImportError as e:\n    print(e)"])
    assert run_cli(["-c", "import numpy; print(1)"]).stdout.strip() == "1"
    exe = run_cli("python3" if sys.platform != "win32" else "python", "-c", "print(7)")
    assert exe.stdout.strip() == "7"
    with pytest.raises(FileNotFoundError, match="not on PATH"):
        run_cli("no-such-console-command-xyz")
