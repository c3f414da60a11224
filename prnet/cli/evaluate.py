"""prnet-evaluate (or ``python evaluate.py``): evaluate a PRNet model on AFLW2000-3D with the paper's
protocol (tables, JSON, CSV, CED plots; NME in percent of the face size).

Examples:

  # official weights (converted on first use), the dataset folder as distributed (jpg + mat):
  prnet-evaluate --dataset_dir AFLW2000 --gt_dir 3ddfa_test_configs --output_dir eval/official

  # any trained model (prnet-train's final.weights.h5, SavedModel dir, .tflite, TF1 checkpoint prefix):
  prnet-evaluate --weights runs/x/final.weights.h5 --dataset prnet_aflw2000_3d \\
      --data_dir ~/tensorflow_datasets --output_dir eval/x

  # pipeline smoke test on a few images, untrained network (numbers are meaningless):
  prnet-evaluate --smoke_test_random_weights --dataset_dir ../shared/samples/aflw2000-3d \\
      --output_dir /tmp/eval

Writes ``results.json``, ``results.csv``, ``ced.png`` and ``table.txt`` to ``--output_dir`` and
prints the table. See :mod:`prnet.evaluation.protocol` and :mod:`prnet.evaluation.metrics` for the protocol.

Checked before any image is processed: the flags, that ``--output_dir`` can be written, the
ground truth (every ``.mat``; with ``--gt_dir`` each image's row of the 3DDFA arrays, whose rows
must agree with each other), the UV template and the weights. Each output file is written
atomically (``results.json`` last: its presence means a complete set) with the usual permissions
(``0o644`` under umask 022).

Images of --dataset_dir without a .mat beside them cannot be scored: they are left out, counted and
named (a warning, the table's header, ``results.json`` ``data.images_without_mat``). The official
weights are called official (``"official": true``) only when the cache's converted file carries its
conversion stamp (prnet-convert writes it); otherwise "weights at PATH (not verified as the official
conversion)". A folder named like an output (``results.json``, ...) is refused before any work, never replaced.

Exit status: 0 done; 2 usage or setup error (flags, output folder, dataset, ground truth, weights,
UV template; also a write failure such as a full disk); 1 an image failed during the run (e.g.
unreadable); 130 interrupted (Ctrl-C). Errors are one line on stderr; nothing is reported as done.
"""

import os
from pathlib import Path

from absl import flags

from prnet.cli import common, import_tensorflow_quietly  # first: sets TensorFlow's log level before it loads

FLAGS = flags.FLAGS

common.define_weights_flags()
flags.DEFINE_string("dataset_dir", None,
                    "Folder in the original AFLW2000 layout: imageNNNNN.jpg + imageNNNNN.mat (searched "
                    "recursively). Ground truth: each .mat's pt3d_68 and Pose_Para. Or, instead, --dataset: a "
                    "prepared TFDS dataset (prnet_aflw2000_3d or prnet_aflw2000_3d/posmap; full photos with "
                    "image-pixel landmarks are cropped like --dataset_dir, --crop applies, and the posmap config "
                    "adds dense metrics; a dataset of bare crops is scored on its own crops).")
common.define_dataset_flags(tfds_name=True)
flags.DEFINE_string("split", "test", "TFDS split for --dataset.")
flags.DEFINE_enum("crop", "gt", ["gt", "detector"],
                  "How faces are cropped (--dataset_dir only): 'gt' = the paper's protocol, a square of 1.6x "
                  "the mean side of the pt3d_68 x,y bounding box; 'detector' = the face detector "
                  "(--detector) with the original box rule (falls back to 'gt' when it finds no face).")
common.define_detection_flags(annotations=False)
flags.DEFINE_string("detector_model", None, "Model file of the dlib_cnn detector (mmod_human_face_detector.dat).")
flags.DEFINE_string("gt_dir", None,
                    "Folder with 3DDFA's AFLW2000-3D arrays (AFLW2000-3D.pts68.npy, AFLW2000-3D.pose.npy, "
                    "optionally AFLW2000-3D-Reannotated.pts68.npy). Images are matched to rows by their "
                    "pt3d_68 values; adds the re-annotated table when that file is there.")
