"""The official PRNet weights and UV template: pinned sources, the cache, verification, conversion.

Sources (content pinned by SHA-256; a file is only accepted with the right size and hash):

* the official TF1 checkpoint of the authors' release: the data file
  ``256_256_resfcn256_weight.data-00000-of-00001`` (160,290,984 bytes) from the authors'
  Google Drive (id :data:`GDRIVE_WEIGHTS_ID`, linked from the original README), and its
  ``.index`` from the PRNet GitHub repository (``Data/net-data/``);
* the UV template (``Data/uv-data/*``) from the PRNet GitHub repository at pinned commits
  (falling back to ``master``: the checksum pins the content either way).

Mirrors: set ``PRNET_WEIGHTS_BASE_URL`` (a folder URL holding both checkpoint files) and/or
``PRNET_UV_BASE_URL`` (a folder URL holding the ``uv-data`` files); they replace the default
sources. Everything is stored under :func:`prnet.core.paths.cache_dir`: ``official-checkpoint/``,
``uv-data/``, the converted Keras weights ``resfcn256.weights.h5`` and, exported from them on first
use (:func:`prnet.inference.backends.ensure_official_saved_model`), the fast SavedModel
``resfcn256_saved_model/`` (:func:`saved_model_path`) with its stamp ``resfcn256_saved_model.json``.

Files are fetched with :mod:`prnet.weights.download` (resumable, checked against the pinned
SHA-256). "No weights path" means these weights: :func:`prnet.inference.backends.official_backend`
is what ``Predictor.from_weights(None)`` (prnet-demo, prnet-evaluate) runs; any other path goes
through :mod:`prnet.weights.formats`.
"""

import json
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from prnet.core.files import atomic_write, sha256_file
from prnet.core.paths import UV_TEMPLATE_FILES, assets_dir, assets_location, cache_dir
from prnet.errors import (
    AssetsNotFoundError,
    DownloadError,
    PRNetError,
    WeightsFormatError,
    WeightsNotFoundError,
)
from prnet.weights.convert import convert_checkpoint
from prnet.weights.download import RemoteFile, download_file
from prnet.weights.formats import check_keras_weights_file

logger = logging.getLogger(__name__)

#: Mirror folders (environment variables) replacing the default sources.
ENV_WEIGHTS_BASE_URL = "PRNET_WEIGHTS_BASE_URL"
ENV_UV_BASE_URL = "PRNET_UV_BASE_URL"

#: The PRNet repository (MIT) on GitHub, and the raw-file URL pattern.
GITHUB_REPO = "yfeng95/PRNet"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{ref}/{path}"

#: The authors' Google Drive file of the weights (README: "Download the PRN trained model at ... GoogleDrive").
GDRIVE_WEIGHTS_ID = "1UoE-XuW1SDLUjZmJPkIZ1MLxvQFgmTFH"
GDRIVE_VIEW_URL = f"https://drive.google.com/file/d/{GDRIVE_WEIGHTS_ID}/view"
GDRIVE_DOWNLOAD_URLS = (
    f"https://drive.usercontent.google.com/download?id={GDRIVE_WEIGHTS_ID}&export=download&confirm=t",
    f"https://drive.google.com/uc?export=download&id={GDRIVE_WEIGHTS_ID}",
)

#: The authors' second mirror (BaiduDrive; manual download only).
BAIDU_WEIGHTS_URL = "https://pan.baidu.com/s/10vuV7m00OHLcsihaC-Adsw"

#: The official checkpoint's file names.
CHECKPOINT_PREFIX_NAME = "256_256_resfcn256_weight"
WEIGHTS_DATA_NAME = CHECKPOINT_PREFIX_NAME + ".data-00000-of-00001"
WEIGHTS_INDEX_NAME = CHECKPOINT_PREFIX_NAME + ".index"

#: Cache layout.
CHECKPOINT_SUBDIR = "official-checkpoint"
UV_SUBDIR = "uv-data"
KERAS_WEIGHTS_NAME = "resfcn256.weights.h5"
SAVED_MODEL_SUBDIR = "resfcn256_saved_model"

# Commits of yfeng95/PRNet at which the files were recorded; the hashes were computed on the
# real files (uv-data and the index) and, for the data file, taken from a public mirror.
WEIGHTS_DATA = RemoteFile(WEIGHTS_DATA_NAME, 160_290_984,
                          "59d338bf0c21b10be813f17f84042c9d3a5bf318e588855ff2b2c041c25bb91a",
                          gdrive_id=GDRIVE_WEIGHTS_ID)

