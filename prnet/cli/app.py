"""prnet-app: a local web page to look at PRNet's results (pip install -e ".[app]").

  prnet-app                                   # http://127.0.0.1:7860, the official weights
  prnet-app --weights W --port 8080           # any weights prnet-demo takes
  prnet-app --smoke_test_random_weights       # no weights: every result carries a RANDOM WEIGHTS banner

Photo tab: upload a photo, press Reconstruct: the overlay, the mesh in an interactive 3D view (drag to
rotate, wheel to zoom), the pose, the depth image, the 68 landmarks, a selector for each face of the photo,
and a zip of the files prnet-demo writes (the kinds chosen in the page; the .glb, overlay, depth, landmarks
and pose always). Swap tab: a target and a reference photo (mode face or eyes) -> the swapped photo, as
prnet-swap. Video tab: upload a short clip (at most --max_frames frames): the annotated H.264 video
plays in the page, with the tracks .csv / .npz. The network is loaded once at start and shared by every
request. The page is served on --host (127.0.0.1: this machine only) and loads nothing from the internet.

Weights, backend, precision, detector and UV template flags are prnet-demo's, resolved the same way.
A bad upload (not an image, no face, over --max_pixels, a clip over --max_frames) shows its message in
the page and the server keeps serving. Exit status: 2 setup error (weights, UV template, flags, port in
use), 0 --help, 130 Ctrl-C (the way to stop it: one line, no traceback).
"""

import sys
import tempfile

from absl import flags

from prnet.cli import common
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

common.define_weights_flags()
common.define_detection_flags(annotations=False)
common.define_assets_flags()
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (127.0.0.1: this machine only; 0.0.0.0: every "
                    "network interface, for other machines too).")
flags.DEFINE_integer("port", 7860, "Port to serve on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_integer("max_frames", 300, "Longest video clip accepted (frames); a longer one shows an error in "
                     "the page.", lower_bound=1)
flags.DEFINE_integer("app_max_pixels", DEFAULT_MAX_IMAGE_PIXELS, "Largest photo or video frame (width x height "
                     "pixels) accepted; a larger one shows an error in the page (as prnet-demo --max_pixels).",
                     lower_bound=MIN_IMAGE_SIDE ** 2)
flags.DEFINE_string("work_dir", None, "Folder for the result files of the requests (default: a new temporary "
                    "folder, removed at exit).")

FLAGS = flags.FLAGS


def check_port(host: str, port: int) -> None:
    """:func:`common.fail` (exit 2) when ``host:port`` cannot be listened on (e.g. in use)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed port's TIME_WAIT is free
            s.bind((host, port))
    except OSError as e:
        common.fail(f"cannot serve on {host}:{port} ({e.strerror or e}); pick another --port")


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}")
    try:
        import nicegui  # noqa: F401
    except ImportError:
        common.fail('the app needs its extra: pip install -e ".[app]" (NiceGUI)')
    check_port(FLAGS.host, FLAGS.port)

    from prnet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from prnet.app.page import serve
    from prnet.app.service import AppService
    from prnet.inference.predictor import Predictor
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING
    from prnet.weights.official import ensure_run_files

    ensure_run_files(weights=FLAGS.weights is None and not FLAGS.smoke_test_random_weights,
                     template=FLAGS.assets_dir is None, download=FLAGS.download)
    predictor = Predictor.from_weights(FLAGS.weights, backend=FLAGS.backend, precision=FLAGS.precision,
                                       smoke_test_random_weights=FLAGS.smoke_test_random_weights,
                                       download=FLAGS.download, detector=FLAGS.detector, template=FLAGS.assets_dir,
                                       refine=FLAGS.refine, max_pixels=FLAGS.app_max_pixels)
    predictor.template  # noqa: B018  (fail early on missing / corrupt UV template files)
    predictor.detector  # noqa: B018  (fail early when the detector cannot run here)
    print(f"prnet-app: using weights: {predictor.source} (backend: {predictor.backend_summary})", file=sys.stderr)
    if predictor.random_weights:
        print(f"prnet-app: WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): results only "
              "check the pipeline.", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="prnet-app-") as tmp:
        service = AppService(predictor, FLAGS.work_dir or tmp, max_frames=FLAGS.max_frames)
        print(f"prnet-app: serving on http://{FLAGS.host}:{FLAGS.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        serve(service, host=FLAGS.host, port=FLAGS.port)
    return 0


def run():
    """Console entry point ``prnet-app``."""
    common.run_tool("prnet-app", main, interrupted="server stopped")


if __name__ == "__main__":
    run()
