"""The downloader against a local HTTP server on 127.0.0.1 (Range support, faults on demand)."""

import hashlib
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from prnet.errors import AssetsNotFoundError, DownloadError, WeightsFormatError, WeightsNotFoundError
from prnet.weights import download, official

PAYLOAD = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CUT_AFTER = 100_000


class _Server:
    """Serves ``files`` ({url path: bytes}) with Range support, plus fault-injecting routes:
    ``/cut/<name>`` closes the connection after CUT_AFTER bytes unless a Range is requested,
    ``/norange/<name>`` ignores Range, ``/uc`` is a Google-Drive-like confirmation page."""

    def __init__(self):
        self.files, self.requests = {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                rng = self.headers.get("Range")
                server.requests.append((url.path, rng))
                if url.path == "/uc":
                    return self._confirm_page(urllib.parse.parse_qs(url.query))
                if url.path == "/gdrive-download":
                    query = urllib.parse.parse_qs(url.query)
                    if query.get("confirm") != ["t"] or query.get("uuid") != ["abc-123"]:
                        return self._send(403, b"no token", "text/plain")
                    return self._serve(server.files["/" + query["id"][0]], rng)
                for prefix in ("/cut", "/norange"):
                    if url.path.startswith(prefix + "/"):
                        data = server.files.get(url.path[len(prefix):])
                        if data is None:
                            break
                        if prefix == "/norange":
                            return self._serve(data, None)
                        if rng is None:  # announce everything, send CUT_AFTER bytes, hang up
                            self.send_response(200)
                            self.send_header("Content-Length", str(len(data)))
                            self.end_headers()
                            self.wfile.write(data[:CUT_AFTER])
                            self.wfile.flush()
                            self.close_connection = True
                            return None
                        return self._serve(data, rng)
                data = server.files.get(url.path)
                if data is None:
                    return self._send(404, b"not found", "text/plain")
                return self._serve(data, rng)

            def _confirm_page(self, query):
                file_id = query.get("id", [""])[0]
                page = (f'<html><body>Google Drive can\'t scan this file for viruses.'
                        f'<form id="download-form" action="/gdrive-download" method="get">'
                        f'<input type="hidden" name="id" value="{file_id}">'
                        f'<input type="hidden" name="export" value="download">'
                        f'<input type="hidden" name="confirm" value="t">'
                        f'<input type="hidden" name="uuid" value="abc-123"></form></body></html>').encode()
                return self._send(200, page, "text/html; charset=utf-8")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, data, rng):
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    body = data[start:]
                else:
                    self.send_response(200)
                    body = data
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    s.files["/good.bin"] = PAYLOAD
    s.files["/corrupt.bin"] = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])
    yield s
    s.close()