WEIGHTS_INDEX = RemoteFile(WEIGHTS_INDEX_NAME, 20_319,
                           "cb88192fcf744b8e26d1ea6a2681cd90f102a2d977ab1bac3026bdf4ce785744",
                           "Data/net-data/" + WEIGHTS_INDEX_NAME, "30f6680cf7fb2c4cba48f99cae24b58c38c4802e")

UV_FILES = (
    RemoteFile("uv_kpt_ind.txt", 3_400, "158f329a0e5518b7553195cf2373f91b9ada697b6071cdafb52b573d488a1c60",
               "Data/uv-data/uv_kpt_ind.txt", "8cfc7fb2ed05c40f9845d1c5ef4b1c7ab5daded9"),
    RemoteFile("face_ind.txt", 1_096_675, "86a7ce5131d3c827c368fd3c1236ded6b5d80802f1abd5cf98940ba0595ab231",
               "Data/uv-data/face_ind.txt", "8cfc7fb2ed05c40f9845d1c5ef4b1c7ab5daded9"),
    RemoteFile("canonical_vertices.npy", 1_052_888,
               "724ceae7e9be10a86670159f3cdc4a4abd5bd8d3c29a475c17115b6ada55112c",
               "Data/uv-data/canonical_vertices.npy", "master"),
    RemoteFile("uv_face_mask.png", 859, "66e0c5e555619d708202639058adbeece545b67fef52a22eabd46cc71494a6c6",
               "Data/uv-data/uv_face_mask.png", "846616afe792827af373fb589d29a935215a983b"),
    RemoteFile("uv_weight_mask.png", 2_148, "a97882fbac6920ad08c6e314ea327db2b0a7d7fbf6a6a56be5e696b66fde0ae7",
               "Data/uv-data/uv_weight_mask.png", "a3832c16f9af2cfa9b4cc44c825c726b227f9309"),
    RemoteFile("uv_kpt_mask.png", 594, "befe84bcf0c61c9db13c94725d8bc71e4649c676230dddfb840fa0d801aadfb1",
               "Data/uv-data/uv_kpt_mask.png", "a3832c16f9af2cfa9b4cc44c825c726b227f9309"),
    RemoteFile("uv_face.png", 47_264, "5ad30efe3723da2e26d928c517291605b9520a6ff0498e40140ce4f4cf842d2c",
               "Data/uv-data/uv_face.png", "846616afe792827af373fb589d29a935215a983b"),
    RemoteFile("uv_face_eyes.png", 56_016, "46398c6222361c49c348dfb4ce9750dfe19a4a9c86540577190471fb1341f14c",
               "Data/uv-data/uv_face_eyes.png", "223bcc3c6d593f761da3f9238cf348dca887d0de"),
)

assert set(UV_TEMPLATE_FILES) <= {f.name for f in UV_FILES}


def weights_path() -> Path:
    """The converted official weights in the cache: ``<cache>/resfcn256.weights.h5``."""
    return cache_dir() / KERAS_WEIGHTS_NAME


#: Suffix of the stamp written beside converted official weights (``resfcn256.weights.h5.official.json``).
STAMP_SUFFIX = ".official.json"


def stamp_path(weights) -> Path:
    """The stamp of converted weights ``weights``: ``<weights>.official.json``."""
    weights = Path(weights)
    return weights.with_name(weights.name + STAMP_SUFFIX)


