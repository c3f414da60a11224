"""prnet-demo as a user runs it: a subprocess with a clean environment."""

import os
import shutil

import cv2
import numpy as np
import pytest

from prnet.inference.detect import available_detectors

from helpers import run_cli

FLAG_NAMES = ("input", "output", "weights", "backend", "download", "smoke_test_random_weights", "detector", "uv_dir",
              "batch_size", "max_faces", "outputs", "texture", "annotations")


def _run(args, env_extra=None, timeout=300, entry_point=False):
    # entry_point: call run() the way the `prnet-demo` console script does (sys.argv[0] is not the module).
    target = ["-c", "from prnet.cli.demo import run; run()"] if entry_point else "prnet.cli.demo"
    return run_cli(target, *args, env=env_extra, timeout=timeout)


def _needs_detector():
    if not available_detectors():
        pytest.skip("no face detector in this installation (OpenCV 5 has no Haar cascade: "
                    "pip install 'opencv-python-headless<5' or dlib-bin)")


@pytest.mark.parametrize("entry_point", [False, True])
def test_help_documents_every_flag(entry_point):
    result = _run(["--help"], timeout=120, entry_point=entry_point)
    assert result.returncode in (0, 1), result.stderr  # absl exits 1 after printing --help
    for name in FLAG_NAMES:
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, name
    assert "Exit status" in result.stdout


