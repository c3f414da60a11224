"""Files: the project's one atomic writer (a destination is either complete or untouched) and checksums.

Every writer stages its output in a hidden temporary beside the destination (same folder, so the
final ``os.replace`` is atomic; named ``.tmp-<random>-<name>``, so the destination's extension is
kept for writers that check it, e.g. Keras' ``.weights.h5``) and moves it into place only when
writing finished. On any exception the temporary is deleted and the destination is left as it
was. Outputs get the usual permissions: ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for
folders (not ``mkstemp``'s / ``mkdtemp``'s private ``0o600`` / ``0o700``).

* :func:`atomic_path` -- a temporary path (file or folder) for writers that take a path name. A file
  never replaces a folder (or anything but a file): :func:`check_file_destination` refuses it before
  anything is written, so a user's folder named like an output is never deleted.
* :func:`atomic_write` -- bytes, text, or a callback writing to the open file.
* :func:`staged_files` -- several files moved into one folder together (nothing when one fails: every
  destination is checked before the first move; a Ctrl-C during the move is held until the group is
  complete).
* :func:`ensure_writable_folder` -- create an output folder and check up front that files can be
  created in it (:class:`prnet.errors.OutputFolderError` naming the user's path otherwise);
  :func:`output_folder` does the same and removes the folders it created if they are still empty
  when the run ends (a failed run leaves no empty folder behind).
* :func:`remove_stale_temporaries` -- delete the hidden temporaries a killed process (SIGKILL, power
  loss) left in a folder: those not changed for :data:`STALE_AFTER_S` seconds.
* :func:`sha256_file` -- SHA-256 of a file, a folder (SavedModel) or a checkpoint prefix.
"""

import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from prnet.errors import OutputExistsError, OutputFolderError

#: Read size for checksums (bytes).
CHUNK = 1 << 20
#: A hidden temporary (``.tmp-<8 random chars>-...``) nothing has changed for this long (seconds, the
#: newest modification time of it and everything inside it) is taken as left by a killed process.
#: Live writers touch theirs far more often: one image's files, one checkpoint, one export.
STALE_AFTER_S = 15 * 60
#: The names this module's temporaries get (``tempfile``'s 8 random characters after the prefix).
TEMPORARY_NAME = re.compile(r"\.tmp-[a-z0-9_]{8}-.")
#: errno values that mean no file can be written into a folder (as opposed to one bad name).
FOLDER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                           errno.EEXIST, errno.ENOENT})


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


