"""prnet.core.files: the atomic writers (complete or untouched, umask permissions, no overwrite) and SHA-256."""

import hashlib
import os
import stat

import pytest

from prnet.core.files import atomic_path, atomic_write, sha256_file, staged_files
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