def test_missing_weights_offline_says_how_to_get_them(tmp_path, samples_dir, assets_dir):
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "prnet_test_0.jpg"), "--output", str(out), "--nodownload"],
                  {"PRNET_CACHE_DIR": str(tmp_path / "empty-cache"), "PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 2, result.stderr
    assert "prnet-demo: error:" in result.stderr and "Traceback" not in result.stderr
    assert "prnet-convert" in result.stderr or "--weights" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_wrong_asset_folder_is_a_clear_setup_error(tmp_path):
    (tmp_path / "uv").mkdir()
    result = _run(["--smoke_test_random_weights", "--uv_dir", str(tmp_path / "uv"), "--output", str(tmp_path / "o")])
    assert result.returncode == 2
    assert "UV template" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_image_fails_without_partial_files(tmp_path, assets_dir):
    _needs_detector()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    out = tmp_path / "out"
    result = _run(["--input", str(bad), "--output", str(out), "--smoke_test_random_weights"],
                  {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_end_to_end_folder_with_a_good_and_a_bad_image(tmp_path, samples_dir, assets_dir):
    _needs_detector()
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(samples_dir / "faces" / "prnet_test_0.jpg", inp / "face.jpg")
    (inp / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    out = tmp_path / "out"
    result = _run(["--input", str(inp), "--output", str(out), "--smoke_test_random_weights", "--max_faces", "1",
                   "--outputs", "obj,landmarks,pose,depth,overlay,texture", "--texture"],
                  {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 1, result.stderr  # one image failed
    assert "zz_corrupt.png" in result.stderr and "1/2 images done" in result.stderr
    stem = "face_0_RANDOM_WEIGHTS"
    expected = {f"{stem}{s}" for s in (".obj", ".mtl", ".png", "_landmarks.txt", "_pose.txt", "_depth.png",
                                       "_overlay.png", "_texture.png")}
    assert {p.name for p in out.iterdir()} == expected  # nothing for the corrupt image, no temp folders
    lm_text = (out / f"{stem}_landmarks.txt").read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS" in lm_text
    assert np.loadtxt(out / f"{stem}_landmarks.txt").shape == (68, 3)
    pose = np.loadtxt(out / f"{stem}_pose.txt")
    assert pose.shape == (4, 3)
    np.testing.assert_allclose(pose[1:] @ pose[1:].T, np.eye(3), atol=1e-4)  # R is a rotation
    assert (out / f"{stem}.obj").read_text(encoding="ascii").startswith("# RANDOM WEIGHTS")
    obj_lines = (out / f"{stem}.obj").read_text(encoding="ascii").splitlines()
    assert sum(line.startswith("v ") for line in obj_lines) == 43867
    photo = cv2.imread(str(inp / "face.jpg"))
    for name in ("_depth.png", "_overlay.png"):
        img = cv2.imread(str(out / f"{stem}{name}"), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == photo.shape[:2]
    assert cv2.imread(str(out / f"{stem}_texture.png")).shape == (256, 256, 3)


def test_default_weights_are_exported_once_and_run_as_saved_model(tmp_path, samples_dir, assets_dir):
    """First use of the default weights: a size-4 model's weights stand in for the converted official
    ones in the cache; the demo exports them as a SavedModel into the cache, says so, and runs it."""
    _needs_detector()
    import keras

    from prnet.model.resfcn256 import build_resfcn256

    cache = tmp_path / "cache"
    cache.mkdir()
    keras.utils.set_random_seed(0)
    build_resfcn256(weight_decay=0, size=4).save_weights(str(cache / "resfcn256.weights.h5"))
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "prnet_test_0.jpg"), "--output", str(out), "--nodownload",
                   "--max_faces", "1", "--outputs", "landmarks"],
                  {"PRNET_CACHE_DIR": str(cache), "PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 0, result.stderr
    assert "exporting resfcn256.weights.h5 as a SavedModel" in result.stderr
    assert "(backend: SavedModel)" in result.stderr and "using weights: official PRNet weights" in result.stderr
    assert (cache / "resfcn256_saved_model" / "saved_model.pb").is_file()
    assert (cache / "resfcn256_saved_model.json").is_file()
    text = (out / "prnet_test_0_0_landmarks.txt").read_text(encoding="utf-8")
    assert "resfcn256_saved_model" in text and "RANDOM" not in text
    assert np.loadtxt(out / "prnet_test_0_0_landmarks.txt").shape == (68, 3)


# ----------------------------------------------------------------------------- annotation crops
class _RecordingBackend:
    """Stands in for the network: records the crops it is given, returns flat position maps."""

    source, random_weights = "recording test backend", False

    def __init__(self):
        self.crops = []

    def __call__(self, crops):
        self.crops += list(crops)
        return np.full((len(crops), 256, 256, 3), 128.0, np.float32)


def test_calibration_crops_equal_the_demo_crops(samples_dir, assets_dir, tmp_path):
    """int8 calibration crops an annotated photo exactly as prnet-demo does: same reader, same
    sidecar landmarks (regression: calibration read ``.mat`` landmarks without the 1 px MATLAB offset)."""
    from prnet.core.images import read_image
    from prnet.data.annotations import sidecar_landmarks
    from prnet.inference.predictor import Predictor
    from prnet.serving.calibration import representative_crops

    folder = tmp_path / "annotated"
    folder.mkdir()
    images = sorted((samples_dir / "aflw2000-3d").glob("*.jpg")) + \
        [samples_dir / "faces" / name for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm")]
    for image in images:
        for path in (image, image.with_suffix(".mat"), image.with_suffix(".pts")):
            if path.is_file():
                (folder / path.name).symlink_to(path)
    linked = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".ppm"))
    assert len(linked) == len(images) == 11

    backend = _RecordingBackend()
    predictor = Predictor(backend, template=assets_dir, detector=None)
    for path in linked:  # as prnet-demo's main() does for one input file
        landmarks, _ = sidecar_landmarks(path)
        predictor.reconstruct(read_image(path), landmarks=landmarks)
    calibration = representative_crops(folder)
    assert len(calibration) == len(backend.crops) == len(linked)
    for path, mine, demo in zip(linked, calibration, backend.crops):
        np.testing.assert_array_equal(mine, demo, err_msg=path.name)


@pytest.mark.slow
def test_every_sample_face_photo_gives_all_outputs(tmp_path, samples_dir, assets_dir):
    """The issue's acceptance: prnet-demo on every photo of samples/faces writes all outputs, exit 0;
    einstein / breakingbad / takeo are cropped from their .pts annotations (Haar misses the first two)."""
    _needs_detector()
    photos = sorted(p for p in (samples_dir / "faces").iterdir() if p.suffix in (".jpg", ".ppm"))
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces"), "--output", str(out), "--smoke_test_random_weights",
                   "--outputs", "obj,landmarks,pose,depth,overlay,texture"], {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 0, result.stderr
    assert f"{len(photos)}/{len(photos)} images done" in result.stderr
    for name in ("einstein", "breakingbad", "takeo"):
        assert f"{name}.{'ppm' if name == 'takeo' else 'jpg'}: crop from {name}.pts" in result.stderr
    names = {p.name for p in out.iterdir()}
    assert all(p.is_file() for p in out.iterdir())  # no staging folders left
    for photo in photos:
        stem = f"{photo.stem}_0_RANDOM_WEIGHTS"
        for suffix in (".obj", "_landmarks.txt", "_pose.txt", "_depth.png", "_overlay.png", "_texture.png"):
            assert stem + suffix in names, (photo.name, suffix)
    # annotated photos: exactly one face (the annotated one)
    assert not any(n.startswith(("einstein_1", "breakingbad_1", "takeo_1")) for n in names)
    assert np.loadtxt(out / "einstein_0_RANDOM_WEIGHTS_landmarks.txt").shape == (68, 3)


def test_annotations_never_on_einstein_is_a_clean_no_face_error(tmp_path, samples_dir, assets_dir):
    _needs_detector()
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "einstein.jpg"), "--output", str(out),
                   "--smoke_test_random_weights", "--annotations", "never", "--detector", "opencv"],
                  {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 1, result.stderr
    assert "einstein.jpg: no face found" in result.stderr and "Traceback" not in result.stderr
    assert "crop from" not in result.stderr
    assert list(out.iterdir()) == []
