"""Time one face swap on CPU (prnet-swap's work after the network): reference texture and
visibility, z-buffered painting onto the target mesh, and blending (none / alpha / poisson).

Faces: the template's mean face placed on real photos from their 68-point annotations (the
stand-in network of the test suite, ``tests/oracle.py``), so the numbers do not depend on weights:
einstein.jpg (817x1024, face ~300 px wide) as the target, takeo.ppm as the reference; and a
synthetic 256x256 crop (face ~160 px) swapped with itself. The network's own time (one forward
pass per photo, see benchmarks/benchmark.py) comes on top.

Usage:
  python benchmarks/bench_swap.py [--shared ../shared] [--repeats 10]
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test suite's oracle (stand-in network)


def median_ms(fn, repeats):
    fn()  # warm-up (also fills the FaceResults' caches of the first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    from machine import machine_description

    from prnet.core.images import read_image
    from prnet.core.uv import load_uv_template
    from prnet.data.annotations import sidecar_landmarks
    from prnet.inference.predictor import Predictor
    from prnet.inference.results import swap_faces

    from oracle import mean_face_crop_posmap, oracle_face, synthetic

    shared = Path(args.shared)
    template = load_uv_template(shared / "prnet-assets" / "uv-data")

    class Constant:
        source, random_weights = "mean face", False

        def __call__(self, crops):
            import numpy as np

            return np.repeat(mean_face_crop_posmap(template)[None], len(crops), axis=0)

    predictor = Predictor(Constant(), detector=None, template=template)

    def face_of(path):
        return predictor.reconstruct(read_image(path), landmarks=sidecar_landmarks(path)[0])[0]

    faces = shared / "samples" / "faces"
    print(machine_description())
    image, pos = synthetic(0, template, 20.0)
    crop = oracle_face(image, pos, template)
    cases = [("256x256 crop, self-swap", crop, crop),
             ("einstein 817x1024 <- takeo", face_of(faces / "einstein.jpg"), face_of(faces / "takeo.ppm"))]
    print(f"median of {args.repeats} runs, ms per swap (fresh FaceResults each run: the reference's "
          "visibility and both textures are recomputed; the network and photo reading are not timed)")
    for name, target, reference in cases:
        row = []
        for blend in ("none", "alpha", "poisson"):
            def run(target=target, reference=reference, blend=blend):
                swap_faces(dataclasses.replace(target), dataclasses.replace(reference), blend=blend)
            row.append(f"{blend} {median_ms(run, args.repeats):7.1f}")
        print(f"  {name:28s} " + "   ".join(row))


if __name__ == "__main__":
    main()
