"""prnet-swap: texture editing and face swap (the original PRNet demo_texture.py).

Usage:
  prnet-swap --input target.jpg --reference ref.jpg --output swapped.png                # whole face
  prnet-swap --input target.jpg --reference ref.jpg --mode eyes --output eyes.png       # eyes only
  prnet-swap --input target.jpg --reference ref.jpg --mode mask:my_uv_mask.png --output out.png
  prnet-swap --input target.jpg --reference_texture edited_texture.png --output out.png # selfie editing

Both photos are reconstructed (the weights flags are prnet-demo's: --weights, --backend,
--precision, --download, --smoke_test_random_weights). The reference face's UV texture (or the
--reference_texture image, a 256x256 UV texture such as prnet-demo's <name>_<k>_texture.png, edited)
is painted onto the target face's mesh with a z-buffer, so only the target's visible surface is
painted (a turned face never receives its far cheek), restricted to the --mode region of UV
space, and blended into the target photo (--blend, Poisson editing by default). Where the
reference photo does not show a surface point (hidden or turned away), the target keeps its own
texture. The result is one image, the target photo's size.

Regions (--mode): face (the whole face), eyes (the UV template's eyes region: where
uv_face_eyes.png differs from uv_face.png, as the original's mode 0), mask:PATH (any 256x256 UV
mask image: nonzero pixels are edited; draw it over the UV template's uv_face.png).

Face crops: as prnet-demo (--detector and --refine, or a sibling <name>.pts / <name>.mat 68-landmark
annotation with --annotations auto). --face picks the target face (0 = largest); the reference's largest
face is used.

Exit status: 0 written; 1 a photo failed (unreadable, no face found in it, --face out of range, or
nothing painted: no visible pixel of the face in the region); 2 setup error (flags, weights, UV
template, an unreadable, wrongly sized or all-zero --mode mask, an unreadable --reference_texture,
an output that cannot be written), checked before the photos are reconstructed. Nothing is
written on any error (the output appears whole or not at all).
"""

import sys
from pathlib import Path

from absl import flags

from prnet.cli import common

common.define_flag(flags.DEFINE_string, "input", None, "Target photo: the face to edit (required).")
flags.DEFINE_string("reference", None, "Reference photo whose face texture is painted onto the target "
                    "(its largest face). Give this or --reference_texture.")
flags.DEFINE_string("reference_texture", None, "A UV texture image (256x256 RGB, e.g. prnet-demo's "
                    "<name>_<k>_texture.png, edited) to paint instead of a reference photo's face.")
flags.DEFINE_string("mode", "face", "Region of the face to replace: face (whole face), eyes (the UV "
                    "template's eyes region), or mask:PATH (a 256x256 UV mask image, nonzero = replace).")
flags.DEFINE_enum("blend", "poisson", ["poisson", "alpha", "none"],
                  "How the painted pixels enter the photo: poisson (cv2.seamlessClone: keeps the texture's "
                  "detail, takes the colour level from the photo around it), alpha (feathered edge), none "
                  "(hard copy).")
flags.DEFINE_integer("face", 0, "Which face of the target photo to edit (0 = largest).", lower_bound=0)
common.define_output_flag(help="Output image file (.png or .jpg; required). Its folder is created if missing; "
                          "an existing file is replaced. With --smoke_test_random_weights the name gets "
                          "_RANDOM_WEIGHTS before the extension.")
common.define_weights_flags()
common.define_detection_flags()
common.define_assets_flags()

FLAGS = flags.FLAGS


def _fail(message: str, code: int = 2):
    common.fail(message, code)


def parse_mode(mode: str):
    """``--mode`` -> ``("face" | "eyes" | "mask", mask path or None)``; raises ValueError."""
    mode = (mode or "").strip()
    if mode in ("face", "eyes"):
        return mode, None
    if mode.startswith("mask:") and mode[5:].strip():
        return "mask", Path(mode[5:].strip()).expanduser()
    raise ValueError(f"--mode {mode!r}: use face, eyes or mask:PATH (a 256x256 UV mask image)")


