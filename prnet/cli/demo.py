"""prnet-demo: reconstruct the faces in photos and write meshes, landmarks, pose, depth and overlays.

Usage:
  prnet-demo                                  # the astronaut photo bundled with scikit-image
  prnet-demo --input photo.jpg --output out/  # one photo
  prnet-demo --input photos/ --output out/    # every image in a folder (not recursive)
  prnet-demo --input photo.jpg --smoke_test_random_weights   # pipeline check, no weights needed

Per face k (0 = largest) of an image <name>, in --output:
  <name>_<k>.obj             mesh, 43,867 vertices, vertex colours (or a texture with --texture)
  <name>_<k>_landmarks.txt   68 rows "x y z", image pixels (x right, y down, z toward the camera)
  <name>_<k>_pose.txt        yaw pitch roll (degrees) and the 3x3 rotation matrix
  <name>_<k>_depth.png       z-buffered depth (brighter = nearer), image size
  <name>_<k>_overlay.png     landmarks and shaded mesh over the photo
  <name>_<k>_texture.png     the face unwrapped into UV space (with --outputs ...,texture)
<name> is the input's file name without its extension, except when several inputs share it
(face.jpg and face.png, or Face.jpg and face.jpg): then each gets its extension, <name>_<ext>
(face_jpg, face_png), and any name still taken gets _2, _3, ... in sorted input order. So every
input has its own files, and the same folder always gives the same names.
Photos are turned as displayed: the EXIF orientation of phone photos is applied.
Face crops: by default from the face detector (--detector). Like the original demo's non-dlib mode,
an image with a sibling 68-landmark annotation is cropped from it instead (--annotations auto):
<name>.pts (menpo / iBUG, 1-based) or <name>.mat (300W-LP pt2d / AFLW2000-3D pt3d_68), with the
original x1.6 landmark rule; the demo says so ("crop from einstein.pts"). --annotations never
always uses the detector. A malformed annotation file fails that image (use --annotations never).
With --smoke_test_random_weights every file name carries _RANDOM_WEIGHTS and every header and
overlay says "RANDOM WEIGHTS - NOT A FACE MODEL".

Weights (--weights): a Keras .weights.h5, a SavedModel folder, a .tflite file, a training
checkpoint folder (train.py's <model_dir>/checkpoints) or a checkpoint prefix (TF2, or the official
TF1 one). By default the official weights from the cache ($PRNET_CACHE_DIR or ~/.cache/prnet): on
first use they are downloaded (checked by SHA-256) and converted to resfcn256.weights.h5, then
exported once as a fast SavedModel (BN folded) to resfcn256_saved_model/, which every later run
loads (it is re-exported only if the weights file changes). `prnet-convert --download` fetches and
converts ahead of time; --backend=keras runs the Keras model instead of the export. The weights and
backend in use are printed at start ("using weights: ... (backend: SavedModel)").

Exit status: 0 all images done; 1 at least one image failed (unreadable, no face, a broken
symbolic link, ...: each is reported on stderr and skipped, and leaves no files); 2 setup error
(weights, UV template, flags, an output folder that cannot be written: checked before any image
is processed; a full disk during the run stops it); 130 interrupted (Ctrl-C: the summary says
what was finished). The summary counts the files that are in --output at the end.
An image's files are written to a hidden temporary folder (.tmp-XXXXXXXX-staging) in --output
first and moved into place only when all of them were written, so an error or Ctrl-C never leaves
half of an image's files. A run killed outright (SIGKILL, power loss) can leave that folder
behind: the next run in the same --output deletes such folders once nothing has changed in them
for 15 minutes (live runs write theirs within seconds).
"""

import sys
from collections import Counter
from pathlib import Path

from absl import flags

from prnet.cli import run_console_app

OUTPUT_KINDS = ("obj", "landmarks", "pose", "depth", "overlay", "texture")
DEFAULT_OUTPUTS = ("obj", "landmarks", "pose", "depth", "overlay")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
RANDOM_TAG = "_RANDOM_WEIGHTS"

flags.DEFINE_string("input", None, "Image file or folder of images. Default: the astronaut photo bundled "
                    "with scikit-image (skimage.data.astronaut()).")
flags.DEFINE_string("output", "./prnet_output", "Output folder (created if missing).")
flags.DEFINE_string("weights", None, "Network weights: Keras .weights.h5 (or .keras), SavedModel folder, .tflite file, "
                    "training checkpoint folder (train.py's <model_dir>/checkpoints), or a TF2 / official TF1 "
                    "checkpoint prefix. Default: the official weights from the cache ($PRNET_CACHE_DIR or "
                    "~/.cache/prnet), downloaded and converted on first use, then run through a SavedModel "
                    "exported once into the cache (see --backend).")
