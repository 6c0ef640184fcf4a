"""A lock on a working folder, so that two runs never write the same store or run directory.

``with DirLock(folder, what="prepare-data"):`` holds ``folder/.aprrd.lock`` for the block.
The file holds the owner's PID, host and command; a second run is refused with a message
naming the lock file and that PID. On POSIX the lock is a kernel ``flock``: it vanishes with
its process, so a lock left by a killed run (its file still there) is taken over silently.
Elsewhere the PID in the file decides: a lock whose process is gone is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from aprrd_cli.errors import AprrdError
from aprrd_cli.utils.atomic import explain

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".aprrd.lock"


class LockedError(AprrdError):
    """The folder is held by another live run."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class DirLock:
    """Exclusive use of ``folder`` by this process for the duration of a ``with`` block.

    ``what`` names the command in the refusal message another run prints. The folder is
    created if needed. Re-entering the same object is an error; use one lock per run.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "aprrd") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        pid = info.get("pid", "unknown")
        host = info.get("host")
        what = info.get("what", "another aprrd run")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return f"{what} (PID {pid}{where})"

    def _refuse(self) -> None:
        raise LockedError(
            f"{self.folder} is in use by {self._describe_holder()}: lock file {self.path}; "
            "wait for that run to finish (or stop it), then try again"
        )

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "since": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("DirLock is already held by this object")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AprrdError(f"cannot create {self.folder}: {explain(e, self.folder)}; choose a writable folder") from e
        try:
            if fcntl is not None:
                self._acquire_flock()
            else:
                self._acquire_pidfile()
        except OSError as e:  # a read-only or full file system: the lock file cannot be created
            raise AprrdError(
                f"cannot write in {self.folder}: {explain(e, self.folder)}; choose a writable folder"
            ) from e

    def _acquire_flock(self) -> None:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse()
            # The holder before us may have unlinked the file between our open and our lock:
            # then we hold a lock on a dead inode and must start again on the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._record(fd)
                self._fd = fd
                return
            os.close(fd)
        raise LockedError(f"cannot take the lock {self.path}: it keeps changing; is another run starting?")

    def _acquire_pidfile(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(json.loads(self.path.read_text() or "{}").get("pid", 0))
                except (OSError, ValueError):
                    pid = 0
                if _pid_alive(pid):
                    self._refuse()
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its process is gone
                continue
            self._record(fd)
            self._fd = fd
            return
        raise LockedError(f"cannot take the lock {self.path}: it keeps changing; is another run starting?")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            self.path.unlink()  # unlink while still holding it, so no one locks a dying inode unseen
        with contextlib.suppress(OSError):
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
