"""Regenerate the README gallery (docs/gallery/*.jpg) by running prnet-demo and prnet-swap.

The official weights are not available everywhere (they are not in this repository and need a
download), so the pictures are made with an ORACLE network instead, and marked so: for each
annotated photo of ``../shared/samples/faces`` (einstein, takeo, breakingbad: 68-point ``.pts``)
the template's mean face is posed by a least-squares fit of its 68 landmarks to the annotated
ones (scaled orthographic camera: scale, 3D rotation, 2D shift; z scaled alike), and a SavedModel
is written that returns that position map for that photo's crop (it recognises the crop by
nearest neighbour among the photos it knows). The tools run on it exactly as on real weights, with
``--weights <that SavedModel>``; the shapes are the mean face's, not the people's.

With ``--weights`` (e.g. the official weights: ``--weights ~/.cache/prnet/resfcn256.weights.h5``)
the tools run on those weights instead and the pictures are real PRNet results.

Usage:
  python benchmarks/make_gallery.py [--weights W] [--shared ../shared] [--out docs/gallery] [--keep WORK_DIR]

Prints each command it runs (the README shows them beside the pictures). Pictures are downscaled
to at most 360 px and saved as JPEG under 60 KB.
"""

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("einstein.jpg", "takeo.ppm", "breakingbad.jpg")
MAX_SIDE, MAX_BYTES = 360, 60_000


def fitted_posmap(template, landmarks):
    """The mean face posed onto 68 image landmarks ``(68, 2)``: ``(256, 256, 3)`` image-pixel map.

    Affine fit ``lm ~ A @ X + b`` of the mean face's landmarks X (3D), made a scaled rotation: the
    rows of A are replaced by the nearest orthonormal pair (SVD) times their mean norm, the third
    row is their cross product (z toward the camera, as in the image frame)."""
    canonical = np.zeros((256 * 256, 3))
    canonical[template.face_ind] = template.canonical_vertices
    canonical = canonical.reshape(256, 256, 3)
    x = canonical[template.kpt_ind[:, 1], template.kpt_ind[:, 0]]
    xm, lm = x.mean(axis=0), np.asarray(landmarks, np.float64)[:, :2]
    a, *_ = np.linalg.lstsq(np.hstack([x - xm, np.ones((68, 1))]), lm, rcond=None)
    affine, b = a[:3].T, a[3]  # (2, 3), (2,)
    u, s, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt  # nearest 2x3 with orthonormal rows
    rot = np.vstack([rows, np.cross(rows[0], rows[1])])
    scale = s.mean()
    pos = scale * (canonical - xm) @ rot.T + np.r_[b, 0.0]
    return pos * (template.face_mask[..., None] > 0)


def save_lookup_model(crops, posmaps, folder):
    """A SavedModel (``images`` -> ``posmap``) that returns, for each crop, the position map of the
    nearest known crop (mean squared difference on 32x32 thumbnails)."""
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self):
            super().__init__()
            self.keys = tf.constant(tf.image.resize(np.asarray(crops, np.float32), (32, 32), "area"))
            self.values = tf.constant(np.asarray(posmaps, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 256, 256, 3], tf.float32, name="images")])
        def serve(self, images):
            thumbs = tf.image.resize(images, (32, 32), "area")
            dist = tf.reduce_mean(tf.square(thumbs[:, None] - self.keys[None]), axis=[2, 3, 4])
            return {"posmap": tf.gather(self.values, tf.argmin(dist, axis=1))}

    module = Lookup()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


def build_oracle(shared: Path, folder: Path) -> Path:
    from prnet.core.crop import crop_transform, image_to_crop, warp_crop
    from prnet.core.images import read_image
    from prnet.core.uv import load_uv_template
    from prnet.data.annotations import sidecar_landmarks
    from prnet.inference.predictor import Predictor

    template = load_uv_template(shared / "prnet-assets" / "uv-data")
    predictor = Predictor(None, detector=None, template=template)
    crops, posmaps = [], []
    for name in PHOTOS:
        path = shared / "samples" / "faces" / name
        image = read_image(path)
        landmarks, _ = sidecar_landmarks(path)
        (_, center, size, tform), = predictor.face_crops(image, landmarks=landmarks)
        assert np.allclose(tform, crop_transform(center, size))
        crops.append(warp_crop(image, tform))
        pos = fitted_posmap(template, landmarks)
        posmaps.append(image_to_crop(pos.reshape(-1, 3), tform).reshape(256, 256, 3))
    model = folder / "oracle_savedmodel"
    save_lookup_model(np.stack(crops), np.stack(posmaps), model)
    return model


def run(command, shown):
    print("$ " + " ".join(shlex.quote(str(c)) for c in shown), flush=True)
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stderr}")


