"""prnet-app in a real browser: headless Chromium (Debian's ``chromium``), driven by Playwright, against the
page served on 127.0.0.1 with the tests' stand-in network (the mean face in every crop, NOT a face model:
``python tests/test_app.py PORT WORK_DIR``). One server and one page for the module:

* a photo: upload, Reconstruct, and the 3D view's canvas shows the face (non-background pixels in its
  centre), the overlay image has loaded, the zip downloads with the demo's files; the time from the click
  to the face in the 3D view is printed;
* bad inputs (not an image, no face, over the pixel cap) each show their message and the page goes on;
* a clip: the annotated H.264 video plays (``readyState >= 2``, ``currentTime`` advances); a clip over the
  frame limit shows its message;
* the Swap tab: two photos in, the swapped photo shown.

Screenshots go to ``$PRNET_TEST_ARTIFACTS`` (default ``test-artifacts/``). Chromium or Playwright
missing: skipped here, a failure in CI (``CI`` or ``PRNET_REQUIRE_SHARED=1``: ``.ci/run`` installs both).
"""

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the server starts TensorFlow (the BlazeFace detector)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PRNET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BACKGROUND = np.array([0xF4, 0xF4, 0xF4])  # the 3D view's background (prnet.app.page)


def _require(ok: bool, reason: str):
    if not ok:
        if os.environ.get("CI") or os.environ.get("PRNET_REQUIRE_SHARED", "").strip() == "1":
            pytest.fail(f"{reason} (.ci/run installs it)", pytrace=False)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("PRNET_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(assets_dir, tmp_path_factory):
    _require(importlib.util.find_spec("nicegui") is not None, 'the app extra is missing (pip install -e ".[app]")')
    port, work = _free_port(), tmp_path_factory.mktemp("app-work")
    log = open(work.parent / "app-server.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "test_app.py"), str(port), str(work)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
                            | {"TF_CPP_MIN_LOG_LEVEL": "2"})  # NiceGUI serves differently under pytest
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the app did not start: {(work.parent / 'app-server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    _require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.goto(server)
        pg.wait_for_selector(".prnet-photo-upload", timeout=60_000)
        yield pg
        browser.close()


def _upload_photo(page, path, name):
    page.set_input_files(".prnet-photo-upload input[type=file]", str(path))
    page.wait_for_selector(f"text={name}: ready; press Reconstruct", timeout=30_000)


def _face_pixels(page) -> float:
    """Fraction of the 3D view's central square (half its side) that is not background."""
    shot = cv2.imdecode(np.frombuffer(page.locator(".prnet-scene canvas").screenshot(), np.uint8), cv2.IMREAD_COLOR)
    h, w = shot.shape[:2]
    centre = shot[h // 4: 3 * h // 4, w // 4: 3 * w // 4, ::-1].astype(int)
    return float(np.mean(np.abs(centre - BACKGROUND).max(axis=-1) > 24))


def _error_text(page, contains, timeout=60_000) -> str:
    page.wait_for_selector(f".prnet-error:has-text({json.dumps(contains)})", timeout=timeout)
    return page.locator(".prnet-error").last.inner_text()


def test_photo_3d_view_overlay_download_and_bad_inputs(page, server, samples_dir, tmp_path, artifacts):
    _upload_photo(page, samples_dir / "faces" / "einstein.jpg", "einstein")
    start = time.perf_counter()
    page.click(".prnet-run")
    page.wait_for_selector(".prnet-scene canvas", timeout=120_000)
    while _face_pixels(page) < 0.2:  # the .glb arrives and is drawn
        assert time.perf_counter() - start < 60, "no face drawn in the 3D view"
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    print(f"\nclick -> face in the 3D view: {seconds:.2f} s")
    page.screenshot(path=str(artifacts / "app_photo.png"), full_page=True)
    assert _face_pixels(page) > 0.3
    overlay = page.locator("img.prnet-overlay, .prnet-overlay img").first
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=overlay.element_handle(), timeout=30_000)
    assert "pose: yaw" in page.locator(".prnet-pose").inner_text()
    link = page.locator("a.prnet-download").first
    href = link.get_attribute("href")
    assert link.get_attribute("download") == "einstein_prnet.zip" and href.startswith("/download/")
    with zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(server.rstrip("/") + href, timeout=30).read())) as z:
        names = set(z.namelist())
    assert {"einstein_0.glb", "einstein_0.obj", "einstein_0_overlay.png", "einstein_0_pose.txt"} <= names, names

    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not an image")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((2100, 2100, 3), np.uint8))  # 4.4 MP > the test server's 4 MP cap
    for path, name, message in ((notes, "notes", "notes: not a photo"), (grey, "grey", "no face found in grey"),
                                (big, "big", "larger than the limit")):
        _upload_photo(page, path, name)
        page.click(".prnet-run")
        text = _error_text(page, message)
        assert str(tmp_path) not in text  # the upload's name, not the server's path
    page.screenshot(path=str(artifacts / "app_error.png"), full_page=True)
    _upload_photo(page, samples_dir / "faces" / "takeo.ppm", "takeo")  # and it still serves
    page.click(".prnet-run")
    page.wait_for_selector("text=1 face(s) in", timeout=120_000)


def _clip(path, frames, fps=8.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_video_plays_in_the_page_and_the_frame_limit(page, samples_dir, tmp_path, artifacts):
    page.click("text=Video")
    page.wait_for_selector(".prnet-video-upload", timeout=30_000)
    photo = cv2.imread(str(samples_dir / "faces" / "takeo.ppm"))
    long = _clip(tmp_path / "long.mp4", [photo] * 41)  # the test server takes 40 frames
    page.set_input_files(".prnet-video-upload input[type=file]", str(long))
    _error_text(page, "41 frames, more than this app's limit of 40")
    clip = _clip(tmp_path / "walk.mp4", [np.roll(photo, 2 * i, axis=1) for i in range(16)])
    page.set_input_files(".prnet-video-upload input[type=file]", str(clip))
    page.wait_for_selector("video.prnet-video, .prnet-video video", timeout=180_000)
    video = page.locator("video.prnet-video, .prnet-video video").first.element_handle()
    page.wait_for_function("v => v.readyState >= 2", arg=video, timeout=30_000)
    t0 = page.evaluate("v => { v.muted = true; v.play(); return v.currentTime; }", video)
    page.wait_for_function(f"v => v.currentTime > {t0} + 0.2 || (v.loop && v.currentTime < {t0})", arg=video,
                           timeout=30_000)
    assert page.evaluate("v => v.videoWidth", video) >= photo.shape[1]  # (an odd width is padded by one)
    page.screenshot(path=str(artifacts / "app_video.png"), full_page=True)
    hrefs = [a.get_attribute("href") for a in page.locator("a.prnet-download").all()]
    assert any(h.endswith("walk_tracks.csv") for h in hrefs) and any(h.endswith("walk_tracks.npz") for h in hrefs)


def test_chromium_is_there_in_ci():
    """CI installs Chromium (.ci/run); a missing one there is a failure, never a silent skip."""
    _require(shutil.which("chromium") is not None or Path(CHROMIUM).exists(), "Chromium is not installed")


def test_swap_tab_shows_the_result(page, samples_dir, artifacts):
    page.click("text=Swap")
    page.wait_for_selector(".prnet-swap-target", timeout=30_000)
    page.set_input_files(".prnet-swap-target input[type=file]", str(samples_dir / "faces" / "takeo.ppm"))
    page.set_input_files(".prnet-swap-reference input[type=file]", str(samples_dir / "faces" / "einstein.jpg"))
    page.wait_for_selector("text=reference: einstein, target: takeo", timeout=30_000)
    page.click(".prnet-swap-run")
    page.wait_for_selector("text=pixels painted", timeout=120_000)
    result = page.locator("img.prnet-swap-result, .prnet-swap-result img").first
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=result.element_handle(), timeout=30_000)
    page.screenshot(path=str(artifacts / "app_swap.png"), full_page=True)
