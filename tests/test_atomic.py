"""Atomic writes: all or nothing, with the usual file mode."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
from pathlib import Path

import pytest

from aprrd_cli.errors import AprrdError
from aprrd_cli.utils.atomic import FILE_MODE, atomic_path, atomic_write_text, check_output_dir


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

    from aprrd_cli.utils import atomic as fsutil

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


def _signal_right_after(real, sig: int):
    """``real``, then ``sig`` sent to this process the moment it returns: the narrowest window."""

    def call(*args, **kwargs):
        out = real(*args, **kwargs)
        signal.raise_signal(sig)
        return out

    return call


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_as_the_temporary_is_created_leaves_nothing(tmp_path: Path, monkeypatch, sig) -> None:
    """The race CI once caught: SIGTERM between mkstemp and the clean-up knowing the file's name."""
    (tmp_path / "a.npy").write_text("old")
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        monkeypatch.setattr(tempfile, "mkstemp", _signal_right_after(tempfile.mkstemp, sig))
        body = []
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(tmp_path / "a.npy") as tmp:
                body.append(tmp)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert body == []  # the signal was raised before the caller could start writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    assert (tmp_path / "a.npy").read_text() == "old"


def test_a_signal_during_the_write_probe_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "mkstemp", _signal_right_after(tempfile.mkstemp, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        check_output_dir(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # what aprrd's own SIGTERM handler does (cli.Terminated)
