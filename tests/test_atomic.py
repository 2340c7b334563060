import pytest

from asr.atomic import atomic_write, write_text


def test_a_write_replaces_the_file_in_one_step_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out" / "a.txt"
    write_text(path, "first\n")
    write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "wb") as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_written_files_get_the_permissions_of_any_new_file(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        mode = write_text(tmp_path / "a.txt", "x\n").stat().st_mode & 0o777
    finally:
        os.umask(previous)
    assert mode == 0o644  # mkstemp alone gives 0o600: other users could not read a shared model