def _blocking_kind(path) -> str | None:
    """What makes ``path`` unfit to be replaced by a file: ``"a folder"``, ``"a link to a folder"``,
    ``"not a regular file"`` (FIFO, socket, device); None when it is absent, a regular file, a
    symbolic link to one, or a dangling link (replacing that loses nothing)."""
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(own.st_mode):
        return "a folder"
    if stat.S_ISLNK(own.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            return None  # dangling (or looping) link
        if stat.S_ISDIR(target.st_mode):
            return "a link to a folder"
        return None if stat.S_ISREG(target.st_mode) else "a link to something that is not a regular file"
    return None if stat.S_ISREG(own.st_mode) else "not a regular file"


def check_file_destination(path) -> None:
    """Refuse a file destination that is not a file: raise :class:`OutputExistsError` (an ``OSError``;
    attributes ``blocking`` = ``path`` and ``kind``, e.g. ``"a folder"``) when ``path`` is a folder, a link to one, or
    anything else but a regular file or a link to one. The message names ``path`` and says to
    choose another name; nothing is written or removed. Run it before work whose result goes there."""
    kind = _blocking_kind(path)
    if kind is not None:
        error = OutputExistsError(f"{path} is {kind}, not a file: it is not replaced by an output file; "
                                  "choose another output name (or move it away)")
        error.blocking, error.kind = str(path), kind
        raise error


def _destination(path, overwrite: bool, directory: bool = False) -> Path:
    """Absolute ``path``, its folder created; :class:`OutputExistsError` if it exists and not
    ``overwrite``, or if a file is to replace something that is not a file (:func:`check_file_destination`)."""
    if not directory:
        check_file_destination(Path(path).expanduser().absolute())  # the user's name, before links are resolved
    path = Path(path).expanduser().resolve()
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite on the command line) "
                                "to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _replace(tmp: Path, destination: Path, directory: bool = False) -> None:
    """``os.replace(tmp, destination)``. A file (``directory=False``) only ever replaces a file: a folder
    found there (e.g. created while the file was written) is refused (:func:`check_file_destination`),
    never deleted. A folder (``directory=True``) replaces an existing folder whole: that folder is moved
    aside first (and put back if the move fails), then deleted."""
    if not directory:
        check_file_destination(destination)
    if not directory or not destination.is_dir() or destination.is_symlink():
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
    replaced whole. A file never replaces a folder (or anything but a file): that raises
    :class:`prnet.errors.OutputExistsError` before the block runs (:func:`check_file_destination`).
    On an exception in the block the temporary is deleted and ``destination`` is
    untouched. ``overwrite=False`` raises :class:`prnet.errors.OutputExistsError` when
    ``destination`` exists (checked before and again after writing).
    """
    destination = _destination(destination, overwrite, directory)
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
        _replace(tmp, destination, directory)
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
    Every destination is checked before the first move: when one is a folder or anything but a file
    (:func:`check_file_destination`), its :class:`prnet.errors.OutputExistsError` is raised and
    nothing of the group is moved.
    The temporary folder is always deleted. For a group of outputs that must appear all or not at
    all (a mesh with its ``.mtl`` and texture; all files of one image). Files keep the permissions
    they were created with (``open`` / ``cv2.imwrite`` follow the umask).
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", suffix="-staging", dir=folder))
    try:
        yield staging
        entries = sorted(staging.iterdir())
        for path in entries:  # all of them before any move: a blocked name would leave half a group
            check_file_destination(folder / path.name)
        with interrupts_deferred():  # a Ctrl-C here would leave half a group
            for path in entries:
                os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and deliver it when the block ends.

    For short steps that must not be cut in half (moving a group of files into place). Only the
    main thread receives signals; elsewhere (or with signals unavailable) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    except (ValueError, OSError):  # pragma: no cover (embedded interpreters)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, received[-1])  # default_int_handler: raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def ensure_writable_folder(folder) -> Path:
    """Create ``folder`` (with its parents) if needed and check that a file can be created in it.

    Run it before the work whose results go there, so a read-only, full or mistyped output path is
    reported at once. Returns the absolute path. Raises :class:`prnet.errors.OutputFolderError`
    naming ``folder`` (not an internal temporary) with the reason; its ``errno`` is the system's.
    """
    folder = Path(folder).expanduser().absolute()
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-", suffix="-probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise folder_error(e, folder) from e
    return folder


@contextmanager
def output_folder(folder):
    """:func:`ensure_writable_folder` for the length of a run: yields the absolute folder, and when the
    block ends (normally or not) removes the folders it created (``folder`` and any missing parents)
    that are still empty, so a run that failed before writing anything leaves no empty folder behind.
    A folder that existed before is never removed."""
    folder_abs = Path(folder).expanduser().absolute()
    created = [p for p in (folder_abs, *folder_abs.parents) if not os.path.lexists(p)]
    try:
        yield ensure_writable_folder(folder_abs)
    finally:
        remove_empty_folders(created)


def remove_empty_folders(folders) -> None:
    """``os.rmdir`` each of ``folders`` (deepest first) that exists and is empty; others are left alone."""
    for path in sorted((Path(p) for p in folders), key=lambda p: len(p.parts), reverse=True):
        try:
            os.rmdir(path)
        except OSError:
            pass


def folder_error(error: OSError, folder, doing: str = "") -> OutputFolderError:
    """An :class:`OutputFolderError` for ``error`` (raised while writing into ``folder``) that names
    ``folder``, the user's path, instead of the temporary the system call failed on; ``doing``
    (e.g. ``" (the files of face.jpg)"``) is added after the path."""
    reason = error.strerror or str(error)
    if getattr(error, "blocking", None):  # check_file_destination
        out = OutputFolderError(f"cannot write {error.blocking}{doing}: it is {error.kind}, "
                                "not a file, and is never replaced by an output; move it away or choose another "
                                "folder (nothing of this was written)")
        out.errno = error.errno
        return out
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        folder = Path(folder)
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            reason = f"{blocking} is a file, not a folder"
    hint = {errno.ENOSPC: "free some space or choose another folder",
            errno.EDQUOT: "free some space or choose another folder"}.get(error.errno, "choose another folder")
    out = OutputFolderError(f"cannot write to the output folder {folder}{doing}: {reason}; {hint}")
    out.errno = error.errno
    return out


def remove_stale_temporaries(folder, *, older_than_s: float = STALE_AFTER_S, suffix: str = "") -> list:
    """Delete the hidden temporaries (``.tmp-XXXXXXXX-...<suffix>``, files or folders, as this module
    names them) directly inside ``folder`` that nothing changed for ``older_than_s`` seconds.

    A process killed with SIGKILL (or a power loss) leaves its temporary behind; a live writer keeps
    changing its own (see :data:`STALE_AFTER_S`). ``suffix`` narrows the kind (``"-staging"``:
    :func:`staged_files`' folders). Entries that vanish or cannot be removed meanwhile are skipped.
    Returns the removed paths. Never touches the ``.old-*`` folder a replaced folder is moved to.
    """
    folder = Path(folder).expanduser()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    deadline = time.time() - older_than_s
    for entry in entries:
        if not TEMPORARY_NAME.match(entry.name) or not entry.name.endswith(suffix):
            continue
        try:
            newest = entry.stat(follow_symlinks=False).st_mtime
            if entry.is_dir(follow_symlinks=False):
                for root, dirs, files in os.walk(entry.path):
                    for name in dirs + files:
                        newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            if newest > deadline:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


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
