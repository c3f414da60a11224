"""Loaded as ``sitecustomize`` by the subprocesses of fast-lane tests (``helpers.cli_command`` puts this
folder first on ``PYTHONPATH`` for a test not marked ``slow``).

The edit loop ``pytest -m "not slow"`` may start a Python subprocess that stays light (``--help``, a flag
error), never one that starts TensorFlow (seconds of CPU each). Here importing ``tensorflow`` fails with
an ImportError naming the test, and the attempt is recorded in the file ``PRNET_TEST_TF_MARKER``, which
``helpers.run_cli`` checks after the child ends, so the test fails even when the child handles the error.
"""

import os
import sys

_TEST = os.environ.get("PRNET_TEST_NO_TENSORFLOW")


class _NoTensorFlow:
    """A meta path finder that refuses ``tensorflow`` (and so keras, tfds, tflite)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            marker = os.environ.get("PRNET_TEST_TF_MARKER")
            if marker:
                with open(marker, "a") as f:
                    f.write(f"{name}\n")
            raise ImportError(f"{_TEST} is not marked slow but its subprocess imports {name}: "
                              "add @pytest.mark.slow to the test")
        return None


if _TEST:
    sys.meta_path.insert(0, _NoTensorFlow())
