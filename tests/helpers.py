"""Small helpers shared by several test modules (import as ``from helpers import ...``)."""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Seconds a test's subprocess may run before it counts as hung. A guard against hangs only, never a speed
#: claim: the suite must pass on a slow or busy machine (a training run that fit a 900 s limit on an AVX-512
#: CPU outgrew it on an AVX2-only one). ``PRNET_TEST_HANG_GUARD_S`` overrides it.
HANG_GUARD_S = float(os.environ.get("PRNET_TEST_HANG_GUARD_S", 3600))

#: Node id of the running test when it is NOT marked ``slow`` (set by conftest's ``pytest_runtest_setup``),
#: else ``None``. The fast lane (``pytest -m "not slow"``) starts no TensorFlow subprocess: a subprocess that
#: such a test starts through :func:`run_cli` / :func:`cli_command` runs with ``tests/fastlane`` first on
#: ``PYTHONPATH``, whose ``sitecustomize`` makes ``import tensorflow`` fail, and :func:`run_cli` fails the
#: test when the child tried.
FAST_TEST = None
_FASTLANE = Path(__file__).resolve().parent / "fastlane"


def run_cli(target, *args, env=None, timeout=None, cwd=REPO) -> subprocess.CompletedProcess:
    """Run a command line tool in a fresh process, as a user would; output captured as text.

    ``target``: a script path (``Path`` or ``'*.py'``: ``python script``), a dotted module name
    (``'prnet.cli.demo'``: ``python -m``), a list of interpreter arguments (``['-c', code]``), or a
    console command on ``PATH`` (``'prnet-demo'``, ``'saved_model_cli'``). ``args`` follow it
    (converted with ``str``). The child gets ``os.environ`` plus ``TF_CPP_MIN_LOG_LEVEL=2`` and the
    repository first on ``PYTHONPATH``; ``env`` entries override (a ``None`` value removes the
    variable). ``timeout`` in seconds, :data:`HANG_GUARD_S` by default; ``cwd`` defaults to the repository
    root.
    """
    cmd, child_env = cli_command(target, *args, env=env)
    marker = child_env.get("PRNET_TEST_TF_MARKER")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env,
                              timeout=HANG_GUARD_S if timeout is None else timeout, cwd=str(cwd))
        if marker and os.path.exists(marker):
            raise RuntimeError(f"{child_env['PRNET_TEST_NO_TENSORFLOW']} is not marked slow but its subprocess "
                               f"imported TensorFlow ({' '.join(cmd[:3])} ...): add @pytest.mark.slow\n"
                               f"child stderr: {done.stderr[-2000:]}")
        return done
    finally:
        if marker and os.path.exists(marker):
            os.remove(marker)


def cli_command(target, *args, env=None, background=False) -> tuple[list, dict]:
    """``(argv, environment)`` of :func:`run_cli`'s child, for callers that start it themselves
    (``subprocess.Popen``): same ``target``, ``args`` and ``env`` rules. From a test not marked ``slow``
    the child may not import TensorFlow (see :data:`FAST_TEST`); ``background=True`` lifts that (a
    session-wide background run, not started by the current test)."""
    if isinstance(target, (list, tuple)):
        cmd = [sys.executable, *map(str, target)]
    elif isinstance(target, Path) or str(target).endswith(".py"):
        cmd = [sys.executable, str(target)]
    elif "." in target and all(part.isidentifier() for part in target.split(".")):
        cmd = [sys.executable, "-m", target]
    else:
        exe = shutil.which(target)
        if exe is None:
            raise FileNotFoundError(f"{target}: not on PATH (is the project installed: pip install -e .?)")
        cmd = [exe]
    fast = FAST_TEST is not None and not background
    path = [str(_FASTLANE)] if fast else []
    child_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                     PYTHONPATH=os.pathsep.join(p for p in (*path, str(REPO), os.environ.get("PYTHONPATH")) if p))
    if fast:
        child_env["PRNET_TEST_NO_TENSORFLOW"] = FAST_TEST
        child_env["PRNET_TEST_TF_MARKER"] = os.path.join(
            tempfile.gettempdir(), f"prnet-test-tf-{os.getpid()}-{uuid.uuid4().hex}")
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = str(value)
    return [*cmd, *map(str, args)], child_env
