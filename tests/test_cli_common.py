"""One CLI skeleton (issue 19 items 1-3): every tool's flags from the registry, the same exit codes,
the same ``<tool>: error:`` line, deprecated aliases that work and say so once, and a quiet stderr.

Tests that start TensorFlow in a subprocess (about 10 s each) are ``slow``; ``--help``, flag errors and
the checks made before TensorFlow loads are not.
"""

import json
import re

import pytest

from prnet.cli import NOISE
from prnet.cli.common import ALIASES, TOOL_ALIASES, TOOLS

from helpers import REPO, run_cli

#: Prints, for every tool, its flags ``{name: help}`` and whether importing the seven tool
#: modules together loaded TensorFlow (it must not: --help and flag errors never need it).
_FLAGS_CODE = r"""
import importlib, json, sys
from prnet.cli.common import TOOLS, tool_flags
for module in TOOLS.values():
    importlib.import_module(module)
print(json.dumps({"tf": "tensorflow" in sys.modules, "flags": {tool: tool_flags(tool) for tool in TOOLS}}))
"""

#: Root scripts that run the same code as an installed command.
ROOT_SCRIPTS = {"train.py": "prnet-train", "evaluate.py": "prnet-evaluate", "export.py": "prnet-export"}


@pytest.fixture(scope="module")
def tool_flags():
    result = run_cli(["-c", _FLAGS_CODE], timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tf"] is False  # defining the flags of all seven tools loads no TensorFlow
    return data["flags"]


def _error_lines(stderr: str, prog: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]


def test_registry_names_every_installed_command():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("prnet-")}
    assert scripts == {tool: f"{module}:run" for tool, module in TOOLS.items()}


def test_every_flag_has_help_and_shared_concepts_have_one_name(tool_flags):
    for tool, names in tool_flags.items():
        assert all(help_text.strip() for help_text in names.values()), tool
    weights = {"weights", "backend", "precision", "download", "smoke_test_random_weights"}
    for tool in ("prnet-demo", "prnet-swap", "prnet-evaluate", "prnet-export"):  # the tools that load weights
        assert weights <= set(tool_flags[tool]), tool
    for tool in ("prnet-demo", "prnet-swap"):
        assert {"detector", "annotations", "refine"} <= set(tool_flags[tool]), tool
    for tool in TOOLS:
        if tool not in ("prnet-convert", "prnet-prepare-bfm"):  # the tools without a UV template
            assert "assets_dir" in tool_flags[tool], tool
    assert {"dataset", "data_dir"} <= set(tool_flags["prnet-train"]) & set(tool_flags["prnet-build-data"])
    assert "model_size" in set(tool_flags["prnet-train"]) & set(tool_flags["prnet-export"])
    for tool in ("prnet-demo", "prnet-train", "prnet-evaluate", "prnet-export"):  # a folder of outputs
        assert "output_dir" in tool_flags[tool], tool


def test_aliases_are_documented_as_deprecated(tool_flags):
    seen = set()
    for tool, names in tool_flags.items():
        for old, new in {**ALIASES, **TOOL_ALIASES.get(tool, {})}.items():
            if old in names:
                seen.add(old)
                assert names[old].startswith(f"Deprecated alias of --{new}"), (tool, old, names[old])
                assert new in names, (tool, new)
    assert seen == set(ALIASES) | {old for table in TOOL_ALIASES.values() for old in table}


