"""SIDD in its published layout: Medium training images, benchmark frames, validation and benchmark blocks.

Nothing here assumes the published counts (160 scenes, 40 x 32 blocks of 256 x 256): any
number of images, blocks and any block size are accepted, so small test trees work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aprrd_cli.data.matfile import read_mat_array
from aprrd_cli.data.parts import (
    Part,
    PartResult,
    begin_eval_set,
    eval_set_current,
    finish_eval_set,
    source_fingerprints,
)
from aprrd_cli.data.store import save_npy
from aprrd_cli.errors import InputError

MEDIUM = "SIDD_Medium_Srgb"
BENCH_DATA = "SIDD_Benchmark_Data"
VAL_DIR = "SIDD_Validation_sRGB"
BENCH_DIR = "SIDD_Benchmark_sRGB"
VAL_NOISY = "ValidationNoisyBlocksSrgb"
VAL_GT = "ValidationGtBlocksSrgb"
BENCH_NOISY = "BenchmarkNoisyBlocksSrgb"


def _dir(root: Path, name: str) -> Path | None:
    """``root/name``, or ``root`` itself when the user pointed at that folder directly."""
    if (root / name).is_dir():
        return root / name
    if root.name == name:
        return root
    return None


def _pngs(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))


def find(root: Path) -> list[Part]:
    """The SIDD parts present under ``root`` (possibly none)."""
    parts: list[Part] = []
    medium = _dir(root, MEDIUM)
    if medium is not None:
        data = medium / "Data" if (medium / "Data").is_dir() else medium
        part = Part("sidd-medium", "SIDD Medium noisy sRGB (training)", data, _pngs(data, "*_NOISY_SRGB_*.png"))
        if not part.sources:
            part.missing.append((data, "expected <scene>/<id>_NOISY_SRGB_010.png and _011.png images"))
        parts.append(part)
    frames = _dir(root, BENCH_DATA)
    if frames is not None:
        part = Part("sidd-bench-frames", "SIDD Benchmark full frames (training)", frames)
        part.sources = _pngs(frames, "*_NOISY_SRGB_010.png")
        if not part.sources:
            part.missing.append((frames, "expected <scene>/<id>_NOISY_SRGB_010.png images"))
        parts.append(part)

    val_dir = _dir(root, VAL_DIR)
    if val_dir is None and (root / f"{VAL_NOISY}.mat").is_file():
        val_dir = root
    if val_dir is not None and (
        (val_dir / f"{VAL_NOISY}.mat").exists() or (val_dir / f"{VAL_GT}.mat").exists() or val_dir.name == VAL_DIR
    ):
        part = Part("sidd-val", "SIDD validation blocks (noisy + GT)", val_dir)
        for stem in (VAL_NOISY, VAL_GT):
            f = val_dir / f"{stem}.mat"
            if f.is_file():
                part.sources.append(f)
            else:
                part.missing.append((f, f"missing; expected a MATLAB file with {stem}, uint8 [n, blocks, H, W, 3]"))
        parts.append(part)

    bench = [d / f"{BENCH_NOISY}.mat" for d in (_dir(root, BENCH_DIR), val_dir, root) if d is not None]
    bench = [f for f in bench if f.is_file()]
    bench_dir = _dir(root, BENCH_DIR)
    if bench:
        parts.append(Part("sidd-bench", "SIDD benchmark blocks (noisy)", bench[0].parent, [bench[0]]))
    elif bench_dir is not None:
        part = Part("sidd-bench", "SIDD benchmark blocks (noisy)", bench_dir)
        part.missing.append(
            (bench_dir / f"{BENCH_NOISY}.mat", f"missing; expected MATLAB file with variable {BENCH_NOISY}")
        )
        parts.append(part)
    return parts


def read_blocks(path: Path, var: str) -> np.ndarray:
    """A SIDD block file's array, checked: uint8 ``[n_images, n_blocks, H, W, 3]``."""
    arr = read_mat_array(path, var)
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: {var} is {arr.dtype}; expected uint8 sRGB blocks")
    if arr.ndim == 4 and arr.shape[-1] == 3:  # a single image's blocks
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] != 3 or min(arr.shape) == 0:
        raise InputError(f"{path}: {var} has shape {arr.shape}; expected [n_images, n_blocks, H, W, 3]")
    return arr


def prepare_val(part: Part, out: Path, result: PartResult) -> None:
    """``out/sidd-val/{noisy,gt}.npy`` + meta.json from the two validation files (one in memory at a time)."""
    result.found = 1
    if part.missing:
        for path, why in part.missing:
            result.skip(path, why)
        return
    noisy_f, gt_f = part.sources
    folder = out / "sidd-val"
    sources = source_fingerprints([noisy_f, gt_f])
    if eval_set_current(folder, sources, ("noisy.npy", "gt.npy")):
        result.unchanged = 1
        return
    # one file in memory at a time (~250 MB each for the published set)
    try:
        noisy = read_blocks(noisy_f, VAL_NOISY)
    except InputError as e:
        result.skip(noisy_f, str(e))
        return
    shape = noisy.shape
    begin_eval_set(folder)  # from here on the set is invisible until meta.json is written
    save_npy(folder / "noisy.npy", noisy)
    del noisy
    try:
        gt = read_blocks(gt_f, VAL_GT)
        if gt.shape != shape:
            raise InputError(f"{gt_f}: {VAL_GT} has shape {gt.shape}, the noisy blocks {shape}; they must match")
    except InputError as e:
        result.skip(gt_f, str(e))
        return
    save_npy(folder / "gt.npy", gt)
    del gt
    finish_eval_set(folder, "sidd-val", shape, "uint8", sources)
    result.prepared = 1


def prepare_bench(part: Part, out: Path, result: PartResult) -> None:
    """``out/sidd-bench/noisy.npy`` + meta.json from the benchmark blocks file."""
    result.found = 1
    if part.missing:
        for path, why in part.missing:
            result.skip(path, why)
        return
    (src,) = part.sources
    folder = out / "sidd-bench"
    sources = source_fingerprints([src])
    if eval_set_current(folder, sources, ("noisy.npy",)):
        result.unchanged = 1
        return
    try:
        noisy = read_blocks(src, BENCH_NOISY)
    except InputError as e:
        result.skip(src, str(e))
        return
    begin_eval_set(folder)
    save_npy(folder / "noisy.npy", noisy)
    finish_eval_set(folder, "sidd-bench", noisy.shape, "uint8", sources)
    result.prepared = 1
