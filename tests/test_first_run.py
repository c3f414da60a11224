"""First run without the cached files, and outputs in the way (issue 20: section 4, battery rows 1 and 20).

One message lists everything missing (the official weights and the UV template, each with how to provide
it); a failed download leaves no empty cache folders; every message about a missing template names
``PRNET_ASSETS_DIR``; ``prnet-swap --output`` naming a folder is refused before any work, the folder kept.
"""

from pathlib import Path

import pytest

from prnet.errors import AssetsNotFoundError, DownloadError, WeightsNotFoundError

from helpers import run_cli

#: A closed port on this machine: a download from it is refused at once (no network needed).
CLOSED = "http://127.0.0.1:9/"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRNET_CACHE_DIR", str(cache))
    monkeypatch.delenv("PRNET_ASSETS_DIR", raising=False)
    monkeypatch.setenv("PRNET_WEIGHTS_BASE_URL", CLOSED)
    monkeypatch.setenv("PRNET_UV_BASE_URL", CLOSED)
    return cache


def test_one_message_lists_the_weights_and_the_template(empty_cache):
    from prnet.weights.official import ensure_run_files

    for download in (False, True):
        with pytest.raises(WeightsNotFoundError) as err:
            ensure_run_files(download=download)
        text = str(err.value)
        assert text.startswith("2 things this run needs are missing")
        assert "1. the UV template:" in text and "2. the official PRNet weights:" in text
        assert "PRNET_ASSETS_DIR" in text and "--assets_dir" in text and "prnet-convert --download" in text
        assert not empty_cache.exists(), download  # a failed download leaves no empty cache folders
    with pytest.raises(AssetsNotFoundError, match="PRNET_ASSETS_DIR"):  # only the template asked: its own error
        ensure_run_files(weights=False, download=False)
    ensure_run_files(weights=False, template=False)  # nothing asked: nothing to do


def test_a_failed_download_removes_the_folders_it_made(tmp_path):
    from prnet.weights.download import download_file

    (tmp_path / "kept").mkdir()
    for dest in (tmp_path / "cache" / "uv-data" / "face_ind.txt", tmp_path / "kept" / "x.bin"):
        with pytest.raises(DownloadError):
            download_file([CLOSED + "x"], dest, progress=False, timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # existing folder kept, new ones removed


def test_every_missing_template_message_names_prnet_assets_dir(tmp_path, monkeypatch):
    """``tfds build prnet_synthetic`` after a failed first run met an empty <cache>/uv-data and said only
    "incomplete"; the messages of an absent and an incomplete template both say how to point at one."""
    from prnet.core.paths import assets_dir

    monkeypatch.delenv("PRNET_ASSETS_DIR", raising=False)
    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(AssetsNotFoundError, match="not found.*PRNET_ASSETS_DIR"):
        assets_dir()
    (tmp_path / "cache" / "uv-data").mkdir(parents=True)
    with pytest.raises(AssetsNotFoundError, match="incomplete: missing .*PRNET_ASSETS_DIR.*assets_dir"):
        assets_dir()


@pytest.mark.slow  # one prnet-swap subprocess (it stops before TensorFlow loads)
def test_swap_output_naming_a_folder_is_refused_and_the_folder_kept(tmp_path, samples_dir):
    """Battery row 1: prnet-swap --output photos.png deleted the folder photos.png and all in it (exit 0)."""
    folder = tmp_path / "photos_RANDOM_WEIGHTS.png"
    folder.mkdir()
    (folder / "holiday1.jpg").write_bytes(b"precious")
    faces = samples_dir / "faces"
    proc = run_cli("prnet.cli.swap", "--input", faces / "prnet_test_0.jpg", "--reference", faces / "prnet_test_1.jpg",
                   "--output", tmp_path / "photos.png", "--smoke_test_random_weights", timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{folder} is a folder, not a file" in lines[0] and "choose another" in lines[0]
    assert (folder / "holiday1.jpg").read_bytes() == b"precious"


def test_prnet_convert_stamps_only_the_official_checkpoint(tmp_path, monkeypatch):
    """Battery row 20: the stamp is written when the converted checkpoint is the official one (its files'
    pinned SHA-256), so the tools call the result official; a conversion of any other checkpoint is not
    stamped. (Stand-ins: two small files pinned as "official", and a converter that copies bytes.)"""
    import hashlib
    import types

    import prnet.weights.convert as convert_module
    from prnet.cli import convert as convert_cli
    from prnet.weights import official
    from prnet.weights.download import RemoteFile

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    prefix = ckpt / official.CHECKPOINT_PREFIX_NAME
    for suffix, payload in ((".index", b"index"), (".data-00000-of-00001", b"data")):
        (ckpt / (prefix.name + suffix)).write_bytes(payload)
    monkeypatch.setattr(official, "WEIGHTS_INDEX", RemoteFile(official.WEIGHTS_INDEX_NAME, 5,
                                                              hashlib.sha256(b"index").hexdigest()))
    monkeypatch.setattr(official, "WEIGHTS_DATA", RemoteFile(official.WEIGHTS_DATA_NAME, 4,
                                                             hashlib.sha256(b"data").hexdigest()))

    def fake_convert(prefix, output):
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"converted " + Path(f"{prefix}.index").read_bytes())
        return output

    monkeypatch.setattr(official, "convert_checkpoint", fake_convert)
    monkeypatch.setattr(convert_module, "convert_checkpoint", fake_convert)
    monkeypatch.setattr(convert_cli, "import_tensorflow_quietly", lambda *a: None)
    flags_for = lambda **kw: types.SimpleNamespace(**{"checkpoint": None, "output": None, "download": False,  # noqa: E731
                                                      "verify": False, "force": True, **kw})
    assert convert_cli.execute(flags_for(checkpoint=str(prefix))) == 0
    assert official.describe_cached_weights(official.weights_path())[0] is True
    (ckpt / (prefix.name + ".index")).write_bytes(b"another")  # not the official checkpoint any more
    other = tmp_path / "other.weights.h5"
    assert convert_cli.execute(flags_for(checkpoint=str(prefix), output=str(other))) == 0
    assert other.is_file() and not official.stamp_path(other).exists()