def _closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/file.bin"


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def test_good_file(server, tmp_path):
    dest = download.download_file(f"{server.url}/good.bin", tmp_path / "good.bin", PAYLOAD_SHA, len(PAYLOAD),
                                  progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["good.bin"]
    # A second call finds the verified file and does not fetch again.
    n = len(server.requests)
    download.download_file(f"{server.url}/good.bin", dest, PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert len(server.requests) == n


def test_corrupt_file_is_deleted(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        download.download_file(f"{server.url}/corrupt.bin", tmp_path / "x.bin", PAYLOAD_SHA, len(PAYLOAD),
                               progress=False)
    assert "deleted" in str(e.value)
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    url = f"{server.url}/cut/good.bin"
    dest = tmp_path / "good.bin"
    with pytest.raises(DownloadError, match="interrupted") as e:
        download.download_file(url, dest, PAYLOAD_SHA, len(PAYLOAD), progress=False)
    part = tmp_path / "good.bin.part"
    assert "resumed next time" in str(e.value)
    assert not dest.exists() and part.stat().st_size == CUT_AFTER
    assert part.read_bytes() == PAYLOAD[:CUT_AFTER]

    download.download_file(url, dest, PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert ("/cut/good.bin", f"bytes={CUT_AFTER}-") in server.requests
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == PAYLOAD_SHA
    assert _leftovers(tmp_path) == ["good.bin"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    part = tmp_path / "good.bin.part"
    part.write_bytes(b"\0" * 5000)  # a stale partial file with wrong bytes
    download.download_file(f"{server.url}/norange/good.bin", tmp_path / "good.bin", PAYLOAD_SHA, len(PAYLOAD),
                           progress=False)
    assert (tmp_path / "good.bin").read_bytes() == PAYLOAD and not part.exists()


def test_complete_part_file_is_finished_without_refetching(server, tmp_path):
    (tmp_path / "good.bin.part").write_bytes(PAYLOAD)  # the server answers 416 to bytes=len-
    download.download_file(f"{server.url}/good.bin", tmp_path / "good.bin", PAYLOAD_SHA, len(PAYLOAD),
                           progress=False)
    assert _leftovers(tmp_path) == ["good.bin"]


def test_unreachable_host_gives_clear_error(tmp_path):
    url = _closed_port_url()
    with pytest.raises(DownloadError) as e:
        download.download_file(url, tmp_path / "file.bin", PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert url in str(e.value) and "connection refused" in str(e.value).lower()
    assert _leftovers(tmp_path) == []


def test_missing_file_tries_next_url(server, tmp_path):
    dest = download.download_file([f"{server.url}/missing.bin", f"{server.url}/good.bin"], tmp_path / "g.bin",
                                  PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    # A corrupt first source is discarded and the next one is used.
    dest = download.download_file([f"{server.url}/corrupt.bin", f"{server.url}/good.bin"], tmp_path / "h.bin",
                                  PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and sorted(_leftovers(tmp_path)) == ["g.bin", "h.bin"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", progress=False)


def test_google_drive_confirmation_page(server, tmp_path):
    server.files["/WEIGHTSID"] = PAYLOAD
    dest = download.download_file(f"{server.url}/uc?export=download&id=WEIGHTSID", tmp_path / "w.bin",
                                  PAYLOAD_SHA, len(PAYLOAD), gdrive=True, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert any(path == "/gdrive-download" for path, _ in server.requests)


def test_gdrive_confirm_url_parsing():
    page = ('<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="hidden" name="id" value="ABC"><input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="u&amp;1"></form>')
    url = download.gdrive_confirm_url(page, "https://drive.google.com/uc?id=ABC")
    parsed = urllib.parse.urlsplit(url)
    assert parsed.netloc == "drive.usercontent.google.com" and parsed.path == "/download"
    assert urllib.parse.parse_qs(parsed.query) == {"id": ["ABC"], "confirm": ["t"], "uuid": ["u&1"]}
    legacy = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=Xy_z&amp;id=ABC">Download</a>'
    assert download.gdrive_confirm_url(legacy, "https://drive.google.com/uc?id=ABC") == \
        "https://drive.google.com/uc?export=download&confirm=Xy_z&id=ABC"
    assert download.gdrive_confirm_url("<html>Quota exceeded</html>", "https://drive.google.com/") is None


def test_weights_missing_offline_names_manual_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError) as e:
        official.ensure_official_weights(download=False)
    msg = str(e.value)
    for needle in (official.GDRIVE_VIEW_URL, official.WEIGHTS_DATA_NAME, official.WEIGHTS_INDEX_NAME,
                   official.WEIGHTS_DATA.sha256, "prnet-convert --checkpoint", "--weights PATH",
                   str(tmp_path / "cache" / "official-checkpoint"), "raw.githubusercontent.com/yfeng95/PRNet/"):
        assert needle in msg, needle
    assert not (tmp_path / "cache" / "resfcn256.weights.h5").exists()


def test_weights_download_failure_is_weights_not_found(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(official.ENV_WEIGHTS_BASE_URL, f"{server.url}/empty-mirror")
    with pytest.raises(WeightsNotFoundError, match="could not be downloaded") as e:
        official.ensure_official_weights(download=True)
    assert "HTTP 404" in str(e.value) and "prnet-convert --checkpoint" in str(e.value)


def test_uv_template_download_from_mirror(server, assets_dir, tmp_path, monkeypatch):
    """The real uv-data files served by the local mirror pass the pinned checksums."""
    for remote in official.UV_FILES:
        server.files[f"/uv-mirror/{remote.name}"] = (assets_dir / remote.name).read_bytes()
    monkeypatch.delenv("PRNET_ASSETS_DIR", raising=False)
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(AssetsNotFoundError, match="prnet-convert --download"):
        official.ensure_uv_template(download=False)
    monkeypatch.setenv(official.ENV_UV_BASE_URL, f"{server.url}/uv-mirror/")
    folder = official.ensure_uv_template(download=True)
    assert folder == tmp_path / "cache" / "uv-data"
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.name for r in official.UV_FILES)
    from prnet.core.uv import load_uv_template

    assert load_uv_template(folder).face_ind.shape == (43867,)
    assert all(r.status == "ok" for r in official.verify_files(uv_folder=folder) if r.path.parent == folder)


def test_uv_template_honours_assets_dir(assets_dir, monkeypatch):
    monkeypatch.setenv("PRNET_ASSETS_DIR", str(assets_dir))
    monkeypatch.setenv(official.ENV_UV_BASE_URL, _closed_port_url())  # would fail if it downloaded
    assert official.ensure_uv_template(download=True) == assets_dir


def test_pinned_hashes_match_the_real_files(assets_dir, official_index):
    for remote in official.UV_FILES:
        data = (assets_dir / remote.name).read_bytes()
        assert len(data) == remote.size and hashlib.sha256(data).hexdigest() == remote.sha256, remote.name
    data = official_index.read_bytes()
    assert len(data) == official.WEIGHTS_INDEX.size
    assert hashlib.sha256(data).hexdigest() == official.WEIGHTS_INDEX.sha256


def test_verify_files_reports_status(tmp_path, official_index):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / official.WEIGHTS_INDEX_NAME).write_bytes(official_index.read_bytes())
    (ckpt / official.WEIGHTS_DATA_NAME).write_bytes(b"not the weights")
    status = {r.name: r.status for r in official.verify_files(ckpt, tmp_path / "no-uv")}
    assert status[official.WEIGHTS_INDEX_NAME] == "ok"
    assert status[official.WEIGHTS_DATA_NAME] == "MISMATCH"
    assert status["face_ind.txt"] == "missing"


def test_default_sources_are_pinned():
    urls = official.source_urls(official.WEIGHTS_INDEX)
    assert urls[0].startswith("https://raw.githubusercontent.com/yfeng95/PRNet/30f6680")
    assert urls[-1].endswith("/master/Data/net-data/256_256_resfcn256_weight.index")
    assert all(official.GDRIVE_WEIGHTS_ID in u for u in official.source_urls(official.WEIGHTS_DATA))


# --------------------------------------------------------------------------- cached SavedModel export

def _counting_exports(monkeypatch):
    """Wrap the export_saved_model that prnet.inference.backends calls, to count real exports."""
    from prnet.inference import backends

    calls = []
    real = backends.export_saved_model

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "export_saved_model", counted)
    return calls


def _save_small_weights(path, seed):
    import keras

    from prnet.model.resfcn256 import build_resfcn256, randomize_batchnorm

    keras.utils.set_random_seed(seed)
    # trained-like BatchNorm statistics, so that outputs vary with the weights
    model = randomize_batchnorm(build_resfcn256(weight_decay=0, size=4), seed)
    model.save_weights(str(path))
    return model


@pytest.mark.slow
def test_official_saved_model_is_exported_once_and_follows_the_weights(tmp_path, monkeypatch):
    """A size-4 model's weights stand in for the converted official weights in the cache."""
    import json
    import os

    import tensorflow as tf

    from prnet.inference import backends
    from prnet.model.resfcn256 import POSMAP_SCALE

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    calls = _counting_exports(monkeypatch)
    kpt = np.stack([np.arange(68), np.arange(68)[::-1]], axis=1)  # any (col, row) pixels will do here
    weights = official.weights_path()
    model = _save_small_weights(weights, seed=1)

    export = backends.ensure_official_saved_model(download=False, kpt_ind=kpt, progress=False)
    assert export == cache / "resfcn256_saved_model" and (export / "saved_model.pb").is_file()
    assert len(calls) == 1
    stamp = json.loads((cache / "resfcn256_saved_model.json").read_text())
    assert stamp["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert stamp["weights_size"] == weights.stat().st_size
    assert sorted(p.name for p in cache.iterdir()) == ["resfcn256.weights.h5", "resfcn256_saved_model",
                                                       "resfcn256_saved_model.json"]  # no temp leftovers
    x = np.random.default_rng(0).random((2, 256, 256, 3), dtype=np.float32)
    out = tf.saved_model.load(str(export)).signatures["serving_default"](images=tf.constant(x))["posmap"]
    np.testing.assert_allclose(out.numpy(), model(x, training=False).numpy() * POSMAP_SCALE, atol=1e-3)

    # Second call: reused, nothing rewritten.
    pb_mtime = (export / "saved_model.pb").stat().st_mtime_ns
    assert backends.ensure_official_saved_model(download=False, kpt_ind=kpt, progress=False) == export
    assert len(calls) == 1 and (export / "saved_model.pb").stat().st_mtime_ns == pb_mtime
    # Same bytes with a new mtime (e.g. copied back from a backup): checked by hash, still reused.
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    backends.ensure_official_saved_model(download=False, kpt_ind=kpt, progress=False)
    assert len(calls) == 1
    assert json.loads((cache / "resfcn256_saved_model.json").read_text())["weights_mtime_ns"] == \
        st.st_mtime_ns + 10**9
    # Different weights (same size, same file name): re-exported, and the export follows them.
    model2 = _save_small_weights(weights, seed=2)
    backends.ensure_official_saved_model(download=False, kpt_ind=kpt, progress=False)
    assert len(calls) == 2
    out2 = tf.saved_model.load(str(export)).signatures["serving_default"](images=tf.constant(x))["posmap"]
    np.testing.assert_allclose(out2.numpy(), model2(x, training=False).numpy() * POSMAP_SCALE, atol=1e-3)
    assert np.abs(out2.numpy() - out.numpy()).max() > 0.1
    # A damaged export (variables lost) is rebuilt.
    (export / "variables" / "variables.index").unlink()
    backends.ensure_official_saved_model(download=False, kpt_ind=kpt, progress=False)
    assert len(calls) == 3 and (export / "variables" / "variables.index").is_file()


@pytest.mark.slow
def test_failed_export_keeps_the_previous_one_and_its_stamp(tmp_path, monkeypatch):
    import json

    import prnet.serving.saved_model
    from prnet.inference import backends

    weights, export = tmp_path / "w.weights.h5", tmp_path / "sm"
    kpt = np.zeros((68, 2), np.int64)
    _save_small_weights(weights, seed=3)
    backends.ensure_saved_model(weights, export, kpt_ind=kpt, progress=False)
    stamp = (tmp_path / "sm.json").read_text()
    before = sorted(p.name for p in tmp_path.iterdir())
    _save_small_weights(weights, seed=4)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prnet.serving.saved_model.tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        backends.ensure_saved_model(weights, export, kpt_ind=kpt, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (export / "saved_model.pb").is_file()
    assert (tmp_path / "sm.json").read_text() == stamp  # still names the old weights: re-exported next time
    assert json.loads(stamp)["weights_sha256"] != hashlib.sha256(weights.read_bytes()).hexdigest()


def test_official_saved_model_without_weights_offline_says_how_to_get_them(tmp_path, monkeypatch):
    from prnet.inference import backends

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="prnet-convert --checkpoint"):
        backends.ensure_official_saved_model(download=False)
    assert not (tmp_path / "cache" / "resfcn256_saved_model").exists()


# --------------------------------------------------------------------------- the cached official checkpoint
INDEX_BYTES = np.random.default_rng(8).integers(0, 256, 5_000, dtype=np.uint8).tobytes()


def _pin_small_checkpoint(monkeypatch, server, tmp_path):
    """Small stand-ins for the official checkpoint files: the pinned sums are the stand-ins' (the
    real data file is 160 MB), served by the local mirror; returns the cache's checkpoint folder."""
    monkeypatch.setattr(official, "WEIGHTS_INDEX", download.RemoteFile(
        official.WEIGHTS_INDEX_NAME, len(INDEX_BYTES), hashlib.sha256(INDEX_BYTES).hexdigest()))
    monkeypatch.setattr(official, "WEIGHTS_DATA", download.RemoteFile(official.WEIGHTS_DATA_NAME, len(PAYLOAD),
                                                                        PAYLOAD_SHA))
    server.files[f"/ckpt-mirror/{official.WEIGHTS_INDEX_NAME}"] = INDEX_BYTES
    server.files[f"/ckpt-mirror/{official.WEIGHTS_DATA_NAME}"] = PAYLOAD
    monkeypatch.setenv(official.ENV_WEIGHTS_BASE_URL, f"{server.url}/ckpt-mirror")
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    folder = official.checkpoint_dir()
    folder.mkdir(parents=True)
    (folder / official.WEIGHTS_INDEX_NAME).write_bytes(INDEX_BYTES)
    return folder


def test_incomplete_cached_checkpoint_is_resumed_not_used(server, tmp_path, monkeypatch):
    """Issue 14 item 4: a truncated data file in the cache (e.g. a copy cut short) is finished
    with a Range request and verified, instead of being converted as it is."""
    folder = _pin_small_checkpoint(monkeypatch, server, tmp_path)
    data = folder / official.WEIGHTS_DATA_NAME
    data.write_bytes(PAYLOAD[:CUT_AFTER])
    server.requests.clear()
    prefix = official.official_checkpoint(download=True)
    assert prefix == folder / official.CHECKPOINT_PREFIX_NAME
    assert data.read_bytes() == PAYLOAD
    assert (f"/ckpt-mirror/{official.WEIGHTS_DATA_NAME}", f"bytes={CUT_AFTER}-") in server.requests
    assert _leftovers(folder) == sorted([official.WEIGHTS_DATA_NAME, official.WEIGHTS_INDEX_NAME])


def test_incomplete_cached_checkpoint_offline_names_the_file(server, tmp_path, monkeypatch):
    folder = _pin_small_checkpoint(monkeypatch, server, tmp_path)
    data = folder / official.WEIGHTS_DATA_NAME
    data.write_bytes(PAYLOAD[:CUT_AFTER])
    with pytest.raises(WeightsFormatError, match="is incomplete") as e:
        official.ensure_official_weights(download=False)
    assert f"{data} is incomplete ({CUT_AFTER:,} of {len(PAYLOAD):,} bytes): delete it" in str(e.value)
    assert data.read_bytes() == PAYLOAD[:CUT_AFTER] and not official.weights_path().exists()


def test_other_file_in_the_cache_is_refused_not_replaced(server, tmp_path, monkeypatch):
    """Issue 14 item 4: a complete file with other content is not the official checkpoint: nothing is
    converted (even with downloads allowed), and the message names the file and both checksums."""
    folder = _pin_small_checkpoint(monkeypatch, server, tmp_path)
    other = PAYLOAD[::-1]
    data = folder / official.WEIGHTS_DATA_NAME
    data.write_bytes(other)
    server.requests.clear()
    with pytest.raises(WeightsFormatError, match="checksum mismatch") as e:
        official.ensure_official_weights(download=True)
    msg = str(e.value)
    assert f"{data} is not the official file: sha256 {hashlib.sha256(other).hexdigest()}" in msg
    assert f"expected {PAYLOAD_SHA}" in msg and "delete it" in msg and "--weights PATH" in msg
    assert official.WEIGHTS_INDEX_NAME not in msg.replace(str(data), "")  # the good index is not blamed
    assert data.read_bytes() == other and server.requests == [] and not official.weights_path().exists()


def test_damaged_converted_weights_without_checkpoint_say_what_to_delete(tmp_path, monkeypatch):
    """Issue 14 item 4: a truncated resfcn256.weights.h5 is not returned as the official weights; with
    nothing to rebuild it from, the message names the file to delete."""
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    weights = official.weights_path()
    weights.parent.mkdir(parents=True)
    _save_small_weights(weights, seed=5)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightsFormatError, match="truncated or corrupt") as e:
        official.ensure_official_weights(download=False)
    assert f"Delete {weights};" in str(e.value) and "prnet-convert" in str(e.value)
