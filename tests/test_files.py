"""prnet.core.files: the atomic writers (complete or untouched, umask permissions, no overwrite) and SHA-256."""

import hashlib
import os
import stat

import pytest

from prnet.core.files import atomic_path, atomic_write, folder_error, output_folder, sha256_file, staged_files
from prnet.errors import OutputExistsError


class Boom(Exception):
    pass


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_write_bytes_text_and_callback(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == (tmp_path / "a.bin").resolve()
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "sub" / "b.txt", "h\u00e9\n")  # folder created
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "h\u00e9\n"
    atomic_write(tmp_path / "c.csv", lambda f: f.write("x\r\n"), newline="")
    assert (tmp_path / "c.csv").read_bytes() == b"x\r\n"
    atomic_write(tmp_path / "d.bin", lambda f: f.write(b"\xff"), binary=True)
    assert (tmp_path / "d.bin").read_bytes() == b"\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.csv", "d.bin", "sub"]


def test_exception_inside_write_leaves_the_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def half(f):
        f.write("new, but only ha")
        raise Boom()

    with pytest.raises(Boom):
        atomic_write(target, half)
    assert target.read_text() == "old"
    with pytest.raises(Boom):
        atomic_write(tmp_path / "new.json", half)
    assert not (tmp_path / "new.json").exists()
    with pytest.raises(Boom), atomic_path(tmp_path / "m.weights.h5") as tmp:
        assert tmp.name.endswith("-m.weights.h5") and tmp.parent == tmp_path  # extension kept, same folder
        tmp.write_bytes(b"partial")
        raise Boom()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_exception_inside_a_folder_write_keeps_the_old_folder(tmp_path):
    out = tmp_path / "saved_model"
    out.mkdir()
    (out / "old.pb").write_bytes(b"old")
    with pytest.raises(Boom), atomic_path(out, directory=True) as tmp:
        (tmp / "saved_model.pb").write_bytes(b"new")
        raise Boom()
    assert [p.name for p in out.iterdir()] == ["old.pb"]
    with atomic_path(out, directory=True) as tmp:  # a complete write replaces the folder whole
        (tmp / "saved_model.pb").write_bytes(b"new")
    assert [p.name for p in out.iterdir()] == ["saved_model.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_permissions_follow_the_umask(tmp_path, umask_027):
    # mkstemp / mkdtemp create 0600 / 0700: outputs must get 0666 / 0777 & ~umask like open() / mkdir()
    atomic_write(tmp_path / "f.txt", "x")
    assert _mode(tmp_path / "f.txt") == 0o640
    with atomic_path(tmp_path / "w.h5") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "w.h5") == 0o640
    with atomic_path(tmp_path / "d", directory=True) as tmp:
        (tmp / "x").write_bytes(b"x")
    assert _mode(tmp_path / "d") == 0o750
    os.umask(0o002)
    atomic_write(tmp_path / "g.txt", "x")
    assert _mode(tmp_path / "g.txt") == 0o664


