"""prnet-demo as a user runs it: a subprocess with a clean environment."""

import os
import shutil
import stat

import cv2
import numpy as np
import pytest

from prnet.inference.detect import available_detectors
from prnet.weights.official import write_official_stamp

from helpers import run_cli


def _run(args, env_extra=None, timeout=None, entry_point=False):
    # entry_point: call run() the way the `prnet-demo` console script does (sys.argv[0] is not the module).
    target = ["-c", "from prnet.cli.demo import run; run()"] if entry_point else "prnet.cli.demo"
    return run_cli(target, *args, env=env_extra, timeout=timeout)


def _needs_detector():
    if not available_detectors():
        pytest.skip("no face detector in this installation (OpenCV 5 has no Haar cascade: "
                    "pip install 'opencv-python-headless<5' or dlib-bin)")


@pytest.mark.parametrize("entry_point", [False, True])
def test_help_explains_exit_status(entry_point):
    result = _run(["--help"], entry_point=entry_point)
    assert result.returncode == 0, result.stderr
    # Every flag is listed: tests/test_cli_common.py (derived from the flag registry).
    assert "Exit status" in result.stdout


@pytest.mark.slow
def test_missing_weights_offline_says_how_to_get_them(tmp_path, samples_dir, assets_dir):
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "prnet_test_0.jpg"), "--output", str(out), "--nodownload"],
                  {"PRNET_CACHE_DIR": str(tmp_path / "empty-cache"), "PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 2, result.stderr
    assert "prnet-demo: error:" in result.stderr and "Traceback" not in result.stderr
    assert "prnet-convert" in result.stderr or "--weights" in result.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_wrong_asset_folder_is_a_clear_setup_error(tmp_path):
    (tmp_path / "uv").mkdir()
    result = _run(["--smoke_test_random_weights", "--uv_dir", str(tmp_path / "uv"), "--output", str(tmp_path / "o")])
    assert result.returncode == 2
    assert "UV template" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_corrupt_image_fails_without_partial_files(tmp_path, assets_dir):
    _needs_detector()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    out = tmp_path / "out"
    result = _run(["--input", str(bad), "--output", str(out), "--smoke_test_random_weights"],
                  {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # nothing written: the output folder this run made is removed (issue 20)


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
    rows = [np.array(line.split(), float) for line in
            (out / f"{stem}_pose.txt").read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    assert [len(r) for r in rows] == [3, 3, 3, 3, 4, 4, 4]  # angles, R (3x3), camera matrix P (3x4)
    rot, cam = np.array(rows[1:4]), np.array(rows[4:])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-4)  # R is a rotation
    scale = np.linalg.norm(cam[0, :3])
    np.testing.assert_allclose(cam[:, :3], scale * rot, atol=1e-4 * max(scale, 1))  # P = [s R | t]
    assert (out / f"{stem}.obj").read_text(encoding="ascii").startswith("# RANDOM WEIGHTS")
    obj_lines = (out / f"{stem}.obj").read_text(encoding="ascii").splitlines()
    assert sum(line.startswith("v ") for line in obj_lines) == 43867
    photo = cv2.imread(str(inp / "face.jpg"))
    for name in ("_depth.png", "_overlay.png"):
        img = cv2.imread(str(out / f"{stem}{name}"), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == photo.shape[:2]
    assert cv2.imread(str(out / f"{stem}_texture.png")).shape == (256, 256, 3)


@pytest.mark.slow
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
    write_official_stamp(cache / "resfcn256.weights.h5", "stand-in")  # as a conversion would: called official
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "prnet_test_0.jpg"), "--output", str(out), "--nodownload",
                   "--max_faces", "1", "--outputs", "landmarks", "--backend", "saved_model", "--precision", "float32"],
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


@pytest.mark.slow
def test_annotations_never_on_einstein_is_a_clean_no_face_error(tmp_path, samples_dir, assets_dir):
    _needs_detector()
    out = tmp_path / "out"
    result = _run(["--input", str(samples_dir / "faces" / "einstein.jpg"), "--output", str(out),
                   "--smoke_test_random_weights", "--annotations", "never", "--detector", "opencv"],
                  {"PRNET_ASSETS_DIR": str(assets_dir)})
    assert result.returncode == 1, result.stderr
    assert "einstein.jpg: no face found" in result.stderr and "Traceback" not in result.stderr
    assert "crop from" not in result.stderr
    assert not out.exists()  # nothing written: the output folder this run made is removed (issue 20)


# ----------------------------------------------------------------------------- reliability (issue 14)
def _folder_of_images(folder, names, size=(60, 80)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        assert cv2.imwrite(str(folder / name), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def _fake_predictor(assets_dir):
    """A Predictor on the recording backend with a fixed face box: the demo's loop without a network."""
    from prnet.inference.predictor import Predictor

    return Predictor(_RecordingBackend(), template=assets_dir,
                     detector=lambda image: np.array([[10.0, 10.0, 50.0, 50.0]]))


def test_output_names_are_unique_per_input_and_deterministic(tmp_path):
    from prnet.outputs.naming import output_names

    files = [tmp_path / n for n in ("Face.JPG", "a.jpg", "face.jpg", "face.png", "face_png.bmp", "x.tar.png")]
    names = output_names(files)
    assert names == ["Face_JPG", "a", "face_jpg_2", "face_png", "face_png_2", "x.tar"]  # ignoring case
    assert len({n.casefold() for n in names}) == len(files)
    assert output_names(files) == names  # deterministic
    assert output_names([tmp_path / "photo.jpg"]) == ["photo"]  # a unique stem is kept


def test_same_stem_inputs_keep_their_own_files_and_the_summary_counts_the_disk(tmp_path, assets_dir, capsys):
    """face.jpg + face.png used to write the same face_0_* files (the second overwrote the first)
    while the summary said 2/2 done with twice the files; a broken symlink was skipped silently."""
    from prnet.cli.demo import make_jobs, process_jobs

    inp = _folder_of_images(tmp_path / "in", ["face.jpg", "face.png", "other.png"])
    (inp / "moved.jpg").symlink_to(tmp_path / "gone.jpg")
    jobs = make_jobs(str(inp))
    assert [j[0] for j in jobs] == ["face_jpg", "face_png", "moved", "other"]
    out = tmp_path / "out"
    code = process_jobs(_fake_predictor(assets_dir), jobs, out, ["landmarks", "pose"])
    err = capsys.readouterr().err
    assert code == 1  # the broken link is a failed input
    assert "moved.jpg is a broken symbolic link" in err and "failed: " in err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}_0_{kind}.txt" for n in ("face_jpg", "face_png", "other") for kind in ("landmarks",
                                                                                                          "pose"))
    assert f"3/4 images done, {len(names)} files written to {out}" in err
    assert "face.png" in (out / "face_png_0_landmarks.txt").read_text(encoding="utf-8")  # header names its input
    assert "face.jpg" in (out / "face_jpg_0_landmarks.txt").read_text(encoding="utf-8")


def test_disk_full_during_the_run_stops_and_names_the_output_folder(tmp_path, assets_dir, capsys, monkeypatch):
    import errno

    import prnet.cli.demo as demo
    import prnet.outputs.faces as faces

    inp = _folder_of_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real, calls = faces.write_face_outputs, []

    def disk_fills_up(folder, stem, *args, **kwargs):  # the second image hits ENOSPC inside the staging folder
        calls.append(stem)
        if len(calls) == 2:
            (folder / f"{stem}_landmarks.txt").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / f"{stem}_landmarks.txt"))
        return real(folder, stem, *args, **kwargs)

    monkeypatch.setattr(faces, "write_face_outputs", disk_fills_up)
    predictor = _fake_predictor(assets_dir)
    code = demo.process_jobs(predictor, demo.make_jobs(str(inp)), out, ["landmarks"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write to the output folder {out} (the files of {inp / 'b.png'}): No space left on device" in err
    assert ".tmp-" not in err  # the user's path, not the staging folder
    assert "1/3 images done, 1 files written" in err and "2 image(s) not processed" in err  # b.png, c.png
    assert len(predictor.backend.crops) == 2  # stopped: c.png was not processed
    assert sorted(p.name for p in out.iterdir()) == ["a_0_landmarks.txt"]  # no partial files, no staging folder


@pytest.mark.slow
def test_unwritable_output_folder_is_a_setup_error_found_before_any_work(tmp_path, samples_dir, assets_dir):
    """Root-proof unwritable folders: /sys (or /proc), and a path below a regular file."""
    (tmp_path / "plain").write_text("x")
    unwritable = next((d for d in ("/sys", "/proc") if os.path.isdir(d) and not _can_create_in(d)), None)
    targets = [tmp_path / "plain" / "sub"] + ([unwritable] if unwritable else [])
    for target in targets:
        result = _run(["--input", str(samples_dir / "faces" / "prnet_test_0.jpg"), "--output", str(target),
                       "--smoke_test_random_weights"], {"PRNET_ASSETS_DIR": str(assets_dir)})
        assert result.returncode == 2, result.stderr
        assert f"prnet-demo: error: cannot write to the output folder {target}" in result.stderr
        assert ".tmp-" not in result.stderr and "Traceback" not in result.stderr
        assert "using weights" not in result.stderr  # checked up front, before the network is built


def _can_create_in(folder) -> bool:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_cli_same_stems_broken_link_stale_temporaries_and_permissions(tmp_path, samples_dir, assets_dir):
    """One prnet-demo run: face.jpg and face.png get their own files, the summary counts what is on
    disk, a broken symlink is a reported failure (exit 1), a staging folder left by a killed run is
    removed (a recent one is kept), and outputs get 0644 under umask 022 (not mkstemp's 0600)."""
    import time

    _needs_detector()
    inp = tmp_path / "in"
    inp.mkdir()
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    shutil.copy(photo, inp / "face.jpg")
    assert cv2.imwrite(str(inp / "face.png"), cv2.imread(str(samples_dir / "faces" / "prnet_test_1.jpg")))
    (inp / "lost.jpg").symlink_to(tmp_path / "deleted.jpg")
    out = tmp_path / "out"
    out.mkdir()
    killed = out / ".tmp-dead0001-staging"
    killed.mkdir()
    (killed / "face_0.obj").write_text("partial")
    old = time.time() - 3600
    for p in (killed / "face_0.obj", killed):
        os.utime(p, (old, old))
    recent = out / ".tmp-live0001-staging"  # another run's, still being written: kept
    recent.mkdir()
    previous = os.umask(0o022)
    try:
        result = _run(["--input", str(inp), "--output", str(out), "--smoke_test_random_weights", "--max_faces", "1"],
                      {"PRNET_ASSETS_DIR": str(assets_dir)})
    finally:
        os.umask(previous)
    assert result.returncode == 1, result.stderr
    assert "lost.jpg is a broken symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert not killed.exists() and recent.is_dir()
    assert "removed 1 temporary folder(s)" in result.stderr
    files = sorted(p for p in out.iterdir() if p != recent)
    kinds = (".obj", "_landmarks.txt", "_pose.txt", "_depth.png", "_overlay.png")
    assert sorted(p.name for p in files) == sorted(f"face_{ext}_0_RANDOM_WEIGHTS{k}" for ext in ("jpg", "png")
                                                   for k in kinds)
    assert f"2/3 images done, {len(files)} files written" in result.stderr
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), [oct(p.stat().st_mode) for p in files]
    lm_jpg, lm_png = (np.loadtxt(out / f"face_{e}_0_RANDOM_WEIGHTS_landmarks.txt") for e in ("jpg", "png"))
    assert not np.array_equal(lm_jpg, lm_png)  # two different photos, two different results


@pytest.mark.slow
def test_ctrl_c_prints_a_summary_exits_130_and_leaves_no_partial_outputs(tmp_path, samples_dir, assets_dir):
    import signal
    import subprocess
    import sys
    import time

    from helpers import HANG_GUARD_S, REPO

    _needs_detector()
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(30):
        (inp / f"img{i:02d}.jpg").symlink_to(samples_dir / "faces" / "prnet_test_0.jpg")
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PRNET_ASSETS_DIR=str(assets_dir),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "prnet.cli.demo", "--input", str(inp), "--output", str(out),
                             "--smoke_test_random_weights", "--max_faces", "1"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    try:
        deadline = time.time() + HANG_GUARD_S
        while time.time() < deadline and proc.poll() is None:
            if out.is_dir() and any(p.name.endswith("_overlay.png") for p in out.iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the demo ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.startswith(".")]  # no staging folder left
    stems = {n.split("_0_RANDOM_WEIGHTS")[0] for n in names}
    kinds = (".obj", "_landmarks.txt", "_pose.txt", "_depth.png", "_overlay.png")
    assert sorted(names) == sorted(f"{s}_0_RANDOM_WEIGHTS{k}" for s in stems for k in kinds)  # whole images only
    assert 1 <= len(stems) < 30
    assert f"{len(stems)}/30 images done, {len(names)} files written" in err
    assert f"{30 - len(stems)} image(s) not processed" in err


# ----------------------------------------------------------------------------- issue 20
def test_box_text_and_sidecar_parsing(tmp_path):
    from prnet.cli.demo import parse_boxes, sidecar_boxes

    np.testing.assert_array_equal(parse_boxes("10,20,110,140", "--box"), [[10, 20, 110, 140]])
    np.testing.assert_array_equal(parse_boxes("# faces\n1 2 30 40  # left\n\n50, 2, 90, 40\n", "f"),
                                  [[1, 2, 30, 40], [50, 2, 90, 40]])
    for bad in ("1,2,3", "1,2,3,4,5", "10,20,5,40", "0,0,nan,1", "a,b,c,d", "# only a comment"):
        with pytest.raises(ValueError, match="--box"):
            parse_boxes(bad, "--box")
    assert sidecar_boxes(tmp_path / "photo.jpg") is None
    (tmp_path / "photo.box.txt").write_text("3 4 50 60\n")
    boxes, path = sidecar_boxes(tmp_path / "photo.jpg")
    assert path == tmp_path / "photo.box.txt" and boxes.tolist() == [[3, 4, 50, 60]]


def test_a_given_box_is_cropped_by_the_x16_rule_instead_of_the_detector(tmp_path, assets_dir, capsys):
    """Section 4: --box / <name>.box.txt when the detector misses: the crop of box_from_bbox (the rule of
    landmark boxes and the calibrated detectors), not the detector's box."""
    from prnet.cli.demo import make_jobs, parse_boxes, process_jobs
    from prnet.core.crop import box_from_bbox, crop_transform, warp_crop
    from prnet.core.images import read_image

    inp = _folder_of_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    (inp / "a.box.txt").write_text("12, 8, 44, 40\n")
    (inp / "c.box.txt").write_text("12, 8, 4, 40\n")  # malformed: that image fails, named

    def expected(path, box):
        return warp_crop(read_image(path), crop_transform(*box_from_bbox(box)))

    predictor = _fake_predictor(assets_dir)  # its detector says [10, 10, 50, 50]
    code = process_jobs(predictor, make_jobs(str(inp)), tmp_path / "out", ["landmarks"])
    err = capsys.readouterr().err
    assert code == 1 and "crop from a.box.txt (1 face box(es)" in err and "c.box.txt: line 1" in err
    crops = predictor.backend.crops  # a: its box (refine keeps it: flat maps), b: the detector's box
    np.testing.assert_allclose(crops[0], expected(inp / "a.png", [12, 8, 44, 40]), atol=1e-6)
    assert not np.allclose(crops[0], expected(inp / "a.png", [10, 10, 50, 50]), atol=1e-3)
    assert len(crops) == 2 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_0_landmarks.txt", "b_0_landmarks.txt"]

    predictor = _fake_predictor(assets_dir)  # --box wins over the sidecar and the detector
    jobs = make_jobs(str(inp / "a.png"))
    assert process_jobs(predictor, jobs, tmp_path / "out2", ["landmarks"], boxes=parse_boxes("5,6,40,50", "--box")) == 0
    np.testing.assert_allclose(predictor.backend.crops[0], expected(inp / "a.png", [5, 6, 40, 50]), atol=1e-6)


def test_a_folder_in_the_way_of_one_name_leaves_none_of_the_faces_files(tmp_path, assets_dir, capsys):
    """Battery row 11: a folder at <name>_0_overlay.png left the .obj, depth and landmarks in place while
    the summary said 0 files written. Every name is checked before any file moves."""
    from prnet.cli.demo import make_jobs, process_jobs

    inp = _folder_of_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    (out / "a_0_pose.txt").mkdir(parents=True)
    (out / "a_0_pose.txt" / "keep.txt").write_text("mine")
    code = process_jobs(_fake_predictor(assets_dir), make_jobs(str(inp)), out, ["landmarks", "pose"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot write {out / 'a_0_pose.txt'} (the files of {inp / 'a.png'}): it is a folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_0_pose.txt", "b_0_landmarks.txt", "b_0_pose.txt"]
    assert (out / "a_0_pose.txt" / "keep.txt").read_text() == "mine"
    assert f"1/2 images done, 2 files written to {out}" in err  # what is on disk


@pytest.mark.slow  # two demo subprocesses that stop before TensorFlow loads, and one that stops at the weights
def test_box_flag_errors_and_first_run_offline_lists_everything_missing(tmp_path, samples_dir):
    photo = samples_dir / "faces" / "prnet_test_0.jpg"
    for args, text in ((["--input", photo, "--box", "10,20,5,40"], "--box 10,20,5,40: line 1"),
                       (["--input", samples_dir / "faces", "--box", "1,2,30,40"], "--box gives the face box of one")):
        result = _run([*map(str, args), "--output_dir", str(tmp_path / "o")])
        assert result.returncode == 2 and text in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "o").exists()
    frames = _folder_of_images(tmp_path / "frames", ["f0.png", "f1.png"], size=(20, 30))  # 600 px > 599: refused
    result = _run(["--input", str(frames), "--video", "--max_pixels", "599", "--output_dir", str(tmp_path / "o")])
    assert result.returncode == 2 and "its frames are 30x20 pixels (600), more than --max_pixels 599" in result.stderr
    assert not (tmp_path / "o").exists()
    # first run offline: no weights, no template; the mirrors point at a closed port (refused at once)
    cache, out = tmp_path / "cache", tmp_path / "out" / "run1"
    result = _run(["--input", str(photo), "--output_dir", str(out)],
                  {"PRNET_CACHE_DIR": str(cache), "PRNET_ASSETS_DIR": None,
                   "PRNET_WEIGHTS_BASE_URL": "http://127.0.0.1:9/", "PRNET_UV_BASE_URL": "http://127.0.0.1:9/"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "2 things this run needs are missing" in result.stderr
    assert "the UV template" in result.stderr and "PRNET_ASSETS_DIR" in result.stderr
    assert "--assets_dir" in result.stderr
    assert "the official PRNet weights" in result.stderr and "prnet-convert" in result.stderr
    assert not cache.exists() and not (tmp_path / "out").exists()  # no empty folders left behind
