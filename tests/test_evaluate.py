"""End-to-end tests of ``evaluate.py`` / :mod:`prnet.evaluation.protocol` on the real AFLW2000-3D samples.

Dense ground truth uses a stand-in BFM (the REAL mean face with the REAL 68-landmark bases spread
over the mesh, :func:`prnet.data.bfm.landmark_interpolated_model`): only the pipeline is under test.
"""

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from prnet.core.crop import box_from_landmarks, crop_transform
from prnet.errors import DatasetError, OutputFolderError
from prnet.evaluation import ground_truth, metrics, report
from prnet.evaluation import protocol as evaluation
from prnet.evaluation.ground_truth import EvalSample
from prnet.evaluation.protocol import EvalConfig
from prnet.inference.predictor import Predictor

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(shared_dir):
    paths = {
        "samples": shared_dir / "samples" / "aflw2000-3d",
        "gt_dir": shared_dir / "reference" / "aflw2000-3d-3ddfa",
        "assets": shared_dir / "prnet-assets" / "uv-data",
        "bfm_uv": shared_dir / "reference" / "bfm-uv" / "BFM_UV_53215.mat",
        "mean": shared_dir / "reference" / "bfm-mean" / "bfm_mean_53215.npz",
        "kpt": shared_dir / "reference" / "bfm-mean" / "bfm_kpt68_bases.npz",
    }
    for p in paths.values():
        if not p.exists():
            pytest.skip(f"reference data not found: {p}")
    return paths


@pytest.fixture(scope="module")
def standin_bfm(data, tmp_path_factory):
    """A manual dir with a stand-in ``BFM.mat`` (see module doc) and the real ``BFM_UV.mat``."""
    from prnet.data.bfm import landmark_interpolated_model, write_bfm_mat

    folder = tmp_path_factory.mktemp("bfm")
    write_bfm_mat(folder / "BFM.mat", landmark_interpolated_model(data["mean"], data["kpt"]))
    os.symlink(data["bfm_uv"], folder / "BFM_UV.mat")
    return folder


@pytest.fixture(scope="module")
def template(data):
    from prnet.core.uv import load_uv_template

    return load_uv_template(data["assets"])


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _column(rows, key):
    return np.array([float(r[key]) for r in rows])


# ----------------------------------------------------------------------------- the CLI, end to end