def test_overwrite_false_refuses_an_existing_path(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        atomic_write(tmp_path / "model.tflite", b"new", overwrite=False)
    assert (tmp_path / "model.tflite").read_bytes() == b"old"
    (tmp_path / "export").mkdir()
    with pytest.raises(FileExistsError):  # OutputExistsError is a FileExistsError too
        with atomic_path(tmp_path / "export", overwrite=False, directory=True):
            pytest.fail("must not be reached")
    atomic_write(tmp_path / "fresh.tflite", b"new", overwrite=False)
    assert (tmp_path / "fresh.tflite").read_bytes() == b"new"
    atomic_write(tmp_path / "model.tflite", b"new")  # overwrite=True is the default
    assert (tmp_path / "model.tflite").read_bytes() == b"new"


def test_overwrite_false_refuses_a_path_created_while_writing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(OutputExistsError), atomic_path(target, overwrite=False) as tmp:
        tmp.write_bytes(b"mine")
        target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_staged_files_move_all_or_nothing(tmp_path):
    (tmp_path / "face.obj").write_text("old")
    with pytest.raises(Boom), staged_files(tmp_path) as staging:
        (staging / "face.png").write_bytes(b"png")
        (staging / "face.obj").write_text("new")
        raise Boom()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.obj"]
    assert (tmp_path / "face.obj").read_text() == "old"
    with staged_files(tmp_path) as staging:
        (staging / "face.png").write_bytes(b"png")
        (staging / "face.obj").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.obj", "face.png"]
    assert (tmp_path / "face.obj").read_text() == "new"


def test_sha256_of_a_file_a_folder_and_a_checkpoint_prefix(tmp_path):
    f = tmp_path / "w.weights.h5"
    f.write_bytes(b"abc")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "sm" / "variables").mkdir(parents=True)
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "sm" / "variables" / "v.data").write_bytes(b"y")
    h1 = sha256_file(tmp_path / "sm")
    (tmp_path / "sm" / "variables" / "v.data").write_bytes(b"z")
    assert h1 != sha256_file(tmp_path / "sm")
    (tmp_path / "ckpt.index").write_bytes(b"i")
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"d")
    assert sha256_file(tmp_path / "ckpt") is not None
    assert sha256_file(tmp_path / "nothing") is None


# ----------------------------------------------------------------------------- reliability (issue 14)
def test_ctrl_c_while_a_group_is_moved_is_held_until_the_group_is_complete(tmp_path, monkeypatch):
    import signal

    import prnet.core.files as files

    real_replace, moved = os.replace, []

    def replace_then_ctrl_c(src, dst):  # Ctrl-C arrives right after the first file is in place
        real_replace(src, dst)
        moved.append(dst)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(files.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), staged_files(tmp_path) as staging:
        for name in ("a.obj", "a.png", "a_pose.txt"):
            (staging / name).write_text(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.obj", "a.png", "a_pose.txt"]  # all, no staging
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_ensure_writable_folder_names_the_users_path(tmp_path):
    from prnet.core.files import ensure_writable_folder
    from prnet.errors import OutputFolderError

    assert ensure_writable_folder(tmp_path / "new" / "out") == (tmp_path / "new" / "out").absolute()
    assert (tmp_path / "new" / "out").is_dir() and list((tmp_path / "new" / "out").iterdir()) == []  # no probe
    (tmp_path / "plain").write_text("x")
    for target in (tmp_path / "plain", tmp_path / "plain" / "sub"):
        with pytest.raises(OutputFolderError, match=f"output folder {target}: {tmp_path / 'plain'} is a file"):
            ensure_writable_folder(target)
    for unwritable in ("/sys", "/proc"):  # root-proof: no file can be created there, not even by root
        if os.path.isdir(unwritable):
            with pytest.raises(OutputFolderError, match=f"output folder {unwritable}: ") as info:
                ensure_writable_folder(unwritable)
            assert ".tmp-" not in str(info.value) and info.value.errno is not None


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    import time

    from prnet.core.files import STALE_AFTER_S, remove_stale_temporaries

    old = time.time() - STALE_AFTER_S - 60

    def make(name, *, folder=True, age=None, inner_age=None):
        path = tmp_path / name
        if folder:
            path.mkdir()
            (path / "face_0.obj").write_text("x")
            if inner_age is not None:
                os.utime(path / "face_0.obj", (inner_age, inner_age))
        else:
            path.write_text("x")
        if age is not None:
            os.utime(path, (age, age))
        return path

    killed = make(".tmp-abc123_z-staging", age=old, inner_age=old)  # left by SIGKILL
    killed_file = make(".tmp-k9k9k9k9-model.weights.h5", folder=False, age=old)
    live = make(".tmp-live0001-staging")  # being written now
    live_inside = make(".tmp-live0002-staging", age=old)  # folder old, but a file inside is being written
    user = make(".tmp-mine", age=old, inner_age=old)  # not our name pattern: never touched
    old_copy = make(".old-abcdefgh-saved_model", age=old, inner_age=old)  # a replaced folder's backup: kept
    output = make("face_0.obj", folder=False, age=old)
    assert sorted(remove_stale_temporaries(tmp_path, suffix="-staging")) == [killed]
    assert sorted(remove_stale_temporaries(tmp_path)) == [killed_file]
    assert all(p.exists() for p in (live, live_inside, user, old_copy, output))
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_path"])
def test_a_file_never_replaces_a_folder(tmp_path, writer):
    """Battery row 1/2: a folder named like an output (with the user's files in it) is refused, never deleted."""
    folder = tmp_path / "photos.png"
    folder.mkdir()
    (folder / "holiday1.jpg").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="photos.png is a folder, not a file") as info:
        if writer == "atomic_write":
            atomic_write(folder, b"image")
        else:
            with atomic_path(folder) as tmp:
                tmp.write_bytes(b"image")
    assert isinstance(info.value, OSError) and info.value.blocking == str(folder.absolute())
    assert (folder / "holiday1.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.png"]  # no temporary left


