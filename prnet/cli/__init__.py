"""Command-line tools (absl apps). Library code never imports from here.

Quiet start-up: unless the user has set ``TF_CPP_MIN_LOG_LEVEL``, the CLIs (the console scripts
and ``train.py`` / ``evaluate.py`` / ``export.py``, which import this package before anything
else) set it to ``2`` (C++ log: errors only) and load TensorFlow through
:func:`import_tensorflow_quietly`, which drops the start-up banners (:data:`STARTUP_BANNERS`) that
TensorFlow 2.21 prints whatever that level (they are logged before it applies: oneDNN, CUDA
drivers, CPU features). ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) shows everything. TensorFlow is loaded
only once a run needs it, so ``--help`` and flag errors never load it.
"""

import importlib
import os
import re
import sys
import tempfile

from absl import app, flags

#: Start-up lines that say nothing the user can act on: TensorFlow's C++ runtime (oneDNN, CUDA
#: drivers, CPU features) and Apache Beam's notes on its missing Google Cloud clients (Beam is
#: imported with the project's TFDS builders; the tools never use BigQuery).
STARTUP_BANNERS = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|"
    r"cudart_stub\.cc|cuda_platform\.cc:\d+\] failed call to cuInit|cpu_feature_guard\.cc|"
    r"^To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags|"
    r"apitools not found, and bigquery client libraries are not available|"
    r"the ReadFromBigQuery transform \*CANNOT\* be used")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHOW_BANNERS = os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() in ("0", "1")  # the user asked for INFO lines


def import_tensorflow_quietly(*modules: str):
    """Import TensorFlow (and probe its devices, which logs too), then the ``modules`` named (e.g.
    ``"tfds_builders"``), with the :data:`STARTUP_BANNERS` lines removed from stderr (file
    descriptor 2, where the C++ runtime writes); any other line is passed on, after the imports.
    Returns the ``tensorflow`` module. No filter when all of them are loaded already or the user
    set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1."""
    names = ("tensorflow", *modules)
    if _SHOW_BANNERS or all(name in sys.modules for name in names):
        for name in names:
            importlib.import_module(name)
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
            for name in modules:
                importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not STARTUP_BANNERS.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return tf


def run_console_app(main, module_name: str, doc: str = None, flag_names=None):
    """``app.run(main)`` for a console-script entry point, with a complete ``--help``.

    absl's ``--help`` prints the main module's docstring and lists the flags of the module named
    by ``sys.argv[0]``; under a console-script wrapper that is the wrapper, so this declares the
    CLI module's flags (or ``flag_names``) as key flags of the wrapper and lends it ``doc``.
    """
    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not (main_module.__doc__ or "").strip():
        main_module.__doc__ = doc
    fv = flags.FLAGS
    owned = ([fv[name] for name in flag_names] if flag_names is not None
             else fv.get_key_flags_for_module(module_name))
    for flag in owned:
        fv.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
