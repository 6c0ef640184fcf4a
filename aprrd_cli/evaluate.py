"""Evaluation protocols: folders of pairs, SIDD validation / benchmark and DND (METHOD section 6).

Every protocol scores as the field does (``aprrd_cli.metrics``: 8-bit, skimage's Gaussian
SSIM) and times only the network (seconds per megapixel of input, after one untimed
warm-up run so that start-up costs do not count). Same-size blocks are denoised in
batches; the optional x8 self-ensemble averages the outputs of the eight flips and
rotations, each mapped back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.console import warn
from aprrd_cli.data.images import from_float, is_image_path, read_image, to_float
from aprrd_cli.errors import InputError
from aprrd_cli.infer import Denoiser
from aprrd_cli.metrics import RADIUS, mean_or_nan, psnr_ssim_uint8, quantize
from aprrd_cli.submission import SiddOptionalData, write_dnd_image, write_sidd_submission

Pair = tuple[str, np.ndarray, np.ndarray]
# what the benchmark servers expect: images x blocks (or boxes) of H x W
FULL_SETS = {"sidd-bench": (40, 32, 256, 256), "dnd": (50, 20, 512, 512)}
MIN_SIDE = 2 * RADIUS + 1  # SSIM's window must fit
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# ---------------------------------------------------------------- inference


def _transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


@dataclass
class Stopwatch:
    """Network time per megapixel of input, the figure SIDD asks for (``TimeMPSrgb``)."""

    seconds: float = 0.0
    megapixels: float = 0.0

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / self.megapixels if self.megapixels else float("nan")


@dataclass
class Runner:
    """A Denoiser with the x8 self-ensemble option and timing."""

    denoiser: Denoiser
    ensemble: bool = False
    watch: Stopwatch = field(default_factory=Stopwatch)
    warmed: bool = False

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ensemble:
            return self.denoiser(x)
        acc = torch.zeros_like(x, dtype=torch.float32)
        for k in range(8):
            acc += _inverse(self.denoiser(_transform(x, k)), k)
        return acc / 8

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``B x 3 x H x W`` float [0, 1]; returns float32 on the CPU (not yet clipped)."""
        if not self.warmed:
            self.denoiser(x[:1, :, :64, :64])  # one small untimed run: lazy initialisation, kernel choice
            self.warmed = True
        t0 = time.perf_counter()
        y = self._run(x)
        self.watch.seconds += time.perf_counter() - t0  # y is on the CPU, so the device has finished
        self.watch.megapixels += x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6
        return y

    @property
    def metric_device(self) -> torch.device:
        """Score on the GPU when there is one (float64 SSIM), else on the CPU."""
        dev = self.denoiser.device
        return dev if dev.type == "cuda" else torch.device("cpu")


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``[B,] H x W x 3`` uint8 or float [0, 1] -> ``B x 3 x H x W`` float32 in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(a.astype(np.float32))  # a copy: memmaps and decoded images may be read-only
    t = t / 255.0 if a.dtype == np.uint8 else t.clamp(0.0, 1.0)
    return t.permute(0, 3, 1, 2).contiguous()


def to_uint8_hwc(y: torch.Tensor) -> np.ndarray:
    """``[B x] 3 x H x W`` float -> uint8 ``[B x] H x W x 3``, rounded as the metrics do."""
    q = quantize(y).to(torch.uint8)
    return q.movedim(-3, -1).numpy()


# ---------------------------------------------------------------- folders of pairs


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
        raise InputError(f"{pairs_dir / 'noisy'} holds no PNG, TIFF or JPEG images; {layout}")
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


OnImage = Callable[[str, np.ndarray, np.ndarray, np.ndarray, float, float], None]


def score_model(
    denoiser: Denoiser | Runner,
    pairs: list[Pair],
    ensemble: bool = False,
    on_image: OnImage | None = None,
) -> dict:
    """Denoise and score every pair: ``{"n", "psnr", "ssim", "seconds_per_megapixel", "images"}``.

    ``on_image(name, noisy, denoised_uint8, gt, psnr, ssim)`` is called after each image
    (progress, pictures). Training validation passes a plain Denoiser.
    """
    runner = denoiser if isinstance(denoiser, Runner) else Runner(denoiser, ensemble)
    images = []
    for name, noisy, gt in pairs:
        y = runner(to_tensor(noisy))
        dev = runner.metric_device
        clean = torch.tensor(gt).permute(2, 0, 1)[None]  # a copy: decoded images may be read-only
        p, s = psnr_ssim_uint8(y.to(dev), clean.to(dev))
        rec = {"name": name, "psnr": float(p[0]), "ssim": float(s[0])}
        images.append(rec)
        if on_image:
            on_image(name, noisy, to_uint8_hwc(y[0]), gt, rec["psnr"], rec["ssim"])
    return {
        "n": len(images),
        "psnr": mean_or_nan([r["psnr"] for r in images]),
        "ssim": mean_or_nan([r["ssim"] for r in images]),
        "seconds_per_megapixel": runner.watch.seconds_per_megapixel,
        "images": images,
    }


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
