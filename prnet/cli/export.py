"""prnet-export (or ``python export.py``): export a trained PRNet (ResFCN256) for serving: a SavedModel
for TF Serving and TFLite models.

Examples:
  prnet-export --weights=runs/x/checkpoints --output_dir=exported_ckpt      # training checkpoint dir
  prnet-export --weights=resfcn256.weights.h5 --output_dir=exported_all \\
      --formats=saved_model,float32,float16,int8 --calibration=tfds:prnet_synthetic
  prnet-export --output_dir=exported_official --calibration=path/to/face/images   # official weights
  prnet-export --smoke_test_random_weights --output_dir=exported --formats=saved_model,float32
      # an UNTRAINED network, for pipeline checks: written to exported_RANDOM_WEIGHTS/

Writes ``<output_dir>/saved_model/`` (signatures ``serving_default``, ``predict_images``,
``predict_images_nobox`` and, unless ``--detector=none``, ``predict_images_detect``: image bytes in,
every face found by BlazeFace out; see :mod:`prnet.serving.saved_model`) and
``<output_dir>/prnet_<q>.tflite``; with ``--formats=...,saved_model_bf16`` also
``<output_dir>/saved_model_bf16/``: the same signatures with the network in bfloat16 (float32 in and out).

Everything is checked before anything is written (formats, the output folder, weights, calibration
data). The set is written into a hidden folder beside ``--output_dir`` and then replaces that folder
as a whole, so it holds either the previous complete set or the new one (``--overwrite`` replaces
every file of the old set; a folder holding other files is refused). Outputs get the usual
permissions (``0o644`` / ``0o755`` under umask 022), so a server under another account can read them.

With --smoke_test_random_weights the network is untrained (seed 0, --model_size, default 16): the
folder written is --output_dir with _RANDOM_WEIGHTS appended (exported -> exported_RANDOM_WEIGHTS),
as every output of a random network is marked in its name, and the run says so on stderr.
--backend is auto or keras (the weights are read into the Keras model); a bf16 export is
--formats=saved_model_bf16 (--precision stays auto or float32). ``--formats=...,onnx`` also writes
``<output_dir>/prnet.onnx`` (the TFLite files' input/output contract, dynamic batch; needs the ``[onnx]`` extra).

Exit status: 0 written; 2 usage or setup error found before writing (unknown format, output exists,
weights or calibration data missing; nothing written); 1 the export failed while writing (nothing
changed); 130 interrupted (nothing changed). Errors are one line on stderr.
"""

from pathlib import Path

from absl import flags

from prnet.cli import common, import_tensorflow_quietly  # first: sets TensorFlow's log level before it loads
from prnet.serving.limits import DEFAULT_MAX_FACES, DEFAULT_MAX_IMAGE_PIXELS, check_max_faces, check_max_image_pixels

FLAGS = flags.FLAGS
common.define_weights_flags()
common.define_model_size_flag()
common.define_output_dir_flag(help="Folder to write saved_model/ and prnet_<quantization>.tflite into (as a whole; "
                              "with --smoke_test_random_weights its name gets _RANDOM_WEIGHTS). Required.")
flags.DEFINE_list("formats", ["saved_model", "float32", "float16", "int8"],
                  "Comma-separated outputs: saved_model; saved_model_bf16 (the same SavedModel, signatures and "
                  "float32 inputs/outputs, with the network in bfloat16 and its output layer in float32: for CPUs "
                  "with bf16 units and GPUs; not written by default); float32, float16, int8 (TFLite); onnx "
                  "(prnet.onnx, opset 17, dynamic batch, the TFLite files' input/output; "
                  "pip install -e \".[onnx]\"; not written by default).")
flags.DEFINE_string("calibration", "tfds:prnet_synthetic",
                    "Representative crops for int8 calibration: tfds:NAME (a built TFDS dataset with 256x256 "
                    "'image' crops) or a folder of face photos (cropped by a sibling .pts/.mat's landmarks, "
                    "else taken whole).")
