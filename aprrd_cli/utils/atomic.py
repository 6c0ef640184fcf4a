"""Atomic file writes: a reader never sees a half-written file, an interruption leaves none."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aprrd_cli.errors import OutputError
from aprrd_cli.utils.interrupts import hold_signals


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the usual mode instead.
FILE_MODE = 0o666 & ~_current_umask()


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is a file, not a folder."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def explain(e: OSError, folder: Path) -> str:
    """An OSError as the user's problem: what is wrong with the place we write to."""
    blocker = _blocking_file(folder)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return os.strerror(e.errno)  # "No space left on device", "Read-only file system", "Disk quota exceeded"
    return e.strerror or str(e)


def check_output_dir(folder: str | os.PathLike, what: str = "output") -> None:
    """Refuse, before any work, a folder that cannot be created or written in.

    Root ignores permission bits, so a test write (a temporary file, removed at once) is
    the only reliable check; a read-only mount or a path under a regular file fail here.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with hold_signals():  # an interruption between creating and removing would leave the probe
            fd, tmp = tempfile.mkstemp(prefix=".aprrd-write-test.", suffix=".part", dir=folder)
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"cannot write the {what} in {folder}: {explain(e, folder)}; choose a writable folder") from e


def remove_partials(*folders: str | os.PathLike, dead_only: bool = False) -> int:
    """Delete the temporary ``.*.part`` files (and torch.hub's ``.*.part.*.partial``) a ``kill -9``
    left in these folders; returns how many.

    Every one of them when the caller holds the folder's lock; with ``dead_only``, only those
    whose writer (the PID in the name) is no longer running, for folders no lock guards.
    """
    n = 0
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in (*folder.glob(".*.part"), *folder.glob(".*.part.*.partial")):
            if dead_only and not _left_by_dead_writer(p.name):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


# A temporary file is named ``.NAME.PID-XXXXXXXX[.SUFFIX].part``: its writer's process id tells
# whether a leftover is still being written or was left by a process that died (kill -9, power).
# ``torch.hub``'s downloader writes into ``TEMPORARY.HEX.partial`` first (models/zoo.py).
_PARTIAL = re.compile(r"^\..+\.(\d+)-[a-z0-9_]{8}.*\.part(\.[0-9a-f]{32}\.partial)?$")
_swept: set[Path] = set()


def _left_by_dead_writer(name: str) -> bool:
    m = _PARTIAL.match(name)
    if m is None:
        return False  # not one of ours
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # someone else's process, or a number no process can have: leave the file alone
    return False


def remove_dead_partials(folder: Path) -> int:
    """Delete the temporaries in ``folder`` whose writer is no longer running (once per folder
    and process): a killed ``denoise`` or ``evaluate`` leaves no hidden litter behind for good."""
    key = Path(folder).resolve()
    if key in _swept:
        return 0
    _swept.add(key)
    with contextlib.suppress(OSError):
        return remove_partials(folder, dead_only=True)
    return 0


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary file keeps the target's suffix (writers pick the format from it) and
    is removed on any error or interruption, so nothing half-written is ever left.
    """
    path = Path(path)
    parent = path.parent
    tmp_path: Path | None = None
    try:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_dead_partials(parent)
            # a signal between creating the temporary and knowing its name would leave it behind:
            # it waits for the end of this block, inside the try whose clean-up covers the file
            with hold_signals():
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{path.name}.{os.getpid()}-",
                    suffix=(suffix if suffix is not None else path.suffix) + ".part",
                    dir=parent,
                )
                tmp_path = Path(tmp)
                os.close(fd)
        except OSError as e:
            raise OutputError(f"cannot write in {parent}: {explain(e, parent)}; choose a writable folder") from e
        with contextlib.suppress(OSError):
            os.chmod(tmp_path, FILE_MODE)
        yield tmp_path
        with contextlib.suppress(OSError):
            # flush the data to disk before the rename makes it visible
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp_path, path)
    except OSError as e:
        _discard(tmp_path)
        if e.errno is None and _free_bytes(parent) == 0:  # numpy's tofile reports a short write without errno
            e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise OutputError(f"cannot write {path}: {explain(e, parent)}; check free space and permissions") from e
    except BaseException:
        _discard(tmp_path)
        raise


def _discard(tmp: Path | None) -> None:
    """Remove a temporary file, if it was created, on the way out of a failed write."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
