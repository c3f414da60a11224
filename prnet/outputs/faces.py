"""The files of a reconstructed face: one writer per output kind, in one registry (:data:`WRITERS`).

Per face of an image, with ``stem`` = ``<name>_<k>`` (:func:`prnet.outputs.naming.face_stem`):

==============  ====================================  =================================================
kind            files                                 content
==============  ====================================  =================================================
obj             ``<stem>.obj``                        mesh with vertex colours (textured: ``.png`` +
                (``<stem>.png``, ``<stem>.mtl``)      ``.mtl`` too), y up (:mod:`prnet.mesh.obj`)
landmarks       ``<stem>_landmarks.txt``              68 rows ``x y z``, image px
pose            ``<stem>_pose.txt``                   yaw pitch roll (degrees), R (3x3), P = [sR | t] (3x4)
depth           ``<stem>_depth.png``                  z-buffered depth (brighter = nearer), image size
overlay         ``<stem>_overlay.png``                shaded mesh and landmarks over the photo
texture         ``<stem>_texture.png``                the face unwrapped into UV space
texture_mask    ``<stem>_texture_mask.png``           UV visibility (255 = seen in the photo)
front           ``<stem>_front.obj``                  the mesh with the head pose undone (mean face frame)
pose_box        ``<stem>_pose_box.png``               the 3D pose box on the photo
npz             ``<stem>.npz``                        :func:`face_arrays` (+ ``random_weights``, ``weights``)
mat             ``<stem>_mesh.mat``                   the same for MATLAB
ply             ``<stem>.ply``                        binary PLY mesh with vertex colours
depth_npy       ``<stem>_depth.npy``                  float32 depth (image-px z, NaN = background)
crop            ``<stem>_crop.png``                   the 256x256 crop the network saw
glb             ``<stem>.glb``                        binary glTF mesh, vertex colours (``--texture``: the
                                                      UV texture as its material), y up (:mod:`prnet.mesh.gltf`)
==============  ====================================  =================================================

Image pixels everywhere: x right, y down (pixel centres at integer coordinates), z toward the
camera (origin arbitrary). A writer is ``write(folder, stem, face, image_name, textures) -> [Path]``
(``face`` a :class:`prnet.inference.results.FaceResult`, ``image_name`` named in text headers);
adding an output kind is adding one writer to :data:`WRITERS`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prnet.core.crop import warp_crop
from prnet.core.files import folder_error, staged_files
from prnet.core.images import write_image
from prnet.mesh.arrays import write_mat, write_npz
from prnet.mesh.draw import draw_landmarks, draw_mesh_overlay, draw_pose_box
from prnet.mesh.gltf import write_glb
from prnet.mesh.obj import write_obj
from prnet.mesh.ply import write_ply
from prnet.mesh.render import depth_to_uint8
from prnet.mesh.texture import template_uv_coords
from prnet.outputs.naming import draw_warning, face_stem, header, warning_text


@dataclass(frozen=True)
class TextureOptions:
    """How UV textures are written: ``obj`` (a textured ``.obj`` instead of vertex colours),
    ``size`` (texture side, pixels), ``visible_only`` (black where the surface is hidden)."""

    obj: bool = False
    size: int = 256
    visible_only: bool = False


def face_arrays(face, *, camera_matrix=None) -> dict:
    """The numeric description of one reconstructed face (a :class:`prnet.inference.results.FaceResult`)
    as a dict of arrays:

    ``vertices`` (N, 3) image px; ``colors`` (N, 3) RGB in [0, 1]; ``triangles`` (T, 3) int32 0-based;
    ``kpt`` (68, 3) image px landmarks; ``pose`` (3,) yaw, pitch, roll in degrees; ``rotation``
    (3, 3); ``camera_matrix`` (3, 4) ``[s R | t]`` (canonical mean face -> image px); ``tform`` (3, 3)
    image px -> 256x256 crop px; ``posmap`` (256, 256, 3) image px; ``box`` (4,) x0, y0, x1, y1.
    ``vertices``, ``colors``, ``triangles`` carry the original ``demo.py`` ``.mat`` field names.
    """
    rot, angles = face.pose
    out = {
        "vertices": np.asarray(face.vertices, np.float32),
        "colors": np.asarray(face.colors, np.float32),
        "triangles": np.asarray(face.triangles, np.int32),
        "kpt": np.asarray(face.landmarks, np.float32),
        "pose": np.asarray(angles, np.float64),
        "rotation": np.asarray(rot, np.float64),
        "tform": np.asarray(face.tform, np.float64),
        "posmap": np.asarray(face.posmap, np.float32),
        "box": np.asarray(face.box, np.float64),
    }
    if camera_matrix is not None:
        out["camera_matrix"] = np.asarray(camera_matrix, np.float64)
    return out


def _dump(face) -> dict:
    """:func:`face_arrays` with the camera matrix and the weights (``random_weights``, ``weights``)."""
    arrays = face_arrays(face, camera_matrix=face.camera_matrix)
    arrays.update(random_weights=np.bool_(face.random_weights), weights=str(face.source))
    return arrays


def write_obj_file(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    path = folder / f"{stem}.obj"
    height = face.image.shape[0]
    written = []
    if textures.obj:
        write_obj(path, face.vertices, face.triangles,
                  texture=face.uv_texture(textures.size, visible_only=textures.visible_only),
                  uv_coords=template_uv_coords(face.template), image_height=height)
        written += [path.with_suffix(".png"), path.with_suffix(".mtl")]
    else:
        write_obj(path, face.vertices, face.triangles, colors=face.colors, image_height=height)
    if face.random_weights:  # the warning as the first comment line
        body = path.read_text(encoding="ascii")
        path.write_text(f"# {warning_text(ascii_only=True)}\n" + body, encoding="ascii")
    return written + [path]


def write_landmarks(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    path = folder / f"{stem}_landmarks.txt"
    head = header(face, image_name, "68 landmarks") + (
        "# one row per landmark (iBUG 68-point order): x y z in image pixels; x right, y down (pixel\n"
        "# centres at integer coordinates), z toward the camera (relative: origin arbitrary)\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(head)
        np.savetxt(f, face.landmarks, fmt="%.3f")
    return [path]


def write_pose(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    rot, (yaw, pitch, roll) = face.pose
    path = folder / f"{stem}_pose.txt"
    with open(path, "w", encoding="utf-8") as f:
        f.write(header(face, image_name, "head pose"))
        f.write("# yaw pitch roll in degrees (300W-LP / AFLW2000-3D convention, see prnet.core.transforms)\n")
        f.write(f"{yaw:.4f} {pitch:.4f} {roll:.4f}\n")
        f.write("# rotation matrix R (image frame: vertices ~ scale * R @ canonical + t), 3 rows\n")
        np.savetxt(f, rot, fmt="%.6f")
        f.write("# camera matrix P = [s*R | t] (3x4): image px (x, y, z) = P @ (X, Y, Z, 1) of the mean face\n"
                "# (UV template canonical_vertices); rows 0-1 are the affine projection to the photo\n")
        np.savetxt(f, face.camera_matrix, fmt="%.6f")
    return [path]


def write_depth(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    return [write_image(folder / f"{stem}_depth.png", depth_to_uint8(face.depth_image()))]


def _mark_random(image, face):
    """Draw the random-weights warning on ``image`` (a picture of ``face`` over its photo) in place when
    the face comes from an untrained network: red text in the top-left corner, sized to the width."""
    if face.random_weights:
        scale = max(0.5, image.shape[1] / 800)
        draw_warning(image, warning_text(ascii_only=True), scale=scale, baseline=int(30 * scale))
    return image


def write_overlay(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    over = draw_landmarks(draw_mesh_overlay(face.image, face.vertices, face.triangles), face.landmarks)
    return [write_image(folder / f"{stem}_overlay.png", _mark_random(over, face))]


def write_texture(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    texture = face.uv_texture(textures.size, visible_only=textures.visible_only)
    return [write_image(folder / f"{stem}_texture.png", texture)]


def write_texture_mask(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    mask = (face.visibility_mask(textures.size) * 255).astype(np.uint8)
    return [write_image(folder / f"{stem}_texture_mask.png", mask)]


def write_front(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    """The mesh in the mean face's frame (y down), written y up: ``y_obj = -y``."""
    return [write_obj(folder / f"{stem}_front.obj", face.frontal_vertices(), face.triangles, colors=face.colors)]


