"""prnet-demo: reconstruct the faces in photos and write meshes, landmarks, pose, depth and overlays.

Usage:
  prnet-demo                                  # the astronaut photo bundled with scikit-image
  prnet-demo --input photo.jpg --output out/  # one photo
  prnet-demo --input photos/ --output out/    # every image in a folder (not recursive)
  prnet-demo --input photo.jpg --smoke_test_random_weights   # pipeline check, no weights needed
  prnet-demo --input clip.mp4 --output out/   # a video (by its suffix: .mp4 .mov .avi .mkv .webm ...)
  prnet-demo --input frames/ --video          # a folder of frames (sorted by name) as one video

Per face k (0 = largest) of an image <name>, in --output:
  <name>_<k>.obj             mesh, 43,867 vertices, vertex colours (or a texture with --texture)
  <name>_<k>_landmarks.txt   68 rows "x y z", image pixels (x right, y down, z toward the camera)
  <name>_<k>_pose.txt        yaw pitch roll (degrees) and the 3x3 rotation matrix
  <name>_<k>_depth.png       z-buffered depth (brighter = nearer), image size
  <name>_<k>_overlay.png     landmarks and shaded mesh over the photo
  <name>_<k>_texture.png     the face unwrapped into UV space (with --outputs ...,texture)
Further --outputs kinds (the original demo.py's other outputs):
  texture_mask  <name>_<k>_texture_mask.png  UV visibility mask (255 = surface point seen in the photo)
  front         <name>_<k>_front.obj         the mesh with the head pose undone (frontal, mean face frame)
  pose_box      <name>_<k>_pose_box.png      the 3D pose box, rotated by the estimated pose, on the photo
  npz           <name>_<k>.npz               vertices, colors, triangles, kpt, pose, camera_matrix, tform, ...
  mat           <name>_<k>_mesh.mat          the same for MATLAB (the original's field names)
  ply           <name>_<k>.ply               binary PLY mesh with vertex colours
  depth_npy     <name>_<k>_depth.npy         float32 depth (image-px z, NaN = background), image size
  crop          <name>_<k>_crop.png          the 256x256 crop the network saw (original's isImage)
The pose file also holds the 3x4 camera matrix. --texture_size and --mask_texture shape the UV
textures (texture, textured .obj); see the README's output table for every shape, unit and frame.
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
Detected faces are cropped twice (--refine, the default): the detector's crop, then the x1.6 crop of
the landmarks the first pass predicted (the evaluation protocol's crop).
Video (--input with a video suffix, any container OpenCV reads; or --video: the file as a video, or
a folder's images as frames in name order; without --video a folder is a folder of photos): faces
are followed from frame to frame, each cropped by the x1.6 landmark rule from the landmarks of the
previous frame; the detector runs on the first frame, when a face is lost (implausible landmarks,
too small, out of the frame) and every --detect_every frames. Face ids stay with their face. Written:
  <name>_video.mp4    the frames with mesh, landmarks and face id (mp4v, the input's frame rate)
  <name>_tracks.npz   per face per frame: frame, face_id, detected, crop_box (4), landmarks (68x3),
                      pose (yaw pitch roll, degrees), rotation (3x3), plus num_frames, fps, ...
  <name>_tracks.csv   the same rows as text
all three together or none (an error or Ctrl-C leaves nothing); --outputs does not apply.
With --smoke_test_random_weights every file name carries _RANDOM_WEIGHTS and every header and
overlay says "RANDOM WEIGHTS - NOT A FACE MODEL".

Weights (--weights): a Keras .weights.h5, a SavedModel folder, a .tflite file, a training
checkpoint folder (train.py's <model_dir>/checkpoints) or a checkpoint prefix (TF2, or the official
TF1 one). By default the official weights from the cache ($PRNET_CACHE_DIR or ~/.cache/prnet): on
first use they are downloaded (checked by SHA-256) and converted to resfcn256.weights.h5, then
exported once as a fast SavedModel (BN folded) to resfcn256_saved_model/, which every later run
loads (it is re-exported only if the weights file changes). `prnet-convert --download` fetches and
converts ahead of time; --backend=keras runs the Keras model instead of the export, --backend=openvino
runs any weights in OpenVINO (pip install -e ".[openvino]"; --precision is OpenVINO's). The weights and
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

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from absl import flags

from prnet.cli import run_console_app
from prnet.core.images import IMAGE_SUFFIXES  # noqa: F401  (re-exported)

OUTPUT_KINDS = ("obj", "landmarks", "pose", "depth", "overlay", "texture", "texture_mask", "front", "pose_box",
                "npz", "mat", "ply", "depth_npy", "crop")
DEFAULT_OUTPUTS = ("obj", "landmarks", "pose", "depth", "overlay")
RANDOM_TAG = "_RANDOM_WEIGHTS"

flags.DEFINE_string("input", None, "Image file or folder of images. Default: the astronaut photo bundled "
                    "with scikit-image (skimage.data.astronaut()).")
flags.DEFINE_string("output", "./prnet_output", "Output folder (created if missing).")
flags.DEFINE_string("weights", None, "Network weights: Keras .weights.h5 (or .keras), SavedModel folder, .tflite file, "
                    "training checkpoint folder (train.py's <model_dir>/checkpoints), or a TF2 / official TF1 "
                    "checkpoint prefix. Default: the official weights from the cache ($PRNET_CACHE_DIR or "
                    "~/.cache/prnet), downloaded and converted on first use, then run through a SavedModel "
                    "exported once into the cache (see --backend).")
flags.DEFINE_enum("backend", "auto", ["auto", "saved_model", "keras", "openvino"],
                  "How to run the network. auto: the official weights through their cached SavedModel "
                  "export (exported once on first use), any --weights in its own format; saved_model: "
                  "require a SavedModel (official export or a --weights SavedModel folder); keras: require a "
                  "Keras model (official Keras weights, or --weights .weights.h5 / .keras / checkpoint); openvino: "
                  "run any --weights (SavedModel, .tflite, Keras weights; the official weights converted in memory) "
                  "in OpenVINO at --precision, set explicitly (optional: pip install -e \".[openvino]\").")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "Network precision. float32: as trained. bfloat16: bf16 weights and activations (the output "
                  "layer in float32), faster on CPUs with bf16 units (AVX512_BF16, AMX) and GPUs; Keras weights, "
                  "checkpoints and the official weights run their bf16 graph in-process, a SavedModel must be a "
                  "bf16 export (export.py --formats=saved_model_bf16). An exported file's own precision must match.")
flags.DEFINE_bool("download", True, "Allow downloading the official weights / UV template when missing from the "
                  "cache (--nodownload: fail with instructions instead).")
flags.DEFINE_bool("smoke_test_random_weights", False, "Use an UNTRAINED network to test the pipeline; every "
                  "output file name, header and overlay is marked as random weights.")
flags.DEFINE_string("detector", "auto", "Face detector: auto (blazeface if installed, else opencv, else dlib), "
                    "blazeface (MediaPipe BlazeFace on TFLite; large poses), opencv (Haar cascade, OpenCV 4), "
                    "dlib (HOG; pip install dlib-bin).")
flags.DEFINE_bool("refine", True, "Landmark re-cropping of detected faces: crop each face again by the x1.6 "
                  "landmark rule from the landmarks the first network pass predicted, and run the network again "
                  "(twice the network time per detected face; --norefine: one pass on the detector's crop).")
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

flags.DEFINE_integer("texture_size", 256, "Side in pixels of the UV textures written (texture, texture_mask, "
                     "textured .obj); the position map is resampled (bilinear), as the original's texture_size.",
                     lower_bound=16, upper_bound=4096)
flags.DEFINE_bool("mask_texture", False, "Black out the UV texture (texture output and the textured .obj) where "
                  "the surface point is not seen in the photo (hidden by the z-buffer or turned away), as the "
                  "original's isMask.")
flags.DEFINE_bool("video", False, "Treat --input as a video: a video file of any suffix (files with a video suffix, "
                  ".mp4 .mov .avi .mkv .webm ..., are videos anyway), or a folder whose images are the frames in "
                  "name order. Writes <name>_video.mp4 (mesh, landmarks, face ids) and <name>_tracks.npz / .csv "
                  "(per frame and face: landmarks, pose, crop box, face id).")
flags.DEFINE_integer("detect_every", 10, "Video: run the face detector every this many frames to find new faces "
                     "(0: only on the first frame and when a tracked face is lost); between, each face is cropped "
                     "from its landmarks in the previous frame.", lower_bound=0)
flags.DEFINE_float("fps", 25.0, "Video from a folder of frames: frames per second of the annotated video written "
                   "(a video file keeps its own rate).", lower_bound=0.01)

FLAGS = flags.FLAGS


@dataclass(frozen=True)
class TextureOptions:
    """How UV textures are written: ``obj`` (a textured ``.obj`` instead of vertex colours; the truth
    value of the options), ``size`` (texture side, pixels), ``visible_only`` (black where hidden)."""

    obj: bool = False
    size: int = 256
    visible_only: bool = False

    def __bool__(self):
        return self.obj


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


def write_face_outputs(folder: Path, stem: str, face, image_name: str, outputs, texture) -> list:
    """Write the requested files of one face into ``folder``; returns their paths.

    ``texture``: a :class:`TextureOptions`, or a bool (a textured ``.obj``, default texture options)."""
    import cv2
    import numpy as np

    from prnet.core.crop import warp_crop
    from prnet.mesh.arrays import face_arrays, write_mat, write_npz
    from prnet.mesh.draw import draw_landmarks, draw_mesh_overlay, draw_pose_box
    from prnet.mesh.obj import write_obj
    from prnet.mesh.ply import write_ply
    from prnet.mesh.render import depth_to_uint8
    from prnet.mesh.texture import template_uv_coords
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING_ASCII

    opts = texture if isinstance(texture, TextureOptions) else TextureOptions(obj=bool(texture))
    written = []
    image = face.image
    if "obj" in outputs:
        obj = folder / f"{stem}.obj"
        if opts.obj:
            write_obj(obj, face.vertices, face.triangles,
                      texture=face.uv_texture(opts.size, visible_only=opts.visible_only),
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
            f.write("# camera matrix P = [s*R | t] (3x4): image px (x, y, z) = P @ (X, Y, Z, 1) of the mean face\n"
                    "# (UV template canonical_vertices); rows 0-1 are the affine projection to the photo\n")
            np.savetxt(f, face.camera_matrix, fmt="%.6f")
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
        _write_png(path, face.uv_texture(opts.size, visible_only=opts.visible_only))
        written.append(path)
    if "texture_mask" in outputs:
        path = folder / f"{stem}_texture_mask.png"
        _write_png(path, (face.visibility_mask(opts.size) * 255).astype(np.uint8))
        written.append(path)
    if "front" in outputs:  # the mean face's frame (y down), written y up: y_obj = -y
        path = folder / f"{stem}_front.obj"
        write_obj(path, face.frontal_vertices(), face.triangles, colors=face.colors)
        written.append(path)
    if "pose_box" in outputs:
        path = folder / f"{stem}_pose_box.png"
        _write_png(path, draw_pose_box(draw_landmarks(image, face.landmarks, lines=False), face.pose_box()))
        written.append(path)
    arrays = None
    if "npz" in outputs or "mat" in outputs:
        arrays = face_arrays(face, camera_matrix=face.camera_matrix)
        arrays.update(random_weights=np.bool_(face.random_weights), weights=str(face.source))
    if "npz" in outputs:
        written.append(write_npz(folder / f"{stem}.npz", arrays))
    if "mat" in outputs:
        written.append(write_mat(folder / f"{stem}_mesh.mat", arrays))
    if "ply" in outputs:
        comment = RANDOM_WEIGHTS_WARNING_ASCII if face.random_weights else None
        written.append(write_ply(folder / f"{stem}.ply", face.vertices, face.triangles, face.colors,
                                 image_height=image.shape[0], comment=comment))
    if "crop" in outputs:  # the network's input, as the original's isImage: image -> crop by face.tform
        path = folder / f"{stem}_crop.png"
        _write_png(path, warp_crop(image, face.tform, as_float=False))
        written.append(path)
    if "depth_npy" in outputs:
        path = folder / f"{stem}_depth.npy"
        depth, covered = face.depth_image(with_mask=True)
        np.save(path, np.where(covered, depth, np.nan).astype(np.float32))
        written.append(path)
    return written


def process_image(predictor, image, name: str, display_name: str, out_dir: Path, outputs, texture: bool,
                  max_faces=None, landmarks=None) -> list:
    """Reconstruct one image and write its files atomically (all or none: a staging folder, then
    moved, :func:`prnet.core.files.staged_files`). Returns the paths.

    ``landmarks`` (``(68, 2+)`` image px) crop the one face from them instead of the detector.
    Write errors (disk full, read-only, ...) raise :class:`prnet.errors.OutputFolderError` naming
    ``out_dir``, not the staging folder."""
    faces = predictor.reconstruct(image, landmarks=landmarks, max_faces=max_faces)
    return write_image(faces, name, display_name, out_dir, outputs, texture)


def write_image(faces, name: str, display_name: str, out_dir: Path, outputs, texture: bool) -> list:
    """Write the files of one image's faces (``list[FaceResult]``) atomically into ``out_dir`` (see
    :func:`process_image`); returns their paths. Renders (depth, overlay) run here too."""
    from prnet.core.files import folder_error, staged_files

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


def make_video_source(input_path, fps: float):
    """The frames of ``--input`` as a video: a video file, or a folder's images (sorted by name, as
    :func:`list_inputs`) at ``fps``. Raises :class:`prnet.errors.ImageReadError` when unreadable."""
    from prnet.errors import ImageReadError
    from prnet.inference.video import FrameFolderSource, VideoFileSource

    path = Path(input_path).expanduser()
    if path.is_dir():
        files = list_inputs(path)
        if not files:
            raise ImageReadError(f"no frame images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {input_path}")
        return FrameFolderSource(files, fps=fps, name=str(input_path))
    return VideoFileSource(path)


def process_video_input(predictor, source, out_dir: Path, *, detect_every: int, max_faces=None) -> int:
    """Track and write one video (:func:`prnet.inference.video.process_video`) with a progress bar;
    prints a summary and returns the exit status (0 done, 1 failed, 2 output folder unwritable, 130 Ctrl-C)."""
    from tqdm import tqdm

    from prnet.errors import OutputFolderError, PRNetError
    from prnet.inference.video import output_paths, process_video

    name = Path(source.name).stem if Path(source.name).is_file() else Path(source.name).expanduser().resolve().name
    bar = tqdm(total=source.frame_count or None, desc="prnet-demo", unit="frame", file=sys.stderr)
    try:
        run = process_video(predictor, source, out_dir, name or "video", detect_every=detect_every,
                            max_faces=max_faces, progress=lambda n: bar.update(1))
    except KeyboardInterrupt:  # the files move into place together (staged) or not at all
        bar.close()
        done = all(p.is_file() for p in output_paths(out_dir, name or "video", predictor.random_weights).values())
        print(f"prnet-demo: interrupted (Ctrl-C); {'the video files were complete' if done else 'nothing written'}",
              file=sys.stderr)
        return 130
    except (PRNetError, OSError, ValueError) as e:
        bar.close()
        print(f"prnet-demo: {source.name}: {e}; nothing written", file=sys.stderr)
        return 2 if isinstance(e, OutputFolderError) else 1
    bar.close()
    print(f"prnet-demo: {source.name}: {run.frames} frames, {run.faces} faces ({run.face_ids} face ids), detector "
          f"on {len(run.detector_frames)} frames; wrote {', '.join(p.name for p in run.paths)} to {out_dir}",
          file=sys.stderr)
    return 0


def process_jobs(predictor, jobs, out_dir: Path, outputs, *, texture: bool = False, max_faces=None,
                 annotations: str = "auto", detector_name: str = "") -> int:
    """Process every job of :func:`make_jobs` into ``out_dir``, report each failure and a summary on
    stderr; returns the exit status (0 all done, 1 some failed, 2 the output folder became
    unwritable (disk full, ...): the run stops, 130 Ctrl-C: the run stops).

    Pipelined: an image's files are rendered and written on a background thread while the next
    image is read, its faces detected and cropped; that image goes to the network only once the
    previous one's files are in place, so a full disk stops the run before any further network
    work, and Ctrl-C lets the image being written finish (whole) before the summary."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from prnet.core.files import FOLDER_ERRNOS
    from prnet.data.annotations import sidecar_landmarks
    from prnet.errors import NoFaceFoundError, OutputFolderError, PRNetError

    failed, written, stopped, status = [], [], None, 0
    done = [0]
    pending = []  # [(name, display, future)]: the image being written (at most one)

    def fail(name, display, e):
        failed.append(display)
        message = str(e)
        if isinstance(e, NoFaceFoundError):  # the library's hint names API arguments: give the CLI's
            message = (f"no face found by the {detector_name} face detector: put the face's 68-point "
                       f"annotation beside the image ({name}.pts or {name}.mat, used with --annotations "
                       "auto), or try another --detector")
        tqdm.write(f"prnet-demo: {display}: {message}", file=sys.stderr)

    def settle():
        """Wait for the image being written; returns the stop message if the output folder failed."""
        if not pending:
            return None
        name, display, future = pending[0]
        try:
            paths = future.result()  # a Ctrl-C here leaves it pending: settle() again
        except (PRNetError, OSError, ValueError) as e:
            pending.clear()
            if isinstance(e, OutputFolderError) and e.errno in FOLDER_ERRNOS:
                return f"stopped: {e}"
            fail(name, display, e)
            return None
        pending.clear()
        written.extend(paths)
        done[0] += 1
        return None

    progress = tqdm(jobs, desc="prnet-demo", unit="image", disable=len(jobs) < 2, file=sys.stderr)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prnet-demo-writer")
    try:
        for name, display, load, path in progress:
            try:
                landmarks = None
                annotation = sidecar_landmarks(path) if path is not None and annotations == "auto" else None
                if annotation is not None:
                    landmarks, ann_path = annotation
                    tqdm.write(f"prnet-demo: {display}: crop from {ann_path.name} (68 annotated landmarks; "
                               "--annotations never to use the face detector)", file=sys.stderr)
                prepared = predictor.prepare(load(), landmarks=landmarks, max_faces=max_faces)
            except (PRNetError, OSError, ValueError) as e:
                prepared = e
            stopped = settle()  # the previous image's files, written meanwhile
            if stopped:
                status = 2
                break
            if isinstance(prepared, Exception):
                fail(name, display, prepared)
                continue
            try:
                faces = predictor.complete(prepared)
            except (PRNetError, OSError, ValueError) as e:
                fail(name, display, e)
                continue
            pending.append((name, display, writer.submit(write_image, faces, name, display, out_dir, outputs,
                                                         texture)))
        stopped = stopped or settle()
        if stopped:
            status = 2
    except KeyboardInterrupt:
        stopped, status = "interrupted (Ctrl-C); no partial files were left", 130
        try:  # the image being written finishes whole (or not at all: staged)
            settle()
        except KeyboardInterrupt:
            pass
    finally:
        writer.shutdown(wait=True)
        progress.close()
    done = done[0]
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
    from prnet.inference.video import is_video_path

    if FLAGS.input is not None and not Path(FLAGS.input).expanduser().is_symlink() and \
            not Path(FLAGS.input).expanduser().exists():
        _fail(f"--input {FLAGS.input} does not exist")
    video = None
    if FLAGS.video and FLAGS.input is None:
        _fail("--video needs --input (a video file or a folder of frames)")
    if FLAGS.input is not None and (FLAGS.video or is_video_path(FLAGS.input)):
        # FFmpeg inside OpenCV prints its own lines on a bad file ("moov atom not found"): ours says it all
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        try:  # opened (first frame read) before the output folder and the weights: a bad video writes nothing
            video = make_video_source(FLAGS.input, FLAGS.fps)
        except PRNetError as e:
            _fail(str(e))
    jobs = make_jobs(FLAGS.input) if video is None else [video]
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

    from prnet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from prnet.inference.predictor import Predictor
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING

    try:
        predictor = Predictor.from_weights(FLAGS.weights, backend=FLAGS.backend, precision=FLAGS.precision,
                                           smoke_test_random_weights=FLAGS.smoke_test_random_weights,
                                           download=FLAGS.download, detector=FLAGS.detector,
                                           template=FLAGS.uv_dir, batch_size=FLAGS.batch_size, refine=FLAGS.refine)
        predictor.template  # noqa: B018  (fail early on missing / corrupt UV template files)
        predictor.detector  # noqa: B018  (fail early when the detector cannot run here)
    except PRNetError as e:
        _fail(str(e))
    print(f"prnet-demo: using weights: {predictor.source} (backend: {predictor.backend_name})", file=sys.stderr)
    if predictor.random_weights:
        print(f"prnet-demo: WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): outputs only "
              "check the pipeline.", file=sys.stderr)
    if video is not None:
        return process_video_input(predictor, video, out_dir, detect_every=FLAGS.detect_every,
                                   max_faces=FLAGS.max_faces)
    textures = TextureOptions(obj=FLAGS.texture, size=FLAGS.texture_size, visible_only=FLAGS.mask_texture)
    return process_jobs(predictor, jobs, out_dir, outputs, texture=textures, max_faces=FLAGS.max_faces,
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
