"""Video speed: frames per second of ``prnet-demo``'s video path for one face and for three faces.

Clips are made from the real photos of ``../shared/samples/faces``: one face (``prnet_test_0.jpg``)
or three faces (``takeo.ppm``, ``prnet_test_0.jpg``, ``prnet_test_1.jpg`` side by side), 640x480,
drifting by up to 3 px per frame. Each clip runs through :func:`prnet.outputs.video.process_video` (what
``prnet-demo --input clip.mp4`` runs after loading the weights): tracking (one network pass per face
per frame, crops from the previous frame's landmarks), the default detector every ``--detect_every``
frames with landmark re-cropping for new faces, pose, mesh + landmark overlay, mp4 encoding, and the
``.npz`` / ``.csv`` results. Printed: frames/s end to end, frames/s of tracking alone (no drawing
or writing), and the network's ms per crop.

The network is the full-size ResFCN256 with RANDOM weights and randomised BatchNorm statistics
(``--network fast``: the BN-folded graph the default SavedModel export runs; ``keras``: the Keras
graph): its speed does not depend on the values. So that tracking, pose and drawing see a face
(an untrained network's output is not one and would be re-detected on every frame), its output
is replaced by the template's mean face framed as the x1.6 landmark crop frames a face: the
geometry is meaningless, only the times are. CPU timings are noisy when other processes share the
cores (see the load average in the machine line).

  python benchmarks/bench_video.py [--frames 40] [--detect_every 10] [--network fast|keras]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SIZE = (640, 480)  # frame (width, height)


class FramedMeanFace:
    """Runs the real (random-weight) network for its time; returns the mean face framed by the x1.6
    landmark rule in every crop (its 68-landmark box centred, mean side 255 / 1.6 crop px)."""

    random_weights = False  # the outputs are a real face's shape: see the module docstring
    source = "benchmark: random-weight ResFCN256 (randomised BN), output replaced by the framed mean face"

    def __init__(self, network, template):
        from prnet.core.crop import LANDMARK_SCALE

        self.network, self.calls = network, 0
        pos = np.zeros((256 * 256, 3), np.float64)
        pos[template.face_ind] = template.canonical_vertices
        pos = pos.reshape(256, 256, 3)
        kpt = pos[template.kpt_ind[:, 1], template.kpt_ind[:, 0]]
        lo, hi = kpt[:, :2].min(0), kpt[:, :2].max(0)
        face = template.face_mask > 0
        pos[face] = (pos[face] - np.r_[(lo + hi) / 2, 0]) * ((255 / LANDMARK_SCALE) / np.mean(hi - lo)) \
            + np.r_[127.5, 127.5, 0]
        self.posmap = pos.astype(np.float32)

    def __call__(self, crops):
        self.calls += len(crops)
        out = self.network(crops)
        return np.broadcast_to(self.posmap, np.shape(out)).copy()


def build_network(kind: str):
    import keras
    import tensorflow as tf

    from prnet.model.fast import build_inference_model
    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm

    keras.utils.set_random_seed(0)
    model = randomize_batchnorm(build_resfcn256(weight_decay=0.0))
    if kind == "keras":
        return lambda crops: np.asarray(model(np.asarray(crops, np.float32), training=False))
    net = build_inference_model(model)
    fn = tf.function(lambda x: net(x), input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32)])
    return lambda crops: np.asarray(fn(np.asarray(crops, np.float32)))


def make_clip(names, frames: int, seed: int = 0) -> list:
    """RGB frames: the photos ``names`` side by side (each fitted into an equal slot), drifting."""
    import cv2

    from prnet.core.images import read_image

    w, h = SIZE
    slot = w // len(names)
    canvas = np.zeros((h, w, 3), np.uint8)
    for i, name in enumerate(names):
        img = read_image(SHARED / "samples" / "faces" / name)
        s = min(slot / img.shape[1], h / img.shape[0])
        small = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        y0, x0 = (h - small.shape[0]) // 2, i * slot + (slot - small.shape[1]) // 2
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    rng = np.random.default_rng(seed)
    offsets = np.cumsum(rng.uniform(-3, 3, (frames, 2)), axis=0)
    return [cv2.warpAffine(canvas, np.float64([[1, 0, dx], [0, 1, dy]]), SIZE) for dx, dy in offsets]


class ListSource:
    def __init__(self, frames, fps=25.0, name="clip"):
        self.frames, self.fps, self.name, self.frame_count = frames, fps, name, len(frames)
        self.size = (frames[0].shape[1], frames[0].shape[0])

    def __iter__(self):
        yield from self.frames


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--detect_every", type=int, default=10, help="as prnet-demo --detect_every")
    parser.add_argument("--network", choices=("fast", "keras"), default="fast")
    parser.add_argument("--detector", default="auto", help="as prnet-demo --detector")
    parser.add_argument("--assets", default=None, help="uv-data folder (default: PRNET_ASSETS_DIR, ../shared)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import machine_description

    from prnet.core.uv import load_uv_template
    from prnet.inference.predictor import Predictor
    from prnet.inference.video import FaceTracker
    from prnet.outputs.video import process_video

    assets = args.assets or os.environ.get("PRNET_ASSETS_DIR") or SHARED / "prnet-assets" / "uv-data"
    template = load_uv_template(assets)
    network = build_network(args.network)
    print(machine_description())
    print(f"network: full-size ResFCN256 ({args.network} graph), RANDOM WEIGHTS with randomised BatchNorm (speed "
          f"only), output replaced by the framed mean face; detector {args.detector}, every {args.detect_every} "
          f"frames; {args.frames} frames of {SIZE[0]}x{SIZE[1]}")
    crops = np.zeros((1, 256, 256, 3), np.float32)
    network(crops)  # warm-up: graph tracing
    t0 = time.perf_counter()
    for _ in range(10):
        network(crops)
    print(f"network alone: {(time.perf_counter() - t0) / 10 * 1000:.1f} ms per crop (batch of 1)")

    for label, names in (("1 face", ["prnet_test_0.jpg"]),
                         ("3 faces", ["takeo.ppm", "prnet_test_0.jpg", "prnet_test_1.jpg"])):
        frames = make_clip(names, args.frames)
        fake = FramedMeanFace(network, template)
        predictor = Predictor(fake, detector=args.detector, template=template)
        predictor.detect(frames[0])  # warm-up: the detector's interpreter
        tracker = FaceTracker(predictor, detect_every=args.detect_every)
        t0 = time.perf_counter()
        counts = [len(tracker.update(f)) for f in frames]
        track_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="prnet-bench-video-") as tmp:
            fake.calls = 0
            t0 = time.perf_counter()
            run = process_video(predictor, ListSource(frames), tmp, "clip", detect_every=args.detect_every)
            total_s = time.perf_counter() - t0
        print(f"{label}: faces per frame {min(counts)}-{max(counts)} ({run.face_ids} ids), detector on "
              f"{len(run.detector_frames)}/{run.frames} frames, {fake.calls} network crops | tracking only "
              f"{len(frames) / track_s:.2f} frames/s | end to end (pose, mesh overlay, mp4, npz, csv) "
              f"{run.frames / total_s:.2f} frames/s ({total_s / run.frames * 1000:.0f} ms/frame)")


if __name__ == "__main__":
    main()