def write_official_stamp(weights, prefix) -> Path:
    """Record that ``weights`` were converted from the official checkpoint ``prefix``: the stamp holds the
    checkpoint files' pinned SHA-256 and the converted file's SHA-256 (:func:`is_verified_official`).
    Written atomically; returns its path."""
    stamp = {"checkpoint_sha256": {WEIGHTS_INDEX.name: WEIGHTS_INDEX.sha256, WEIGHTS_DATA.name: WEIGHTS_DATA.sha256},
             "checkpoint": str(Path(prefix)), "weights_sha256": sha256_file(weights),
             "converted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return atomic_write(stamp_path(weights), lambda f: json.dump(stamp, f, indent=2), newline="")


def is_verified_official(weights) -> bool:
    """True when ``weights`` carry a stamp (:func:`write_official_stamp`) naming the pinned official
    checkpoint and the file's own SHA-256: a file copied or left at the cache's name is not taken for
    the official conversion."""
    weights = Path(weights)
    try:
        stamp = json.loads(stamp_path(weights).read_text(encoding="utf-8"))
        pinned = {WEIGHTS_INDEX.name: WEIGHTS_INDEX.sha256, WEIGHTS_DATA.name: WEIGHTS_DATA.sha256}
        return (isinstance(stamp, dict) and stamp.get("checkpoint_sha256") == pinned
                and stamp.get("weights_sha256") == sha256_file(weights))
    except (OSError, ValueError):
        return False


def describe_cached_weights(weights) -> tuple:
    """``(official, text)`` for converted weights at the cache's name: ``(True, "official PRNet weights
    PATH")`` when :func:`is_verified_official`, else ``(False, "weights at PATH (not verified as the
    official conversion)")``: what the tools print and ``results.json`` records."""
    if is_verified_official(weights):
        return True, f"official PRNet weights {weights}"
    return False, f"weights at {weights} (not verified as the official conversion)"


def convert_official(prefix, output) -> Path:
    """Convert the official checkpoint ``prefix`` (already verified against its pinned SHA-256) to
    ``output`` (:func:`prnet.weights.convert.convert_checkpoint`) and stamp it (:func:`write_official_stamp`)."""
    out = convert_checkpoint(prefix, output)
    write_official_stamp(out, prefix)
    return out


def checkpoint_is_official(prefix) -> bool:
    """True when both files of the checkpoint ``prefix`` have the official checkpoint's pinned SHA-256."""
    prefix = Path(prefix)
    return all(sha256_file(prefix.with_name(prefix.name + suffix)) == remote.sha256
               for suffix, remote in ((".index", WEIGHTS_INDEX), (".data-00000-of-00001", WEIGHTS_DATA)))


def saved_model_path() -> Path:
    """The SavedModel exported from the official weights: ``<cache>/resfcn256_saved_model``."""
    return cache_dir() / SAVED_MODEL_SUBDIR


def checkpoint_dir() -> Path:
    """Where the official TF1 checkpoint files are kept: ``<cache>/official-checkpoint``."""
    return cache_dir() / CHECKPOINT_SUBDIR


def source_urls(remote: RemoteFile) -> list:
    """Candidate URLs for a file, in the order they are tried (mirror env vars first and only)."""
    env = ENV_UV_BASE_URL if remote in UV_FILES else ENV_WEIGHTS_BASE_URL
    base = os.environ.get(env)
    if base:
        return [base.rstrip("/") + "/" + urllib.parse.quote(remote.name)]
    if remote.gdrive_id:
        return [u.replace(GDRIVE_WEIGHTS_ID, remote.gdrive_id) for u in GDRIVE_DOWNLOAD_URLS]
    refs = [remote.commit] + (["master"] if remote.commit != "master" else [])
    return [RAW_URL.format(repo=GITHUB_REPO, ref=ref, path=remote.repo_path) for ref in refs]


def fetch(remote: RemoteFile, folder, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download one pinned file into ``folder`` (verified; no-op if already there and valid)."""
    mirrored = bool(os.environ.get(ENV_UV_BASE_URL if remote in UV_FILES else ENV_WEIGHTS_BASE_URL))
    return download_file(source_urls(remote), Path(folder) / remote.name, remote.sha256, remote.size,
                         gdrive=bool(remote.gdrive_id) and not mirrored, progress=progress, timeout=timeout)


def manual_weights_steps() -> str:
    """The exact manual steps to obtain the official weights (shown when they are missing)."""
    ckpt = checkpoint_dir()
    index_url = RAW_URL.format(repo=GITHUB_REPO, ref=WEIGHTS_INDEX.commit, path=WEIGHTS_INDEX.repo_path)
    return (
        "To get the official PRNet weights (the authors' release):\n"
        f"  1. download {WEIGHTS_DATA_NAME} ({WEIGHTS_DATA.size:,} bytes, sha256 {WEIGHTS_DATA.sha256})\n"
        f"     from {GDRIVE_VIEW_URL} (or {BAIDU_WEIGHTS_URL}),\n"
        f"     and {WEIGHTS_INDEX_NAME} from {index_url};\n"
        f"  2. put both files in {ckpt}/ (they are converted on first use), or convert them yourself:\n"
        f"     prnet-convert --checkpoint DIR/{CHECKPOINT_PREFIX_NAME} --output {weights_path()}\n"
        "Or run `prnet-convert --download` on a machine with internet access "
        f"(mirror: set {ENV_WEIGHTS_BASE_URL}), or pass `--weights PATH` to use any other weights file."
    )


def ensure_uv_template(download: bool = True) -> Path:
    """Return the UV template folder (``uv-data``), downloading it into the cache if needed.

    ``PRNET_ASSETS_DIR``, when set, is used as is (never downloaded into). Otherwise the files
    are fetched into ``<cache>/uv-data`` (each verified by SHA-256). Raises
    :class:`AssetsNotFoundError` if they are missing and ``download`` is false,
    :class:`DownloadError` if fetching fails.
    """
    if os.environ.get("PRNET_ASSETS_DIR"):
        return assets_dir()
    folder = cache_dir() / UV_SUBDIR
    missing = [f for f in UV_FILES if not (folder / f.name).is_file()]
    if missing and not download:
        raise AssetsNotFoundError(
            f"PRNet UV template not found in {folder} (missing {', '.join(f.name for f in missing)}).\n"
            f"{UV_TEMPLATE_HOWTO}")
    try:
        for remote in missing:
            fetch(remote, folder)
    except DownloadError as e:
        raise DownloadError(f"{e}\n{UV_TEMPLATE_HOWTO}") from e
    return assets_dir(folder)


#: How to provide the UV template (every message about a missing template ends with it).
UV_TEMPLATE_HOWTO = (
    f"The UV template is the Data/uv-data folder of https://github.com/{GITHUB_REPO} (MIT): set PRNET_ASSETS_DIR "
    "to a copy of it (the tools also take --assets_dir PATH, formerly --uv_dir), or run `prnet-convert "
    f"--download` where the internet is reachable (mirror: {ENV_UV_BASE_URL}) to put it in the cache.")


def ensure_run_files(*, weights: bool = True, template: bool = True, download: bool = True) -> None:
    """Get the cached files a run needs before any work, and report everything missing at once.

    ``weights``: the converted official weights (:func:`ensure_official_weights`); ``template``: the UV
    template from the cache (:func:`ensure_uv_template`; pass False when the caller has its own folder
    or ``PRNET_ASSETS_DIR`` is set). When only one is missing its own error is raised; when both are,
    one :class:`WeightsNotFoundError` lists both, each with how to provide it (first run offline: the
    weights message alone used to hide that the template fails next). A checksum mismatch or a damaged
    file is raised at once (it is not a missing file)."""
    problems = []
    if template and not os.environ.get("PRNET_ASSETS_DIR"):
        try:
            ensure_uv_template(download=download)
        except (AssetsNotFoundError, DownloadError) as e:
            problems.append(("the UV template", e))
    if weights:
        try:
            ensure_official_weights(download=download)
        except WeightsNotFoundError as e:
            problems.append(("the official PRNet weights", e))
    if len(problems) == 1:
        raise problems[0][1]
    if problems:
        raise WeightsNotFoundError(
            f"{len(problems)} things this run needs are missing (nothing was written):\n"
            + "\n".join(f"{i}. {what}: {e}" for i, (what, e) in enumerate(problems, 1)))


def _resume_incomplete(path: Path, remote: RemoteFile) -> bool:
    """Turn a cached file shorter than ``remote`` into the partial download ``<name>.part`` that
    :func:`prnet.weights.download.download_file` resumes (a longer ``.part`` already there wins);
    False if the cache cannot be changed."""
    part = path.with_name(path.name + ".part")
    try:
        if part.is_file() and part.stat().st_size >= path.stat().st_size:
            path.unlink()
        else:
            os.replace(path, part)
    except OSError:
        return False
    return True


def _check_cached_checkpoint(folder: Path, download: bool) -> list:
    """Check the official checkpoint files in ``folder`` against their pinned size and SHA-256.

    Returns the files to download (missing ones, and with ``download`` incomplete ones, moved to
    ``<name>.part`` so that the download resumes them). Raises :class:`WeightsFormatError` naming
    every file that is there but is not the official one, and what to do (nothing is converted).
    """
    missing, problems = [], []
    for remote in (WEIGHTS_INDEX, WEIGHTS_DATA):
        path = folder / remote.name
        if not path.is_file():
            missing.append(remote)
            continue
        size = path.stat().st_size
        if size < remote.size:
            if download and _resume_incomplete(path, remote):
                logger.warning("%s is incomplete (%s of %s bytes): resuming its download", path, f"{size:,}",
                               f"{remote.size:,}")
                missing.append(remote)
                continue
            problems.append(f"{path} is incomplete ({size:,} of {remote.size:,} bytes): delete it, then run "
                            "`prnet-convert --download` (or copy the complete file there)")
            continue
        actual = sha256_file(path)
        if actual != remote.sha256:
            problems.append(f"{path} is not the official file: sha256 {actual} ({size:,} bytes), expected "
                            f"{remote.sha256} ({remote.size:,} bytes); delete it, then run `prnet-convert "
                            "--download` (or copy the official file there)")
    if problems:
        raise WeightsFormatError(
            "the official checkpoint in the cache does not match its pinned SHA-256 (checksum mismatch), so it "
            "was not converted:\n" + "\n".join(problems) + "\nOther weights are not put in the cache: pass them "
            "with --weights PATH (Python: Predictor.from_weights(path)); `prnet-convert --verify` reports the "
            "cached files.")
    return missing


def official_checkpoint(download: bool = True) -> Path:
    """Return the prefix of the official TF1 checkpoint in ``<cache>/official-checkpoint``, verified.

    Files already there (e.g. put by hand) must match their pinned size and SHA-256; missing ones
    (and, when ``download`` is true, incomplete ones: the download resumes them) are downloaded and
    verified. Raises :class:`WeightsFormatError` naming every file that is there but not the
    official one (checksum mismatch, or incomplete without ``download``), and
    :class:`WeightsNotFoundError` with the manual steps when files are missing and cannot be downloaded.
    """
    folder = checkpoint_dir()
    missing = _check_cached_checkpoint(folder, download)
    if missing and not download:
        raise WeightsNotFoundError(f"Official PRNet weights not found: no {weights_path()} and no checkpoint "
                                   f"in {folder}.\n{manual_weights_steps()}")
    try:
        for remote in missing:
            fetch(remote, folder)
    except DownloadError as e:
        raise WeightsNotFoundError(f"Official PRNet weights could not be downloaded: {e}\n"
                                   f"{manual_weights_steps()}") from e
    return folder / CHECKPOINT_PREFIX_NAME


def ensure_official_weights(download: bool = True) -> Path:
    """Return the converted official weights ``<cache>/resfcn256.weights.h5``, creating them on first use.

    If the TF1 checkpoint files are already in ``<cache>/official-checkpoint/`` (put there by
    hand) they are verified against their pinned SHA-256 and converted; otherwise, with
    ``download`` true, they are downloaded (verified) and converted. A cached weights file that
    cannot be read (truncated, corrupt) is rebuilt the same way. Each conversion writes a stamp
    (:func:`write_official_stamp`); a cached file without a matching one is still returned, but the
    tools call it "not verified as the official conversion" (:func:`describe_cached_weights`). Raises
    :class:`WeightsNotFoundError` with the manual steps when the weights are missing and cannot be
    downloaded, :class:`WeightsFormatError` when the cached checkpoint is not the official one or
    a damaged weights file cannot be rebuilt (the message names the file to delete), and
    ``OSError`` when the cache cannot be written.
    """
    out = weights_path()
    damage = None
    if out.is_file():
        try:
            check_keras_weights_file(out)
            if not is_verified_official(out):
                logger.warning("%s has no matching conversion stamp (%s): it is used, but not as the official "
                               "weights; `prnet-convert --download --force` converts the official checkpoint again",
                               out, stamp_path(out).name)
            return out
        except WeightsFormatError as e:
            damage = e
            logger.warning("the cached official weights are damaged (%s): rebuilding them from the official "
                           "checkpoint", e)
    try:
        prefix = official_checkpoint(download)
    except PRNetError as e:
        if damage is None:
            raise
        raise WeightsFormatError(f"{damage}\nThe cached official weights cannot be rebuilt: {e}\nDelete {out}; "
                                 "it is converted again from the official checkpoint on the next run.") from e
    return convert_official(prefix, out)


@dataclass(frozen=True)
class FileCheck:
    """Result of :func:`verify_files` for one file: status is 'ok', 'missing' or 'MISMATCH'."""

    name: str
    path: Path
    status: str
    expected_sha256: str
    actual_sha256: str = ""


def verify_files(checkpoint_folder=None, uv_folder=None) -> list:
    """Check the official checkpoint and UV template files against the pinned sizes and SHA-256.

    Defaults: ``<cache>/official-checkpoint``, and the UV template in use
    (:func:`prnet.core.paths.assets_location`: ``PRNET_ASSETS_DIR`` if set, else ``<cache>/uv-data``).
    """
    checkpoint_folder = Path(checkpoint_folder) if checkpoint_folder else checkpoint_dir()
    uv_folder = assets_location(uv_folder)
    results = []
    for folder, remotes in ((checkpoint_folder, (WEIGHTS_DATA, WEIGHTS_INDEX)), (uv_folder, UV_FILES)):
        for remote in remotes:
            path = folder / remote.name
            if not path.is_file():
                results.append(FileCheck(remote.name, path, "missing", remote.sha256))
                continue
            actual = sha256_file(path)
            results.append(FileCheck(remote.name, path, "ok" if actual == remote.sha256 else "MISMATCH",
                                     remote.sha256, actual))
    return results
