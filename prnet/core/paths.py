"""Where the library looks for its data: the cache directory and the UV template (``uv-data``).

Resolution order for the UV template directory (the folder holding ``uv_kpt_ind.txt``,
``face_ind.txt``, ``canonical_vertices.npy`` and the ``uv_*.png`` masks):

1. an explicit path passed by the caller;
2. the environment variable ``PRNET_ASSETS_DIR`` (either the ``uv-data`` folder itself or a
   folder that contains ``uv-data/``);
3. ``<cache>/uv-data`` where ``<cache>`` is ``$PRNET_CACHE_DIR`` or ``~/.cache/prnet``
   (filled by ``prnet-convert --download`` / :mod:`prnet.weights.download`).
"""

import os
from pathlib import Path

from prnet.errors import AssetsNotFoundError

# Files the UV template directory must contain (``triangles.txt`` is optional: it is generated).
UV_TEMPLATE_FILES = (
    "uv_kpt_ind.txt",
    "face_ind.txt",
    "canonical_vertices.npy",
    "uv_face_mask.png",
    "uv_weight_mask.png",
    "uv_kpt_mask.png",
    "uv_face.png",
)


#: How to provide the UV template, in every message about a missing one.
HOWTO = ("Set PRNET_ASSETS_DIR to a copy of the original repository's Data/uv-data folder (the tools also take "
         "--assets_dir PATH; TFDS builders assets_dir=PATH), or run `prnet-convert --download` to fetch it (and the "
         "official weights) into the cache.")


def cache_dir() -> Path:
    """Root of the on-disk cache: ``$PRNET_CACHE_DIR`` or ``~/.cache/prnet``."""
    env = os.environ.get("PRNET_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prnet"


def _as_uv_dir(path: Path) -> Path:
    """Accept either the ``uv-data`` folder or its parent."""
    if (path / "uv-data").is_dir() and not (path / "face_ind.txt").exists():
        return path / "uv-data"
    return path


def _located(explicit=None):
    """``(where from, UV template folder)`` by the resolution order of the module docstring, unchecked."""
    if explicit is not None:
        return "the given path", _as_uv_dir(Path(explicit).expanduser())
    if os.environ.get("PRNET_ASSETS_DIR"):
        return "PRNET_ASSETS_DIR", _as_uv_dir(Path(os.environ["PRNET_ASSETS_DIR"]).expanduser())
    return "the cache", _as_uv_dir(cache_dir() / "uv-data")


def assets_location(explicit=None) -> Path:
    """The UV template folder the resolution order picks, whether or not it exists or is complete
    (:func:`assets_dir` checks it)."""
    return _located(explicit)[1]


def assets_dir(explicit=None) -> Path:
    """Return the UV template directory, or raise :class:`AssetsNotFoundError` saying how to get it."""
    source, path = _located(explicit)
    if not path.is_dir():
        raise AssetsNotFoundError(f"PRNet UV template not found at {path} ({source}). {HOWTO}")
    missing = [f for f in UV_TEMPLATE_FILES if not (path / f).is_file()]
    if missing:
        raise AssetsNotFoundError(f"PRNet UV template at {path} ({source}) is incomplete: missing "
                                  f"{', '.join(missing)}. {HOWTO}")
    return path