flags.DEFINE_integer("num_calibration", 100, "Number of calibration crops for int8.")
flags.DEFINE_string("check_images", None, "Optional folder of face photos: after exporting, print each output's "
                    "size and position-map error (max/mean abs crop px) against the Keras model on their face crops "
                    "(from a sibling .pts/.mat's landmarks, else the largest face the default detector finds, as "
                    "prnet-demo crops; photos without a face are left out and named).")
common.define_assets_flags()
flags.DEFINE_bool("optimize", True, "Export the BN-folded fast graph (numerically equal to the trained model); "
                  "--nooptimize exports the Keras training graph as is (saved_model_bf16 is always the BN-folded "
                  "graph).")
common.define_flag(flags.DEFINE_bool, "overwrite", False, "Replace the export set in --output_dir (as a whole: files "
                   "of the old set that are not exported again are removed too).")
flags.DEFINE_integer("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "SavedModel predict_images: the largest image "
                     "(width x height pixels) a request may send; larger ones are rejected from their header, "
                     "before decoding (INVALID_ARGUMENT).")

common.define_detection_flags(annotations=False, refine=False)
common.define_flag(flags.DEFINE_integer, "max_faces", DEFAULT_MAX_FACES, "SavedModel predict_images_detect: faces "
                   "per image returned at most (largest first; outputs are padded to this many rows).", lower_bound=1)
GRAPH_DETECTORS = {"auto": "blazeface", "blazeface": "blazeface", "none": "none"}


def _check_flags():
    """Usage errors of the flags (before TensorFlow loads)."""
    if not FLAGS.output_dir:
        common.fail("--output_dir is required")
    if FLAGS.smoke_test_random_weights and FLAGS.weights:
        common.fail("--smoke_test_random_weights cannot be combined with --weights")
    if FLAGS.backend not in ("auto", "keras"):
        common.fail(f"--backend {FLAGS.backend}: prnet-export reads the weights into the Keras model (auto or "
                    "keras); run the exported files with prnet-demo --backend")
    if FLAGS.precision not in ("auto", "float32"):
        common.fail(f"--precision {FLAGS.precision}: prnet-export writes bf16 as its own format: "
                    "--formats=saved_model_bf16 (with --precision auto or float32)")
    if FLAGS.detector not in GRAPH_DETECTORS:
        common.fail(f"--detector {FLAGS.detector}: the SavedModel's detector is auto (= blazeface), blazeface or "
                    "none (no predict_images_detect signature)")


