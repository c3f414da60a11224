"""``prnet-prepare-bfm``: make ``BFM.mat``, ``BFM_info.mat`` and ``BFM_UV.mat`` without MATLAB.

A Python replacement of face3d's ``examples/Data/BFM/generate.m`` (quirks included; see
:mod:`prnet.data.bfm_prepare` and docs/datasets.md). ``--raw_dir`` holds the downloads in face3d's
layout (``raw/01_MorphableModel.mat``, ``3ddfa/*.mat``, ``stn/BFM_UV.mat``) or all in one folder.

Examples::

    prnet-prepare-bfm --raw_dir ~/bfm-downloads --output_dir ~/prnet-manual/BFM
    tfds build tfds_builders/prnet_300w_lp --manual_dir ~/prnet-manual --config default

Exit status: 0 written; 2 usage or setup error (a missing input file, a wrong variable or shape --
the message names the file and the variable -- or outputs that exist without --overwrite): one line
on stderr, nothing written; 130 interrupted (nothing written).
"""

from absl import flags

from prnet.cli import common

common.define_output_dir_flag(help="Folder to write BFM.mat, BFM_info.mat, BFM_UV.mat (and pncc_code.mat) into; "
                                   "the builders read them from <manual_dir> or <manual_dir>/BFM. Required.")
common.define_flag(
    flags.DEFINE_string, "raw_dir", None,
    "Folder with the downloads: 01_MorphableModel.mat (Basel Face Model 2009), 3DDFA's model_info.mat, "
    "Model_Expression.mat, Model_tri_mouth.mat, Model_face_contour_trimed.mat, Modelplus_nose_hole.mat, "
    "Modelplus_parallel.mat (and pncc_code.mat / vertex_code.mat if you have them), 3DMMasSTN's BFM_UV.mat; in "
    "face3d's raw/, 3ddfa/, stn/ subfolders or directly in the folder. MATLAB v5 or v7.3 files. Required.")
common.define_flag(flags.DEFINE_bool, "overwrite", False, "Replace existing output files (otherwise an existing output "
                   "stops the run).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])} (see --help)")
    if not FLAGS.raw_dir or not FLAGS.output_dir:
        common.fail("--raw_dir DIR and --output_dir DIR are required (see --help)")
    from prnet.data.bfm_prepare import prepare_bfm

    common.say(f"reading and checking the inputs in {FLAGS.raw_dir} ...")
    try:
        done = prepare_bfm(FLAGS.raw_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite)
    except OSError as e:
        common.fail(f"{FLAGS.output_dir}: cannot write ({e.strerror or e})")
    for path in done.files.values():
        print(f"wrote {path}")
    print(f"BFM trimmed from {done.n_full} to {done.n_trim} vertices; {done.n_tri} triangles, "
          f"{done.n_tri_mouth} mouth triangles" + ("" if done.pncc_source else "; no pncc_code.mat / "
                                                   "vertex_code.mat found (not needed by the builders)"))
    return 0


def run():
    """Console entry point ``prnet-prepare-bfm``."""
    common.run_tool("prnet-prepare-bfm", main, interrupted="nothing was written")


if __name__ == "__main__":
    run()
