"""Accuracy of every reduced-precision inference path against float32, on trained weights.

For each path (the float32 Keras model is the reference) this prints, on two crop sets:

* ``posmap px``: mean 3D distance (crop pixels, 256x256 crop) between the path's position map and float32's,
  over the 43,867 face pixels of the UV map; ``p99`` its 99th percentile over all face pixels of all crops;
* ``lmk vs fp32``: 68-landmark 2D NME (%) of the path's landmarks against float32's landmarks;
* ``NME``: 68-landmark 2D NME (%) against the ground truth, and its change relative to float32's NME
  (``d NME``; the issue's rule: a reduced-precision path may be a default only where this is <= 2 %).

Crop sets: ``synthetic`` = the validation split of ``prnet_synthetic/medium`` (ground truth from the renderer);
``real`` = every photo of ``../shared/samples`` with 68 annotated landmarks (``.pts`` / ``.mat``), cropped by
the landmark rule exactly as ``prnet-demo`` crops an annotated photo (:mod:`prnet.core.crop`). The mean-map
baseline (the best constant prediction of the synthetic set) shows the weights are really trained.

Paths: ``keras`` (reference), ``optimized`` (BN-folded graph, float32), ``saved_model`` / ``saved_model_bf16``
(export sets), ``tflite_float32`` / ``tflite_float16`` / ``tflite_int8`` (int8 calibrated on 100 training
crops of the same data set, as ``export.py --calibration=tfds:prnet_synthetic/medium``), and
``openvino_float32`` / ``openvino_bfloat16`` / ``openvino_int8`` when OpenVINO is installed.

  python benchmarks/train_reference.py                      # once: the trained full-size reference model
  python benchmarks/bench_precision.py --weights=/tmp/prnet_reference/run/final.weights.h5
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PATHS = ("keras", "optimized", "saved_model", "saved_model_bf16", "tflite_float32", "tflite_float16", "tflite_int8",
         "openvino_float32", "openvino_bfloat16", "openvino_int8")

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", "/tmp/prnet_reference/run/final.weights.h5",
                    "Trained full-size weights (benchmarks/train_reference.py writes them).")
flags.DEFINE_string("data_dir", "/tmp/prnet_reference/tfds", "TFDS folder holding prnet_synthetic/medium.")
flags.DEFINE_string("dataset", "prnet_synthetic/medium", "Synthetic data set (validation split = the crops).")
flags.DEFINE_string("assets_dir", str(REPO.parent / "shared" / "prnet-assets" / "uv-data"), "UV template folder.")
flags.DEFINE_string("samples", str(REPO.parent / "shared" / "samples"), "Folder of annotated real photos.")
flags.DEFINE_integer("max_examples", 256, "Synthetic validation crops to use.")
flags.DEFINE_integer("calibration", 100, "Training crops for int8 calibration.")
flags.DEFINE_list("paths", list(PATHS), f"Paths to measure, from: {', '.join(PATHS)}.")
flags.DEFINE_integer("threads", 2, "Interpreter threads (TFLite, OpenVINO).")


def synthetic_set(template):
    """Synthetic validation crops ``[N,256,256,3]`` in [0,1], their landmarks ``[N,68,2]`` (crop px) and the
    mean-map baseline's landmarks (the set's own mean position map: the best constant prediction)."""
    from prnet.data.pipeline import eval_pipeline, load_split

    images, landmarks, posmaps = [], [], []
    for batch in eval_pipeline(load_split(FLAGS.dataset, "validation", FLAGS.data_dir, FLAGS.assets_dir), 32,
                               FLAGS.max_examples):
        images.append(batch["image"].numpy())
        landmarks.append(batch["landmarks_68"].numpy()[..., :2])
        posmaps.append(batch["posmap"].numpy())
    posmaps = np.concatenate(posmaps)
    mean_map = posmaps.mean(axis=0)
    return np.concatenate(images), np.concatenate(landmarks), _landmarks(mean_map[None], template)


def real_set():
    """Every annotated photo under ``--samples``, cropped by the landmark rule: crops and landmarks (crop px)."""
    from prnet.core.crop import box_from_landmarks, crop_transform, image_to_crop, warp_crop
    from prnet.core.images import IMAGE_SUFFIXES, read_image
    from prnet.data.annotations import sidecar_landmarks

    crops, landmarks, names = [], [], []
    for path in sorted(p for p in Path(FLAGS.samples).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        annotation = sidecar_landmarks(path)
        if annotation is None:
            continue
        points = annotation[0][:, :2]
        tform = crop_transform(*box_from_landmarks(points))
        crops.append(warp_crop(read_image(path), tform))
        landmarks.append(image_to_crop(points, tform)[:, :2])
        names.append(path.name)
    return np.stack(crops).astype(np.float32), np.stack(landmarks), names


def calibration_crops():
    from prnet.data.pipeline import eval_pipeline, load_split

    out = []
    for batch in eval_pipeline(load_split(FLAGS.dataset, "train", FLAGS.data_dir, FLAGS.assets_dir), 50,
                               FLAGS.calibration):
        out.extend(batch["image"].numpy())
    return out


def _landmarks(posmaps, template):
    rows, cols = template.kpt_ind[:, 1], template.kpt_ind[:, 0]
    return posmaps[:, rows, cols, :2]


def _backends(model, workdir, template):
    """``{path: callable(crops) -> posmaps}`` for the requested paths (skipped ones are printed)."""
    from prnet.model.runtime import KerasBackend
    from prnet.serving.export import export_all
    from prnet.weights.formats import load_backend

    wanted = list(FLAGS.paths)
    backends = {"keras": KerasBackend(model, source="float32 Keras")}
    if "optimized" in wanted:
        from prnet.model.fast import build_inference_model

        net = build_inference_model(model)
        backends["optimized"] = lambda x: np.asarray(net(x), np.float32)
    needs = {"saved_model": ("saved_model", "openvino_float32", "openvino_bfloat16"),
             "saved_model_bf16": ("saved_model_bf16",), "float32": ("tflite_float32",),
             "float16": ("tflite_float16",), "int8": ("tflite_int8", "openvino_int8")}
    formats = [f for f, users in needs.items() if set(users) & set(wanted)]
    if formats:
        start = time.perf_counter()
        export_all(model, workdir / "export", formats=formats, calibration=calibration_crops(), progress=False,
                   detector=None, template=template)
        print(f"exported {', '.join(formats)} in {time.perf_counter() - start:.0f} s")
    export = workdir / "export"
    files = {"saved_model": export / "saved_model", "saved_model_bf16": export / "saved_model_bf16",
             "tflite_float32": export / "prnet_float32.tflite", "tflite_float16": export / "prnet_float16.tflite",
             "tflite_int8": export / "prnet_int8.tflite"}
    for name in ("saved_model", "saved_model_bf16", "tflite_float32", "tflite_float16", "tflite_int8"):
        if name in wanted:
            precision = "bfloat16" if name.endswith("bf16") else "float32"
            backends[name] = load_backend(files[name], precision=precision, num_threads=FLAGS.threads)
    for name, (path, precision) in {"openvino_float32": (files["saved_model"], "float32"),
                                    "openvino_bfloat16": (files["saved_model"], "bfloat16"),
                                    "openvino_int8": (files["tflite_int8"], "float32")}.items():
        if name not in wanted:
            continue
        try:
            backends[name] = load_backend(path, "openvino", precision=precision, num_threads=FLAGS.threads)
        except ImportError as e:
            print(f"{name}: skipped ({e})")
    return {k: v for k, v in backends.items() if k in wanted or k == "keras"}


def _run(backend, crops, batch=16):
    return np.concatenate([backend(crops[i:i + batch]) for i in range(0, len(crops), batch)])


def main(argv):
    del argv
    import keras
    from machine import machine_description

    import tfds_builders  # noqa: F401  registers prnet_synthetic
    from prnet.core.uv import load_uv_template
    from prnet.evaluation.metrics import landmark_nme
    from prnet.weights.formats import load_keras_model

    print(machine_description())
    print("command:", " ".join(sys.argv))
    template = load_uv_template(FLAGS.assets_dir)
    model = load_keras_model(FLAGS.weights)
    width = next(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    print(f"weights: {FLAGS.weights} (base width {width}; trained on synthetic renders: for tests and "
          "benchmarks only, not a face model)")
    sets = {}
    crops, gt, mean_landmarks = synthetic_set(template)
    sets["synthetic"] = (crops, gt)
    real_crops, real_gt, names = real_set()
    sets["real"] = (real_crops, real_gt)
    print(f"crops: synthetic {len(crops)} ({FLAGS.dataset} validation), real {len(real_crops)} annotated photos "
          f"from {FLAGS.samples}")
    base = landmark_nme(np.broadcast_to(mean_landmarks, gt.shape), gt).mean() * 100
    rows, cols = template.face_rows_cols
    workdir = Path(tempfile.mkdtemp(prefix="bench_precision_"))
    try:
        backends = _backends(model, workdir, template)
        outputs = {name: {s: _run(b, c) for s, (c, _) in sets.items()} for name, b in backends.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    reference = outputs["keras"]
    ref_nme = {s: landmark_nme(_landmarks(reference[s], template), sets[s][1]).mean() * 100 for s in sets}
    print(f"\nfloat32 NME: synthetic {ref_nme['synthetic']:.2f} % (mean-map baseline {base:.2f} %), "
          f"real {ref_nme['real']:.2f} %")
    header = "| path | " + " | ".join(f"{s}: posmap px (p99) | lmk vs fp32 % | NME % (d NME)" for s in sets) + " |"
    print("\n" + header)
    print("|" + "---|" * (1 + 3 * len(sets)))
    for name, out in outputs.items():
        cells = []
        for s, (_, gt_s) in sets.items():
            diff = np.linalg.norm(out[s][:, rows, cols] - reference[s][:, rows, cols], axis=-1)
            lmk = _landmarks(out[s], template)
            vs_fp32 = landmark_nme(lmk, _landmarks(reference[s], template)).mean() * 100
            nme = landmark_nme(lmk, gt_s).mean() * 100
            change = (nme / ref_nme[s] - 1) * 100
            cells.append(f"{diff.mean():.3f} ({np.percentile(diff, 99):.2f}) | {vs_fp32:.3f} | "
                         f"{nme:.2f} ({change:+.1f} %)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    app.run(main)
