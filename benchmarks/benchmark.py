"""Inference speed of every backend: ms/image and images/s, network only and end to end.

Backends: the original graph in a TF1 ``Session`` (``tf1_session``: the Keras graph frozen, as the
authors' code runs), the Keras training graph (``tf.function``), the BN-folded fast graph of
:mod:`prnet.model.fast` (``tf.function``; ``optimized``: the default rewrite with sub-pixel
convolutions, ``optimized_transpose``: BN folded, transposed convolutions kept; ``optimized_bf16``: the
same graph in bfloat16 with a float32 output layer, weights frozen as constants, as
:class:`prnet.model.runtime.FastGraphBackend` runs it; ``keras_bf16``, only
when named in ``--backends``: the Keras graph under ``mixed_bfloat16``), the exported SavedModel
(``serving_default``; ``saved_model_bf16``: export.py's bf16 SavedModel) and TFLite float32 / float16 /
int8 (XNNPACK, ``--threads`` threads; LiteRT's interpreter when installed, see
:func:`prnet.model.runtime.tflite_interpreter`). Network only: float32 crops ``[B, 256, 256, 3]`` at batch
sizes ``--batch_sizes``. OpenVINO (when installed: ``pip install -e ".[openvino]"``; else skipped with a
line saying so): ``openvino_float32`` / ``openvino_bfloat16`` run the exported SavedModel at that
inference precision (set explicitly), ``openvino_int8`` the int8 ``.tflite`` (its own quantisation);
``--threads`` threads. ``onnxruntime_float32``: ``prnet.onnx`` (export.py's ONNX file) in ONNX Runtime,
``--threads`` intra-op threads (skipped without the ``[onnx]`` extra). ``default``: what the tools run by
default (``--backend auto --precision auto``), i.e. :func:`prnet.inference.backends.official_backend` with this
run's weights standing in for the official ones in a temporary cache (the path
:func:`prnet.model.runtime.auto_choice` picks for this machine, printed with its reason). End to end:
``Predictor.reconstruct`` on a sample photo (face detection + crop + network + vertices/landmarks in image
pixels), one face.

Without ``--weights`` the network has random weights (with randomised BatchNorm statistics): speed
does not depend on the values; int8 is calibrated on sample crops. Prints the machine description.

  python benchmarks/benchmark.py                       # all backends, batch 1 and 8
  python benchmarks/benchmark.py --variants            # also the prnet.model.fast rewrite variants
  python benchmarks/benchmark.py --backends=keras,optimized --batch_sizes=1 --repeats=20
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO.parent / "shared" / "samples"
BACKENDS = ("default", "tf1_session", "keras", "optimized", "optimized_transpose", "optimized_bf16", "saved_model",
            "saved_model_bf16", "tflite_float32", "tflite_float16", "tflite_int8", "openvino_float32",
            "openvino_bfloat16", "openvino_int8", "onnxruntime_float32")
#: Also available, not run by default: the Keras graph under the mixed_bfloat16 policy (speed only:
#: its accuracy on trained weights is issue #13's section 2).
OPTIONAL_BACKENDS = ("keras_bf16",)

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "Weights (.weights.h5, checkpoint dir or prefix); default: random weights.")
flags.DEFINE_list("backends", list(BACKENDS), f"Backends to time, from: {', '.join(BACKENDS + OPTIONAL_BACKENDS)}.")
flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes for the network-only timings.")
flags.DEFINE_integer("repeats", 10, "Timed runs per measurement (after 2 warm-up runs), round-robin over backends; "
                     "median and best are reported.")
flags.DEFINE_integer("threads", 2, "TFLite interpreter threads (XNNPACK) and OpenVINO threads.")
flags.DEFINE_string("samples", str(DEFAULT_SAMPLES), "Folder of sample photos (calibration crops, end-to-end image).")
flags.DEFINE_bool("end_to_end", True, "Also time Predictor.reconstruct (detect + crop + net + mesh).")
flags.DEFINE_bool("variants", False, "Also time the prnet.model.fast rewrite variants (TF float32 and bfloat16, "
                  "TFLite float32).")


def _tflite_runner(path, batch, threads):

    from prnet.model.runtime import tflite_interpreter

    interpreter, _ = tflite_interpreter(path, num_threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [batch, 256, 256, 3])
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def _openvino_backend(name, tmp, net, crops, threads):
    """The OpenVINO backend of ``openvino_<float32|bfloat16|int8>``, reading this run's exported SavedModel
    (``tmp/saved_model``) or int8 ``.tflite`` (``tmp/int8.tflite``), exported here when no other row
    wrote them; None (with a printed line) when OpenVINO is not installed or cannot run that precision."""
    from prnet.errors import BackendUnavailableError
    from prnet.model.openvino_runtime import OpenVINOBackend, import_openvino
    from prnet.serving import saved_model as serving
    from prnet.serving import tflite

    try:
        import_openvino()  # before exporting anything for it
    except BackendUnavailableError as e:  # OpenVINONotInstalledError
        print(f"{name}: skipped: {e}")
        return None
    q = name[len("openvino_"):]
    if q == "int8":
        path = tmp / "int8.tflite"
        if not path.is_file():
            tflite.convert_tflite(net, tmp / "ov_int8.tflite", quantization="int8", representative=list(crops))
            path = tmp / "ov_int8.tflite"
    else:
        path = tmp / "saved_model"
        if not (path / "saved_model.pb").is_file():
            path = serving.export_saved_model(net, tmp / "ov_saved_model", kpt_ind=np.zeros((68, 2), np.int64))
    try:
        backend = OpenVINOBackend(path, precision="float32" if q == "int8" else q, num_threads=threads)
    except BackendUnavailableError as e:  # e.g. bfloat16 on a CPU without bf16 units
        print(f"{name}: skipped: {e}")
        return None
    print(f"{name}: {backend.source}")
    return backend


def _default_backend(model, tmp):
    """The tools' default path for ``model``: ``official_backend()`` on a temporary cache holding its weights
    as the (stamped) official ones; prints the automatic choice and the export time."""
    from prnet.inference import backends
    from prnet.weights import official

    os.environ["PRNET_CACHE_DIR"] = str(tmp / "cache")
    weights = official.weights_path()
    weights.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(weights))
    official.write_official_stamp(weights, "benchmark stand-in")
    start = time.perf_counter()
    backend = backends.official_backend(download=False, kpt_ind=np.zeros((68, 2), np.int64))
    print(f"default: {backend.choice} ({type(backend).__name__}; first start with its export: "
          f"{time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    backends.official_backend(download=False, kpt_ind=np.zeros((68, 2), np.int64))
    print(f"default: second start (cache warm): {time.perf_counter() - start:.2f} s")
    return backend


def _onnx_backend(net, tmp, threads):
    """``onnxruntime_float32``: the ONNX file of ``net`` in ONNX Runtime; None (with a line) without the extra."""
    from prnet.errors import BackendUnavailableError

    try:
        from prnet.model.onnx_runtime import ONNXRuntimeBackend
        from prnet.serving.onnx import convert_onnx

        backend = ONNXRuntimeBackend(convert_onnx(net, tmp / "prnet.onnx"), num_threads=threads)
    except BackendUnavailableError as e:  # ONNXRuntimeNotInstalledError
        print(f"onnxruntime_float32: skipped: {e}")
        return None
    import onnxruntime

    print(f"onnxruntime_float32: ONNX Runtime {onnxruntime.__version__}, {backend.source}")
    return backend


def _keras_bf16(model):
    """The same network and weights under Keras' ``mixed_bfloat16`` policy (bf16 compute, float32
    variables), output cast back to float32 crop pixels."""
    import keras
    import tensorflow as tf

    from prnet.model.resfcn256 import build_resfcn256, to_posmap

    size = next(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D))  # base width
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = build_resfcn256(weight_decay=0, size=size)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    bf16.set_weights(model.get_weights())
    return tf.function(lambda x: to_posmap(tf.cast(bf16(x, training=False), tf.float32)))


def _tf1_session_runner(keras_fn):
    """The original graph as the authors' TF1 code runs it: the Keras model's graph (convolutions,
    BatchNorm, transposed convolutions; variables frozen to constants) in a ``tf.compat.v1.Session``."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = keras_fn.get_concrete_function(tf.TensorSpec([None, 256, 256, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen.graph.as_graph_def(), name="")
    session = tf.compat.v1.Session(graph=graph)
    x_name, y_name = frozen.inputs[0].name, frozen.outputs[0].name
    return lambda x: session.run(y_name, {x_name: np.asarray(x)})


