"""Command-line tools (absl apps). Library code never imports from here.

Every tool runs through :func:`prnet.cli.common.run_tool` (flags shared by several tools are
defined once in :mod:`prnet.cli.common`). Quiet start-up: unless the user has set
``TF_CPP_MIN_LOG_LEVEL``, importing this package sets it to ``2`` (C++ log: errors only); TensorFlow
is loaded only once a run needs it (so ``--help`` and flag errors never load it), through
:func:`import_tensorflow_quietly`, which drops the start-up banners (:data:`STARTUP_BANNERS`) that
TensorFlow 2.21 prints whatever that level (they are logged before it applies: oneDNN, CUDA
drivers, CPU features). During a run, :func:`filtered_stderr` also drops the native lines of
:data:`NOISE` (TFLite's XNNPACK note, the TFLite quantiser's settings). ``--verbosity`` (absl's
flag) or ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) shows everything.
"""

import importlib
import os
import re
import select
import sys
import tempfile
import threading
from contextlib import contextmanager

#: Start-up lines that say nothing the user can act on: TensorFlow's C++ runtime (oneDNN, CUDA
#: drivers, CPU features) and Apache Beam's notes on its missing Google Cloud clients (Beam is
#: imported with the project's TFDS builders; the tools never use BigQuery).
STARTUP_BANNERS = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|"
    r"cudart_stub\.cc|cuda_platform\.cc:\d+\] failed call to cuInit|cpu_feature_guard\.cc|"
    r"^To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags|"
    r"apitools not found, and bigquery client libraries are not available|"
    r"the ReadFromBigQuery transform \*CANNOT\* be used")

#: Native (C++) lines printed during a run that say nothing the user can act on: the start-up
#: banners, TFLite's note on its default CPU delegate (every interpreter) and the TFLite
#: quantiser's settings (every converted model).
NOISE = re.compile(STARTUP_BANNERS.pattern + r"|Created TensorFlow Lite XNNPACK delegate for CPU|"
                   r"^fully_quantize: \d+, inference_type: \d+")

#: ``TF_CPP_MIN_LOG_LEVEL`` as the user set it (None: not set; the tools then use 2).
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _show_native_logs() -> bool:
    """True where ``TF_CPP_MIN_LOG_LEVEL`` asks for INFO or WARNING lines (the user, or ``--verbosity``)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() in ("0", "1")


def import_tensorflow_quietly(*modules: str):
    """Import TensorFlow (and probe its devices, which logs too), then the ``modules`` named (e.g.
    ``"tfds_builders"``), with the :data:`STARTUP_BANNERS` lines removed from stderr (file
    descriptor 2, where the C++ runtime writes); any other line is passed on, after the imports.
    Returns the ``tensorflow`` module. No filter when all of them are loaded already or the user
    (or ``--verbosity``) set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1."""
    names = ("tensorflow", *modules)
    if _show_native_logs() or all(name in sys.modules for name in names):
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


@contextmanager
def filtered_stderr(pattern=NOISE, wait_s: float = 0.2):
    """Pass everything written to file descriptor 2 (Python's ``sys.stderr``, TensorFlow's C++ log,
    TFLite) on to the real stderr, except the lines matching ``pattern``, while the block runs.

    A thread reads a pipe in fd 2's place and forwards whole lines; a partial line is forwarded
    after ``wait_s`` seconds without more output, and a progress-bar redraw (a ``\\r`` in it) at
    once. On exit fd 2 is restored and what is left in the pipe is forwarded."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward(data: bytes):
        lines = data.split(b"\n")
        kept = [line for line in lines[:-1] if not pattern.search(line.decode("utf-8", "replace"))]
        out = b"".join(line + b"\n" for line in kept) + lines[-1]
        try:
            while out:
                out = out[os.write(saved, out):]
        except OSError:  # the real stderr is gone: keep draining the pipe so that writers never block
            pass

    def pump():
        pending = b""
        while True:
            if pending and not select.select([read_end], [], [], wait_s)[0]:
                forward(pending)  # a partial line that waited: pass it on
                pending = b""
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            pending += chunk
            cut = len(pending) if b"\r" in pending else pending.rfind(b"\n") + 1
            if cut:
                forward(pending[:cut])
                pending = pending[cut:]
        if pending:
            forward(pending)

    thread = threading.Thread(target=pump, name="prnet-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end: the thread reads the rest, then EOF
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child process still holds the pipe: leave both ends to it
            os.close(read_end)
            os.close(saved)
