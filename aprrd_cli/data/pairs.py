"""Folders of noisy/clean pairs (``DIR/noisy`` and ``DIR/gt``), the input of ``aprrd evaluate
--pairs``, of training validation (``--val``), of the study and of the demo's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aprrd_cli.console import warn
from aprrd_cli.data import formats
from aprrd_cli.data.images import is_image_path, read_image
from aprrd_cli.data.tensors import from_float, to_float
from aprrd_cli.errors import InputError

Pair = tuple[str, np.ndarray, np.ndarray]  # (name, noisy, clean), both uint8 H x W x 3
# the field's SSIM slides an 11-pixel Gaussian window (evaluation/metrics.py, 2 * RADIUS + 1):
# smaller images cannot be scored
MIN_SIDE = 11


def _as_rgb8(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """3-channel uint8 (the field scores 8-bit colour); True when it had to be converted."""
    converted = arr.dtype != np.uint8
    if converted:
        f, clipped = to_float(arr, path)
        if clipped:
            warn(f"{path}: {clipped} values outside [0, 1] were clipped")
        arr = from_float(f, "uint8")
    c = arr.shape[2]
    if c < 3:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3]), converted


def _images_by_stem(folder: Path, option: str) -> dict[str, str]:
    """The images of a pairs folder by name without extension (``x.png`` pairs with ``x.tif``)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and is_image_path(p) and not p.name.startswith("."))
    by_stem: dict[str, str] = {}
    for name in names:
        stem = Path(name).stem
        if stem in by_stem:
            raise InputError(
                f"{folder} holds {by_stem[stem]} and {name}: two images for one pair ({option} pairs files by name "
                "without extension); keep one of them"
            )
        by_stem[stem] = name
    return by_stem


def load_pairs(pairs_dir: Path, option: str = "--pairs") -> list[Pair]:
    """``(name, noisy, gt)`` for every image of ``DIR/noisy`` with its namesake in ``DIR/gt``.

    Partners share their name up to the extension (``noisy/x.png`` with ``gt/x.tif``). Both
    are uint8 H x W x 3 (16-bit or float files are rounded to 8 bits, grey is repeated,
    alpha dropped). Missing folders, an empty folder, names without a partner, size or
    colour mismatches are one-line errors naming ``option``, before any network runs.
    """
    pairs_dir = Path(pairs_dir)
    layout = f"{option} expects a folder with noisy/ and gt/ holding images of matching names"
    if not pairs_dir.is_dir():
        raise InputError(f"{pairs_dir}: no such folder; {layout}")
    for sub in ("noisy", "gt"):
        if not (pairs_dir / sub).is_dir():
            raise InputError(f"{pairs_dir} has no {sub}/ folder; {layout}")
    noisy_names, gt_names = _images_by_stem(pairs_dir / "noisy", option), _images_by_stem(pairs_dir / "gt", option)
    if not noisy_names:
        raise InputError(f"{pairs_dir / 'noisy'} holds no {formats.names()} images; {layout}")
    only_noisy = sorted(noisy_names[s] for s in set(noisy_names) - set(gt_names))
    only_gt = sorted(gt_names[s] for s in set(gt_names) - set(noisy_names))
    if only_noisy or only_gt:
        parts = []
        if only_noisy:
            parts.append(f"{len(only_noisy)} in noisy/ without a gt/ partner ({', '.join(only_noisy[:3])})")
        if only_gt:
            parts.append(f"{len(only_gt)} in gt/ without a noisy/ partner ({', '.join(only_gt[:3])})")
        raise InputError(
            f"{pairs_dir}: names do not match: {'; '.join(parts)}; give each pair the same file name "
            "(the extensions may differ)"
        )
    pairs, converted = [], 0
    for stem in sorted(noisy_names, key=lambda s: noisy_names[s]):
        arrays, kinds = [], []
        for sub, names in (("noisy", noisy_names), ("gt", gt_names)):
            path = pairs_dir / sub / names[stem]
            raw = read_image(path)[0]
            kinds.append("grey" if raw.shape[2] < 3 else "colour")
            arr, was_converted = _as_rgb8(raw, path)
            converted += was_converted
            arrays.append(arr)
        noisy, gt = arrays
        name = noisy_names[stem]
        if kinds[0] != kinds[1]:
            raise InputError(
                f"{pairs_dir}: {name} is {kinds[0]} in noisy/ but {gt_names[stem]} is {kinds[1]} in gt/; "
                "a pair must have the same colour channels (score grey against grey, colour against colour)"
            )
        if noisy.shape != gt.shape:
            raise InputError(
                f"{pairs_dir}: {name} is {noisy.shape[1]}x{noisy.shape[0]} in noisy/ but "
                f"{gt.shape[1]}x{gt.shape[0]} in gt/; the pair must have the same size"
            )
        if min(noisy.shape[:2]) < MIN_SIDE:
            raise InputError(f"{pairs_dir}: {name} is smaller than {MIN_SIDE} pixels on a side, too small for SSIM")
        pairs.append((name, noisy, gt))
    if converted:
        warn(f"{converted} image(s) were not 8-bit; they are scored as 8-bit images, as the field does")
    return pairs


def load_photos(folder: Path, option: str = "--photos") -> list[tuple[str, np.ndarray]]:
    """``(name, noisy)`` for the photos of a folder (any nesting), as 8-bit RGB like the pairs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; {option} expects a folder of noisy photos")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p) and not p.name.startswith("."))
    if not paths:
        raise InputError(f"{folder} holds no {formats.names()} images; {option} expects a folder of noisy photos")
    out = []
    for p in paths:
        arr, _ = _as_rgb8(read_image(p)[0], p)
        if min(arr.shape[:2]) < MIN_SIDE:
            raise InputError(f"{p} is smaller than {MIN_SIDE} pixels on a side, too small to check")
        out.append((str(p.relative_to(folder)), arr))
    return out
