"""Atomic writes: all or nothing, with the usual file mode."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from aprrd_cli.errors import AprrdError
from aprrd_cli.fsutil import FILE_MODE, atomic_path, atomic_write_text


def test_success_renames_into_place_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert os.stat(target).st_mode & 0o777 == FILE_MODE
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_an_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_interrupt_leaves_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AprrdError, match="No space left on device; check free space") as e:
        with atomic_path(tmp_path / "c.bin"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert "\\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AprrdError, match="cannot write in"), atomic_path(blocker / "x.png"):
        pass


def test_temporaries_carry_their_writers_pid(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "out.png") as tmp:
        assert tmp.name.startswith(f".out.png.{os.getpid()}-") and tmp.name.endswith(".png.part")
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    from aprrd_cli import fsutil

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited: a kill -9 victim's name looks the same
    folder = tmp_path / "outs"
    folder.mkdir()
    stale = folder / f".a.png.{dead_pid}-abcd_123.png.part"
    live = folder / f".b.png.{os.getppid()}-abcd_123.png.part"  # a running process's file is never touched
    foreign = folder / ".notes.part"  # not one of ours
    for p in (stale, live, foreign):
        p.write_bytes(b"half")
    fsutil._swept.discard(folder.resolve())
    atomic_write_text(folder / "c.txt", "done")
    assert not stale.exists()
    assert live.exists() and foreign.exists()
    assert (folder / "c.txt").read_text() == "done"