@pytest.fixture(scope="module")
def cli_run(data, standin_bfm, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    proc = run_cli(REPO / "evaluate.py", "--smoke_test_random_weights",
                   "--dataset_dir", data["samples"], "--gt_dir", data["gt_dir"],
                   "--bfm", standin_bfm / "BFM.mat", "--bfm_uv", standin_bfm / "BFM_UV.mat",
                   "--output_dir", out, "--batch_size", "3", "--progress=false",
                   env={"PRNET_ASSETS_DIR": data["assets"]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow  # the fixture runs the whole CLI once (TensorFlow start-up, full-size model)
def test_cli_writes_table_json_csv_and_plot(cli_run):
    out, stdout = cli_run
    for name in ("results.json", "results.csv", "ced.png", "table.txt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    table = (out / "table.txt").read_text()
    assert table.strip() in stdout
    for row in ("68 landmarks, 2D", "68 landmarks, 3D", "all points (dense), 2D", "all points (dense), 3D",
                "3D reconstruction (rigid)", "Table 2: re-annotated", "0-30 n=3", "30-60 n=3", "60-90 n=2"):
        assert row in table, row
    assert table.count("RANDOM WEIGHTS") >= 2  # loud, at the top and the bottom
    import matplotlib.image

    png = matplotlib.image.imread(str(out / "ced.png"))
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100


@pytest.mark.slow  # the fixture runs the whole CLI once (TensorFlow start-up, full-size model)
def test_cli_json_and_csv_agree(cli_run, data):
    out, _ = cli_run
    res = json.loads((out / "results.json").read_text())
    rows = _read_csv(out / "results.csv")
    assert res["model"]["random_weights"] is True and res["model"]["sha256"] is None
    assert "RANDOM WEIGHTS" in res["warning"]
    assert res["data"]["count"] == len(rows) == 8
    assert [r["id"] for r in rows] == sorted(p.stem for p in data["samples"].glob("*.jpg"))
    nme = res["summary"]["nme_percent"]
    assert set(nme) == {"nme_2d", "nme_3d", "nme_2d_reannotated", "dense_2d", "dense_3d", "reconstruction_3d"}
    for key, s in nme.items():
        col = _column(rows, f"{key}_percent")
        assert s["mean"] == pytest.approx(col.mean(), rel=1e-5)
        buckets = [col[[r["bucket"] == lab for r in rows]] for lab in ("0-30", "30-60", "60-90")]
        assert [len(b) for b in buckets] == list(s["counts"].values())
        assert s["mean_of_buckets"] == pytest.approx(np.mean([b.mean() for b in buckets]), rel=1e-5)
    # each image's 3DDFA row holds its own .mat's pt3d_68; yaw and bucket follow the pose array
    pts = np.load(data["gt_dir"] / "AFLW2000-3D.pts68.npy")
    pose = np.load(data["gt_dir"] / "AFLW2000-3D.pose.npy").reshape(2000, -1)[:, 0]
    labels = np.load(data["gt_dir"] / "AFLW2000-3D-new.pose.npy").reshape(2000, -1)[:, 0]
    for r in rows:
        mat = sio.loadmat(data["samples"] / f"{r['id']}.mat")
        np.testing.assert_array_equal(pts[int(r["row"])], mat["pt3d_68"])
        assert float(r["yaw"]) == pytest.approx(pose[int(r["row"])], abs=1e-3)
        assert r["bucket"] == metrics.YAW_BUCKETS[int(metrics.yaw_bucket(float(r["yaw"])))][0]
        assert r["crop"] == "gt"
        # the second published split: yaw from the AFLW labels, the same row of AFLW2000-3D-new.pose.npy
        assert float(r["yaw_labels"]) == pytest.approx(labels[int(r["row"])], abs=1e-3)
        assert r["bucket_labels"] == metrics.YAW_BUCKETS[int(metrics.yaw_bucket(labels[int(r["row"])]))][0]
    by_labels = res["summary"]["nme_percent_yaw_labels"]
    assert set(by_labels) == set(nme)
    for key, s in by_labels.items():
        col = _column(rows, f"{key}_percent")
        buckets = [col[[r["bucket_labels"] == lab for r in rows]] for lab in ("0-30", "30-60", "60-90")]
        assert [len(b) for b in buckets] == list(s["counts"].values())
        assert s["mean_of_buckets"] == pytest.approx(np.mean([b.mean() for b in buckets if len(b)]), rel=1e-5)
    table = (out / "table.txt").read_text()
    assert "AFLW2000-3D.pose.npy" in table and "AFLW2000-3D-new.pose.npy" in table
    assert table.count("Yaw split:") == 4  # Tables 1-2 by the fitted pose, 3-4 by the AFLW labels
    for j, r in zip(res["per_image"], rows):
        assert j["id"] == r["id"] and j["nme_2d_percent"] == pytest.approx(float(r["nme_2d_percent"]), abs=1e-5)
    rt = res["summary"]["runtime_ms"]
    assert rt["forward_ms"]["mean"] > 0
    assert rt["end_to_end_ms"]["mean"] >= rt["forward_ms"]["mean"] + rt["crop_ms"]["mean"]
    e2e = _column(rows, "end_to_end_ms")
    parts = sum(_column(rows, k) for k in ("detect_ms", "crop_ms", "forward_ms", "mesh_ms"))
    np.testing.assert_allclose(e2e, parts, atol=2e-3)


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(data, tmp_path):
    cmd = [REPO / "evaluate.py", "--smoke_test_random_weights", "--output_dir", tmp_path,
           "--assets_dir", data["assets"]]
    proc = run_cli(*cmd, "--dataset_dir", tmp_path / "nope")
    assert proc.returncode == 2 and "dataset folder not found" in proc.stderr
    proc = run_cli(*cmd)
    assert proc.returncode != 0 and "exactly one of --dataset_dir" in proc.stderr
    proc = run_cli(*cmd, "--dataset_dir", data["samples"], "--assets_dir", tmp_path)
    assert proc.returncode == 2 and "UV template" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("results.*"))


# ----------------------------------------------------------------------------- in-process checks

class QueuedPosmapBackend:
    """Returns the ground-truth position maps (crop pixels) of ``samples`` in order: a perfect model."""

    def __init__(self, posmaps):
        self.queue = list(posmaps)

    def __call__(self, crops):
        if not np.any(crops):  # the untimed warm-up call
            return np.zeros_like(crops)
        out, self.queue = self.queue[:len(crops)], self.queue[len(crops):]
        return np.stack(out).astype(np.float32)


def test_perfect_model_scores_zero_dense_error(data, standin_bfm, template, tmp_path):
    """Crop -> network -> image pixels round trip: the ground-truth posmap must score 0 dense error,
    and its 68 UV landmark pixels must score what a direct comparison with pt3d_68 gives."""
    dense = evaluation.bfm_dense_ground_truth(standin_bfm / "BFM.mat", standin_bfm / "BFM_UV.mat", template)
    samples = evaluation.load_folder_samples(data["samples"])
    posmaps, expected_2d, expected_3d = [], [], []
    for s in samples:
        verts = dense(s.fit, s.load_image().shape)                     # image px
        flat = np.zeros((256 * 256, 3))
        flat[template.face_ind] = verts
        tform = crop_transform(*box_from_landmarks(s.landmarks))
        scale = tform[0, 0]
        crop = flat.copy()
        crop[:, :2] = flat[:, :2] * scale + tform[:2, 2]
        crop[:, 2] = flat[:, 2] * scale + 17.0                          # arbitrary z origin
        posmaps.append(crop.reshape(256, 256, 3))
        lm = flat.reshape(256, 256, 3)[template.kpt_ind[:, 1], template.kpt_ind[:, 0]]
        expected_2d.append(metrics.landmark_nme(lm, s.landmarks, 2)[0])
        expected_3d.append(metrics.landmark_nme(lm, s.landmarks, 3)[0])
    cfg = EvalConfig(output_dir=str(tmp_path), dataset_dir=str(data["samples"]), assets_dir=str(data["assets"]),
                     bfm=str(standin_bfm / "BFM.mat"), bfm_uv=str(standin_bfm / "BFM_UV.mat"), batch_size=5,
                     progress=False)
    oracle = Predictor(QueuedPosmapBackend(posmaps), detector=None, template=template, batch_size=5)
    res = evaluation.evaluate(cfg, predictor=oracle, model_info={"description": "oracle"})
    rows = _read_csv(tmp_path / "results.csv")
    for key in ("dense_2d", "dense_3d", "reconstruction_3d"):
        assert np.abs(_column(rows, f"{key}_percent")).max() < 1e-4, key
    np.testing.assert_allclose(_column(rows, "nme_2d_percent"), 100 * np.array(expected_2d), atol=1e-4)
    np.testing.assert_allclose(_column(rows, "nme_3d_percent"), 100 * np.array(expected_3d), atol=1e-4)
    # the stand-in fit's landmark vertices reproduce pt3d_68 to about a pixel: small but non-zero NME
    assert 0 < res["summary"]["nme_percent"]["nme_2d"]["mean"] < 2.0
    assert "RANDOM" not in res["table"] and "nme_2d_reannotated" not in res["summary"]["nme_percent"]


def _tiny_backend():
    import keras

    from prnet.model.resfcn256 import build_resfcn256
    from prnet.model.runtime import KerasBackend

    keras.utils.set_random_seed(1)
    return KerasBackend(build_resfcn256(weight_decay=0.0, size=4), random_weights=True)


class KnownBoxDetector:
    """Returns the ground-truth landmark box for some images and nothing for the others."""

    box_rule = "bbox"

    def __init__(self, boxes):
        self.boxes = boxes

    def __call__(self, image):
        return self.boxes.get(_key(image), np.zeros((0, 4)))


def _key(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.mark.slow  # runs a network over every sample photo
def test_detector_crops_and_fallback(data, template):
    from prnet.core.crop import landmarks_bbox

    samples = evaluation.load_folder_samples(data["samples"])
    backend = _tiny_backend()
    gt_records = evaluation.run_inference(Predictor(backend, detector=None, template=template), samples,
                                          batch_size=4, progress=False)
    # a detector that returns exactly the landmark box (and a far-away decoy) for the first four images
    boxes = {}
    for s in samples[:4]:
        boxes[_key(s.load_image())] = np.array([[0, 0, 5, 5], landmarks_bbox(s.landmarks)])
    detector = KnownBoxDetector(boxes)
    found = {s.id for s in samples[:4]}
    recs = evaluation.run_inference(Predictor(backend, detector=detector, template=template), samples,
                                    crop="detector", batch_size=4, progress=False)
    for g, r in zip(gt_records, recs):
        assert r["crop"] == ("detector" if r["id"] in found else "gt (no face detected)")
        # 'bbox' rule on the landmark box == the gt crop: identical predictions and errors
        assert r["nme_2d"] == pytest.approx(g["nme_2d"], rel=1e-5)
        assert r["detect_ms"] > 0
    summary = report.summarize(recs)
    assert summary["crop_sources"]["detector"] == len(found)
    # per yaw bucket: faces, detected faces, rate and the 2D NME of the detected ones only
    det = summary["detection"]["yaw"]
    for lab in ("0-30", "30-60", "60-90", "all"):
        sel = [r for r in recs if lab in ("all", r["bucket"])]
        hit = [r for r in sel if r["id"] in found]
        assert (det[lab]["faces"], det[lab]["detected"]) == (len(sel), len(hit))
        assert det[lab]["rate"] == pytest.approx(len(hit) / len(sel))
        if hit:
            assert det[lab]["nme_2d_detected"] == pytest.approx(100 * np.mean([r["nme_2d"] for r in hit]))
        else:
            assert det[lab]["nme_2d_detected"] is None
    assert "detection" not in report.summarize(gt_records)
    table = report.build_results(recs, model={"description": "tiny"}, data={"crop": "detector", "detector": "box"},
                                 batch_size=4)["table"]
    hits = f"{det['all']['detected']}/{det['all']['faces']}"
    assert "detection rate (%)" in table and hits in table and "2D NME (%) of detected faces" in table
    with pytest.raises(ValueError, match="detector"):
        evaluation.run_inference(Predictor(backend, detector=None, template=template), samples, crop="detector",
                                 progress=False)


@pytest.mark.slow  # runs a network over every sample photo
def test_keras_weights_file_is_recorded_with_its_hash(data, tmp_path):
    from prnet.model.resfcn256 import build_resfcn256

    weights = tmp_path / "tiny.weights.h5"
    build_resfcn256(weight_decay=0.0, size=4).save_weights(str(weights))
    cfg = EvalConfig(output_dir=str(tmp_path / "out"), weights=str(weights), dataset_dir=str(data["samples"]),
                     assets_dir=str(data["assets"]), max_images=3, progress=False)
    res = evaluation.evaluate(cfg)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["model"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert saved["model"]["random_weights"] is False and "warning" not in saved
    assert saved["data"]["count"] == 3 and res["summary"]["nme_percent"]["nme_2d"]["count"] == 3
    assert saved["data"]["gt_arrays"] is None


@pytest.mark.slow  # builds a TFDS dataset
def test_tfds_dataset_gives_the_same_numbers_as_the_folder(data, standin_bfm, template, tmp_path):
    import tensorflow_datasets as tfds

    from tfds_builders.prnet_aflw2000_3d import Builder

    manual = tmp_path / "manual"
    (manual / "BFM").mkdir(parents=True)
    for f in data["samples"].iterdir():
        os.symlink(f, manual / f.name)
    for f in ("BFM.mat", "BFM_UV.mat"):
        os.symlink(standin_bfm / f, manual / "BFM" / f)
    Builder(data_dir=str(tmp_path / "tfds"), config="posmap").download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    backend = _tiny_backend()
    gt = evaluation.load_gt_arrays(data["gt_dir"])
    total, tf_samples = evaluation.load_tfds_samples("prnet_aflw2000_3d/posmap", data_dir=str(tmp_path / "tfds"),
                                                     template=template, gt=gt)
    assert total == 8
    predictor = Predictor(backend, detector=None, template=template)
    via_tfds = evaluation.run_inference(predictor, tf_samples, progress=False, total=total)
    dense = evaluation.bfm_dense_ground_truth(standin_bfm / "BFM.mat", standin_bfm / "BFM_UV.mat", template)
    via_folder = evaluation.run_inference(predictor, evaluation.load_folder_samples(data["samples"], gt=gt),
                                          dense_fn=dense, progress=False)
    by_id = {r["id"]: r for r in via_tfds}
    assert sorted(by_id) == sorted(r["id"] for r in via_folder)
    for r in via_folder:
        t = by_id[r["id"]]
        assert t["row"] == r["row"] and t["yaw"] == pytest.approx(r["yaw"], abs=1e-3)
        for key in ("nme_2d", "nme_3d", "nme_2d_reannotated", "dense_2d", "dense_3d", "reconstruction_3d"):
            # the TFDS copy of the photo is re-encoded as JPEG: tiny differences only
            assert t[key] == pytest.approx(r[key], rel=1e-3), key


def test_sample_loading_errors(data, tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        evaluation.load_gt_arrays(tmp_path)
    with pytest.raises(DatasetError, match="re-annotated landmarks file not found"):
        evaluation.load_gt_arrays(data["gt_dir"], reannotated=tmp_path / "missing.npy")
    # a sample that is not in the arrays (landmarks moved by 5 px) is refused, not silently mismatched
    gt = evaluation.load_gt_arrays(data["gt_dir"])
    s = evaluation.load_folder_samples(data["samples"], max_images=1)[0]
    moved = EvalSample(id="x", yaw=0.0, landmarks=s.landmarks + 5.0)
    with pytest.raises(DatasetError, match="x: its 68 ground-truth landmarks are in no row of .*pts68.npy"):
        ground_truth.attach_gt_arrays(moved, gt)


# ----------------------------------------------------------------------------- evaluate.py runs the demo's code

@pytest.mark.slow  # one prnet-demo subprocess (TensorFlow start-up)
def test_evaluate_and_demo_give_identical_landmarks(data, tmp_path, monkeypatch):
    """The published numbers go through the code users run: the same weights file (a small
    trained-like network) and the same AFLW2000-3D photo, cropped from its ``pt3d_68`` by both
    (evaluate: ``--crop=gt``; prnet-demo: ``--annotations auto`` finds the ``.mat``), give IDENTICAL
    landmarks (in process; the demo's file to its 3 decimals)."""
    import keras

    from prnet.data.annotations import sidecar_landmarks
    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm

    keras.utils.set_random_seed(7)
    weights = tmp_path / "small.weights.h5"
    randomize_batchnorm(build_resfcn256(weight_decay=0.0, size=4), seed=7).save_weights(str(weights))
    photo = sorted(data["samples"].glob("*.jpg"))[0]
    folder = tmp_path / "one"
    folder.mkdir()
    for f in (photo, photo.with_suffix(".mat")):
        os.symlink(f, folder / f.name)

    faces = []
    real = Predictor.face_results

    def spy(self, *args):
        out = real(self, *args)
        faces.extend(out)
        return out

    monkeypatch.setattr(Predictor, "face_results", spy)
    cfg = EvalConfig(output_dir=str(tmp_path / "eval"), weights=str(weights), dataset_dir=str(folder),
                     assets_dir=str(data["assets"]), progress=False)
    res = evaluation.evaluate(cfg)
    (evaluated,) = faces
    assert res["model"]["backend"] == "Keras" and str(weights) in res["model"]["source"]

    # the demo's path in process: its annotation reader and Predictor.from_weights(--weights) + reconstruct
    landmarks, ann = sidecar_landmarks(folder / photo.name)
    assert ann.suffix == ".mat"
    demo = Predictor.from_weights(weights, detector=None, template=str(data["assets"]))
    (face,) = demo.reconstruct(folder / photo.name, landmarks=landmarks)
    np.testing.assert_array_equal(face.tform, evaluated.tform)
    np.testing.assert_array_equal(face.landmarks, evaluated.landmarks)
    np.testing.assert_array_equal(face.vertices, evaluated.vertices)

    # prnet-demo itself, as a user runs it
    out = tmp_path / "demo"
    proc = run_cli("prnet.cli.demo", "--input", folder / photo.name, "--output", out, "--weights", weights,
                   "--uv_dir", data["assets"], "--outputs", "landmarks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"crop from {photo.with_suffix('.mat').name}" in proc.stderr
    written = np.loadtxt(out / f"{photo.stem}_0_landmarks.txt")
    np.testing.assert_allclose(written, evaluated.landmarks, rtol=0, atol=5e-4 + 1e-6)


# ----------------------------------------------------------------------------- reliability (issue 14)

GT_FILES = ("AFLW2000-3D.pts68.npy", "AFLW2000-3D.pose.npy", "AFLW2000-3D-Reannotated.pts68.npy")


def _gt_copy(data, folder, shifted=()):
    """A copy of the real 3DDFA arrays in ``folder`` with the files named in ``shifted`` moved down one row."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in GT_FILES:
        array = np.load(data["gt_dir"] / name)
        np.save(folder / name, np.roll(array, 1, axis=0) if name in shifted else array)
    return folder


class SpyBackend:
    """A stand-in network (a flat position map) that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, crops):
        self.calls += 1
        out = np.full(crops.shape, 100.0, np.float32)
        out[..., 0] += np.arange(crops.shape[2], dtype=np.float32)  # x varies along the columns
        out[..., 1] += np.arange(crops.shape[1], dtype=np.float32)[:, None]
        return out


def _error_lines(proc):
    """The tool's own lines on stderr (TensorFlow's start-up logging aside): one expected."""
    return [line for line in proc.stderr.splitlines() if line.startswith("evaluate.py:")]


def test_gt_arrays_out_of_row_order_are_refused(data, tmp_path):
    """Issue 14 item 5: pose + re-annotated arrays shifted by one row gave exit 0 with buckets 5/0/3 instead
    of 3/3/2 and the landmarks of other images. Every image is now checked against its row."""
    reference = evaluation.load_folder_samples(data["samples"], gt=evaluation.load_gt_arrays(data["gt_dir"]))
    assert [int(metrics.yaw_bucket(s.yaw)) for s in reference].count(1) == 3

    # all three files shifted together: still consistent, each image finds its (moved) row
    gt = evaluation.load_gt_arrays(_gt_copy(data, tmp_path / "all", GT_FILES))
    moved = evaluation.load_folder_samples(data["samples"], gt=gt)
    assert [s.row for s in moved] == [s.row + 1 for s in reference]
    for a, b in zip(moved, reference):
        assert a.yaw == b.yaw
        np.testing.assert_array_equal(a.reannotated, b.reannotated)

    # the issue's case and the re-annotated file alone: its rows are other faces' landmarks
    for shifted in (GT_FILES[1:], GT_FILES[2:], GT_FILES[:1]):
        folder = _gt_copy(data, tmp_path / "-".join(n[:14] for n in shifted), shifted)
        with pytest.raises(DatasetError, match="not in the row order") as err:
            evaluation.load_gt_arrays(folder)
        assert str(folder / GT_FILES[2]) in str(err.value) and str(folder / GT_FILES[0]) in str(err.value)

    # the pose alone (and the landmarks alone, without a re-annotation file): the image's own yaw differs
    for shifted in (GT_FILES[1:2], GT_FILES[:1]):
        folder = _gt_copy(data, tmp_path / ("only-" + shifted[0][:14]), shifted)
        (folder / GT_FILES[2]).unlink()
        gt = evaluation.load_gt_arrays(folder)
        with pytest.raises(DatasetError, match="not in the same row order") as err:
            evaluation.load_folder_samples(data["samples"], gt=gt)
        first = sorted(data["samples"].glob("*.mat"))[0]
        assert str(first) in str(err.value) and str(folder / GT_FILES[1]) in str(err.value)


@pytest.mark.slow
def test_shifted_gt_arrays_stop_the_cli_before_evaluating(data, tmp_path):
    folder = _gt_copy(data, tmp_path / "gt", GT_FILES[1:])
    out = tmp_path / "out"
    proc = run_cli(REPO / "evaluate.py", "--smoke_test_random_weights", "--dataset_dir", data["samples"],
                   "--gt_dir", folder, "--output_dir", out, "--assets_dir", data["assets"], "--progress=false")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "not in the row order" in proc.stderr
    assert _error_lines(proc) == [proc.stderr.splitlines()[-1]]
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.slow
def test_unwritable_output_dir_is_refused_before_evaluating(data, template, tmp_path):
    """Issue 14 item 9: an unwritable --output_dir gave a traceback after the whole run. Tests run as root
    (a read-only mode does not stop root): the output folder's parent is a regular file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    spy = SpyBackend()
    cfg = EvalConfig(output_dir=str(blocker / "eval"), dataset_dir=str(data["samples"]), progress=False)
    with pytest.raises(OutputFolderError, match="a_file is a file"):
        evaluation.evaluate(cfg, predictor=Predictor(spy, detector=None, template=template))
    assert spy.calls == 0  # refused before any image was processed

    proc = run_cli(REPO / "evaluate.py", "--smoke_test_random_weights", "--dataset_dir", data["samples"],
                   "--output_dir", blocker / "eval", "--assets_dir", data["assets"], "--progress=false")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = _error_lines(proc)
    assert f"cannot write to the output folder {blocker / 'eval'}" in line


def test_a_write_failure_names_the_output_folder(data, template, tmp_path, monkeypatch):
    """A full disk while the outputs are written: an OutputFolderError naming --output_dir (not the
    hidden temporary the system call failed on)."""
    import errno

    real = report.atomic_write

    def full_disk(path, *args, **kwargs):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(path).parent / ".tmp-abcdefgh-x"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(report, "atomic_write", full_disk)
    cfg = EvalConfig(output_dir=str(tmp_path / "out"), dataset_dir=str(data["samples"]), max_images=2,
                     progress=False)
    with pytest.raises(OutputFolderError, match="No space left on device; free some space") as err:
        evaluation.evaluate(cfg, predictor=Predictor(SpyBackend(), detector=None, template=template))
    assert str(tmp_path / "out") in str(err.value) and ".tmp-" not in str(err.value)
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_normal_permissions(data, template, tmp_path, umask):
    """Issue 14 item 10: every output file follows the umask (not the temp files' private 0600)."""
    old = os.umask(umask)
    try:
        cfg = EvalConfig(output_dir=str(tmp_path / "out"), dataset_dir=str(data["samples"]), max_images=2,
                         gt_dir=str(data["gt_dir"]), progress=False)
        res = evaluation.evaluate(cfg, predictor=Predictor(SpyBackend(), detector=None, template=template))
    finally:
        os.umask(old)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["ced.png", "results.csv", "results.json", "table.txt"]
    assert sorted(res["outputs"].values()) == [str(p) for p in written]
    for p in written:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, (p.name, oct(p.stat().st_mode))
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask


# ----------------------------------------------------------------------------- battery rows 2, 19, 26

@pytest.mark.parametrize("name", ["results.json", "table.txt"])
def test_a_folder_named_like_an_output_is_refused_before_evaluating(data, template, tmp_path, name):
    """Battery row 2: a folder ``results.json`` / ``table.txt`` in --output_dir was deleted and replaced."""
    from prnet.errors import OutputExistsError

    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "notes.txt").write_text("notes")
    spy = SpyBackend()
    cfg = EvalConfig(output_dir=str(out), dataset_dir=str(data["samples"]), max_images=1, progress=False)
    with pytest.raises(OutputExistsError, match=f"{name} is a folder.*choose another --output_dir"):
        evaluation.evaluate(cfg, predictor=Predictor(spy, detector=None, template=template))
    assert spy.calls == 0 and (out / name / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_images_without_a_mat_are_counted_and_named(data, template, tmp_path):
    """Battery row 19: an image without its .mat was dropped from the benchmark without a word."""
    folder = tmp_path / "nomat"
    folder.mkdir()
    for f in sorted(data["samples"].iterdir()):
        os.symlink(f, folder / f.name)
    mats = sorted(folder.glob("*.mat"))
    mats[-1].unlink()
    lonely = mats[-1].with_suffix(".jpg")
    assert ground_truth.images_without_fit(folder) == [lonely]
    assert ground_truth.images_without_fit(data["samples"]) == []
    cfg = EvalConfig(output_dir=str(tmp_path / "out"), dataset_dir=str(folder), max_images=1, progress=False)
    res = evaluation.evaluate(cfg, predictor=Predictor(SpyBackend(), detector=None, template=template))
    assert res["data"]["images_without_mat"] == {"count": 1, "files": [str(lonely)]}
    assert f"1 image(s) without a .mat fit were left out ({lonely.name})" in res["table"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["data"]["images_without_mat"]["count"] == 1
    assert lonely.name in (tmp_path / "out" / "table.txt").read_text()


def test_a_nan_row_of_the_gt_arrays_is_named_as_such(data, tmp_path):
    """Battery row 26: row 49 set to NaN was reported as "its landmarks are row 49 ... not in the same row
    order" for another image (NaN won argmin)."""
    folder = _gt_copy(data, tmp_path / "gt")
    pts = np.load(folder / GT_FILES[0])
    pts[49] = np.nan
    np.save(folder / GT_FILES[0], pts)
    with pytest.raises(DatasetError, match=r"row 49 \(0-based\) of the landmark array holds NaN") as err:
        evaluation.load_gt_arrays(folder)
    assert "row order" not in str(err.value)
    # the matcher alone: a NaN row never wins over the true one
    clean = np.load(data["gt_dir"] / GT_FILES[0]).transpose(0, 2, 1).astype(np.float64)
    assert metrics.match_rows(clean[28], pts.transpose(0, 2, 1))[0] == 28
    with pytest.raises(metrics.MetricInputError):
        metrics.match_rows(clean[49], pts.transpose(0, 2, 1))
