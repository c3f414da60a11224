"""End-to-end speed of ``prnet-demo`` on a folder of real photos, with the per-stage breakdown.

Two measurements on the same photos (default: every image of ``../shared/samples`` - the face
photos, the AFLW2000-3D and the 300W-LP samples, 25 in all), faces from the face detector:

1. **Stages**, one image at a time, each stage timed on its own: read, detect (the detector
   itself), crop (crop squares + warp), network (every call: with landmark re-cropping, the default,
   a detected face goes through it twice), post-processing (posmap -> image pixels, vertices,
   landmarks, re-crops, vertex colours, pose) and each writer of the default outputs (obj,
   landmarks, pose, depth, overlay; a writer's time includes its render). Reported per face (ms)
   and as a share of the summed stages.
2. **End to end** on the whole folder, default outputs: ``prnet.cli.demo.process_jobs`` - exactly
   what ``prnet-demo --input <folder>`` runs after loading the weights ("pipelined": an image's files
   are written while the next image is detected) - and, interleaved with it, the same steps one
   image after the other ("sequential"): images/s, faces/s, ms per face, and the network's share of
   the end-to-end time per face (the issue #13 goal: >= 40 %).

The network is the full-size ResFCN256 with RANDOM weights and randomised BatchNorm statistics
(``--network keras``: the Keras graph; ``fast``: the BN-folded graph that the default SavedModel
export runs): its speed does not depend on the values. So that post-processing and writers see a
real face's mesh (an untrained network's output is a degenerate mesh, much cheaper or much dearer
to render than a face), the network's output is replaced by the template's mean face placed in
each crop; the geometry is therefore meaningless, only the times are. CPU timings are noisy when
other processes share the cores: the stage figures are medians over ``--repeats`` passes.

  PRNET_ASSETS_DIR=../shared/prnet-assets python benchmarks/bench_e2e.py
  python benchmarks/bench_e2e.py --input ../shared/samples/faces --repeats 3 --network fast
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


class _Clock:
    """Accumulates seconds per stage name."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def timed(self, name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
        return wrapper


class MeanFaceNetwork:
    """Runs the real (random-weight) network for its time, returns the mean face in crop pixels."""

    random_weights = False  # the outputs are a real face's shape; see the module docstring
    source = "benchmark: random-weight ResFCN256, output replaced by the mean face"

    def __init__(self, network, template):
        from prnet.core.uv import UV_SIZE

        self.network = network
        posmap = np.zeros((UV_SIZE * UV_SIZE, 3), np.float32)
        posmap[template.face_ind] = template.canonical_vertices  # mean face in a 256 crop (crop px)
        self.posmap = posmap.reshape(UV_SIZE, UV_SIZE, 3)

    def __call__(self, crops):
        out = self.network(crops)
        return np.broadcast_to(self.posmap, out.shape).copy()


def build_network(kind: str):
    import keras

    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING, KerasBackend

    keras.utils.set_random_seed(0)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0.0))
    source = f"random weights with randomised BN - {RANDOM_WEIGHTS_WARNING}"
    if kind == "keras":
        return KerasBackend(model, source=source, random_weights=True)
    import tensorflow as tf

    from prnet.model.fast import build_inference_model

    net = build_inference_model(model)
    spec = tf.TensorSpec([None, 256, 256, 3], tf.float32)
    fn = tf.function(lambda x: net(x), input_signature=[spec])
    return lambda crops: np.asarray(fn(np.asarray(crops, np.float32)))


def collect_images(inputs, folder: Path) -> int:
    """Symlink every image of ``inputs`` (folders searched recursively) into ``folder``; returns the count."""
    from prnet.core.images import IMAGE_SUFFIXES

    n = 0
    for root in inputs:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            n += 1
            (folder / f"{n:03d}_{f.name}").symlink_to(f.resolve())
    return n


class _Timed:
    """A callable (detector, network) timed into ``clock`` under ``name``; other attributes forwarded."""

    def __init__(self, fn, clock, name):
        self._fn, self._clock, self._name = fn, clock, name

    def __call__(self, *args):
        t0 = time.perf_counter()
        try:
            return self._fn(*args)
        finally:
            self._clock.seconds[self._name] += time.perf_counter() - t0

    def __getattr__(self, attr):
        return getattr(self._fn, attr)


def stage_pass(predictor, jobs, out_dir: Path, clock: _Clock) -> int:
    """Run the demo's steps one image at a time, each stage timed; returns the number of faces.

    ``predictor``'s detector and network are :class:`_Timed` into ``clock`` ("detect", "network");
    "crop" is the rest of :meth:`Predictor.prepare`, "post-processing" the rest of
    :meth:`Predictor.complete` (position maps to image pixels, landmark re-cropping when on) plus
    the vertex colours and pose the writers use."""
    from prnet.errors import NoFaceFoundError
    from prnet.outputs.faces import DEFAULT_OUTPUTS, write_face_outputs

    faces_total = 0
    for name, display, load, _ in jobs:
        image = clock.timed("read", load)()
        before = clock.seconds["detect"]
        t0 = time.perf_counter()
        try:
            prepared = predictor.prepare(image)
        except NoFaceFoundError:
            continue
        finally:
            clock.seconds["crop"] += time.perf_counter() - t0 - (clock.seconds["detect"] - before)
        before = clock.seconds["network"]
        t0 = time.perf_counter()
        faces = predictor.complete(prepared)
        for face in faces:
            face.colors, face.pose  # noqa: B018  (cached: what the writers use)
        clock.seconds["post-processing"] += time.perf_counter() - t0 - (clock.seconds["network"] - before)
        for k, face in enumerate(faces):
            for kind in DEFAULT_OUTPUTS:
                clock.timed(f"write {kind}", write_face_outputs)(out_dir, f"{name}_{k}", face, display, [kind])
        faces_total += len(faces)
    return faces_total


