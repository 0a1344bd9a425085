"""atomic_write: the one writer behind checkpoints, histories, IDX files, downloads, drawings."""

import os

import pytest

from tinygrad_mlp._files import atomic_write


def test_new_file_gets_open_permissions_and_whole_content(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"abc"))
    finally:
        os.umask(umask)
    assert path == str(tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["a.bin"]


def test_overwrite_keeps_the_existing_files_permissions(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    atomic_write(target, lambda f: f.write("new"), binary=False)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "c.json"
    target.write_text("old")

    def half(f):
        f.write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half, binary=False)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["c.json"]
