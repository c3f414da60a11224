"""Files: the project's one atomic writer (a destination is either complete or untouched) and checksums.

Every writer stages its output in a hidden temporary beside the destination (same folder, so the
final ``os.replace`` is atomic; named ``.tmp-<random>-<name>``, so the destination's extension is
kept for writers that check it, e.g. Keras' ``.weights.h5``) and moves it into place only when
writing finished. On any exception the temporary is deleted and the destination is left as it
was. Outputs get the usual permissions: ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for
folders (not ``mkstemp``'s / ``mkdtemp``'s private ``0o600`` / ``0o700``).

* :func:`atomic_path` -- a temporary path (file or folder) for writers that take a path name.
* :func:`atomic_write` -- bytes, text, or a callback writing to the open file.
* :func:`staged_files` -- several files moved into one folder together (nothing when one fails).
* :func:`sha256_file` -- SHA-256 of a file, a folder (SavedModel) or a checkpoint prefix.
"""

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from prnet.errors import OutputExistsError

#: Read size for checksums (bytes).
CHUNK = 1 << 20


def _umask() -> int:
    """The process umask (read from ``/proc`` where possible: ``os.umask`` can only be read by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _destination(path, overwrite: bool) -> Path:
    """Absolute ``path``, its folder created; :class:`OutputExistsError` if it exists and not ``overwrite``."""
    path = Path(path).expanduser().resolve()
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite on the command line) "
                                "to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _replace(tmp: Path, destination: Path) -> None:
    """``os.replace(tmp, destination)``; an existing folder at ``destination`` is moved aside first
    (and put back if the move fails), then deleted."""
    if not destination.is_dir() or destination.is_symlink():
        os.replace(tmp, destination)
        return
    old = Path(tempfile.mkdtemp(prefix=".old-", suffix=f"-{destination.name}", dir=destination.parent))
    os.replace(destination, old)  # onto the empty folder just made: atomic on POSIX
    try:
        os.replace(tmp, destination)
    except BaseException:
        os.replace(old, destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(destination, *, overwrite: bool = True, directory: bool = False):
    """Yield a temporary path beside ``destination`` to write; it replaces ``destination`` when the block exits.

    ``directory=False``: an empty file (writers may reopen or overwrite it by name, e.g.
    ``model.save_weights(tmp)``, ``scipy.io.savemat(tmp, ...)``); ``directory=True``: an empty
    folder (e.g. ``tf.saved_model.save(module, tmp)``); an existing folder at ``destination`` is
    replaced whole. On an exception in the block the temporary is deleted and ``destination`` is
    untouched. ``overwrite=False`` raises :class:`prnet.errors.OutputExistsError` when
    ``destination`` exists (checked before and again after writing).
    """
    destination = _destination(destination, overwrite)
    names = {"prefix": ".tmp-", "suffix": f"-{destination.name}", "dir": destination.parent}
    if directory:
        tmp = Path(tempfile.mkdtemp(**names))
    else:
        fd, name = tempfile.mkstemp(**names)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        if not overwrite and os.path.lexists(destination):
            raise OutputExistsError(f"{destination} was created by someone else while it was being written; "
                                    "not replaced")
        _replace(tmp, destination)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            tmp.unlink()


def atomic_write(destination, content, *, binary: bool = False, overwrite: bool = True,
                 encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Write ``destination`` atomically (see :func:`atomic_path`); returns its absolute path.

    ``content``: ``bytes`` (written as is), ``str`` (text, ``encoding``; ``newline`` as for
    :func:`open`), or a callable ``content(f)`` that writes to the open file, in text mode unless
    ``binary=True`` (e.g. ``lambda f: json.dump(data, f)``).
    """
    if isinstance(content, (bytes, bytearray, memoryview)):
        binary, data = True, content
    elif isinstance(content, str):
        binary, data = False, content
    elif callable(content):
        data = None
    else:
        raise TypeError(f"content must be bytes, str or a callable write(f), got {type(content).__name__}")
    text = {} if binary else {"encoding": encoding, "newline": newline}
    with atomic_path(destination, overwrite=overwrite) as tmp:
        with open(tmp, "wb" if binary else "w", **text) as f:
            if data is None:
                content(f)
            else:
                f.write(data)
    return Path(destination).expanduser().resolve()


@contextmanager
def staged_files(folder):
    """Yield a private temporary folder inside ``folder``; files written into it move into ``folder`` together.

    When the block exits normally every entry of the temporary folder is moved (``os.replace``,
    replacing same-named files) into ``folder``, in name order; on an exception nothing is moved.
    The temporary folder is always deleted. For a group of outputs that must appear all or not at
    all (a mesh with its ``.mtl`` and texture; all files of one image). Files keep the permissions
    they were created with (``open`` / ``cv2.imwrite`` follow the umask).
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", suffix="-staging", dir=folder))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sha256_file(path) -> str | None:
    """Hex SHA-256 of a file's bytes, of a folder, or of a checkpoint prefix; None if nothing is there.

    A folder (e.g. a SavedModel) hashes all its files sorted by relative path; a path that is
    neither hashes the files ``<path>.*`` (a TF checkpoint prefix: ``prefix.index`` +
    ``prefix.data-*``). With more than one file each contributes ``name + NUL + bytes``; a single
    file gives the plain SHA-256 of its bytes (as ``sha256sum``).
    """
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((str(p.relative_to(path)), p) for p in path.rglob("*") if p.is_file())
    else:
        files = sorted((p.name, p) for p in path.parent.glob(path.name + ".*") if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for name, p in files:
        if len(files) > 1:
            digest.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
    return digest.hexdigest()
