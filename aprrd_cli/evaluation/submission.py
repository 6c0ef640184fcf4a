"""Submission files for the SIDD and DND benchmark servers, verified before they are kept.

The servers take MATLAB files of an exact layout and report a broken one only after an
upload (and DND limits submissions), so every file is read back with ``scipy.io.loadmat``
and checked inside ``atomic_path``: a file that would not read back right never appears.

SIDD (``SubmitSrgb.mat``): ``DenoisedBlocksSrgb``, a cell array images x blocks of uint8
256x256x3; ``TimeMPSrgb``, seconds per megapixel; ``OptionalData``, a struct with the
fields of the official demo (MethodName, Authors, PaperTitle, Venue, MachineSpecs) plus
ours (UsesGPU, Notes).

DND (as the official ``bundle_submissions_srgb``): one ``0001_01.mat`` per crop holding
``Idenoised_crop`` (float32 HxWx3), and ``bundled/0001.mat`` per image holding
``Idenoised`` (1 x n cell of its crops), ``israw = False`` and ``eval_version = "1.0"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from aprrd_cli.errors import AprrdError, short_reason
from aprrd_cli.utils.atomic import atomic_path


def _sio() -> ModuleType:
    """scipy.io, imported on first use: it costs every command about 0.2 s of start-up otherwise."""
    import scipy.io

    return scipy.io


SIDD_FILE = "SubmitSrgb.mat"
DND_BUNDLED = "bundled"
DND_EVAL_VERSION = "1.0"


@dataclass
class SiddOptionalData:
    """What SIDD's leaderboard shows beside the scores; users fill it by options."""

    method_name: str = "APR-RD"
    authors: str = ""
    paper_title: str = ""
    venue: str = ""
    machine_specs: str = ""
    uses_gpu: bool = False
    notes: str = ""

    def as_struct(self) -> dict:
        return {
            "MethodName": self.method_name,
            "Authors": self.authors,
            "PaperTitle": self.paper_title,
            "Venue": self.venue,
            "MachineSpecs": self.machine_specs,
            "UsesGPU": "yes" if self.uses_gpu else "no",
            "Notes": self.notes,
        }


def _cell(items: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """A numpy object array, which savemat writes as a MATLAB cell array."""
    cell = np.empty(shape, dtype=object)
    for i, item in enumerate(items):
        cell[np.unravel_index(i, shape)] = item
    return cell


def _load(path: Path, what: str) -> dict:
    try:
        return _sio().loadmat(path)
    except Exception as e:  # any failure to read back is a failed write
        raise AprrdError(f"{what} did not read back ({type(e).__name__}: {short_reason(e)}); nothing was kept") from e


def _check(ok: bool, what: str, detail: str) -> None:
    if not ok:
        raise AprrdError(f"{what} read back wrong ({detail}); nothing was kept")


def write_sidd_submission(out_dir: Path, blocks: np.ndarray, seconds_per_mp: float, optional: SiddOptionalData) -> Path:
    """Write and verify ``OUT/SubmitSrgb.mat`` from uint8 blocks ``[n_images, n_blocks, H, W, 3]``."""
    if blocks.dtype != np.uint8 or blocks.ndim != 5 or blocks.shape[-1] != 3:
        raise ValueError(f"blocks must be uint8 [images, blocks, H, W, 3], got {blocks.dtype} {blocks.shape}")
    n_img, n_blk = blocks.shape[:2]
    path = Path(out_dir) / SIDD_FILE
    data = {
        "DenoisedBlocksSrgb": _cell([blocks[i, j] for i in range(n_img) for j in range(n_blk)], (n_img, n_blk)),
        "TimeMPSrgb": float(seconds_per_mp),
        "OptionalData": optional.as_struct(),
    }
    with atomic_path(path) as tmp:
        _sio().savemat(tmp, data)
        back = _load(tmp, str(path))
        cells = back.get("DenoisedBlocksSrgb")
        _check(cells is not None and cells.shape == (n_img, n_blk), str(path), "DenoisedBlocksSrgb shape")
        for i in range(n_img):
            for j in range(n_blk):
                b = cells[i, j]
                _check(b.dtype == np.uint8 and b.shape == blocks.shape[2:], str(path), f"block ({i + 1}, {j + 1})")
                _check(np.array_equal(b, blocks[i, j]), str(path), f"block ({i + 1}, {j + 1}) values")
        _check(back.get("TimeMPSrgb") is not None and back["TimeMPSrgb"].size == 1, str(path), "TimeMPSrgb")
        od = back.get("OptionalData")
        _check(od is not None and od["MethodName"][0, 0][0] == optional.method_name, str(path), "OptionalData")
    return path


def dnd_crop_name(image: str, box: int) -> str:
    """``0001_01.mat``: the image's name and the 1-based box number, as the DND scripts name them."""
    return f"{image}_{box + 1:02d}.mat"


def write_dnd_image(out_dir: Path, image: str, crops: list[np.ndarray]) -> list[Path]:
    """Write and verify one image's crop files and its ``bundled/IMAGE.mat``; returns their paths."""
    out_dir = Path(out_dir)
    crops = [np.ascontiguousarray(np.clip(c, 0.0, 1.0), dtype=np.float32) for c in crops]
    written = []
    for k, crop in enumerate(crops):
        path = out_dir / dnd_crop_name(image, k)
        with atomic_path(path) as tmp:
            _sio().savemat(tmp, {"Idenoised_crop": crop})
            back = _load(tmp, str(path)).get("Idenoised_crop")
            _check(
                back is not None and back.dtype == np.float32 and back.shape == crop.shape,
                str(path),
                "Idenoised_crop dtype/shape",
            )
        written.append(path)
    bundle = out_dir / DND_BUNDLED / f"{image}.mat"
    data = {"Idenoised": _cell(crops, (1, len(crops))), "israw": False, "eval_version": DND_EVAL_VERSION}
    with atomic_path(bundle) as tmp:
        _sio().savemat(tmp, data)
        back = _load(tmp, str(bundle))
        cells = back.get("Idenoised")
        _check(cells is not None and cells.shape == (1, len(crops)), str(bundle), "Idenoised shape")
        for k, crop in enumerate(crops):
            c = cells[0, k]
            _check(c.dtype == np.float32 and c.shape == crop.shape, str(bundle), f"crop {k + 1}")
        _check(not back["israw"].any(), str(bundle), "israw")
        _check(str(back["eval_version"][0]) == DND_EVAL_VERSION, str(bundle), "eval_version")
    written.append(bundle)
    return written
