"""DND (``dnd_2017/``): MATLAB v7.3 images and the bounding boxes of the crops that are scored.

``info.mat`` holds ``info/boundingboxes``, a cell (one per image) of object references,
each to a ``n_boxes x 4`` array ``[x1 y1 x2 y2]``, 1-based and inclusive. As DND's own
scripts do, ``x`` indexes MATLAB's first dimension (rows) and ``y`` the second (columns).
``images_srgb/0001.mat ...`` hold ``InoisySRGB`` (H x W x 3 float). h5py sees both arrays
transposed. Only the boxes are read from each image (h5py reads just those chunks), one
image at a time, straight into a memory-mapped output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aprrd_cli.console import warn
from aprrd_cli.data.matfile import h5_dataset, is_v73, open_h5
from aprrd_cli.data.parts import (
    Part,
    PartResult,
    begin_eval_set,
    eval_set_current,
    finish_eval_set,
    source_fingerprints,
)
from aprrd_cli.data.store import create_npy
from aprrd_cli.errors import InputError
from aprrd_cli.utils.atomic import atomic_path

DND_DIR = "dnd_2017"
VAR = "InoisySRGB"


def find(root: Path) -> list[Part]:
    folder = root / DND_DIR if (root / DND_DIR).is_dir() else (root if root.name == DND_DIR else None)
    if folder is None:
        return []
    part = Part("dnd", "DND sRGB crops (noisy)", folder)
    info = folder / "info.mat"
    if info.is_file():
        part.sources.append(info)
    else:
        part.missing.append((info, "missing; expected MATLAB v7.3 file with info/boundingboxes"))
    if not (folder / "images_srgb").is_dir():
        part.missing.append((folder / "images_srgb", f"missing; expected folder of 0001.mat ... with {VAR}"))
    return [part]


def read_boxes(info: Path) -> list[np.ndarray]:
    """One ``n_boxes x 4`` int array per image, from info.mat's cell of object references."""
    import h5py

    if not is_v73(info):
        raise InputError(f"{info}: not a MATLAB v7.3 (HDF5) file; expected DND's info.mat")
    with open_h5(info) as f:
        group = f.get("info")
        bb = group.get("boundingboxes") if isinstance(group, h5py.Group) else None
        if not isinstance(bb, h5py.Dataset):
            raise InputError(f"{info}: no info/boundingboxes; expected DND's info.mat")
        if bb.dtype != h5py.ref_dtype:
            raise InputError(f"{info}: info/boundingboxes is {bb.dtype}, expected a cell of box arrays")
        boxes = []
        for i, ref in enumerate(np.asarray(bb[()]).ravel()):
            if not ref:
                raise InputError(f"{info}: box list {i + 1} is an empty reference")
            arr = np.asarray(f[ref][()]).T  # stored transposed: n_boxes x 4 in MATLAB
            if arr.ndim != 2 or arr.shape[1] != 4 or not np.all(np.isfinite(arr)):
                raise InputError(f"{info}: boxes of image {i + 1} have shape {arr.shape}; expected n_boxes x 4")
            if np.any(arr != np.round(arr)):
                raise InputError(f"{info}: boxes of image {i + 1} are not whole pixel coordinates")
            boxes.append(arr.astype(np.int64))
    if not boxes:
        raise InputError(f"{info}: info/boundingboxes is empty")
    return boxes


def _image_shape(path: Path) -> tuple[int, int, int]:
    """H x W x C of an image file's InoisySRGB, from the header only."""
    with open_h5(path) as f:
        ds = h5_dataset(f, path, VAR)
        if ds.ndim != 3 or ds.shape[0] != 3:
            raise InputError(f"{path}: {VAR} has (MATLAB) shape {ds.shape[::-1]}; expected H x W x 3")
        if ds.dtype.kind != "f":
            raise InputError(f"{path}: {VAR} is {ds.dtype}; expected float sRGB in [0, 1]")
        return ds.shape[2], ds.shape[1], ds.shape[0]


