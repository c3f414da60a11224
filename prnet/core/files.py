"""Files: atomic writers (a destination is either complete or untouched) and checksums."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from prnet.errors import ExportError

#: Read size for checksums (bytes).
CHUNK = 1 << 20


def _atomic_dir(destination: Path, write, overwrite: bool) -> Path:
    """Run ``write(tmp_dir)`` and move the result to ``destination``; nothing left on failure."""
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination} already exists; pass overwrite=True (--overwrite) to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        write(tmp)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(tmp, destination)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, destination)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return destination


def _atomic_file(destination: Path, data: bytes, overwrite: bool) -> Path:
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination} already exists; pass overwrite=True (--overwrite) to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return destination


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