def load_region(region: str, mask_path=None):
    """The ``region`` argument of :func:`prnet.inference.results.swap_faces` for ``--mode``: ``"face"``,
    ``"eyes"``, or the ``(256, 256)`` float32 UV mask read from ``mask_path`` (nonzero = edit).
    Raises :class:`prnet.errors.PRNetError` (unreadable, wrongly sized or empty mask)."""
    from prnet.errors import UVInputError
    from prnet.mesh.swap import check_uv_mask

    if region != "mask":
        return region
    what = f"--mode mask:{mask_path}"
    mask = check_uv_mask(_read_uv_image(Path(mask_path), "--mode mask"), what)
    if not mask.any():
        raise UVInputError(f"{what}: the mask is all zero: nothing to edit (nonzero pixels mark the region)")
    return mask


def nothing_painted_reason(target, region, random_weights: bool = False) -> str:
    """Why :func:`prnet.inference.results.swap_faces` painted no pixel of ``target`` (a FaceResult)
    for ``region`` (``"face"``, ``"eyes"`` or a UV mask): one line for the error message."""
    import numpy as np

    from prnet.mesh.swap import eyes_region_mask

    template = target.template
    if isinstance(region, str):
        uv = template.face_mask if region == "face" else eyes_region_mask(template.directory) * template.face_mask
    else:
        uv = np.asarray(region) * template.face_mask
    in_region = uv.reshape(-1)[template.face_ind] > 0
    mode = "mask" if not isinstance(region, str) else region
    if not target.visible.any():
        why = "no part of the reconstructed face is visible in the photo (inside it and facing the camera)"
    elif not (target.visible & in_region).any():
        why = (f"no visible part of the face lies in the --mode {mode} region (the region is hidden, turned "
               "away from the camera or outside the photo)")
    else:
        why = "the face's visible surface covers no whole pixel of the region (the face is too small)"
    if random_weights:
        why += "; random weights (--smoke_test_random_weights) give no real face"
    return f"nothing painted: {why}"


def _read_uv_image(path: Path, what: str):
    from prnet.core.images import read_image
    from prnet.errors import ImageReadError

    try:
        return read_image(path)
    except ImageReadError as e:
        raise ImageReadError(f"{what} {path}: {e}") from e


