"""The fast paths of issue #13 give the same results as the plain ones: the bulk .obj writer, crops
batched across images, and prnet-demo's pipelined (background) writing."""

import io
import threading

import numpy as np
import pytest

from prnet.core.uv import uv_triangles
from prnet.mesh.obj import write_obj
from prnet.mesh.texture import template_uv_coords, vertex_colors


def _savetxt_obj(vertices, triangles, colors=None, uv_coords=None, image_height=None, mtllib=None) -> bytes:
    """The .obj text as the writer produced it before issue #13: one ``np.savetxt`` row at a time."""
    out = np.asarray(vertices, np.float64).copy()
    out[:, 1] = image_height - 1 - out[:, 1]
    faces = triangles[:, ::-1].astype(np.int64) + 1
    f = io.StringIO()
    f.write(f"# PRNet face mesh: {len(out)} vertices, {len(faces)} triangles; x right, y up, z toward the viewer\n")
    if mtllib:
        f.write(f"mtllib {mtllib}\n")
    if colors is not None:
        np.savetxt(f, np.hstack([out, np.asarray(colors, np.float64)]), fmt="v %.4f %.4f %.4f %.5f %.5f %.5f")
    else:
        np.savetxt(f, out, fmt="v %.4f %.4f %.4f")
    if uv_coords is not None:
        np.savetxt(f, uv_coords, fmt="vt %.6f %.6f")
        f.write("usemtl face_texture\n")
        np.savetxt(f, np.repeat(faces, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(f, faces, fmt="f %d %d %d")
    return f.getvalue().encode("ascii")


def _real_face(uv_template, samples_dir):
    """The mean face placed on a real photo, with that photo's colours (a real mesh's numbers)."""
    from prnet.core.images import read_image

    image = read_image(samples_dir / "aflw2000-3d" / "image00050.jpg")
    v = uv_template.canonical_vertices.astype(np.float64) * 1.3 + (40.3, 20.7, -5.1)  # negative z too
    return image, v, vertex_colors(image, v)


def test_bulk_obj_writer_writes_the_same_bytes_as_savetxt(uv_template, samples_dir, tmp_path):
    image, v, colors = _real_face(uv_template, samples_dir)
    tris = uv_triangles(uv_template)
    h = image.shape[0]
    path = write_obj(tmp_path / "c.obj", v, tris, colors=colors, image_height=h)
    assert path.read_bytes() == _savetxt_obj(v, tris, colors=colors, image_height=h)
    uv = template_uv_coords(uv_template)
    texture = image[:256, :256].copy()
    path = write_obj(tmp_path / "t.obj", v, tris, texture=texture, uv_coords=uv, image_height=h)
    assert path.read_bytes() == _savetxt_obj(v, tris, uv_coords=uv, image_height=h, mtllib="t.mtl")
    path = write_obj(tmp_path / "p.obj", v, tris, image_height=h)
    assert path.read_bytes() == _savetxt_obj(v, tris, image_height=h)
    # the face lines are remembered per triangulation: another one (same shape) gets its own
    other = np.ascontiguousarray(tris[::-1])
    path = write_obj(tmp_path / "o.obj", v, other, colors=colors, image_height=h)
    assert path.read_bytes() == _savetxt_obj(v, other, colors=colors, image_height=h)


class _Backend:
    """A deterministic stand-in network: the posmap is the crop itself scaled (records call sizes)."""

    source, random_weights = "test backend", False

    def __init__(self):
        self.calls = []

    def __call__(self, crops):
        self.calls.append(len(crops))
        return np.asarray(crops, np.float32) * 255.0


def test_crops_batched_across_images_give_the_same_faces(uv_template, samples_dir):
    from prnet.core.images import read_image
    from prnet.inference.predictor import Predictor

    images = [read_image(samples_dir / "aflw2000-3d" / n) for n in ("image00050.jpg", "image00251.jpg")]
    boxes = [np.array([[100.0, 120, 300, 330], [150, 150, 260, 280]]), np.array([[90.0, 100, 320, 350]])]
    one = Predictor(_Backend(), detector=None, template=uv_template, batch_size=2)
    separate = [one.reconstruct(im, boxes=b) for im, b in zip(images, boxes)]
    assert one.backend.calls == [2, 1]
    many = Predictor(_Backend(), detector=None, template=uv_template, batch_size=2)
    together = many.complete_many([many.prepare(im, boxes=b) for im, b in zip(images, boxes)])
    assert many.backend.calls == [2, 1]  # 3 crops, batch 2: the second call mixes nothing up
    assert [len(r) for r in together] == [2, 1]
    for a_faces, b_faces in zip(separate, together):
        for a, b in zip(a_faces, b_faces):
            np.testing.assert_array_equal(a.vertices, b.vertices)
            np.testing.assert_array_equal(a.posmap_crop, b.posmap_crop)
            assert a.image is b.image or np.array_equal(a.image, b.image)
    assert many.complete_many([]) == []


def test_demo_writes_on_a_background_thread_the_same_files_as_one_image_at_a_time(
        uv_template, samples_dir, tmp_path, monkeypatch, capsys):
    import prnet.cli.demo as demo
    import prnet.outputs.faces as faces
    from prnet.inference.predictor import Predictor

    folder = samples_dir / "aflw2000-3d"
    jobs = demo.make_jobs(folder)[:3]
    outputs = ["obj", "landmarks", "pose"]

    def predictor():
        return Predictor(_Backend(), detector=lambda image: np.array([[100.0, 120, 300, 330]]), template=uv_template)

    threads = []
    real = faces.write_face_outputs

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(faces, "write_face_outputs", recording)
    assert demo.process_jobs(predictor(), jobs, tmp_path / "piped", outputs, annotations="never") == 0
    assert len(threads) == 3 and all(name.startswith("prnet-demo-writer") for name in threads)
    assert "3/3 images done, 9 files written" in capsys.readouterr().err
    p = predictor()
    (tmp_path / "plain").mkdir()
    for name, display, load, _ in jobs:
        faces.process_image(p, load(), name, display, tmp_path / "plain", outputs)
    plain = sorted(f.name for f in (tmp_path / "plain").iterdir())
    assert sorted(f.name for f in (tmp_path / "piped").iterdir()) == plain and len(plain) == 9
    for n in plain:
        assert (tmp_path / "piped" / n).read_bytes() == (tmp_path / "plain" / n).read_bytes(), n


@pytest.mark.parametrize("failing", ["write", "prepare"])
def test_demo_pipeline_reports_each_failed_image_in_order_and_continues(uv_template, samples_dir, tmp_path,
                                                                       monkeypatch, capsys, failing):
    """A (non-folder) write error or an unreadable image fails that image only; the others are written."""
    import prnet.cli.demo as demo
    import prnet.outputs.faces as faces
    from prnet.inference.predictor import Predictor

    jobs = demo.make_jobs(samples_dir / "aflw2000-3d")[:3]
    real = faces.write_face_outputs
    if failing == "write":
        def flaky(folder, stem, *args, **kwargs):
            if stem.startswith(jobs[1][0]):
                raise ValueError("cannot draw this face")
            return real(folder, stem, *args, **kwargs)
        monkeypatch.setattr(faces, "write_face_outputs", flaky)
    else:
        from prnet.errors import ImageReadError

        def unreadable():
            raise ImageReadError("not an image")
        jobs[1] = (*jobs[1][:2], unreadable, jobs[1][3])
    p = Predictor(_Backend(), detector=lambda image: np.array([[100.0, 120, 300, 330]]), template=uv_template)
    code = demo.process_jobs(p, jobs, tmp_path, ["landmarks"], annotations="never")
    err = capsys.readouterr().err
    assert code == 1
    assert f"prnet-demo: {jobs[1][1]}: " in err and f"2/3 images done, 2 files written to {tmp_path}" in err
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(f"{j[0]}_0_landmarks.txt" for j in (jobs[0], jobs[2]))


@pytest.mark.parametrize("tool, flag", [("demo", "--smoke_test_random_weights"), ("convert", "--checkpoint")])
def test_cli_help_does_not_import_tensorflow(tool, flag):
    from helpers import run_cli

    code = (f"import sys\nsys.argv = ['prnet-{tool}', '--help']\nfrom prnet.cli.{tool} import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED', file=sys.stderr)")
    result = run_cli(["-c", code])
    assert flag in result.stdout + result.stderr  # the help was printed
    assert "TF_NOT_LOADED" in result.stderr


@pytest.mark.slow
def test_cli_sets_the_tensorflow_log_level_only_when_the_user_has_not():
    from helpers import run_cli

    code = "import os, prnet.cli; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert run_cli(["-c", code], env={"TF_CPP_MIN_LOG_LEVEL": None}).stdout.strip() == "2"
    assert run_cli(["-c", code], env={"TF_CPP_MIN_LOG_LEVEL": "0"}).stdout.strip() == "0"


@pytest.mark.slow
def test_quiet_import_keeps_other_stderr_lines():
    from helpers import run_cli

    code = ("import os, sys\nfrom prnet.cli import import_tensorflow_quietly\nimport builtins\n"
            "real = builtins.__import__\n"
            "def noisy(name, *a, **k):\n"
            "    if name == 'tensorflow':\n"
            "        os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\nkeep me\\n')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = noisy\nimport_tensorflow_quietly()\nprint('done', file=sys.stderr)")
    err = run_cli(["-c", code], env={"TF_CPP_MIN_LOG_LEVEL": None}).stderr
    assert "keep me\n" in err and "done" in err and "oneDNN" not in err, err


@pytest.mark.slow
def test_demo_run_prints_no_tensorflow_banner(samples_dir, assets_dir, tmp_path):
    from helpers import run_cli

    result = run_cli("prnet.cli.demo", "--input", samples_dir / "faces" / "prnet_test_0.jpg", "--output", tmp_path,
                     "--smoke_test_random_weights", "--outputs", "landmarks", "--max_faces", "1", "--detector",
                     "opencv", env={"TF_CPP_MIN_LOG_LEVEL": None, "PRNET_ASSETS_DIR": assets_dir})
    assert result.returncode == 0, result.stderr
    for banner in ("oneDNN", "cuda", "cpu_feature_guard", "absl::InitializeLog"):
        assert banner not in result.stderr, result.stderr


def _tiny_tflite(path, truncate: bool = False):
    import tensorflow as tf

    fn = tf.function(lambda x: tf.nn.relu(x * 200.0 - 20.0) + 1.0,
                     input_signature=[tf.TensorSpec([1, 256, 256, 3], tf.float32)])
    data = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()]).convert()
    path.write_bytes(data[:len(data) // 2] if truncate else data)
    return path


@pytest.mark.parametrize("runtime", ["tf", "litert"])
def test_tflite_backend_on_either_interpreter_without_deprecation_warnings(tmp_path, runtime):
    import warnings

    from prnet.errors import WeightsFormatError
    from prnet.model.runtime import TFLiteBackend

    if runtime == "litert":
        pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install -e '.[litert]')")
    path = _tiny_tflite(tmp_path / "m.tflite")
    crops = np.random.default_rng(0).random((3, 256, 256, 3), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = TFLiteBackend(path, runtime=runtime)
        out = backend(crops)
    assert backend.runtime == {"tf": "tf.lite", "litert": "ai_edge_litert"}[runtime]
    assert not [w for w in caught if "deprecat" in str(w.message).lower()], [str(w.message) for w in caught]
    np.testing.assert_allclose(out, np.maximum(crops * 200 - 20, 0) + 1, rtol=1e-6, atol=1e-4)  # batch resized
    with pytest.raises(WeightsFormatError, match="corrupt or truncated"):
        TFLiteBackend(_tiny_tflite(tmp_path / "cut.tflite", truncate=True), runtime=runtime)


def test_tflite_auto_prefers_litert_and_falls_back_to_tf_lite(tmp_path, monkeypatch):
    import sys

    from prnet.model.runtime import tflite_interpreter

    path = _tiny_tflite(tmp_path / "m.tflite")
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        assert tflite_interpreter(path)[1] == "ai_edge_litert"
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if not installed
    assert tflite_interpreter(path)[1] == "tf.lite"
    with pytest.raises(ImportError, match="pip install ai-edge-litert"):
        tflite_interpreter(path, runtime="litert")
    with pytest.raises(ValueError, match="runtime must be one of"):
        tflite_interpreter(path, runtime="onnx")


def test_depth_and_overlay_share_one_rasterisation_and_never_a_stale_one(uv_template, monkeypatch):
    from prnet.mesh import raster, render

    v = uv_template.canonical_vertices.astype(np.float32) * 1.2 + (30, 10, 0)
    tris = uv_triangles(uv_template)
    tri_index, bary = raster.rasterize(v, tris, 360, 340)
    expected_depth = raster.interpolate(v[:, 2:3], tris, tri_index, bary)[..., 0]
    calls = []
    real = raster.rasterize
    monkeypatch.setattr(render, "rasterize", lambda *a: calls.append(1) or real(*a))
    render._last[0] = None
    depth = render.render_depth(v, tris, 360, 340)
    shade, mask = render.render_shaded(v, tris, 360, 340)
    assert len(calls) == 1  # the overlay's shading reused the depth image's rasterisation
    np.testing.assert_array_equal(depth, expected_depth)
    np.testing.assert_array_equal(mask, tri_index >= 0)
    intensity = 0.25 + 0.75 * np.abs(render.vertex_normals(v, tris)[:, 2:3])
    np.testing.assert_array_equal(shade, raster.interpolate(intensity, tris, tri_index, bary)[..., 0])
    # a changed mesh (one vertex moved by 1/8 px), another size, or a third call: rasterised afresh
    moved = v.copy()
    moved[1000, 0] += 0.125
    render.render_depth(v, tris, 360, 340)
    np.testing.assert_array_equal(render.render_depth(moved, tris, 360, 340),
                                  raster.interpolate(moved[:, 2:3], tris, *real(moved, tris, 360, 340))[..., 0])
    render.render_depth(moved, tris, 361, 340)
    assert len(calls) == 4