flags.DEFINE_enum("backend", "auto", ["auto", "saved_model", "keras"],
                  "How to run the network. auto: the official weights through their cached SavedModel "
                  "export (exported once on first use), any --weights in its own format; saved_model: "
                  "require a SavedModel (official export or a --weights SavedModel folder); keras: require a "
                  "Keras model (official Keras weights, or --weights .weights.h5 / .keras / checkpoint).")
flags.DEFINE_bool("download", True, "Allow downloading the official weights / UV template when missing from the "
                  "cache (--nodownload: fail with instructions instead).")
flags.DEFINE_bool("smoke_test_random_weights", False, "Use an UNTRAINED network to test the pipeline; every "
                  "output file name, header and overlay is marked as random weights.")
flags.DEFINE_string("detector", "auto", "Face detector: auto (opencv if available, else dlib), opencv "
                    "(Haar cascade, OpenCV 4), dlib (HOG; pip install dlib-bin).")
flags.DEFINE_enum("annotations", "auto", ["auto", "never"],
                  "auto: crop an image from its sibling 68-landmark annotation file when there is one "
                  "(<name>.pts menpo/iBUG, or <name>.mat 300W-LP / AFLW2000-3D fit with pt2d / pt3d_68), "
                  "by the original x1.6 landmark rule, instead of detecting the face; never: always "
                  "use the face detector.")
flags.DEFINE_string("uv_dir", None, "UV template folder (uv-data). Default: $PRNET_ASSETS_DIR or the cache.")
flags.DEFINE_integer("batch_size", 8, "Face crops per network call.", lower_bound=1)
flags.DEFINE_integer("max_faces", None, "Reconstruct at most this many faces per image (largest first). "
                     "Default: all.", lower_bound=1)
flags.DEFINE_list("outputs", list(DEFAULT_OUTPUTS), f"Files to write per face, any of {','.join(OUTPUT_KINDS)}.")
flags.DEFINE_bool("texture", False, "Write the .obj with a UV texture image (<name>_<k>.png + .mtl) instead "
                  "of per-vertex colours.")

FLAGS = flags.FLAGS


def list_inputs(path) -> list:
    """The image files to process: ``path`` itself, or the images directly inside a folder (sorted).

    Broken symbolic links with an image extension are listed too, so that they are reported."""
    p = Path(path).expanduser()
    if p.is_dir():
        return sorted(f for f in p.iterdir() if (f.is_file() or (f.is_symlink() and not f.exists()))
                      and f.suffix.lower() in IMAGE_SUFFIXES)
    return [p]


def output_names(paths) -> list:
    """One output base name per input path, all different (also ignoring case), deterministic.

    The file name without extension; inputs sharing it (ignoring case) get ``<stem>_<ext>``; a name
    still taken after that gets ``_2``, ``_3``, ... (in input order; the first keeps it).
    """
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    counts = Counter(s.casefold() for s in stems)
    shared = {k for k, count in counts.items() if count > 1}
    names = [f"{s}_{p.suffix[1:]}" if s.casefold() in shared and p.suffix else s for s, p in zip(stems, paths)]
    wanted = {name.casefold() for name in names}
    taken, out = set(), []
    for name in names:
        unique, n = name, 1
        while unique.casefold() in taken or (unique != name and unique.casefold() in wanted):
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique.casefold())
        out.append(unique)
    return out


def _write_png(path: Path, image_rgb_or_grey) -> None:
    import cv2
    import numpy as np

    img = np.asarray(image_rgb_or_grey)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    buf.tofile(str(path))


def _header(face, image_name: str, what: str) -> str:
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING  # imports TensorFlow: not at --help time

    lines = [f"# PRNet {what} for {image_name}", f"# weights: {face.source}"]
    if face.random_weights:
        lines.insert(0, f"# {RANDOM_WEIGHTS_WARNING}: these numbers are meaningless")
    return "\n".join(lines) + "\n"


