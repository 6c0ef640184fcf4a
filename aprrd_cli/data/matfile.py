"""MATLAB ``.mat`` variables, whichever of the two formats a file uses.

v5 files (SIDD's blocks) go through ``scipy.io.loadmat``; v7.3 files (DND's, and any file
re-saved with ``-v7.3``) are HDF5 behind a 512-byte MATLAB header and go through h5py.
MATLAB stores arrays column-major, so h5py sees every array with its axes reversed: the
readers here transpose back, so callers always get MATLAB's own axis order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aprrd_cli.errors import InputError, short_reason

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_v73(path: Path) -> bool:
    """True for a MATLAB v7.3 (HDF5) file: the HDF5 signature sits at offset 0 or 512."""
    try:
        with open(path, "rb") as f:
            head = f.read(520)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    return head[:8] == HDF5_MAGIC or head[512:520] == HDF5_MAGIC


def _damaged(path: Path, e: Exception) -> InputError:
    return InputError(f"{path}: not a readable MATLAB file ({short_reason(e)}); the file is damaged or truncated")


def open_h5(path: Path):
    """An open ``h5py.File`` for a v7.3 file, with a one-line error for anything else."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise _damaged(path, e) from e


def h5_dataset(f, path: Path, var: str):
    """The dataset ``var`` of an open v7.3 file, or an error naming the variables that are there."""
    import h5py

    node = f.get(var)
    if not isinstance(node, h5py.Dataset):
        found = ", ".join(repr(k) for k in f.keys() if not k.startswith("#")) or "none"
        raise InputError(f"{path}: no variable {var!r} (found: {found}); is this the right file?")
    return node


def read_mat_array(path: Path, var: str) -> np.ndarray:
    """Variable ``var`` of a ``.mat`` file (v5 or v7.3) as a numpy array in MATLAB's axis order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if is_v73(path):
        with open_h5(path) as f:
            ds = h5_dataset(f, path, var)
            try:
                arr = ds[()]
            except Exception as e:  # h5py raises several types for damaged chunks
                raise _damaged(path, e) from e
        return np.ascontiguousarray(arr.T) if isinstance(arr, np.ndarray) else np.asarray(arr)
    import scipy.io

    try:
        data = scipy.io.loadmat(path, variable_names=[var])
    except MemoryError as e:
        raise InputError(f"{path}: too large to load in memory") from e
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for damaged files
        raise _damaged(path, e) from e
    if var not in data:
        try:
            found = ", ".join(repr(name) for name, _, _ in scipy.io.whosmat(path)) or "none"
        except Exception:
            found = "unknown"
        raise InputError(f"{path}: no variable {var!r} (found: {found}); is this the right file?")
    return data[var]