def test_a_file_never_replaces_a_link_to_a_folder_or_a_fifo(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("x")
    (tmp_path / "link.json").symlink_to(tmp_path / "real")
    with pytest.raises(OutputExistsError, match="a link to a folder"):
        atomic_write(tmp_path / "link.json", "{}")
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(OutputExistsError, match="not a regular file"):
        atomic_write(tmp_path / "pipe.txt", "x")
    assert (tmp_path / "real" / "keep.txt").read_text() == "x" and (tmp_path / "link.json").is_symlink()
    (tmp_path / "file.txt").write_text("old")  # files and dangling links are still replaced
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere")
    atomic_write(tmp_path / "file.txt", "new")
    atomic_write(tmp_path / "dangling.txt", "new")
    assert (tmp_path / "file.txt").read_text() == "new" and (tmp_path / "dangling.txt").read_text() == "new"


def test_a_folder_created_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "table.txt"
    with pytest.raises(OutputExistsError, match="is a folder"), atomic_path(target) as tmp:
        tmp.write_text("table")
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    assert (target / "notes.txt").read_text() == "mine"


def test_a_folder_still_replaces_a_folder(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old.tflite").write_bytes(b"old")
    with atomic_path(tmp_path / "export", directory=True) as tmp:
        (tmp / "new.tflite").write_bytes(b"new")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["new.tflite"]


def test_staged_files_check_every_name_before_moving_any(tmp_path):
    """Battery row 11: a folder in the way of one name of a group leaves none of the group's files."""
    out = tmp_path / "out"
    (out / "face_0_overlay.png").mkdir(parents=True)
    (out / "face_0_overlay.png" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="face_0_overlay.png is a folder"):
        with staged_files(out) as staging:
            for name in ("face_0.obj", "face_0_depth.png", "face_0_overlay.png", "face_0_pose.txt"):
                (staging / name).write_text(name)
    assert sorted(p.name for p in out.iterdir()) == ["face_0_overlay.png"]  # nothing moved, staging removed
    assert (out / "face_0_overlay.png" / "keep.txt").read_text() == "x"
    error = folder_error(OutputExistsError("x"), out)  # a plain error keeps its message
    assert str(out) in str(error)


def test_output_folder_removes_only_the_empty_folders_it_made(tmp_path):
    with pytest.raises(Boom), output_folder(tmp_path / "a" / "b" / "out") as out:
        assert out.is_dir()
        raise Boom()
    assert not (tmp_path / "a").exists()  # nothing written: no empty folder left
    with output_folder(tmp_path / "a" / "out") as out:
        (out / "result.txt").write_text("x")
    assert (tmp_path / "a" / "out" / "result.txt").is_file()
    (tmp_path / "empty").mkdir()
    with output_folder(tmp_path / "empty"):
        pass
    assert (tmp_path / "empty").is_dir()  # existed before: kept
