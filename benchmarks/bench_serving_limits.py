"""Peak memory and time of the SavedModel's image reading on crafted, valid-but-costly files.

Runs the graph ops each ``predict_images*`` signature runs per image (``checked_header`` then
``decode_oriented``, :mod:`prnet.serving.ops.image_bytes`, traced by ``tf.function`` as in the
export, with the default cap of 40 MP) on the files of ``tests/serving_bombs.py``, each case in a
fresh process: ``ru_maxrss`` growth after a warm-up on a small PNG, wall time, and the outcome
(decoded shape, or the first line of the InvalidArgumentError).

    python benchmarks/bench_serving_limits.py [--only NAME ...] [--timeout 300] [--old OLD_image_bytes.py]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: Python expression over serving_bombs (as s) giving the request bytes
    "gif_40_frames_16MP": "s.gif(40, 4000, 4000)",
    "gif_400_frames_1MP": "s.gif(400, 1000, 1000)",
    "gif_64MP_frame_after_1M_subblocks": "s.gif(1, 8000, 8000, extension=s.gif_comment(1_000_001))",
    "gif_600k_subblocks": "s.gif(1, 64, 64, extension=s.gif_comment(600_000))",
    "jpeg_progressive_36MP_300_scans": "s.progressive_jpeg(6000, 6000, 300)",
    "jpeg_1M_fill_bytes": "s.jpeg_fill_bytes(s.jpeg(64, 64), 1_000_000)",
    "png_300k_chunks": "s.png(64, 64, chunks_before_idat=300_000)",
    "png_36MP_header_tiny_data": "s.png(6000, 6000, idat=b'x')",
    "png_36MP_black": "s.png(6000, 6000)",
}

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1] + "/tests")
import serving_bombs as s
import tensorflow as tf
if sys.argv[3]:  # the module as it was before the limits of issue 20 (a copy of the old file)
    import importlib.util
    spec = importlib.util.spec_from_file_location("old_image_bytes", sys.argv[3])
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
else:
    from prnet.serving.ops import image_bytes as ops

@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def read(data):
    if sys.argv[3]:
        data, sh, sw, orientation, h, w = ops.checked_header(data)
        return tf.shape(ops.decode_oriented(data, sh, sw, orientation))
    return tf.shape(ops.decode_oriented(ops.checked_header(data)))

data = eval(sys.argv[2])
read(tf.io.encode_png(tf.zeros([64, 64, 3], tf.uint8)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    outcome = "decoded " + "x".join(str(v) for v in read(tf.constant(data)).numpy())
except tf.errors.OpError as err:
    lines = [x for x in err.message.splitlines() if x.strip() and not x.startswith((" ", "\t", "Graph execution",
                                                                                    "Detected at", "File "))]
    outcome = type(err).__name__ + ": " + (lines[-1] if lines else err.message)[:200]
seconds = time.perf_counter() - t
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print("RESULT " + json.dumps({"bytes": len(data), "seconds": round(seconds, 2), "peak_growth_mb": round(growth),
                              "outcome": outcome}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--old", default="", help="a copy of an older prnet/serving/ops/image_bytes.py to measure")
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    for name, expr in CASES.items():
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), expr, args.old], capture_output=True,
                                 text=True, timeout=args.timeout, env=env)
            lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {"error": run.stderr.strip().splitlines()[-1:]}
        except subprocess.TimeoutExpired:
            result = {"outcome": f"killed after {args.timeout:.0f} s"}
        print(f"{name:40s} {json.dumps(result)}  (process {time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