@pytest.mark.parametrize("target", [*TOOLS, *ROOT_SCRIPTS])
def test_help_exits_0_and_lists_every_flag(target, tool_flags):
    tool = ROOT_SCRIPTS.get(target, target)
    result = run_cli(REPO / target if target.endswith(".py") else target, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    for name in tool_flags[tool]:
        assert f"--{name}:" in result.stdout or f"--[no]{name}:" in result.stdout, (target, name)
    assert "best.weights.h5" not in result.stdout  # prnet-train writes final.weights.h5
    assert not NOISE.search(result.stdout + result.stderr)


@pytest.mark.parametrize("tool", TOOLS)
def test_unknown_flag_is_a_usage_error_exit_2(tool):
    result = run_cli(tool, "--no_such_flag=1", timeout=120)
    assert result.returncode == 2, result.stderr  # as argparse; absl alone exits 1
    errors = _error_lines(result.stderr, tool)
    assert len(errors) == 1 and "no_such_flag" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_alias_value_reaches_the_new_flag_with_one_note(tmp_path, samples_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    # --output (the demo's old folder flag) given twice: one note; its value is the output folder,
    # checked (and refused: under a file) before TensorFlow loads.
    result = run_cli("prnet-demo", "--input", photo, "--output", blocker / "out", "--output", blocker / "out",
                     timeout=120)
    assert result.returncode == 2, result.stderr
    notes = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert notes == ["prnet-demo: note: --output is deprecated; use --output_dir"], result.stderr
    errors = _error_lines(result.stderr, "prnet-demo")
    assert len(errors) == 1 and str(blocker) in errors[0], result.stderr

    result = run_cli("prnet-build-data", "--dataset", "prnet_nothing", "--config", "tiny", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "prnet-build-data: note: --config is deprecated; use --dataset prnet_nothing/tiny" in result.stderr
    assert "--dataset prnet_nothing/tiny: unknown dataset" in result.stderr, result.stderr

    result = run_cli("prnet-evaluate", "--tfds_name", "prnet_aflw2000_3d", "--dataset_dir", tmp_path,
                     "--output_dir", tmp_path / "out", timeout=120)
    assert result.returncode == 2, result.stderr  # --tfds_name is --dataset: with --dataset_dir, two datasets
    assert "note: --tfds_name is deprecated; use --dataset" in result.stderr
    assert "exactly one of --dataset_dir" in result.stderr


def test_alias_and_new_name_with_different_values_is_an_error(tmp_path):
    result = run_cli("prnet-swap", "--uv_dir", tmp_path / "a", "--assets_dir", tmp_path / "b", timeout=120)
    assert result.returncode == 2, result.stderr
    errors = _error_lines(result.stderr, "prnet-swap")
    assert errors == ["prnet-swap: error: --uv_dir is a deprecated alias of --assets_dir; give only --assets_dir"]


_RUN_TOOL_CODE = r"""
import sys
import prnet.cli.convert
from prnet.cli import common
from prnet.errors import WeightsNotFoundError

def main(argv):
    what = argv[1]
    if what == "ok":
        return None
    if what == "partial":
        common.fail("2 of 3 inputs failed", common.EXIT_PARTIAL)
    if what == "setup":
        raise WeightsNotFoundError("no weights at x.h5")
    if what == "multiline":
        common.fail("first line\nsecond line")
    raise KeyboardInterrupt

common.run_tool("prnet-convert", main, interrupted="nothing written")
"""


@pytest.mark.parametrize("what, code, line", [
    ("ok", 0, None),
    ("partial", 1, "prnet-convert: error: 2 of 3 inputs failed"),
    ("setup", 2, "prnet-convert: error: no weights at x.h5"),
    ("multiline", 2, "prnet-convert: error: first line\n  second line"),
    ("interrupt", 130, "prnet-convert: interrupted (Ctrl-C); nothing written"),
])
def test_run_tool_exit_codes_and_messages(what, code, line):
    result = run_cli(["-c", _RUN_TOOL_CODE, what], timeout=120)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (line or ""), result.stderr


def _foreign_lines(stderr: str, prog: str) -> list:
    """stderr lines that are not the tool's own (``<prog>: ...``)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(f"{prog}: ")]


@pytest.mark.slow
def test_demo_normal_run_prints_only_its_own_lines_and_verbosity_brings_the_rest(tmp_path, samples_dir,
                                                                                 assets_dir):
    args = ("--input", samples_dir / "faces" / "prnet_test_0.jpg", "--smoke_test_random_weights",
            "--assets_dir", assets_dir, "--outputs", "landmarks")
    env = {"TF_CPP_MIN_LOG_LEVEL": None}  # as a user's shell: the tool picks the level
    quiet = run_cli("prnet-demo", *args, "--output_dir", tmp_path / "quiet", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert _foreign_lines(quiet.stderr, "prnet-demo") == [], quiet.stderr  # no TF / TFLite / XNNPACK line
    assert "1/1 images done" in quiet.stderr
    verbose = run_cli("prnet-demo", *args, "--output_dir", tmp_path / "verbose", "--verbosity=0", env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert [line for line in verbose.stderr.splitlines() if NOISE.search(line)], verbose.stderr
    names = sorted(p.name for p in (tmp_path / "quiet").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "verbose").iterdir()) == [
        "prnet_test_0_0_RANDOM_WEIGHTS_landmarks.txt"]


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["prnet-demo", "prnet-swap", "prnet-export"])
def test_missing_weights_file_is_a_setup_error_with_one_line(tool, tmp_path, samples_dir, assets_dir):
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    missing = tmp_path / "missing.weights.h5"
    args = {"prnet-demo": ("--input", photo, "--output_dir", tmp_path / "out"),
            "prnet-swap": ("--input", photo, "--reference", photo, "--output", tmp_path / "out.png"),
            "prnet-export": ("--output_dir", tmp_path / "out", "--formats=float32")}[tool]
    result = run_cli(tool, *args, "--weights", missing, "--assets_dir", assets_dir, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = _error_lines(result.stderr, tool)
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr
    assert _foreign_lines(result.stderr, tool) == [], result.stderr
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out").exists() or not any(
        (tmp_path / "out").iterdir())  # prnet-demo checks that its output folder can be written first


@pytest.mark.slow
def test_swap_weights_flags_reach_the_predictor(tmp_path, samples_dir, assets_dir):
    """--backend openvino reaches Predictor.from_weights (here without OpenVINO: its install command)."""
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    saved_model = tmp_path / "sm"  # recognised as a SavedModel by its file name; OpenVINO would read it
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    code = ("import sys; sys.modules['openvino'] = None; from prnet.cli.swap import run; "
            f"sys.argv = ['prnet-swap', '--backend=openvino', '--precision=float32', '--input={photo}', "
            f"'--reference={photo}', '--output={tmp_path / 'out.png'}', '--assets_dir={assets_dir}', "
            f"'--weights={saved_model}']; run()")
    result = run_cli(["-c", code], timeout=300)
    assert result.returncode == 2, result.stderr
    assert 'pip install -e ".[openvino]"' in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_convert_verify_with_files_missing_is_a_partial_failure(tmp_path):
    env = {"PRNET_CACHE_DIR": tmp_path, "PRNET_ASSETS_DIR": tmp_path, "TF_CPP_MIN_LOG_LEVEL": None}
    result = run_cli("prnet-convert", "--verify", env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert re.search(r"^0 ok, 10 missing, 0 mismatched$", result.stdout, re.M), result.stdout
    assert _foreign_lines(result.stderr, "prnet-convert") == [], result.stderr
    assert "10 file(s) missing" in result.stderr


@pytest.mark.slow
def test_export_random_weights_is_marked(tmp_path, assets_dir):
    out = tmp_path / "exported"
    result = run_cli("prnet-export", "--smoke_test_random_weights", "--model_size=4", "--formats=float32",
                     "--output_dir", out, "--assets_dir", assets_dir, env={"TF_CPP_MIN_LOG_LEVEL": None}, timeout=600)
    assert result.returncode == 0, result.stderr
    marked = tmp_path / "exported_RANDOM_WEIGHTS"
    assert not out.exists() and (marked / "prnet_float32.tflite").is_file()
    assert str(marked / "prnet_float32.tflite") in result.stdout
    assert "RANDOM WEIGHTS" in result.stderr
    others = _foreign_lines(result.stderr, "prnet-export")
    assert all(line.startswith("export:") for line in others), result.stderr  # the export's progress bar



@pytest.mark.slow
def test_installed_build_train_evaluate_chain_is_quiet_and_logs_nme_in_percent(tmp_path, samples_dir, shared_dir,
                                                                               assets_dir):
    env = {"TF_CPP_MIN_LOG_LEVEL": None}
    data = run_cli("prnet-build-data", "--dataset=prnet_synthetic/tiny", f"--data_dir={tmp_path / 'tfds'}",
                   f"--assets_dir={assets_dir}", env=env, timeout=600)
    assert data.returncode == 0, data.stderr
    assert _foreign_lines(data.stderr, "prnet-build-data") == [], data.stderr  # TFDS bars: terminals only
    run = tmp_path / "run"
    train = run_cli("prnet-train", "--dataset=prnet_synthetic/tiny", f"--data_dir={tmp_path / 'tfds'}",
                    f"--assets_dir={assets_dir}", f"--output_dir={run}", "--model_size=4", "--batch_size=4",
                    "--epochs=1", "--steps_per_epoch=2", "--noprogress", "--image_summaries=0", env=env, timeout=600)
    assert train.returncode == 0, train.stderr
    assert _foreign_lines(train.stderr, "prnet-train") == [], train.stderr  # no TFDS / checkpoint / TF lines
    assert "strategy default with 1 replica(s)" in train.stdout, train.stdout  # not tf's private class name
    match = re.search(r"validation nme_2d=(\d+\.\d\d)%, nme_3d=(\d+\.\d\d)%", train.stdout)
    assert match and 1.0 < float(match.group(1)) < 1000.0, train.stdout  # percent (a fraction reads 0.xx)
    evaluate = run_cli("prnet-evaluate", f"--weights={run / 'final.weights.h5'}", "--noprogress",
                       f"--dataset_dir={samples_dir / 'aflw2000-3d'}", f"--assets_dir={assets_dir}",
                       f"--gt_dir={shared_dir / 'reference' / 'aflw2000-3d-3ddfa'}",
                       f"--output_dir={tmp_path / 'eval'}", env=env, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr
    assert _foreign_lines(evaluate.stderr, "prnet-evaluate") == [], evaluate.stderr
    assert "NME (%)" in evaluate.stdout and (tmp_path / "eval" / "results.json").is_file()
