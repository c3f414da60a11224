"""Binary glTF 2.0 (``.glb``) export of a face mesh, with per-vertex colours or a UV texture.

Opens in Blender, three.js / ``<model-viewer>``, Windows 3D Viewer and ``prnet-app``'s viewer.
Written with trimesh (:func:`trimesh.exchange.gltf.export_glb`).

Axes as in :mod:`prnet.mesh.obj`, so the ``.glb`` and the ``.obj`` of a face hold the same numbers:
the library's image pixels (x right, y down, z toward the camera) become glTF's y-up frame,
``y = image_height - 1 - y_image`` (``-y_image`` without ``image_height``), x and z unchanged; one
unit is one image pixel (glTF calls its unit a metre: scale in the viewer). Each triangle is
written with its indices reversed so the front side is counter-clockwise, as glTF requires.

Colours: ``COLOR_0`` is RGBA uint8 (normalised, alpha 255), the vertex colours rounded to 1/255.
Textured: ``TEXCOORD_0`` holds the template's UV coordinates (glTF's ``v`` runs down the image:
``v_gltf = 1 - v_obj``), and the texture is the material's ``baseColorTexture`` (PNG inside the file).
"""

from pathlib import Path

import numpy as np

from prnet.core.files import atomic_write
from prnet.mesh.obj import _as_float_colors, checked_mesh


def glb_bytes(vertices, triangles, colors=None, texture=None, uv_coords=None, *, image_height=None,
              comment=None) -> bytes:
    """The ``.glb`` file of a mesh as bytes; arguments as :func:`write_glb`."""
    import trimesh  # a few hundred ms: only when a .glb is written

    v, tris = checked_mesh(vertices, triangles)
    out = v.copy()
    out[:, 1] = (image_height - 1 - out[:, 1]) if image_height is not None else -out[:, 1]
    mesh = trimesh.Trimesh(out, tris[:, ::-1].astype(np.int64), process=False, validate=False)
    if texture is not None:
        from PIL import Image

        texture = np.asarray(texture)
        if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8:
            raise ValueError(f"texture must be an (H, W, 3) uint8 RGB image, got {texture.dtype} {texture.shape}")
        uv = np.asarray(uv_coords, dtype=np.float64) if uv_coords is not None else None
        if uv is None or uv.shape != (len(v), 2):
            raise ValueError(f"a texture needs uv_coords ({len(v)}, 2) in [0, 1] (v up)")
        material = trimesh.visual.material.PBRMaterial(
            name="face_texture", baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0)
        mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)  # trimesh flips v on export
    elif colors is not None:
        rgb = np.round(_as_float_colors(colors, len(v)) * 255).astype(np.uint8)
        rgba = np.concatenate([rgb, np.full((len(v), 1), 255, np.uint8)], axis=1)
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)

    def describe(tree):
        asset = tree.setdefault("asset", {})
        asset["generator"] = "prnet-tf2 (PRNet face mesh; x right, y up, z toward the viewer; image pixels)"
        if comment:
            asset["extras"] = {"comment": str(comment)}
        # a matte, non-metallic surface (glTF's default metallicFactor 1 renders black without an environment map)
        materials = tree.setdefault("materials", [])
        if not materials:
            materials.append({"name": "face"})
            for mesh_ in tree.get("meshes", []):
                for primitive in mesh_["primitives"]:
                    primitive["material"] = 0
        for material in materials:
            pbr = material.setdefault("pbrMetallicRoughness", {})
            pbr["metallicFactor"], pbr["roughnessFactor"] = 0.0, 1.0

    return trimesh.exchange.gltf.export_glb(mesh, include_normals=False, tree_postprocessor=describe)


def read_glb(path):
    """Read a ``.glb`` written by :func:`write_glb` (plain ``struct``/JSON, no glTF library):
    ``(vertices (N, 3) float32 as stored (y up), faces (T, 3) int as stored, colors (N, 3) uint8 or
    None, uv (N, 2) float32 glTF convention (v down) or None, the JSON chunk as a dict)``."""
    import json
    import struct

    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or length != len(data):
        raise ValueError(f"{path}: not a glTF 2.0 binary file")
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    tree = json.loads(data[20:20 + json_len])
    bin_start = 20 + json_len + 8
    types = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
    sizes = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}

    def accessor(index):
        acc = tree["accessors"][index]
        view = tree["bufferViews"][acc["bufferView"]]
        start = bin_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        array = np.frombuffer(data, types[acc["componentType"]], acc["count"] * sizes[acc["type"]], start)
        return array.reshape(acc["count"], sizes[acc["type"]])

    primitive = tree["meshes"][0]["primitives"][0]
    attributes = primitive["attributes"]
    vertices = accessor(attributes["POSITION"]).astype(np.float32)
    faces = accessor(primitive["indices"]).reshape(-1, 3).astype(np.int64)
    colors = accessor(attributes["COLOR_0"])[:, :3].copy() if "COLOR_0" in attributes else None
    uv = accessor(attributes["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attributes else None
    return vertices, faces, colors, uv, tree


def write_glb(path, vertices, triangles, colors=None, texture=None, uv_coords=None, *, image_height=None,
              comment=None) -> Path:
    """Write a triangle mesh to ``path`` (``.glb``), atomically; returns the path.

    ``vertices`` ``(N, 3)`` image px; ``triangles`` ``(T, 3)`` 0-based; ``colors`` ``(N, 3)`` RGB,
    float in [0, 1] or uint8; or ``texture`` ``(H, W, 3)`` uint8 with ``uv_coords`` ``(N, 2)`` in
    [0, 1] (OBJ convention, v up: :func:`prnet.mesh.texture.template_uv_coords`); ``image_height``:
    see the module docstring for the y flip; ``comment``: a line kept in ``asset.extras.comment``
    (e.g. the random-weights warning)."""
    path = Path(path)
    data = glb_bytes(vertices, triangles, colors, texture, uv_coords, image_height=image_height, comment=comment)
    atomic_write(path, data, binary=True)
    return path
