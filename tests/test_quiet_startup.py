"""Quiet start-up of train.py, evaluate.py and export.py (as for prnet-demo / prnet-convert).

``--help`` and flag errors must not load TensorFlow; a run that loads it and then fails on bad
input prints its own error but none of the start-up banners (:data:`prnet.cli.STARTUP_BANNERS`);
``TF_CPP_MIN_LOG_LEVEL=0`` turns the filter off. Each script runs in a fresh process through a
wrapper that reports, after the script exits, whether TensorFlow was loaded.
"""

import pytest

from prnet.cli import STARTUP_BANNERS

from helpers import REPO, run_cli

#: Runs ``sys.argv[1:]`` as ``python SCRIPT ARGS...`` would, then prints whether TensorFlow was
#: loaded and exits with the script's status.
_WRAPPER = r"""
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
print("TF_LOADED" if "tensorflow" in sys.modules else "TF_NOT_LOADED", file=sys.stderr)
sys.exit(code)
"""

TOOLS = ("train", "evaluate", "export")


def _run(tool, *args, env=None):
    return run_cli(["-c", _WRAPPER, REPO / f"{tool}.py", *args], env=env)


def _banner_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if STARTUP_BANNERS.search(line)]


@pytest.mark.parametrize("tool", TOOLS)
def test_help_does_not_load_tensorflow(tool):
    result = _run(tool, "--help", env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert result.returncode == 0, result.stderr  # run_tool: --help exits 0 (absl alone: 1)
    assert "--output_dir" in result.stdout or "--model_dir" in result.stdout, result.stdout  # the help
    assert "TF_NOT_LOADED" in result.stderr, result.stderr
    assert _banner_lines(result.stderr) == []


@pytest.mark.parametrize("tool, args, message", [
    ("train", (), "--output_dir"),                                                    # required
    ("evaluate", ("--dataset_dir=faces",), "--output_dir"),                           # required
    ("export", ("--weights=m.weights.h5",), "--output_dir"),                          # required
    ("evaluate", ("--output_dir=out", "--dataset_dir=a", "--tfds_name=b"), "exactly one of"),
])
def test_flag_errors_do_not_load_tensorflow(tool, args, message, tmp_path):
    result = run_cli(["-c", _WRAPPER, REPO / f"{tool}.py", *args], cwd=tmp_path)
    assert result.returncode in (1, 2), result.stderr
    assert message in result.stderr, result.stderr
    assert "TF_NOT_LOADED" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def _failing_run(tool, tmp_path, assets_dir):
    """Arguments of a run that loads TensorFlow and then stops on a missing input (exit 2)."""
    return {
        "train": (f"--model_dir={tmp_path / 'run'}", "--dataset=prnet_synthetic/tiny",
                  f"--data_dir={tmp_path / 'no_data'}", f"--assets_dir={assets_dir}"),
        "evaluate": (f"--output_dir={tmp_path / 'out'}", f"--dataset_dir={tmp_path / 'no_images'}",
                     "--smoke_test_random_weights", f"--assets_dir={assets_dir}"),
        "export": (f"--output_dir={tmp_path / 'out'}", f"--weights={tmp_path / 'missing.weights.h5'}",
                   "--formats=saved_model", "--detector=none", f"--assets_dir={assets_dir}"),
    }[tool]


@pytest.mark.slow
@pytest.mark.parametrize("tool", TOOLS)
def test_failing_run_prints_its_error_and_no_banner(tool, tmp_path, assets_dir):
    result = _run(tool, *_failing_run(tool, tmp_path, assets_dir), env={"TF_CPP_MIN_LOG_LEVEL": None})
    assert result.returncode == 2, result.stderr
    assert "TF_LOADED" in result.stderr, result.stderr  # TensorFlow started: it would have logged its banners
    assert f"{tool}.py: error: " in result.stderr, result.stderr
    assert _banner_lines(result.stderr) == [], result.stderr


@pytest.mark.slow
def test_log_level_0_shows_the_banners(tmp_path, assets_dir):
    # The same failing run with the user's TF_CPP_MIN_LOG_LEVEL=0: nothing is filtered, so the banners
    # removed above are really printed by this TensorFlow (and the filter is what removes them).
    result = _run("evaluate", *_failing_run("evaluate", tmp_path, assets_dir), env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 2, result.stderr
    assert "evaluate.py: error: " in result.stderr, result.stderr
    assert _banner_lines(result.stderr), result.stderr


@pytest.mark.slow
def test_quiet_import_of_other_modules_filters_their_lines_too(tmp_path):
    # A module imported with TensorFlow (as the tools import tfds_builders) that writes a banner line and
    # an ordinary line to file descriptor 2 and one through Python's logging (as Apache Beam does).
    (tmp_path / "noisy_module.py").write_text(
        "import logging, os\n"
        "os.write(2, b'I0000 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\\nkeep fd line\\n')\n"
        "logging.warning('apitools not found, and bigquery client libraries are not available despite ...')\n"
        "logging.warning('keep logging line')\n")
    code = ("import sys\nfrom prnet.cli import import_tensorflow_quietly\n"
            "tf = import_tensorflow_quietly('noisy_module')\n"
            "print('noisy_module' in sys.modules, tf.__name__, file=sys.stderr)")
    result = run_cli(["-c", code], env={"TF_CPP_MIN_LOG_LEVEL": None}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "keep fd line\n" in err and "keep logging line" in err and "True tensorflow" in err, err
    assert "cpu_feature_guard" not in err and "apitools" not in err, err
    assert _banner_lines(err) == [], err
