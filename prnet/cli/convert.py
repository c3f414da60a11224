"""``prnet-convert``: turn the official PRNet TF1 checkpoint into Keras weights, or fetch it.

Examples::

    prnet-convert --download                       # fetch weights + UV template, convert into the cache
    prnet-convert --checkpoint Data/net-data/256_256_resfcn256_weight --output prnet.weights.h5
    prnet-convert --verify                         # checksum report of the cached files

Exit status: 0 done; 1 --verify found a file missing or mismatched; 2 usage or setup error (flags,
a checkpoint that cannot be converted, a failed or mismatched download, an output that cannot be
written): one line on stderr, and no partial output file is left; 130 interrupted.
"""

from pathlib import Path

from absl import flags

from prnet.cli import common, import_tensorflow_quietly
from prnet.errors import PRNetError, WeightsFormatError

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "checkpoint", None,
    "Official TF1 checkpoint to convert: the prefix '.../256_256_resfcn256_weight' (or its .index / "
    ".data-00000-of-00001 file). Both the .index and the .data file must be present.")
common.define_output_flag(help="Keras weights file to write (must end with '.weights.h5'). Default: the cache, "
                               "$PRNET_CACHE_DIR/resfcn256.weights.h5 or ~/.cache/prnet/resfcn256.weights.h5, where "
                               "prnet-demo and the Python API find the official weights.")
common.define_download_flag(default=False)
flags.DEFINE_bool(
    "verify", False,
    "Print a checksum report (SHA-256 against the pinned values) of the official checkpoint "
    "files (those of --checkpoint if given, else the cached ones) and of the cached UV template; "
    "exit 1 when a file is missing or does not match.")
flags.DEFINE_bool("force", False, "Overwrite an existing --output file (otherwise an existing output is kept and "
                  "reported).")


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
    missing = [r for r in results if r.status == "missing"]
    print(f"{sum(r.status == 'ok' for r in results)} ok, {len(missing)} missing, {len(bad)} mismatched")
    if bad or missing:
        common.say(f"{len(missing)} file(s) missing, {len(bad)} mismatched (prnet-convert --download fetches "
                   "and checks the official files)")
        return common.EXIT_PARTIAL
    return common.EXIT_OK


def execute(flag_values=FLAGS) -> int:
    """Run the tool with parsed flags; returns the exit status."""
    fv = flag_values
    if not (fv.checkpoint or fv.download or fv.verify):
        common.fail("give --checkpoint PREFIX, --download or --verify (see --help)")
    if fv.checkpoint and fv.download:
        common.fail("--checkpoint and --download are exclusive")
    import_tensorflow_quietly()  # the weights stage imports TensorFlow: not at --help time, no banners
    from prnet.weights import official
    from prnet.weights.convert import checkpoint_prefix, convert_checkpoint
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
                if fv.download or official.checkpoint_is_official(checkpoint_prefix(prefix)):
                    # the official checkpoint (verified): stamped, so the tools call the result official
                    print(f"wrote {official.convert_official(checkpoint_prefix(prefix), output)} (the official "
                          f"weights; stamp {official.stamp_path(output).name})")
                else:
                    print(f"wrote {convert_checkpoint(prefix, output)}")
        if fv.verify:
            return _verify(fv.checkpoint)
    except (PRNetError, OSError) as e:  # OSError: e.g. the output folder is not writable
        common.fail(e)
    return 0


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    return execute(FLAGS)


def run():
    """Console entry point ``prnet-convert``."""
    common.run_tool("prnet-convert", main, interrupted="no partial output file was left")


if __name__ == "__main__":
    run()
