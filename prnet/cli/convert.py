"""``prnet-convert``: turn the official PRNet TF1 checkpoint into Keras weights, or fetch it.

Examples::

    prnet-convert --download                       # fetch weights + UV template, convert into the cache
    prnet-convert --checkpoint Data/net-data/256_256_resfcn256_weight --output prnet.weights.h5
    prnet-convert --verify                         # checksum report of the cached files

Errors print one line on stderr and exit with status 1; no partial output file is left.
"""

import sys
from pathlib import Path

from absl import app, flags

from prnet.cli import import_tensorflow_quietly, run_console_app
from prnet.errors import PRNetError, WeightsFormatError

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Define this tool's flags (called by :func:`run`, not at import: other CLIs may share names)."""
    flags.DEFINE_string(
        "checkpoint", None,
        "Official TF1 checkpoint to convert: the prefix '.../256_256_resfcn256_weight' (or its .index / "
        ".data-00000-of-00001 file). Both the .index and the .data file must be present.",
        flag_values=flag_values)
    flags.DEFINE_string(
        "output", None,
        "Keras weights file to write (must end with '.weights.h5'). Default: the cache, "
        "$PRNET_CACHE_DIR/resfcn256.weights.h5 or ~/.cache/prnet/resfcn256.weights.h5, where "
        "prnet-demo and the Python API find the official weights.",
        flag_values=flag_values)
    flags.DEFINE_bool(
        "download", False,
        "Download the official checkpoint (authors' Google Drive release + index from the PRNet GitHub "
        "repository) and the UV template into the cache, verify their SHA-256, and convert. Resumes "
        "interrupted downloads. Mirrors: PRNET_WEIGHTS_BASE_URL, PRNET_UV_BASE_URL.",
        flag_values=flag_values)
    flags.DEFINE_bool(
        "verify", False,
        "Print a checksum report (SHA-256 against the pinned values) of the official checkpoint "
        "files (those of --checkpoint if given, else the cached ones) and of the cached UV template.",
        flag_values=flag_values)
    flags.DEFINE_bool(
        "force", False,
        "Overwrite an existing --output file (otherwise an existing output is kept and reported).",
        flag_values=flag_values)


def _fail(message: str) -> int:
    first, *rest = str(message).splitlines() or [""]
    print(f"prnet-convert: error: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)
    return 1


def _verify(checkpoint) -> int:
    from prnet.weights import official
    from prnet.weights.convert import checkpoint_prefix

    folder = checkpoint_prefix(checkpoint).parent if checkpoint else None
    results = official.verify_files(checkpoint_folder=folder)
    for r in results:
        line = f"{r.status:8s} {r.name}  {r.path}"
        if r.status == "MISMATCH":
            line += f"\n         sha256 {r.actual_sha256}\n         expected {r.expected_sha256}"
        print(line)
    bad = [r for r in results if r.status == "MISMATCH"]
    print(f"{sum(r.status == 'ok' for r in results)} ok, {sum(r.status == 'missing' for r in results)} missing, "
          f"{len(bad)} mismatched")
    return 1 if bad else 0


def execute(flag_values=FLAGS) -> int:
    """Run the tool with parsed flags; returns the exit status."""
    fv = flag_values
    if not (fv.checkpoint or fv.download or fv.verify):
        raise app.UsageError("give --checkpoint PREFIX, --download or --verify (see --help)")
    if fv.checkpoint and fv.download:
        raise app.UsageError("--checkpoint and --download are exclusive")
    import_tensorflow_quietly()  # the weights stage imports TensorFlow: not at --help time, no banners
    from prnet.weights import official
    from prnet.weights.convert import convert_checkpoint
    from prnet.weights.formats import check_keras_weights_file

    try:
        if fv.download:
            print(f"UV template: {official.ensure_uv_template(download=True)}")
        if fv.checkpoint or fv.download:
            output = Path(fv.output).expanduser() if fv.output else official.weights_path()
            damaged = None
            if output.exists() and not fv.force:
                try:
                    check_keras_weights_file(output)
                except WeightsFormatError as e:
                    damaged = e
            if output.exists() and not fv.force and damaged is None:
                print(f"{output} already exists; keeping it (use --force to overwrite)")
            else:
                if damaged is not None:
                    print(f"{output} is damaged ({damaged}); converting it again")
                prefix = fv.checkpoint or official.official_checkpoint(download=True)
                print(f"wrote {convert_checkpoint(prefix, output)}")
        if fv.verify:
            return _verify(fv.checkpoint)
    except (PRNetError, OSError) as e:  # OSError: e.g. the output folder is not writable
        return _fail(e)
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    return execute(FLAGS)


FLAG_NAMES = ("checkpoint", "output", "download", "verify", "force")


def run():
    """Console entry point ``prnet-convert``."""
    define_flags(FLAGS)
    run_console_app(main, __name__, __doc__, FLAG_NAMES)


if __name__ == "__main__":
    run()