def _interleaved(jobs: dict, repeats: int) -> dict:
    """Time every ``jobs[key]()`` ``repeats`` times, round-robin (so load changes hit all alike).

    Returns ``{key: (median s, best s)}``; each job is warmed up twice first.
    """
    for fn in jobs.values():
        fn()
        fn()
    times = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, fn in jobs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: (float(np.median(t)), float(np.min(t))) for key, t in times.items()}


def _report(rows):
    print(f"\n{'backend':30s} {'mode':11s} {'batch':>5s} {'ms/image':>9s} {'best ms':>8s} {'images/s':>9s}")
    for name, mode, batch, (median, best) in rows:
        per = median / batch * 1000
        print(f"{name:30s} {mode:11s} {batch:5d} {per:9.1f} {best / batch * 1000:8.1f} {1000 / per:9.1f}")


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from prnet.model.fast import build_inference_model
    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm, to_posmap
    from prnet.serving import calibration, tflite
    from prnet.serving import saved_model as serving
    from prnet.weights import formats

    print(machine_description())
    if FLAGS.weights:
        model = formats.load_keras_model(FLAGS.weights)
        print(f"weights: {FLAGS.weights}")
    else:
        keras.utils.set_random_seed(0)
        model = randomize_batchnorm(build_resfcn256(weight_decay=0), seed=0)
        print("weights: RANDOM (the official weights are not available here; speed does not depend on them)")
    samples = Path(FLAGS.samples)
    crops = np.stack(calibration.representative_crops(samples, limit=16)) if samples.is_dir() else \
        np.random.default_rng(1).uniform(0, 1, (16, 256, 256, 3)).astype(np.float32)
    batches = [int(b) for b in FLAGS.batch_sizes]
    tmp = Path(tempfile.mkdtemp(prefix="prnet-bench-"))

    net = build_inference_model(model)
    keras_fn = tf.function(lambda x: to_posmap(model(x, training=False)))
    runners = {}  # name -> (batch -> callable(x))
    for name in FLAGS.backends:
        if name == "default":
            runners[name] = lambda b, backend=_default_backend(model, tmp): backend
        elif name == "onnxruntime_float32":
            backend = _onnx_backend(net, tmp, FLAGS.threads)
            if backend is not None:
                runners[name] = lambda b, backend=backend: backend
        elif name == "tf1_session":
            runners[name] = lambda b: _tf1_session_runner(keras_fn)
        elif name == "keras":
            runners[name] = lambda b: keras_fn
        elif name == "keras_bf16":
            bf16_fn = _keras_bf16(model)
            runners[name] = lambda b, fn=bf16_fn: fn
        elif name == "optimized_transpose":
            transposed = build_inference_model(model, stride1="transpose", stride2="transpose")
            runners[name] = lambda b, t=transposed: t
        elif name == "optimized":
            runners[name] = lambda b: net
        elif name == "optimized_bf16":  # what load_backend(..., precision="bfloat16") runs: weights frozen
            from prnet.model.runtime import FastGraphBackend

            runners[name] = lambda b, fn=FastGraphBackend(model, "bfloat16").fn: fn
        elif name in ("saved_model", "saved_model_bf16"):
            exported = net if name == "saved_model" else build_inference_model(model, precision="bfloat16")
            path = serving.export_saved_model(exported, tmp / name, kpt_ind=np.zeros((68, 2), np.int64))
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            runners[name] = lambda b, fn=fn: (lambda x: fn(images=x)["posmap"])
        elif name.startswith("openvino_") and name[len("openvino_"):] in ("float32", "bfloat16", "int8"):
            backend = _openvino_backend(name, tmp, net, crops, FLAGS.threads)
            if backend is not None:
                runners[name] = lambda b, backend=backend: backend
        elif name.startswith("tflite_"):
            q = name[len("tflite_"):]
            path = tflite.convert_tflite(net, tmp / f"{q}.tflite", quantization=q, representative=list(crops))
            print(f"{name}: {path.stat().st_size / 2**20:.1f} MB")
            runners[name] = lambda b, path=path: _tflite_runner(path, b, FLAGS.threads)
        else:
            raise app.UsageError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS + OPTIONAL_BACKENDS)}")
    if FLAGS.variants:
        for s1, s2, res in (("transpose", "transpose", "affine"), ("conv", "transpose", "affine"),
                            ("conv", "subpixel", "affine"), ("conv", "subpixel3x3", "affine"),
                            ("conv", "transpose", "concat")):
            variant = build_inference_model(model, stride1=s1, stride2=s2, residual=res)
            runners[f"tf[{s1}/{s2}/{res}]"] = lambda b, v=variant: v
            path = tflite.convert_tflite(variant, tmp / f"v_{s1}_{s2}_{res}.tflite")
            runners[f"tflite[{s1}/{s2}/{res}]"] = lambda b, path=path: _tflite_runner(path, b, FLAGS.threads)
            bf16 = build_inference_model(model, stride1=s1, stride2=s2, residual=res, precision="bfloat16")
            runners[f"tf_bf16[{s1}/{s2}/{res}]"] = lambda b, v=bf16: v

    rows = []
    for batch in batches:
        x = np.ascontiguousarray(np.resize(crops, (batch, 256, 256, 3)))
        jobs = {}
        for name, make in runners.items():
            numpy_in = "tflite" in name or name.startswith(("openvino", "onnxruntime", "default"))
            run, xt = make(batch), (x if numpy_in else tf.constant(x))
            jobs[name] = lambda run=run, xt=xt: np.asarray(run(xt))
        for name, result in _interleaved(jobs, FLAGS.repeats).items():
            rows.append((name, "network", batch, result))
            print(f"  {name} batch {batch}: {result[0] / batch * 1000:.1f} ms/image", flush=True)

    if FLAGS.end_to_end:
        from prnet.core.images import read_image
        from prnet.inference.predictor import Predictor
        from prnet.model.runtime import KerasBackend, SavedModelBackend, TFLiteBackend

        photo = samples / "faces" / "prnet_test_0.jpg"
        image = read_image(photo)
        template = samples.parent / "prnet-assets" / "uv-data"
        backends = {"keras": lambda: KerasBackend(model),
                    "saved_model": lambda: SavedModelBackend(tmp / "saved_model"),
                    "saved_model_bf16": lambda: SavedModelBackend(tmp / "saved_model_bf16"),
                    "tflite_float32": lambda: TFLiteBackend(tmp / "float32.tflite", num_threads=FLAGS.threads),
                    "tflite_int8": lambda: TFLiteBackend(tmp / "int8.tflite", num_threads=FLAGS.threads)}
        backends.update({name: (lambda name=name: runners[name](1))  # the backends built above
                         for name in runners if name.startswith(("openvino_", "onnxruntime_", "default"))})
        jobs = {}
        for name, make in backends.items():
            if name in runners:
                predictor = Predictor(make(), template=template if template.is_dir() else None)
                jobs[name] = lambda p=predictor: p.reconstruct(image, max_faces=1)
        for name, result in _interleaved(jobs, max(3, FLAGS.repeats // 2)).items():
            rows.append((name, "end-to-end", 1, result))
            print(f"  {name} end to end ({photo.name}): {result[0] * 1000:.1f} ms/image", flush=True)
    _report(rows)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    app.run(main)