def sequential(predictor, jobs, out_dir: Path) -> None:
    """The demo's steps one image after the other, nothing overlapped (the loop before issue #13)."""
    from prnet.errors import NoFaceFoundError
    from prnet.outputs.faces import DEFAULT_OUTPUTS, process_image

    for name, display, load, _ in jobs:
        try:
            process_image(predictor, load(), name, display, out_dir, DEFAULT_OUTPUTS)
        except NoFaceFoundError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="*", default=None,
                        help="image files / folders (searched recursively); default: ../shared/samples")
    parser.add_argument("--network", choices=("keras", "fast"), default="keras")
    parser.add_argument("--detector", default="auto", help="as prnet-demo --detector")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--refine", type=int, default=None,
                        help="landmark re-cropping passes (default: Predictor's, as prnet-demo; 0 = one pass)")
    parser.add_argument("--repeats", type=int, default=3, help="stage passes (median per stage)")
    parser.add_argument("--e2e_repeats", type=int, default=2, help="end-to-end runs of each mode (median)")
    parser.add_argument("--assets", default=None, help="uv-data folder (default: PRNET_ASSETS_DIR, ../shared)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import machine_description

    from prnet.cli.demo import make_jobs, process_jobs
    from prnet.core.uv import load_uv_template
    from prnet.inference.detect import make_detector
    from prnet.inference.predictor import Predictor
    from prnet.outputs.faces import DEFAULT_OUTPUTS

    assets = args.assets or os.environ.get("PRNET_ASSETS_DIR") or SHARED / "prnet-assets" / "uv-data"
    template = load_uv_template(assets)
    clock = _Clock()
    network = _Timed(MeanFaceNetwork(build_network(args.network), template), clock, "network")
    detector = _Timed(make_detector(args.detector), clock, "detect")
    extra = {} if args.refine is None else {"refine": args.refine}
    predictor = Predictor(network, detector=detector, template=template, batch_size=args.batch_size, **extra)
    print(machine_description())
    print(f"network: full-size ResFCN256 ({args.network} graph), RANDOM WEIGHTS with randomised BatchNorm "
          f"(speed only), batch size {args.batch_size}; outputs replaced by the mean face; detector "
          f"{getattr(detector, 'name', args.detector)}; landmark re-cropping passes {predictor.refine_passes}")

    with tempfile.TemporaryDirectory(prefix="prnet-bench-e2e-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        n_images = collect_images(args.input or [SHARED / "samples"], tmp / "in")
        jobs = make_jobs(tmp / "in")
        predictor.predict_posmaps(np.zeros((1, 256, 256, 3), np.float32))  # warm-up: graph tracing
        predictor.predict_posmaps(np.zeros((args.batch_size, 256, 256, 3), np.float32))

        passes, faces = [], 0
        for r in range(args.repeats):
            (tmp / f"stages{r}").mkdir()
            clock.seconds.clear()
            faces = stage_pass(predictor, jobs, tmp / f"stages{r}", clock)
            passes.append(dict(clock.seconds))

        e2e = {"sequential": [], "pipelined": []}
        for r in range(args.e2e_repeats):  # interleaved, so both see the same load
            for mode in e2e:
                out = tmp / f"{mode}{r}"
                out.mkdir()
                t0 = time.perf_counter()
                if mode == "pipelined":
                    status = process_jobs(predictor, jobs, out, DEFAULT_OUTPUTS, annotations="never",
                                          detector_name=args.detector)
                else:
                    sequential(predictor, jobs, out)
                e2e[mode].append(time.perf_counter() - t0)

    names = list(passes[0])
    med = {k: float(np.median([p.get(k, 0.0) for p in passes])) for k in names}
    total = sum(med.values())
    print(f"\n{n_images} images, {faces} faces; stages one at a time, median of {args.repeats} passes:")
    print(f"{'stage':<22} {'ms/face':>9} {'share':>7}")
    for k in names:
        print(f"{k:<22} {1000 * med[k] / faces:9.1f} {100 * med[k] / total:6.1f}%")
    print(f"{'sum':<22} {1000 * total / faces:9.1f}")
    net = med["network"]
    print(f"\nend to end, default outputs, median of {args.e2e_repeats} interleaved runs (network "
          f"{1000 * net / faces:.1f} ms/face in the stage pass):")
    for mode, runs in e2e.items():
        t = float(np.median(runs))
        what = ("prnet.cli.demo.process_jobs: writing overlaps the next image" if mode == "pipelined"
                else "process_image one image after the other (no overlap)")
        print(f"{mode:<10} ({what}): {t:.2f} s, {n_images / t:.2f} images/s, {faces / t:.2f} faces/s, "
              f"{1000 * t / faces:.1f} ms/face; network share {100 * net / t:.0f} %")
    print(f"process_jobs exit status {status} (1 = some images without a detected face)")

if __name__ == "__main__":
    main()