def _load_face(predictor, path: Path, index: int, what: str):
    from prnet.core.images import read_image
    from prnet.data.annotations import sidecar_landmarks
    from prnet.errors import NoFaceFoundError

    landmarks = None
    annotation = sidecar_landmarks(path) if FLAGS.annotations == "auto" else None
    if annotation is not None:
        landmarks, ann_path = annotation
        print(f"prnet-swap: {path}: crop from {ann_path.name} (68 annotated landmarks)", file=sys.stderr)
    image = read_image(path)
    try:
        faces = predictor.reconstruct(image, landmarks=landmarks)
    except NoFaceFoundError as e:
        raise NoFaceFoundError(f"{what} {path}: no face found by the face detector: put the face's 68-point "
                               f"annotation beside it ({path.stem}.pts or {path.stem}.mat), or try another "
                               "--detector") from e
    if index >= len(faces):
        raise NoFaceFoundError(f"{what} {path}: --face {index} asked, but only {len(faces)} face(s) found "
                               f"(0..{len(faces) - 1})")
    return faces[index]


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    if not FLAGS.input or not FLAGS.output:
        _fail("--input (target photo) and --output (image file) are required")
    if (FLAGS.reference is None) == (FLAGS.reference_texture is None):
        _fail("give exactly one of --reference (a photo) or --reference_texture (a UV texture image)")
    output = Path(FLAGS.output).expanduser()
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        _fail(f"--output {FLAGS.output}: use a .png or .jpg file name")
    try:
        region, mask_path = parse_mode(FLAGS.mode)
    except ValueError as e:
        _fail(str(e))
    target_path = Path(FLAGS.input).expanduser()
    for flag, value in (("--input", target_path), ("--reference", FLAGS.reference)):
        if value is not None and not Path(value).expanduser().is_file():
            _fail(f"{flag} {value} is not a file")

    from prnet.core.files import ensure_writable_folder
    from prnet.errors import ImageReadError, NoFaceFoundError, PRNetError
    from prnet.mesh.swap import check_uv_texture

    # Setup checks before any (slow) reconstruction. `region` stays the mode's name; `edit` is what
    # swap_faces takes (the name, or the mask array for mask:PATH).
    try:
        edit = load_region(region, mask_path)
        texture = None
        if FLAGS.reference_texture is not None:
            texture = check_uv_texture(_read_uv_image(Path(FLAGS.reference_texture).expanduser(),
                                                      "--reference_texture"),
                                       f"--reference_texture {FLAGS.reference_texture}")
        ensure_writable_folder(output.parent)
        from prnet.core.files import check_file_destination
        from prnet.outputs.naming import tagged_path

        check_file_destination(tagged_path(output, FLAGS.smoke_test_random_weights))  # a folder there: refused
    except PRNetError as e:
        _fail(str(e))

    from prnet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from prnet.inference.predictor import Predictor
    from prnet.inference.results import swap_faces
    from prnet.model.runtime import RANDOM_WEIGHTS_WARNING

    try:  # the weights flags reach the same call as prnet-demo's
        predictor = Predictor.from_weights(FLAGS.weights, backend=FLAGS.backend, precision=FLAGS.precision,
                                           smoke_test_random_weights=FLAGS.smoke_test_random_weights,
                                           download=FLAGS.download, detector=FLAGS.detector,
                                           template=FLAGS.assets_dir, refine=FLAGS.refine)
        predictor.template  # noqa: B018  (missing / corrupt UV template: a setup error)
        if region == "eyes":
            from prnet.mesh.swap import eyes_region_mask

            eyes_region_mask(predictor.template.directory)  # missing eye images: a setup error
    except PRNetError as e:
        _fail(str(e))
    print(f"prnet-swap: using weights: {predictor.source} (backend: {predictor.backend_summary})", file=sys.stderr)
    if predictor.random_weights:
        print(f"prnet-swap: WARNING: {RANDOM_WEIGHTS_WARNING} (--smoke_test_random_weights): the result only "
              "checks the pipeline.", file=sys.stderr)
    try:
        reference = None
        if FLAGS.reference is not None:
            reference = _load_face(predictor, Path(FLAGS.reference).expanduser(), 0, "--reference")
        target = _load_face(predictor, target_path, FLAGS.face, "--input")
        image, painted = swap_faces(target, reference, texture=texture, region=edit, blend=FLAGS.blend)
    except (ImageReadError, NoFaceFoundError) as e:
        _fail(str(e), 1)
    except PRNetError as e:
        _fail(str(e))
    if not painted.any():  # the photo would come back unchanged: a failure of this photo, nothing written
        _fail(f"--input {target_path}: {nothing_painted_reason(target, edit, predictor.random_weights)}; "
              "nothing written", 1)
    from prnet.core.images import write_image
    from prnet.outputs.naming import tagged_path

    output = tagged_path(output, predictor.random_weights)
    try:
        write_image(output, image)
    except OSError as e:
        _fail(f"could not write {output}: {e}")
    print(f"prnet-swap: wrote {output} ({int(painted.sum())} pixels painted, blend {FLAGS.blend})", file=sys.stderr)
    return 0


def run():
    """Console entry point ``prnet-swap``."""
    common.run_tool("prnet-swap", main, interrupted="nothing written")


if __name__ == "__main__":
    run()
