"""Every float flag of every tool is finite and in range before any work (issue 20, battery rows 6, 14, 15).

absl's bounds let NaN through (comparisons with NaN are false) and ``lower_bound`` alone lets infinity
through: ``prnet-demo --video --fps inf`` hung in OpenCV's writer, ``--fps nan`` and ``train.py
--weight_decay=nan`` gave tracebacks. :func:`prnet.cli.common.check_float_flags` checks them all, once,
in the CLI skeleton. Flag errors load no TensorFlow, so these subprocesses are fast.
"""

import json

import pytest
from absl import flags

from prnet.cli import common
from prnet.cli.common import ToolError, check_float_flags, float_range

from helpers import REPO, run_cli


def _values(**defs):
    fv = flags.FlagValues()
    for name, (default, kwargs) in defs.items():
        flags.DEFINE_float(name, default, "", flag_values=fv, **kwargs)
    fv(["prog"])
    return fv


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_whatever_the_bounds(value):
    fv = _values(free=(1.0, {}), low_only=(1.0, {"lower_bound": 0.01}),
                 bounded=(1.0, {"lower_bound": 0.0, "upper_bound": 2.0}))
    check_float_flags(fv)  # finite and in range: fine
    for name in ("free", "low_only", "bounded"):
        fv[name].value = value  # as absl leaves it: its bounds let NaN (and +inf above a lower bound) through
        with pytest.raises(ToolError, match=f"--{name}={value}: not a finite number") as err:
            check_float_flags(fv)
        assert err.value.code == 2
        fv[name].value = 1.5
    check_float_flags(fv)


def test_open_ranges_of_the_registry():
    fv = _values(momentum_x=(0.5, {}))
    float_range("momentum_x", 0.0, 1.0, high_open=True)
    try:
        for ok in ("0", "0.99"):
            fv["momentum_x"].parse(ok)
            check_float_flags(fv)
        for bad in ("1", "-0.1", "nan"):
            fv["momentum_x"].parse(bad)
            with pytest.raises(ToolError, match=r"--momentum_x=.*give a number >= 0 and < 1"):
                check_float_flags(fv)
    finally:
        common.FLOAT_RANGES.pop("momentum_x")


_EVERY_FLOAT_CODE = r"""
import importlib, json
from absl import flags
from prnet.cli.common import TOOLS, ToolError, check_float_flags
for module in TOOLS.values():
    importlib.import_module(module)
flags.FLAGS.mark_as_parsed()
F = flags.FLAGS
names = sorted(n for n in set(F) if F[n].name == n and isinstance(F[n].parser, flags.FloatParser))
refused = []
for name in names:
    old, flags.FLAGS[name].value = flags.FLAGS[name].value, float("nan")
    try:
        check_float_flags()
    except ToolError as e:
        refused.append(name if f"--{name}=nan" in str(e) else f"{name}: {e}")
    flags.FLAGS[name].value = old
print(json.dumps({"floats": names, "refused": refused}))
"""


@pytest.mark.slow  # a subprocess (all tool modules imported together; no TensorFlow)
def test_every_float_flag_of_every_tool_is_checked():
    """No tool defines a float flag the check skips: each one, set to NaN, is refused by name."""
    proc = run_cli(["-c", _EVERY_FLOAT_CODE], timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"fps", "weight_decay", "max_rotation", "bn_momentum"} <= set(result["floats"])
    assert result["refused"] == result["floats"]


@pytest.mark.slow  # seven tool subprocesses (flag errors: no TensorFlow, about a second each)
def test_the_batterys_flags_exit_2_with_one_line(tmp_path):
    cases = [("prnet.cli.demo", "--video", "--input", "frames", "--fps", "inf"),
             ("prnet.cli.demo", "--video", "--input", "frames", "--fps", "nan"),
             ("prnet.cli.demo", "--video", "--input", "frames", "--fps", "1e5"),
             (REPO / "train.py", "--weight_decay=nan"),
             (REPO / "train.py", "--max_rotation=nan"),
             (REPO / "train.py", "--max_translation=nan"),
             (REPO / "train.py", "--bn_momentum=nan")]
    for target, *rest in cases:
        proc = run_cli(target, *rest, cwd=tmp_path, timeout=300)
        flag = "--fps" if "--fps" in rest else rest[-1].split("=")[0]
        assert proc.returncode == 2, (rest, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and ": error: " in lines[0] and f"{flag}=" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())  # nothing written
