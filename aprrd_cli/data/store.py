"""The prepared store: training images and evaluation sets as ``.npy`` files read through memory maps.

Layout of ``PREP/`` (the contract between ``prepare-data``, training and evaluation)::

    index.json                  version, training images (name, file, shape, dtype, group, source,
                                fingerprint) and the evaluation sets present
    train/<name>.npy            one H x W x 3 uint8/uint16 array per training image
    sidd-val/noisy.npy, gt.npy  uint8 [n_images, n_blocks, H, W, 3], plus meta.json
    sidd-bench/noisy.npy        uint8 [n_images, n_blocks, H, W, 3], plus meta.json
    dnd/noisy.npy               float32 [0, 1] [n_images, n_boxes, h, w, 3], plus meta.json

Arrays are opened with ``mmap_mode="r"``: the operating system pages in only the crops a
sampler touches, so training on 15 GB of SIDD Medium needs no more resident memory than
a few images' worth, and DataLoader workers share the pages instead of copying them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aprrd_cli.errors import AprrdError, short_reason
from aprrd_cli.utils.atomic import atomic_path, atomic_write_text

INDEX_VERSION = 1
INDEX_NAME = "index.json"
EVAL_SETS = ("sidd-val", "sidd-bench", "dnd")
# the files prepare-data needs under ROOT for each evaluation set (data/sidd.py, data/dnd.py)
EVAL_SOURCES = {
    "sidd-val": "SIDD_Validation_sRGB/ValidationNoisyBlocksSrgb.mat and ValidationGtBlocksSrgb.mat",
    "sidd-bench": "SIDD_Benchmark_sRGB/BenchmarkNoisyBlocksSrgb.mat",
    "dnd": "dnd_2017/info.mat and dnd_2017/images_srgb/0001.mat ... 0050.mat",
}
TRAIN_DIR = "train"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _prepare_hint(prep_dir: Path) -> str:
    return f"run `aprrd prepare-data ROOT --out {prep_dir}` first"


def safe_name(text: str, max_len: int = 120) -> str:
    """A file-name stem that cannot leave its folder: no separators, no leading dot, bounded length."""
    name = _SAFE.sub("_", text).strip("._-")
    if len(name) > max_len:
        name = name[-max_len:].lstrip("._-")
    return name or "image"


def inside(base: Path, relative: str) -> Path:
    """``base / relative``, refused unless it stays inside ``base`` (index files may be edited by hand)."""
    base_r = base.resolve()
    target = (base / relative).resolve()
    if target != base_r and base_r not in target.parents:
        raise AprrdError(f"{base / INDEX_NAME}: entry {relative!r} points outside {base}; re-run prepare-data")
    return target


def read_index(prep_dir: Path) -> dict[str, Any]:
    """The index of ``prep_dir``; an empty one when there is none yet."""
    path = prep_dir / INDEX_NAME
    if not path.exists():
        return {"version": INDEX_VERSION, "train": [], "eval": {}}
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AprrdError(f"{path} is unreadable ({e}); delete it and re-run prepare-data") from e
    if not isinstance(index, dict):
        kind = type(index).__name__
        raise AprrdError(f"{path} holds a JSON {kind}, not an aprrd index; delete it and re-run prepare-data")
    if index.get("version") != INDEX_VERSION:
        raise AprrdError(
            f"{path} was written by another version of aprrd (index version {index.get('version')!r}, "
            f"expected {INDEX_VERSION}); re-run prepare-data with a new --out folder"
        )
    index.setdefault("train", [])
    index.setdefault("eval", {})
    train = index["train"]

    def entry_ok(e: object) -> bool:
        return isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("file"), str)

    # hand-edited or damaged: every reader indexes these fields, so they are checked once, here
    if not isinstance(train, list) or not isinstance(index["eval"], dict) or not all(map(entry_ok, train)):
        raise AprrdError(
            f"{path} is malformed (each training entry needs a name and a file); delete it and re-run prepare-data"
        )
    return index


def write_index(prep_dir: Path, index: dict[str, Any]) -> None:
    index = dict(index, version=INDEX_VERSION)
    atomic_write_text(prep_dir / INDEX_NAME, json.dumps(index, indent=1) + "\n")


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Write one array atomically: an interruption leaves the old file or none, never half of one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)


def create_npy(tmp: Path, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
    """A writable memory-mapped ``.npy`` at ``tmp`` (inside an ``atomic_path``), filled piece by piece."""
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=shape)


def open_npy(path: Path) -> np.ndarray:
    """A read-only memory map of an ``.npy`` file, with a one-line error when it is damaged."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as e:
        raise AprrdError(f"{path} is missing from the prepared store; re-run prepare-data") from e
    except (OSError, ValueError) as e:
        raise AprrdError(f"{path} is damaged ({short_reason(e)}); delete it and re-run prepare-data") from e


@dataclass
class EvalSet:
    """An evaluation set: blocks (SIDD) or crops (DND), all of one size."""

    name: str  # "sidd-val" | "sidd-bench" | "dnd"
    noisy: np.ndarray  # memmap [n_images, n_blocks, H, W, 3]; uint8 (SIDD) or float32 [0,1] (DND)
    gt: np.ndarray | None  # same shape, sidd-val only
    meta: dict = field(default_factory=dict)