def _check_boxes(path: Path, boxes: np.ndarray, hw: tuple[int, int]) -> tuple[int, int]:
    """Every box inside the image, all of one size; returns that size (h, w)."""
    h, w = hw
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not (1 <= x1 <= x2 <= h and 1 <= y1 <= y2 <= w):
            raise InputError(
                f"{path}: box {k + 1} [{x1} {y1} {x2} {y2}] lies outside the {h} x {w} image "
                "(boxes are 1-based [x1 y1 x2 y2], x along rows)"
            )
    sizes = {(x2 - x1 + 1, y2 - y1 + 1) for x1, y1, x2, y2 in boxes.tolist()}
    if len(sizes) != 1:
        raise InputError(f"{path}: boxes have several sizes {sorted(sizes)}; expected all the same")
    return sizes.pop()


def prepare(part: Part, out: Path, result: PartResult) -> None:
    """``out/dnd/noisy.npy`` (float32 [n_images, n_boxes, h, w, 3]) + meta.json with names and boxes."""
    if part.missing:
        for path, why in part.missing:
            result.skip(path, why)
        return
    (info,) = part.sources
    try:
        all_boxes = read_boxes(info)
    except InputError as e:
        result.skip(info, str(e))
        return
    images_dir = part.where / "images_srgb"
    files = [images_dir / f"{i + 1:04d}.mat" for i in range(len(all_boxes))]
    result.found = len(files)

    # pass 1, headers only: which images are complete and agree on the number and size of boxes
    good: list[tuple[str, Path, np.ndarray]] = []
    crop: tuple[int, int] | None = None
    n_boxes: int | None = None
    for f, boxes in zip(files, all_boxes, strict=True):
        try:
            if not f.is_file():
                raise InputError(f"{f}: missing; info.mat lists boxes for it")
            if not is_v73(f):
                raise InputError(f"{f}: not a MATLAB v7.3 (HDF5) file; expected {VAR}")
            size = _check_boxes(f, boxes, _image_shape(f)[:2])
            if crop is not None and (size != crop or len(boxes) != n_boxes):
                raise InputError(
                    f"{f}: {len(boxes)} boxes of {size[0]} x {size[1]}, but earlier images have "
                    f"{n_boxes} of {crop[0]} x {crop[1]}"
                )
        except InputError as e:
            result.skip(f, str(e))
            continue
        crop, n_boxes = size, len(boxes)
        good.append((f.stem, f, boxes))
    if not good:
        return

    folder = out / "dnd"
    sources = source_fingerprints([info] + [f for _, f, _ in good])
    if eval_set_current(folder, sources, ("noisy.npy",)):
        result.unchanged = len(good)
        return
    begin_eval_set(folder)
    shape = (len(good), n_boxes, crop[0], crop[1], 3)
    clipped = 0
    try:
        with atomic_path(folder / "noisy.npy") as tmp:
            arr = create_npy(tmp, np.float32, shape)
            # pass 2: read only the boxes of each image; a failure here abandons the whole set (nothing is kept)
            for i, (_, f, boxes) in enumerate(good):
                with open_h5(f) as h:
                    ds = h[VAR]
                    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
                        try:
                            block = ds[:, y1 - 1 : y2, x1 - 1 : x2]  # (3, cols, rows) on disk
                        except Exception as e:
                            raise InputError(f"{f}: cannot read {VAR} ({str(e)[:80]}); the file is damaged") from e
                        block = block.T.astype(np.float32)
                        if not np.all(np.isfinite(block)):
                            raise InputError(f"{f}: box {k + 1} holds NaN or infinite values")
                        clipped += int(np.count_nonzero((block < 0) | (block > 1)))
                        np.clip(block, 0.0, 1.0, out=block)
                        arr[i, k] = block
            arr.flush()
            del arr
    except InputError as e:
        result.skip(part.where, str(e))
        return
    if clipped:
        warn(f"{part.where}: {clipped} values of the DND crops outside [0, 1] were clipped")
    finish_eval_set(
        folder,
        "dnd",
        shape,
        "float32",
        sources,
        images=[name for name, _, _ in good],
        boxes=[b.tolist() for _, _, b in good],
    )
    result.prepared = len(good)
