"""Evaluation protocols: folders of pairs, SIDD validation / benchmark and DND (docs/method.md
section 6), all built on one scorer of denoised images, ``score_arrays``.

Every protocol scores as the field does (``evaluation.metrics``: 8-bit, skimage's Gaussian
SSIM) and times only the network (``inference.Runner``: seconds per megapixel of input,
after an untimed warm-up). Same-size blocks are denoised in batches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.console import warn
from aprrd_cli.data.pairs import Pair
from aprrd_cli.data.tensors import to_tensor, to_uint8_hwc
from aprrd_cli.errors import InputError
from aprrd_cli.evaluation.metrics import mean_or_nan, psnr_ssim_uint8
from aprrd_cli.evaluation.submission import SiddOptionalData, write_dnd_image, write_sidd_submission
from aprrd_cli.inference import Denoiser, Runner

# what the benchmark servers expect: images x blocks (or boxes) of H x W
FULL_SETS = {"sidd-bench": (40, 32, 256, 256), "dnd": (50, 20, 512, 512)}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CPU = torch.device("cpu")


# ---------------------------------------------------------------- denoised images against references


def score_image(denoised: np.ndarray, clean: np.ndarray, device: torch.device = CPU) -> tuple[float, float]:
    """PSNR and SSIM of one denoised uint8 ``H x W x 3`` image against its uint8 reference."""
    d = torch.tensor(denoised).permute(2, 0, 1)[None]  # copies: decoded images may be read-only
    c = torch.tensor(clean).permute(2, 0, 1)[None]
    p, s = psnr_ssim_uint8(d.to(device), c.to(device))
    return float(p[0]), float(s[0])


def summarise(images: list[dict]) -> dict:
    """``{"n", "psnr", "ssim", "images"}``: the means over per-image records."""
    return {
        "n": len(images),
        "psnr": mean_or_nan([r["psnr"] for r in images]),
        "ssim": mean_or_nan([r["ssim"] for r in images]),
        "images": images,
    }


def score_arrays(outputs: Sequence[np.ndarray], pairs: Sequence[Pair], device: torch.device = CPU) -> dict:
    """Scores of denoised uint8 images (in the order of ``pairs``) against the pairs' references.

    The one place where results are compared with references: ``score_model`` (evaluate,
    training validation), the study, the demo's noisy row and the noise statistics call it.
    """
    records = []
    for out, (name, _, gt) in zip(outputs, pairs, strict=True):
        p, s = score_image(out, gt, device)
        records.append({"name": name, "psnr": p, "ssim": s})
    return summarise(records)


OnImage = Callable[[str, np.ndarray, np.ndarray, np.ndarray, float, float], None]


def score_model(
    denoiser: Denoiser | Runner,
    pairs: list[Pair],
    ensemble: bool = False,
    on_image: OnImage | None = None,
) -> dict:
    """Denoise and score every pair: ``{"n", "psnr", "ssim", "seconds_per_megapixel", "images"}``.

    ``on_image(name, noisy, denoised_uint8, gt, psnr, ssim)`` is called after each image
    (progress, pictures). Training validation passes a plain Denoiser. Images are denoised
    and scored one at a time, so a folder never has to fit in memory as outputs.
    """
    runner = denoiser if isinstance(denoiser, Runner) else Runner(denoiser, ensemble)
    records = []
    for pair in pairs:
        name, noisy, gt = pair
        out = to_uint8_hwc(runner(to_tensor(noisy))[0])
        rec = score_arrays([out], [pair], runner.metric_device)["images"][0]
        records.append(rec)
        if on_image:
            on_image(name, noisy, out, gt, rec["psnr"], rec["ssim"])
    return {**summarise(records), "seconds_per_megapixel": runner.watch.seconds_per_megapixel}


# ---------------------------------------------------------------- blocks of prepared sets


def check_complete(name: str, noisy: np.ndarray) -> None:
    """Warn before a long run when a benchmark set is not the full one the server expects."""
    want = FULL_SETS.get(name)
    have = tuple(int(n) for n in noisy.shape[:4])
    if want and have != want:
        warn(
            f"{name} holds {have[0]} images x {have[1]} blocks of {have[2]}x{have[3]}, but the benchmark "
            f"server expects {want[0]} x {want[1]} of {want[2]}x{want[3]}; it will reject these files "
            "(fine for a trial run)"
        )


def iter_blocks(
    runner: Runner, noisy: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
    """Denoise ``[n_images, n_blocks, H, W, 3]`` in batches of flat block indices.

    Yields ``(image index, block index, output)`` arrays for each batch; the memmap is
    read one batch at a time, so a set never has to fit in memory.
    """
    n_img, n_blk = noisy.shape[:2]
    flat = noisy.reshape(n_img * n_blk, *noisy.shape[2:])
    for start in range(0, n_img * n_blk, batch_size):
        idx = np.arange(start, min(start + batch_size, n_img * n_blk))
        y = runner(to_tensor(flat[idx[0] : idx[-1] + 1]))
        yield idx // n_blk, idx % n_blk, y


def image_names(meta: dict, n: int) -> list[str]:
    """The set's image names from its meta.json, else 1-based numbers as in the .mat files.

    Names become file names (DND's ``0001_01.mat``), so anything that could leave the
    output folder falls back to the numbers.
    """
    names = meta.get("images") if isinstance(meta, dict) else None
    if isinstance(names, list) and len(names) == n and all(_SAFE_NAME.fullmatch(str(x)) for x in names):
        return [str(x) for x in names]
    return [f"{i + 1:04d}" for i in range(n)]


@dataclass
class BlockScores:
    names: list[str]
    psnr: np.ndarray  # [n_images, n_blocks]
    ssim: np.ndarray
    seconds_per_megapixel: float

    def summary(self) -> dict:
        """The JSON report: means over all blocks, and per image with its blocks."""
        return {
            "n": int(self.psnr.size),
            "psnr": float(self.psnr.mean()),
            "ssim": float(self.ssim.mean()),
            "seconds_per_megapixel": self.seconds_per_megapixel,
            "images": [
                {
                    "name": name,
                    "psnr": float(self.psnr[i].mean()),
                    "ssim": float(self.ssim[i].mean()),
                    "blocks": {"psnr": self.psnr[i].tolist(), "ssim": self.ssim[i].tolist()},
                }
                for i, name in enumerate(self.names)
            ],
        }


OnBatch = Callable[[int], None]
OnBlock = Callable[[str, int, np.ndarray, np.ndarray, np.ndarray | None, tuple[float, float] | None], None]


def evaluate_sidd_val(
    runner: Runner,
    noisy: np.ndarray,
    gt: np.ndarray,
    meta: dict,
    batch_size: int = 8,
    on_batch: OnBatch | None = None,
    on_block: OnBlock | None = None,
) -> BlockScores:
    """PSNR/SSIM of every block; ``on_block(image, block, noisy, denoised, gt, scores)`` sees each."""
    if gt is None or gt.shape != noisy.shape:
        raise InputError("the sidd-val set has no ground truth of the noisy blocks' shape; re-run prepare-data")
    n_img, n_blk = noisy.shape[:2]
    names = image_names(meta, n_img)
    ps, ss = np.zeros((n_img, n_blk)), np.zeros((n_img, n_blk))
    dev = runner.metric_device
    for ii, bb, y in iter_blocks(runner, noisy, batch_size):
        clean = torch.tensor(gt[ii, bb]).permute(0, 3, 1, 2)
        p, s = psnr_ssim_uint8(y.to(dev), clean.to(dev))
        ps[ii, bb], ss[ii, bb] = p.cpu().numpy(), s.cpu().numpy()
        if on_block:
            out = to_uint8_hwc(y)
            for k, (i, b) in enumerate(zip(ii, bb, strict=True)):
                on_block(names[i], int(b), np.asarray(noisy[i, b]), out[k], np.asarray(gt[i, b]), (ps[i, b], ss[i, b]))
        if on_batch:
            on_batch(len(ii))
    return BlockScores(names, ps, ss, runner.watch.seconds_per_megapixel)


def run_sidd_bench(
    runner: Runner,
    noisy: np.ndarray,
    meta: dict,
    out_dir: Path,
    optional: SiddOptionalData,
    batch_size: int = 8,
    on_batch: OnBatch | None = None,
    on_block: OnBlock | None = None,
) -> tuple[Path, float]:
    """Denoise every benchmark block and write the verified ``SubmitSrgb.mat``; returns (path, s/MP)."""
    if noisy.dtype != np.uint8:
        raise InputError(f"the sidd-bench set holds {noisy.dtype}, expected uint8 blocks; re-run prepare-data")
    check_complete("sidd-bench", noisy)
    names = image_names(meta, noisy.shape[0])
    blocks = np.empty(noisy.shape, dtype=np.uint8)
    for ii, bb, y in iter_blocks(runner, noisy, batch_size):
        out = to_uint8_hwc(y)
        blocks[ii, bb] = out
        if on_block:
            for k, (i, b) in enumerate(zip(ii, bb, strict=True)):
                on_block(names[i], int(b), np.asarray(noisy[i, b]), out[k], None, None)
        if on_batch:
            on_batch(len(ii))
    spm = runner.watch.seconds_per_megapixel
    return write_sidd_submission(out_dir, blocks, spm, optional), spm


def run_dnd(
    runner: Runner,
    noisy: np.ndarray,
    meta: dict,
    out_dir: Path,
    batch_size: int = 8,
    on_batch: OnBatch | None = None,
    on_block: OnBlock | None = None,
) -> tuple[list[Path], float]:
    """Denoise every DND crop, writing each image's crop files and bundle as soon as it is done.

    Only one image's crops are held at a time (the whole set is 3 GB of float32).
    """
    check_complete("dnd", noisy)
    n_img, n_box = noisy.shape[:2]
    names = image_names(meta, n_img)
    written: list[Path] = []
    pending: dict[int, list[np.ndarray]] = {}
    for ii, bb, y in iter_blocks(runner, noisy, batch_size):
        out = y.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
        for k, (i, b) in enumerate(zip(ii, bb, strict=True)):
            pending.setdefault(int(i), []).append(out[k])
            if on_block:
                on_block(names[i], int(b), to_uint8_hwc(to_tensor(noisy[i, b])[0]), to_uint8_hwc(y[k]), None, None)
            if len(pending[int(i)]) == n_box:
                written += write_dnd_image(out_dir, names[i], pending.pop(int(i)))
        if on_batch:
            on_batch(len(ii))
    return written, runner.watch.seconds_per_megapixel