def face_crops_of_folder(folder, limit: int = 32):
    """``(crops, notes)``: float32 ``(256, 256, 3)`` crops in [0, 1] of the photos under ``folder``
    (recursive, sorted; at most ``limit``), cut as ``prnet-demo`` cuts them: from a sibling 68-landmark
    annotation (``.pts`` / ``.mat``) by the x1.6 rule, else around the largest face the default detector
    finds (its box rule), never the whole photo. ``notes`` name the photos left out (unreadable, no face)."""
    from prnet.core.images import IMAGE_SUFFIXES, read_image
    from prnet.data.annotations import sidecar_landmarks
    from prnet.errors import ExportError, ImageReadError, NoFaceFoundError
    from prnet.inference.predictor import Predictor

    root = Path(folder).expanduser()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"no images (*.jpg, *.png, ...) found under {root} for --check_images")
    cropper = Predictor(None, detector="auto", template=None)  # crops only: no network, no template
    crops, notes = [], []
    for path in files:
        if len(crops) >= limit:
            break
        try:
            image = read_image(path)
            annotation = sidecar_landmarks(path)
            info = cropper.face_crops(image, landmarks=None if annotation is None else annotation[0], max_faces=1)
        except (ImageReadError, NoFaceFoundError) as e:
            notes.append(f"{path.name}: {'no face found' if isinstance(e, NoFaceFoundError) else e}")
            continue
        crops.append(cropper.warp_crops(image, info)[0])
    if not crops:
        raise ExportError(f"no face crop from the images under {root} for --check_images ({'; '.join(notes)})")
    return crops, notes


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    _check_flags()
    import_tensorflow_quietly("tfds_builders")  # no start-up banners; registers the builders for tfds:...
    from prnet.core.uv import load_uv_template
    from prnet.errors import PRNetError
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING, random_weights_backend
    from prnet.outputs.naming import RANDOM_TAG
    from prnet.serving.calibration import representative_crops
    from prnet.serving.export import check_formats, check_output_dir, export_all, measure_exports
    from prnet.serving.saved_model import make_detector_graph
    from prnet.weights.formats import load_keras_model
    from prnet.weights.official import ensure_official_weights, ensure_run_files

    output_dir = FLAGS.output_dir
    if FLAGS.smoke_test_random_weights:  # marked like every output of a random network: in its name
        output_dir = output_dir.rstrip("/\\") + RANDOM_TAG
        common.say(f"WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): exporting an untrained "
                   f"network, for pipeline checks only, to {output_dir}")
    writing, written = False, None
    try:
        # Checks first: nothing is written when one fails.
        formats = check_formats(FLAGS.formats)
        max_image_pixels = check_max_image_pixels(FLAGS.max_image_pixels)
        max_faces = check_max_faces(FLAGS.max_faces)
        detector = make_detector_graph(GRAPH_DETECTORS[FLAGS.detector]) if "saved_model" in formats else None
        check_output_dir(output_dir, FLAGS.overwrite)
        # every missing cached file (official weights, UV template) in one message
        ensure_run_files(weights=FLAGS.weights is None and not FLAGS.smoke_test_random_weights,
                         template=FLAGS.assets_dir is None, download=FLAGS.download)
        template = load_uv_template(FLAGS.assets_dir)
        if FLAGS.smoke_test_random_weights:
            model = random_weights_backend(size=FLAGS.model_size or 16).model
        else:
            model = load_keras_model(FLAGS.weights or ensure_official_weights(download=FLAGS.download),
                                     size=FLAGS.model_size)
        calibration = (representative_crops(FLAGS.calibration, limit=FLAGS.num_calibration)
                       if "int8" in formats else None)
        writing = True
        written = export_all(model, output_dir, formats=formats, calibration=calibration, template=template,
                             optimize=FLAGS.optimize, overwrite=FLAGS.overwrite, max_image_pixels=max_image_pixels,
                             detector=detector, max_faces=max_faces)
        writing = False
        for fmt, path in written.items():
            print(f"{fmt:16s} {path}")
        if FLAGS.check_images:
            crops, notes = face_crops_of_folder(FLAGS.check_images, limit=32)
            for note in notes:
                common.say(f"--check_images: left out {note}")
            print(f"\nposition-map error vs the Keras model on {len(crops)} face crops from {FLAGS.check_images}:")
            print(f"{'format':16s} {'size MB':>8s} {'max px':>9s} {'mean px':>9s}")
            for row in measure_exports(model, written, crops):
                print(f"{row['format']:16s} {row['size_mb']:8.1f} {row['max_abs_px']:9.4f} {row['mean_abs_px']:9.4f}")
    except PRNetError as err:
        common.fail(err, common.EXIT_PARTIAL if writing else common.EXIT_SETUP)
    except KeyboardInterrupt:
        common.say("interrupted (Ctrl-C); " + ("the export set was written" if written is not None else
                                               "nothing was written or changed"))
        return common.EXIT_INTERRUPTED
    return 0


def run(prog_name: str = None):
    """Console entry point ``prnet-export`` (and ``python export.py``)."""
    common.run_tool("prnet-export", main, prog_name, interrupted="nothing was written or changed")


if __name__ == "__main__":
    run()
