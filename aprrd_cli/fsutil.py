"""Atomic file writes: a reader never sees a half-written file, an interruption leaves none."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aprrd_cli.errors import AprrdError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the usual mode instead.
FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary file keeps the target's suffix (writers pick the format from it) and
    is removed on any error or interruption, so nothing half-written is ever left.
    """
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.",
            suffix=(suffix if suffix is not None else path.suffix) + ".part",
            dir=parent,
        )
    except OSError as e:
        raise AprrdError(f"cannot write in {parent}: {e.strerror or e}; choose a writable folder") from e
    os.close(fd)
    tmp_path = Path(tmp)
    with contextlib.suppress(OSError):
        os.chmod(tmp_path, FILE_MODE)
    try:
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
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise AprrdError(f"cannot write {path}: {e.strerror or e}; check free space and permissions") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
