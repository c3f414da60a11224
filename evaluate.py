"""Evaluate a PRNet model on AFLW2000-3D with the paper's protocol (tables, JSON, CSV, CED plots).

Examples:

  # official weights (converted on first use), the dataset folder as distributed (jpg + mat):
  python evaluate.py --dataset_dir AFLW2000 --gt_dir 3ddfa_test_configs --output_dir eval/official

  # any trained model (Keras .weights.h5, SavedModel dir, .tflite, TF1 checkpoint prefix):
  python evaluate.py --weights runs/x/best.weights.h5 --tfds_name prnet_aflw2000_3d \\
      --data_dir ~/tensorflow_datasets --output_dir eval/x

  # pipeline smoke test on a few images, untrained network (numbers are meaningless):
  python evaluate.py --smoke_test_random_weights --dataset_dir ../shared/samples/aflw2000-3d \\
      --output_dir /tmp/eval

Writes ``results.json``, ``results.csv``, ``ced.png`` and ``table.txt`` to ``--output_dir`` and
prints the table. See :mod:`prnet.evaluation.protocol` and :mod:`prnet.evaluation.metrics` for the protocol.

Checked before any image is processed: the flags, that ``--output_dir`` can be written, the
ground truth (every ``.mat``; with ``--gt_dir`` each image's row of the 3DDFA arrays, whose rows
must agree with each other), the UV template and the weights. Each output file is written
atomically (``results.json`` last: its presence means a complete set) with the usual permissions
(``0o644`` under umask 022).

Exit status: 0 done; 2 usage or setup error (flags, output folder, dataset, ground truth, weights,
UV template; also a write failure such as a full disk); 1 an image failed during the run (e.g.
unreadable); 130 interrupted (Ctrl-C). Errors are one line on stderr; nothing is reported as done.
"""

import sys

from absl import app, flags

from prnet.cli import import_tensorflow_quietly  # first: sets TensorFlow's log level before it loads
from prnet.errors import ImageReadError, PRNetError

FLAGS = flags.FLAGS

flags.DEFINE_string("weights", None,
                    "Model to evaluate, any format prnet-demo --weights takes: a Keras .weights.h5 (or .keras) "
                    "file, a SavedModel folder, a .tflite file, a training checkpoint folder or a TF2 / official "
                    "TF1 checkpoint prefix. Default: the official PRNet weights (downloaded and converted into "
                    "the cache on first use), run like prnet-demo's through their cached SavedModel export.")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "Network precision. float32: as trained. bfloat16: bf16 weights and activations (the output "
                  "layer in float32); Keras weights, checkpoints and the official weights run their bf16 graph "
                  "in-process, a SavedModel must be a bf16 export (export.py --formats=saved_model_bf16). An "
                  "exported file's own precision must match. Recorded in results.json (model.precision).")
flags.DEFINE_enum("backend", "auto", ["auto", "saved_model", "keras", "openvino"],
                  "How to run the network, as prnet-demo --backend: auto (each format in its own runtime; the "
                  "official weights through their cached SavedModel), saved_model / keras (require that runtime), "
                  "openvino (any weights in OpenVINO at --precision, set explicitly; pip install -e \".[openvino]\"). "
                  "Recorded in results.json (model.backend).")
flags.DEFINE_bool("smoke_test_random_weights", False,
                  "Use an UNTRAINED, randomly initialised network (pipeline smoke tests only; every output "
                  "is marked as meaningless). Cannot be combined with --weights.")
flags.DEFINE_string("dataset_dir", None,
                    "Folder in the original AFLW2000 layout: imageNNNNN.jpg + imageNNNNN.mat (searched "
                    "recursively). Ground truth: each .mat's pt3d_68 and Pose_Para.")
flags.DEFINE_string("tfds_name", None,
                    "Instead of --dataset_dir: a prepared TFDS dataset, e.g. prnet_aflw2000_3d or "
                    "prnet_aflw2000_3d/posmap. Its examples carry the full photo and image-pixel landmarks, so they "
                    "are cropped like --dataset_dir (--crop applies) and the posmap config adds dense metrics; a "
                    "dataset of bare crops (image + landmarks_68 only) is scored on its own crops.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --tfds_name (default: TFDS's own default).")
flags.DEFINE_string("split", "test", "TFDS split for --tfds_name.")
flags.DEFINE_enum("crop", "gt", ["gt", "detector"],
                  "How faces are cropped (--dataset_dir only): 'gt' = the paper's protocol, a square of 1.6x "
                  "the mean side of the pt3d_68 x,y bounding box; 'detector' = the face detector "
                  "(--detector) with the original box rule (falls back to 'gt' when it finds no face).")
flags.DEFINE_string("detector", "auto",
                    "Face detector for --crop=detector: auto (= blazeface when installed), blazeface, opencv, "
                    "dlib or dlib_cnn (see prnet.inference.detect).")
flags.DEFINE_bool("refine", True,
                  "With --crop=detector: landmark re-cropping as prnet-demo does it (detected faces are cropped "
                  "again by the x1.6 rule from their first-pass landmarks and run again); --norefine: one pass.")
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
flags.DEFINE_string("assets_dir", None,
                    "UV template folder (uv-data). Default: $PRNET_ASSETS_DIR, else the cache "
                    "(prnet-convert --download).")
flags.DEFINE_string("output_dir", None, "Where results.json, results.csv, ced.png and table.txt are written.")
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images (sorted by file name / dataset order).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 8, "Crops per network call.", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
    if FLAGS.output_dir is None:
        raise app.UsageError("--output_dir is required", exitcode=2)
    if (FLAGS.dataset_dir is None) == (FLAGS.tfds_name is None):
        raise app.UsageError("give exactly one of --dataset_dir (jpg + mat folder) or --tfds_name", exitcode=2)
    if FLAGS.smoke_test_random_weights and FLAGS.weights:
        raise app.UsageError("--smoke_test_random_weights cannot be combined with --weights", exitcode=2)
    if (FLAGS.bfm is None) != (FLAGS.bfm_uv is None):
        raise app.UsageError("--bfm and --bfm_uv go together", exitcode=2)
    import_tensorflow_quietly("tfds_builders")  # no start-up banners; registers the builders for --tfds_name
    from prnet.evaluation.protocol import EvalConfig, evaluate

    config = EvalConfig(
        weights=FLAGS.weights, random_weights=FLAGS.smoke_test_random_weights, precision=FLAGS.precision,
        backend=FLAGS.backend,
        dataset_dir=FLAGS.dataset_dir, tfds_name=FLAGS.tfds_name, data_dir=FLAGS.data_dir, split=FLAGS.split,
        crop=FLAGS.crop, detector=FLAGS.detector, detector_model=FLAGS.detector_model, refine=FLAGS.refine,
        gt_dir=FLAGS.gt_dir, reannotated=FLAGS.reannotated, bfm=FLAGS.bfm, bfm_uv=FLAGS.bfm_uv,
        assets_dir=FLAGS.assets_dir, output_dir=FLAGS.output_dir, max_images=FLAGS.max_images,
        batch_size=FLAGS.batch_size, progress=FLAGS.progress)
    try:
        results = evaluate(config)
    except ImageReadError as e:  # an input of the run
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 1
    except (PRNetError, ValueError, OSError) as e:  # setup: flags, folders, data, weights, template
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evaluate.py: interrupted (Ctrl-C); the run is incomplete: no new results.json was written "
              "(it is written last, after the other files)", file=sys.stderr)
        return 130
    print(results["table"])
    print(f"Wrote {', '.join(str(p) for p in results['outputs'].values())}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
