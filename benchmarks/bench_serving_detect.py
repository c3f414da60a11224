"""Speed of detection inside the SavedModel (``predict_images_detect``) against the Python path.

Exports a SavedModel of a random-weights ResFCN256 (``--model_size``, 16 = the official size) with
the BlazeFace detector in the graph, then times, per image of the real sample photos
(``shared/samples/faces``, encoded bytes in):

* ``signature``: ``predict_images_detect`` on the bytes of one image (decode, EXIF, detector, NMS,
  crop, network, landmarks: everything in the graph);
* ``python``: ``Predictor(detector="blazeface", refine=False)`` on the same SavedModel
  (``reconstruct``: decode, TFLite detector, NumPy NMS, OpenCV crop, network, 43,867 vertices);
* ``detector``: the graph's BlazeFace alone vs the TFLite interpreter's (letterbox + network + NMS).

Prints median ms per image and the machine. Usage::

    python benchmarks/bench_serving_detect.py [--shared_dir ../shared] [--model_size 16] [--repeats 5]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_string("shared_dir", str(Path(__file__).resolve().parents[2] / "shared"),
                    "The shared/ reference folder (samples, UV template).")
flags.DEFINE_integer("model_size", 16, "Base width of the random-weights network (16 = the official model).")
flags.DEFINE_integer("repeats", 5, "Timed passes over the photos (after one warm-up pass).", lower_bound=1)
FLAGS = flags.FLAGS


def _median_ms(fn, items, repeats):
    for item in items:  # warm-up (tracing, allocation)
        fn(item)
    times = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv):
    del argv
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import keras
    import tensorflow as tf
    from machine import machine_description

    from prnet.core.images import read_image
    from prnet.core.uv import load_uv_template
    from prnet.inference.blazeface import BlazeFaceDetector
    from prnet.inference.predictor import Predictor
    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm
    from prnet.serving.ops.blazeface import BlazeFaceGraph
    from prnet.serving.saved_model import export_saved_model

    shared = Path(FLAGS.shared_dir)
    template = load_uv_template(shared / "prnet-assets" / "uv-data")
    photos = sorted(p for p in (shared / "samples" / "faces").glob("*.jpg"))
    keras.utils.set_random_seed(0)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0, size=FLAGS.model_size), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = export_saved_model(model, Path(tmp) / "sm", kpt_ind=template.kpt_ind)
        print(f"export (network size {FLAGS.model_size} + detector): {time.perf_counter() - t:.1f} s")
        signature = tf.saved_model.load(str(path)).signatures["predict_images_detect"]
        data = [p.read_bytes() for p in photos]
        images = [read_image(p) for p in photos]
        predictor = Predictor.from_weights(path, detector="blazeface", template=template, refine=False)
        graph, tflite = BlazeFaceGraph("back"), BlazeFaceDetector("back")
        detect_graph = tf.function(graph, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        rows = [
            ("signature predict_images_detect (bytes in)", _median_ms(
                lambda d: signature(images=tf.constant([d])), data, FLAGS.repeats)),
            ("python Predictor.reconstruct (refine off)", _median_ms(predictor.reconstruct, images, FLAGS.repeats)),
            ("detector only: graph BlazeFace", _median_ms(detect_graph, images, FLAGS.repeats)),
            ("detector only: TFLite BlazeFace + NumPy", _median_ms(tflite, images, FLAGS.repeats)),
        ]
    print(f"{len(photos)} photos of shared/samples/faces (227 x 227 to 1920 x 1080), {FLAGS.repeats} passes")
    for name, ms in rows:
        print(f"{name:45s} {ms:8.1f} ms/image (median)")
    print(machine_description())


if __name__ == "__main__":
    app.run(main)