def write_face_outputs(folder: Path, stem: str, face, image_name: str, outputs, texture: bool) -> list:
    """Write the requested files of one face into ``folder``; returns their paths."""
    import cv2
    import numpy as np

    from prnet.mesh.draw import draw_landmarks, draw_mesh_overlay
    from prnet.mesh.obj import write_obj
    from prnet.mesh.render import depth_to_uint8
    from prnet.mesh.texture import template_uv_coords
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING_ASCII

    written = []
    image = face.image
    if "obj" in outputs:
        obj = folder / f"{stem}.obj"
        if texture:
            write_obj(obj, face.vertices, face.triangles, texture=face.uv_texture(),
                               uv_coords=template_uv_coords(face.template), image_height=image.shape[0])
            written += [obj.with_suffix(".png"), obj.with_suffix(".mtl")]
        else:
            write_obj(obj, face.vertices, face.triangles, colors=face.colors, image_height=image.shape[0])
        if face.random_weights:  # prepend the warning (we are inside the private staging folder)
            body = obj.read_text(encoding="ascii")
            obj.write_text(f"# {RANDOM_WEIGHTS_WARNING_ASCII}\n" + body, encoding="ascii")
        written.append(obj)
    if "landmarks" in outputs:
        path = folder / f"{stem}_landmarks.txt"
        head = _header(face, image_name, "68 landmarks") + (
            "# one row per landmark (iBUG 68-point order): x y z in image pixels; x right, y down (pixel\n"
            "# centres at integer coordinates), z toward the camera (relative: origin arbitrary)\n")
        with open(path, "w", encoding="utf-8") as f:
            f.write(head)
            np.savetxt(f, face.landmarks, fmt="%.3f")
        written.append(path)
    if "pose" in outputs:
        rot, (yaw, pitch, roll) = face.pose
        path = folder / f"{stem}_pose.txt"
        with open(path, "w", encoding="utf-8") as f:
            f.write(_header(face, image_name, "head pose"))
            f.write("# yaw pitch roll in degrees (300W-LP / AFLW2000-3D convention, see prnet.core.transforms)\n")
            f.write(f"{yaw:.4f} {pitch:.4f} {roll:.4f}\n")
            f.write("# rotation matrix R (image frame: vertices ~ scale * R @ canonical + t), 3 rows\n")
            np.savetxt(f, rot, fmt="%.6f")
        written.append(path)
    if "depth" in outputs:
        path = folder / f"{stem}_depth.png"
        _write_png(path, depth_to_uint8(face.depth_image()))
        written.append(path)
    if "overlay" in outputs:
        over = draw_mesh_overlay(image, face.vertices, face.triangles)
        over = draw_landmarks(over, face.landmarks)
        if face.random_weights:
            scale = max(0.5, image.shape[1] / 800)
            cv2.putText(over, RANDOM_WEIGHTS_WARNING_ASCII, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 0, 0), max(1, int(2 * scale)), cv2.LINE_AA)
        path = folder / f"{stem}_overlay.png"
        _write_png(path, over)
        written.append(path)
    if "texture" in outputs:
        path = folder / f"{stem}_texture.png"
        _write_png(path, face.uv_texture())
        written.append(path)
    return written


def process_image(predictor, image, name: str, display_name: str, out_dir: Path, outputs, texture: bool,
                  max_faces=None, landmarks=None) -> list:
    """Reconstruct one image and write its files atomically (all or none: a staging folder, then
    moved, :func:`prnet.core.files.staged_files`). Returns the paths.

    ``landmarks`` (``(68, 2+)`` image px) crop the one face from them instead of the detector.
    Write errors (disk full, read-only, ...) raise :class:`prnet.errors.OutputFolderError` naming
    ``out_dir``, not the staging folder."""
    from prnet.core.files import folder_error, staged_files

    faces = predictor.reconstruct(image, landmarks=landmarks, max_faces=max_faces)
    staged = []
    try:
        with staged_files(out_dir) as staging:
            for k, face in enumerate(faces):
                stem = f"{name}_{k}" + (RANDOM_TAG if face.random_weights else "")
                staged += write_face_outputs(staging, stem, face, display_name, outputs, texture)
    except OSError as e:
        raise folder_error(e, out_dir, f" (the files of {display_name})") from e
    return [out_dir / path.name for path in staged]


def _fail(message: str, code: int = 2):
    print(f"prnet-demo: error: {message}", file=sys.stderr)
    sys.exit(code)


def make_jobs(input_path) -> list:
    """``[(output name, display name, load() -> RGB image, path or None)]`` for ``--input``."""
    from prnet.core.images import read_image

    if input_path is None:
        import skimage.data

        return [("astronaut", "skimage.data.astronaut()", lambda: skimage.data.astronaut(), None)]
    files = list_inputs(input_path)
    return [(name, str(f), (lambda f=f: read_image(f)), f) for name, f in zip(output_names(files), files)]


