"""The ``glb`` output kind (prnet.mesh.gltf): read back with a plain struct/JSON reader, it holds the
same vertices, triangles and colours as the ``.obj`` of the same face; textured, the UV coordinates
and the embedded texture are the ``.obj``'s; a standard loader (trimesh) opens it."""

import io

import numpy as np
import pytest
from PIL import Image

from prnet.mesh.gltf import read_glb
from prnet.mesh.texture import template_uv_coords
from prnet.outputs.faces import TextureOptions, write_face_outputs

from oracle import oracle_face, synthetic


@pytest.fixture(scope="module")
def face(uv_template):
    image, pos = synthetic(5, uv_template, 25.0)
    return oracle_face(image, pos, uv_template)


def _read_obj(path):
    v, vt, f = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(t) for t in line.split()[1:]])
        elif line.startswith("vt "):
            vt.append([float(t) for t in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
    return np.array(v), np.array(vt), np.array(f)


def test_glb_round_trip_matches_obj(face, tmp_path):
    write_face_outputs(tmp_path, "f", face, "synthetic", ["obj", "glb"])
    v_obj, _, f_obj = _read_obj(tmp_path / "f.obj")
    vertices, faces, colors, uv, tree = read_glb(tmp_path / "f.glb")
    assert len(vertices) == len(face.vertices) > 40000 and faces.shape == f_obj.shape
    np.testing.assert_allclose(vertices, v_obj[:, :3], atol=2e-3)  # .obj: 4 decimals; .glb: float32
    np.testing.assert_array_equal(faces, f_obj)
    assert colors.dtype == np.uint8 and uv is None
    np.testing.assert_allclose(colors / 255.0, v_obj[:, 3:], atol=0.5 / 255 + 1e-5)
    # the front side is counter-clockwise in the y-up frame: normals of the frontal face point to +z
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    assert np.cross(b - a, c - a)[:, 2].sum() > 0
    assert "extras" not in tree["asset"]  # trained weights: no warning


def test_glb_textured_and_standard_loader(face, tmp_path):
    import trimesh

    write_face_outputs(tmp_path, "t", face, "synthetic", ["obj", "glb"], TextureOptions(obj=True, size=128))
    _, vt, _ = _read_obj(tmp_path / "t.obj")
    vertices, faces, colors, uv, tree = read_glb(tmp_path / "t.glb")
    np.testing.assert_allclose(uv[:, 0], vt[:, 0], atol=1e-5)
    np.testing.assert_allclose(uv[:, 1], 1 - vt[:, 1], atol=1e-5)  # glTF: v down
    np.testing.assert_allclose(vt, template_uv_coords(face.template), atol=1e-5)
    material = tree["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]
    image = tree["images"][tree["textures"][material["index"]]["source"]]
    view = tree["bufferViews"][image["bufferView"]]
    data = (tmp_path / "t.glb").read_bytes()
    start = 20 + int.from_bytes(data[12:16], "little") + 8 + view.get("byteOffset", 0)
    png = np.asarray(Image.open(io.BytesIO(data[start:start + view["byteLength"]])).convert("RGB"))
    np.testing.assert_array_equal(png, np.asarray(Image.open(tmp_path / "t.png").convert("RGB")))
    loaded = trimesh.load(tmp_path / "t.glb", force="mesh", process=False)
    assert len(loaded.vertices) == len(vertices) and len(loaded.faces) == len(faces)