def write_pose_box(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    shown = draw_pose_box(draw_landmarks(face.image, face.landmarks, lines=False), face.pose_box())
    return [write_image(folder / f"{stem}_pose_box.png", _mark_random(shown, face))]


def write_npz_file(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    return [write_npz(folder / f"{stem}.npz", _dump(face))]


def write_mat_file(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    return [write_mat(folder / f"{stem}_mesh.mat", _dump(face))]


def write_ply_file(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    comment = warning_text(ascii_only=True) if face.random_weights else None
    return [write_ply(folder / f"{stem}.ply", face.vertices, face.triangles, face.colors,
                      image_height=face.image.shape[0], comment=comment)]


def write_glb_file(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    comment = warning_text(ascii_only=True) if face.random_weights else None
    height = face.image.shape[0]
    if textures.obj:
        texture = face.uv_texture(textures.size, visible_only=textures.visible_only)
        return [write_glb(folder / f"{stem}.glb", face.vertices, face.triangles, texture=texture,
                          uv_coords=template_uv_coords(face.template), image_height=height, comment=comment)]
    return [write_glb(folder / f"{stem}.glb", face.vertices, face.triangles, face.colors, image_height=height,
                      comment=comment)]


def write_depth_npy(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    path = folder / f"{stem}_depth.npy"
    depth, covered = face.depth_image(with_mask=True)
    np.save(path, np.where(covered, depth, np.nan).astype(np.float32))
    return [path]


def write_crop(folder: Path, stem: str, face, image_name: str, textures: TextureOptions) -> list:
    """The network's input, as the original's isImage: the image warped by ``face.tform``."""
    return [write_image(folder / f"{stem}_crop.png", warp_crop(face.image, face.tform, as_float=False))]


#: Output kind -> its writer (see the module doc), in the order ``--outputs`` lists them.
WRITERS = {
    "obj": write_obj_file, "landmarks": write_landmarks, "pose": write_pose, "depth": write_depth,
    "overlay": write_overlay, "texture": write_texture, "texture_mask": write_texture_mask, "front": write_front,
    "pose_box": write_pose_box, "npz": write_npz_file, "mat": write_mat_file, "ply": write_ply_file,
    "depth_npy": write_depth_npy, "crop": write_crop, "glb": write_glb_file,
}
#: Every output kind.
OUTPUT_KINDS = tuple(WRITERS)
#: The kinds written when none are asked for.
DEFAULT_OUTPUTS = ("obj", "landmarks", "pose", "depth", "overlay")


def write_face_outputs(folder: Path, stem: str, face, image_name: str, outputs,
                       textures: TextureOptions = TextureOptions()) -> list:
    """Write the files of the ``outputs`` kinds (:data:`WRITERS`) of one face into ``folder``
    (``<stem>...``); returns their paths. Raises ``ValueError`` for an unknown kind."""
    unknown = sorted(set(outputs) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown output kinds {unknown}; choose from {','.join(OUTPUT_KINDS)}")
    written = []
    for kind, write in WRITERS.items():
        if kind in outputs:
            written += write(Path(folder), stem, face, image_name, textures)
    return written


def write_image_outputs(faces, name: str, display_name: str, out_dir: Path, outputs,
                        textures: TextureOptions = TextureOptions()) -> list:
    """Write the files of one image's faces (``list[FaceResult]``, face k -> ``<name>_<k>...``)
    into ``out_dir``, all or none (a staging folder, then moved, :func:`prnet.core.files.staged_files`);
    returns their paths. Renders (depth, overlay) run here too. Write errors (disk full, read-only,
    ...) raise :class:`prnet.errors.OutputFolderError` naming ``out_dir`` and ``display_name``."""
    staged = []
    try:
        with staged_files(out_dir) as staging:
            for k, face in enumerate(faces):
                stem = face_stem(name, k, face.random_weights)
                staged += write_face_outputs(staging, stem, face, display_name, outputs, textures)
    except OSError as e:
        raise folder_error(e, out_dir, f" (the files of {display_name})") from e
    return [out_dir / path.name for path in staged]


def process_image(predictor, image, name: str, display_name: str, out_dir: Path, outputs,
                  textures: TextureOptions = TextureOptions(), max_faces=None, landmarks=None) -> list:
    """Reconstruct one image (``predictor.reconstruct``) and write its files with :func:`write_image_outputs`.

    ``landmarks`` (``(68, 2+)`` image px) crop the one face from them instead of the detector."""
    faces = predictor.reconstruct(image, landmarks=landmarks, max_faces=max_faces)
    return write_image_outputs(faces, name, display_name, out_dir, outputs, textures)