def open_eval_set(prep_dir: Path, name: str) -> EvalSet:
    """Open a prepared evaluation set by name, or say how to prepare it."""
    prep_dir = Path(prep_dir)
    if name not in EVAL_SETS:
        raise AprrdError(f"unknown evaluation set {name!r}; choose one of {', '.join(EVAL_SETS)}", exit_code=2)
    folder = prep_dir / name
    if not (folder / "noisy.npy").exists() or not (folder / "meta.json").exists():
        raise AprrdError(
            f"{prep_dir} holds no prepared {name} set; {_prepare_hint(prep_dir)}, "
            f"with ROOT holding {EVAL_SOURCES[name]}"
        )
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise AprrdError(f"{folder / 'meta.json'} is unreadable ({e}); re-run prepare-data") from e
    noisy = open_npy(folder / "noisy.npy")
    gt = open_npy(folder / "gt.npy") if name == "sidd-val" else None
    if noisy.ndim != 5 or noisy.shape[-1] != 3 or (gt is not None and gt.shape != noisy.shape):
        raise AprrdError(f"{folder}: arrays have unexpected shapes; delete the folder and re-run prepare-data")
    return EvalSet(name=name, noisy=noisy, gt=gt, meta=meta)


class TrainStore:
    """The training images of a prepared store, each a read-only memory map ``H x W x 3``.

    Pickling (DataLoader workers under the ``spawn`` start method) sends only the paths:
    each worker re-opens the maps instead of receiving a copy of the dataset.
    """

    def __init__(self, prep_dir: Path, entries: list[dict[str, Any]]) -> None:
        self.prep_dir = Path(prep_dir)
        self.entries = entries
        self.names: list[str] = [e["name"] for e in entries]
        self.images: list[np.ndarray] = []
        for e in entries:
            arr = open_npy(inside(self.prep_dir, e["file"]))
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype not in (np.uint8, np.uint16):
                raise AprrdError(
                    f"{self.prep_dir / e['file']}: expected H x W x 3 uint8/uint16, found {arr.shape} {arr.dtype}; "
                    "re-run prepare-data"
                )
            self.images.append(arr)

    def __len__(self) -> int:
        return len(self.images)

    def __reduce__(self) -> tuple:
        return (TrainStore, (self.prep_dir, self.entries))

    def crop(self, image: int, top: int, left: int, size: int) -> np.ndarray:
        """The ``size x size`` window at (top, left) of an image, as a new array.

        Read with one ``pread`` per row rather than through the memory map: a fault on a
        mapped file also maps up to 16 neighbouring pages, so a few hundred crops left about
        1 GB of the store resident (a long run, all of it), and faulting cost more than the
        copy (measured: 3,400 crops/s of 256^2 by pread against 650-950 through the map on a
        2 GB store once its pages are unmapped). Memory maps remain the fallback.
        """
        arr = self.images[image]
        path = getattr(arr, "filename", None)
        if path is None or not hasattr(os, "preadv") or not arr.flags.c_contiguous:
            return np.array(arr[top : top + size, left : left + size])
        h, w, c = arr.shape
        item = arr.dtype.itemsize
        out = np.empty((size, size, c), dtype=arr.dtype)
        rows = memoryview(out).cast("B")
        n = size * c * item
        start = arr.offset + (top * w + left) * c * item
        stride = w * c * item
        fd = os.open(path, os.O_RDONLY)
        try:
            for r in range(size):
                if os.preadv(fd, [rows[r * n : (r + 1) * n]], start + r * stride) != n:
                    raise AprrdError(f"{path}: shorter than its header says; re-run prepare-data")
        finally:
            os.close(fd)
        return out

    @property
    def min_side(self) -> int:
        return min(min(a.shape[:2]) for a in self.images)

    @property
    def pixels(self) -> int:
        return sum(a.shape[0] * a.shape[1] for a in self.images)


def open_train_store(prep_dir: Path, groups: list[str] | None = None) -> TrainStore:
    """Open the training images of ``prep_dir`` (optionally only some groups: ``sidd-medium``,
    ``sidd-bench-frames``, ``folder``), or say how to prepare them."""
    prep_dir = Path(prep_dir)
    if prep_dir.exists() and not prep_dir.is_dir():
        raise AprrdError(f"{prep_dir} is a file, not a prepared folder; {_prepare_hint('PREP')} and pass --data PREP")
    if not prep_dir.is_dir():
        raise AprrdError(f"{prep_dir}: no such folder; {_prepare_hint(prep_dir)}")
    entries = read_index(prep_dir)["train"]
    if groups is not None:
        entries = [e for e in entries if e.get("group") in groups]
    if not entries:
        which = f" of group {', '.join(groups)}" if groups else ""
        raise AprrdError(f"{prep_dir} holds no prepared training images{which}; {_prepare_hint(prep_dir)}")
    return TrainStore(prep_dir, entries)


def fingerprint(path: Path) -> str:
    """Size and modification time: changes whenever the file is rewritten, costs one ``stat``."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
