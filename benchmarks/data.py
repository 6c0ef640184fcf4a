"""The data benchmark: crops per second from a prepared store, ours against the official loader's design."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks import baseline as B
from benchmarks.context import Context
from benchmarks.harness import Row, Section


def write_store(folder: Path, shapes: list[tuple[int, int]], seed: int = 0, block_mb: int = 64) -> None:
    """A prepared store of random uint8 images (``train/*.npy`` + ``index.json``), written block by block."""
    from aprrd_cli.data.store import fingerprint, write_index

    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, size=block_mb << 20, dtype=np.uint8)
    entries = []
    for i, (h, w) in enumerate(shapes):
        path = folder / "train" / f"img{i}.npy"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(h, w, 3))
        flat = arr.reshape(-1)
        for s in range(0, flat.size, block.size):
            n = min(block.size, flat.size - s)
            flat[s : s + n] = np.roll(block, i * 7919 + s // block.size)[:n]
        arr.flush()
        del arr, flat
        entries.append(
            {
                "name": f"img{i}",
                "file": f"train/img{i}.npy",
                "shape": [h, w, 3],
                "dtype": "uint8",
                "group": "folder",
                "source": f"random{i}",
                "fingerprint": fingerprint(path),
            }
        )
    write_index(folder, {"train": entries, "eval": {}})


def sampler(ctx: Context) -> Section:
    from aprrd_cli.data.sampler import PatchSampler
    from aprrd_cli.data.store import open_train_store

    store_dir = ctx.tmp / "store_small"
    write_store(store_dir, [(3000, 4000)] * (2 if ctx.quick else 4))
    store = open_train_store(store_dir)
    batch = 8
    smp = PatchSampler(store, 256, batch, seed=0)
    sec = Section(
        "Sampler",
        "Random 256x256 crops with a flip/rotation, as float32 [0, 1] tensors, from a prepared store of "
        f"{len(store)} 4000x3000 images. Ours: `data.sampler.PatchSampler` (one `pread` per crop row, one crop "
        "per sample); "
        "baseline: the official loader's design (all images in memory, 200 patches cropped per sample, one kept).",
        target=">= 500 crops/s in one process, scaling with workers",
    )
    off = B.OfficialStyleLoader([np.asarray(a) for a in store.images], 256)
    n_base = 3 if ctx.quick else 10
    t0 = time.perf_counter()
    for i in range(n_base):
        off.sample(i)
    base_rate = n_base / (time.perf_counter() - t0)
    steps = 20 if ctx.quick else 100
    smp.batch(0)
    t0 = time.perf_counter()
    for s in range(steps):
        smp.batch(s)
    ours_rate = steps * batch / (time.perf_counter() - t0)
    sec.rows.append(Row("one process", base_rate, ours_rate, unit="crops/s", higher_is_better=True))
    ok = ours_rate >= 500
    for workers in (1, 2):
        it = smp.loader(0, num_workers=workers)
        for _ in range(2 * workers + 1):  # workers started and the queue primed
            next(it)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        rate = steps * batch / (time.perf_counter() - t0)
        del it
        sec.rows.append(Row(f"DataLoader, {workers} worker(s)", None, rate, unit="crops/s", higher_is_better=True))
    sec.notes.append(
        f"{os.cpu_count()} CPU cores here: more workers than cores cannot scale, and the other engineers' "
        "jobs share them"
    )
    sec.passed = None if ctx.quick else ok
    return sec
