"""notebooks/quickstart.ipynb runs top to bottom (nbclient, a fresh ipykernel), with the tests' stand-in
network in place of its ``load-model`` cell (the mean face in every crop, NOT a face model; see
tests/test_app.py) and the UV template from ../shared: every cell runs without error, the photo's face
is found, the figures are drawn, and the export cell writes the files it lists."""

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the kernel imports TensorFlow (the BlazeFace detector)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(assets_dir, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tags = {tag: cell for cell in nb.cells for tag in cell.get("metadata", {}).get("tags", [])}
    assert {"parameters", "load-model"} <= set(tags)
    tags["parameters"].source += f"\nOUT = {json.dumps(str(tmp_path / 'out'))}\n"
    tags["load-model"].source = (
        f"import sys; sys.path.insert(0, {json.dumps(str(REPO / 'tests'))})\n"
        "from prnet.core.uv import load_uv_template\n"
        "from test_app import test_predictor  # the stand-in network: NOT a face model\n"
        f"predictor = test_predictor(load_uv_template({json.dumps(str(assets_dir))}))\n"
        "print('weights:', predictor.source)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become outputs
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "1 face(s); face 0: 43867 vertices" in text, text
    assert "yaw " in text and "RANDOM WEIGHTS" not in text
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) >= 3  # the photo, overlay + turntable, depth
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(["photo_0.obj", "photo_0.glb", "photo_0.ply", "photo_0_landmarks.txt",
                              "photo_0_pose.txt"]), written
    for name in written:
        assert name in text