flags.DEFINE_string("reannotated", None,
                    "Path of AFLW2000-3D-Reannotated.pts68.npy (3DDFA's re-annotated 68 landmarks) for the "
                    "second table; AFLW2000-3D.pts68.npy must be in --gt_dir or beside this file.")
flags.DEFINE_string("bfm", None,
                    "face3d's BFM.mat: with --bfm_uv, dense ground truth from the fits for --dataset_dir "
                    "(adds dense 2D/3D and 3D reconstruction NMEs).")
flags.DEFINE_string("bfm_uv", None, "face3d's BFM_UV.mat (UV coordinates of the 53,215 BFM vertices), with --bfm.")
common.define_assets_flags()
common.define_output_dir_flag(help="Where results.json, results.csv, ced.png and table.txt are written (created if "
                              "missing). Required.")
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images (sorted by file name / dataset order).",
                     lower_bound=1)
common.define_flag(flags.DEFINE_integer, "batch_size", 8, "Face crops per network call.", lower_bound=1)
common.define_flag(flags.DEFINE_bool, "progress", True, "Show a progress bar (on stderr).")


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.output_dir is None:
        common.fail("--output_dir is required")
    if (FLAGS.dataset_dir is None) == (FLAGS.dataset is None):
        common.fail("give exactly one of --dataset_dir (jpg + mat folder) or --dataset (a TFDS dataset)")
    if FLAGS.smoke_test_random_weights and FLAGS.weights:
        common.fail("--smoke_test_random_weights cannot be combined with --weights")
    if (FLAGS.bfm is None) != (FLAGS.bfm_uv is None):
        common.fail("--bfm and --bfm_uv go together")
    import_tensorflow_quietly("tfds_builders")  # no start-up banners; registers the builders for --dataset
    from prnet.core.files import remove_empty_folders
    from prnet.errors import ImageReadError, PRNetError
    from prnet.evaluation.protocol import EvalConfig, evaluate
    from prnet.weights.official import ensure_run_files

    try:  # every missing cached file (official weights, UV template) in one message, before any work
        ensure_run_files(weights=FLAGS.weights is None and not FLAGS.smoke_test_random_weights,
                         template=FLAGS.assets_dir is None, download=FLAGS.download)
    except PRNetError as e:
        common.fail(e)
    out = Path(FLAGS.output_dir).expanduser().absolute()
    created = [p for p in (out, *out.parents) if not os.path.lexists(p)]  # removed again if left empty
    config = EvalConfig(
        weights=FLAGS.weights, random_weights=FLAGS.smoke_test_random_weights, precision=FLAGS.precision,
        backend=FLAGS.backend,
        dataset_dir=FLAGS.dataset_dir, tfds_name=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
        crop=FLAGS.crop, detector=FLAGS.detector, detector_model=FLAGS.detector_model, refine=FLAGS.refine,
        gt_dir=FLAGS.gt_dir, reannotated=FLAGS.reannotated, bfm=FLAGS.bfm, bfm_uv=FLAGS.bfm_uv,
        assets_dir=FLAGS.assets_dir, output_dir=FLAGS.output_dir, max_images=FLAGS.max_images,
        batch_size=FLAGS.batch_size, progress=FLAGS.progress)
    try:
        results = evaluate(config)
    except ImageReadError as e:  # an input of the run
        common.fail(e, common.EXIT_PARTIAL)
    except (PRNetError, ValueError, OSError) as e:  # setup: flags, folders, data, weights, template
        common.fail(e)
    finally:
        remove_empty_folders(created)
    print(results["table"])
    print(f"Wrote {', '.join(str(p) for p in results['outputs'].values())}")
    return 0


def run(prog_name: str = None):
    """Console entry point ``prnet-evaluate`` (and ``python evaluate.py``)."""
    common.run_tool("prnet-evaluate", main, prog_name, interrupted="the run is incomplete: no new results.json "
                    "was written (it is written last, after the other files)")


if __name__ == "__main__":
    run()