def process_jobs(predictor, jobs, out_dir: Path, outputs, *, texture: bool = False, max_faces=None,
                 annotations: str = "auto", detector_name: str = "") -> int:
    """Process every job of :func:`make_jobs` into ``out_dir``, report each failure and a summary on
    stderr; returns the exit status (0 all done, 1 some failed, 2 the output folder became
    unwritable (disk full, ...): the run stops, 130 Ctrl-C: the run stops)."""
    from tqdm import tqdm

    from prnet.core.files import FOLDER_ERRNOS
    from prnet.data.annotations import sidecar_landmarks
    from prnet.errors import NoFaceFoundError, OutputFolderError, PRNetError

    failed, written, done, stopped, status = [], [], 0, None, 0
    progress = tqdm(jobs, desc="prnet-demo", unit="image", disable=len(jobs) < 2, file=sys.stderr)
    try:
        for name, display, load, path in progress:
            try:
                landmarks = None
                annotation = sidecar_landmarks(path) if path is not None and annotations == "auto" else None
                if annotation is not None:
                    landmarks, ann_path = annotation
                    tqdm.write(f"prnet-demo: {display}: crop from {ann_path.name} (68 annotated landmarks; "
                               "--annotations never to use the face detector)", file=sys.stderr)
                written += process_image(predictor, load(), name, display, out_dir, outputs, texture,
                                         max_faces=max_faces, landmarks=landmarks)
                done += 1
            except (PRNetError, OSError, ValueError) as e:
                if isinstance(e, OutputFolderError) and e.errno in FOLDER_ERRNOS:
                    stopped, status = f"stopped: {e}", 2
                    break
                failed.append(display)
                message = str(e)
                if isinstance(e, NoFaceFoundError):  # the library's hint names API arguments: give the CLI's
                    message = (f"no face found by the {detector_name} face detector: put the face's 68-point "
                               f"annotation beside the image ({name}.pts or {name}.mat, used with --annotations "
                               "auto), or try another --detector")
                tqdm.write(f"prnet-demo: {display}: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        stopped, status = "interrupted (Ctrl-C); no partial files were left", 130
    finally:
        progress.close()
    on_disk = len({path for path in written if path.is_file()})
    not_run = len(jobs) - done - len(failed)
    print(f"prnet-demo: {done}/{len(jobs)} images done, {on_disk} files written to {out_dir}"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; {stopped}; {not_run} image(s) not processed" if stopped else ""), file=sys.stderr)
    if status:
        return status
    return 1 if failed else 0


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --input PATH")
    outputs = [o.strip() for o in FLAGS.outputs if o.strip()]
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown or not outputs:
        _fail(f"--outputs: unknown {unknown or 'empty list'}; choose from {','.join(OUTPUT_KINDS)}")

    from prnet.core.files import ensure_writable_folder, remove_stale_temporaries
    from prnet.errors import PRNetError

    if FLAGS.input is not None and not Path(FLAGS.input).expanduser().is_symlink() and \
            not Path(FLAGS.input).expanduser().exists():
        _fail(f"--input {FLAGS.input} does not exist")
    jobs = make_jobs(FLAGS.input)
    if FLAGS.input is None:
        print("prnet-demo: no --input given: using the astronaut photo bundled with scikit-image "
              "(skimage.data.astronaut()).", file=sys.stderr)
    elif not jobs:
        _fail(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {FLAGS.input}")
    try:  # before the (slow) weights: an unwritable --output is a setup error, found at once
        out_dir = ensure_writable_folder(FLAGS.output)
    except PRNetError as e:
        _fail(str(e))
    stale = remove_stale_temporaries(out_dir, suffix="-staging")
    if stale:
        print(f"prnet-demo: removed {len(stale)} temporary folder(s) left in {out_dir} by an interrupted run "
              f"({', '.join(p.name for p in stale)})", file=sys.stderr)

    from prnet.inference.predictor import Predictor
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING

    try:
        predictor = Predictor.from_weights(FLAGS.weights, backend=FLAGS.backend,
                                           smoke_test_random_weights=FLAGS.smoke_test_random_weights,
                                           download=FLAGS.download, detector=FLAGS.detector,
                                           template=FLAGS.uv_dir, batch_size=FLAGS.batch_size)
        predictor.template  # noqa: B018  (fail early on missing / corrupt UV template files)
        predictor.detector  # noqa: B018  (fail early when the detector cannot run here)
    except PRNetError as e:
        _fail(str(e))
    print(f"prnet-demo: using weights: {predictor.source} (backend: {predictor.backend_name})", file=sys.stderr)
    if predictor.random_weights:
        print(f"prnet-demo: WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): outputs only "
              "check the pipeline.", file=sys.stderr)
    return process_jobs(predictor, jobs, out_dir, outputs, texture=FLAGS.texture, max_faces=FLAGS.max_faces,
                        annotations=FLAGS.annotations,
                        detector_name=getattr(predictor.detector, "name", FLAGS.detector))


def run():
    """Console entry point ``prnet-demo`` (Ctrl-C before the images are processed: exit 130, no traceback)."""
    try:
        run_console_app(main, __name__, __doc__)
    except KeyboardInterrupt:
        print("prnet-demo: interrupted (Ctrl-C) before any image was processed; nothing written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