def face_square(shared: Path, name: str, enlarge: float = 1.3):
    """``(x0, y0, x1, y1)`` integer pixels: the photo's x1.6 landmark crop square, ``enlarge``d."""
    from prnet.core.crop import box_from_landmarks
    from prnet.data.annotations import sidecar_landmarks

    center, size = box_from_landmarks(sidecar_landmarks(shared / "samples" / "faces" / name)[0])
    half = size * enlarge / 2
    return tuple(int(round(c)) for c in (center[0] - half, center[1] - half, center[0] + half, center[1] + half))


def save_small(src: Path, dst: Path, box=None):
    """Save ``src`` as a small JPEG ``dst``: cut to ``box`` (clipped to the picture), downscaled."""
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if box is not None:
        x0, y0, x1, y1 = box
        img = img[max(y0, 0):min(y1, img.shape[0]), max(x0, 0):min(x1, img.shape[1])]
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for quality in (85, 75, 65, 55):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) < MAX_BYTES:
            break
    dst.write_bytes(buf.tobytes())
    print(f"  -> {dst.relative_to(REPO)} ({img.shape[1]}x{img.shape[0]}, {len(buf) // 1000} KB)")


def render_front(obj: Path, out_png: Path):
    """Shade the frontal .obj (y up in the file) as seen from the front, 256x256."""
    from prnet.mesh.draw import draw_mesh_overlay

    lines = obj.read_text().splitlines()
    v = np.array([[float(t) for t in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    f = np.array([[int(t) - 1 for t in ln.split()[1:4]] for ln in lines if ln.startswith("f ")])
    v[:, 1] = -v[:, 1]  # back to y down (the .obj has y_obj = -y)
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    scale = 232 / (hi - lo).max()
    v = (v - np.r_[(lo + hi) / 2, 0]) * scale + np.r_[128, 128, 0]  # centred in the picture, 12 px margin
    canvas = np.full((256, 256, 3), 255, np.uint8)
    cv2.imwrite(str(out_png), cv2.cvtColor(draw_mesh_overlay(canvas, v, f, alpha=1.0), cv2.COLOR_RGB2BGR))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--out", default=str(REPO / "docs" / "gallery"))
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--weights", default=None, help="real network weights (any format prnet-demo takes); "
                        "default: the oracle SavedModel described above")
    args = parser.parse_args()
    shared, out = Path(args.shared).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.keep or tempfile.mkdtemp(prefix="prnet-gallery-"))
    work.mkdir(parents=True, exist_ok=True)
    uv = shared / "prnet-assets" / "uv-data"
    faces = shared / "samples" / "faces"
    model = Path(args.weights).expanduser() if args.weights else build_oracle(shared, work)
    py = sys.executable
    common = ["--weights", model, "--uv_dir", uv]
    shown_common = ["--weights", args.weights or "ORACLE_SAVEDMODEL"]

    demo_out = work / "demo"
    for name, outputs in (("einstein.jpg", "overlay,pose_box,depth,texture,texture_mask,front"),
                          ("takeo.ppm", "overlay,pose_box"), ("breakingbad.jpg", "pose_box")):
        extra = ["--outputs", outputs, "--mask_texture"]
        run([py, "-m", "prnet.cli.demo", "--input", faces / name, "--output", demo_out, *common, *extra],
            ["prnet-demo", "--input", f"shared/samples/faces/{name}", "--output", "out", *shown_common, *extra])
    einstein = face_square(shared, "einstein.jpg")
    for src, dst, box in (("einstein_0_overlay.png", "overlay.jpg", einstein),
                          ("takeo_0_pose_box.png", "pose_box.jpg", None),
                          ("breakingbad_0_pose_box.png", "pose_box_2.jpg", None),
                          ("einstein_0_depth.png", "depth.jpg", einstein),
                          ("einstein_0_texture.png", "texture_masked.jpg", None),
                          ("einstein_0_texture_mask.png", "texture_mask.jpg", None)):
        save_small(demo_out / src, out / dst, box)
    render_front(demo_out / "einstein_0_front.obj", work / "front.png")
    save_small(work / "front.png", out / "front.jpg")

    swapped = work / "swap.png"
    run([py, "-m", "prnet.cli.swap", "--input", faces / "einstein.jpg", "--reference", faces / "takeo.ppm",
         "--output", swapped, *common],
        ["prnet-swap", "--input", "shared/samples/faces/einstein.jpg", "--reference",
         "shared/samples/faces/takeo.ppm", "--output", "swap.png", *shown_common])
    save_small(swapped, out / "swap.jpg", einstein)
    eyes = work / "eyes.png"
    run([py, "-m", "prnet.cli.swap", "--input", faces / "takeo.ppm", "--reference", faces / "einstein.jpg",
         "--mode", "eyes", "--output", eyes, *common],
        ["prnet-swap", "--input", "shared/samples/faces/takeo.ppm", "--reference",
         "shared/samples/faces/einstein.jpg", "--mode", "eyes", "--output", "eyes.png", *shown_common])
    save_small(eyes, out / "swap_eyes.jpg", face_square(shared, "takeo.ppm", 1.0))


if __name__ == "__main__":
    main()
