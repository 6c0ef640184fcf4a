"""Score every method of the study on one set's full pairs (PSNR / SSIM on uint8 images, as
``aprrd evaluate --pairs``), keeping each method's denoised images for the pictures.

Results are cached per method in ``OUT/SET/outputs/METHOD/scores.json`` (with the PNGs
beside it) and redone only when the model file is newer, so re-running the study after an
interruption or with a longer budget re-scores only what changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.console import console, progress
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.pairs import Pair
from aprrd_cli.evaluation.protocols import score_arrays, score_model
from aprrd_cli.utils.atomic import atomic_write_text

# (key, label in tables and pictures)
METHODS = (
    ("noisy", "noisy input"),
    ("cbm3d", "CBM3D (blind sigma)"),
    ("bsn", "plain BSN"),
    ("apr", "APR teacher"),
    ("apr_windows", "APR teacher, in windows"),
    ("rd", "RD student"),
    ("official", "official student (SIDD)"),
)
LABELS = dict(METHODS)


def _stem(name: str) -> str:
    return Path(name).stem + ".png"


def _cached(folder: Path, source: Path | None) -> dict | None:
    f = folder / "scores.json"
    if not f.exists():
        return None
    if source is not None and source.stat().st_mtime > f.stat().st_mtime:
        return None
    return json.loads(f.read_text())


def _save(folder: Path, result: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "scores.json", json.dumps(result, indent=1) + "\n")
    return result


def score_noisy(pairs: list[Pair], folder: Path) -> dict:
    return _cached(folder, None) or _save(folder, score_arrays([y for _, y, _ in pairs], pairs))


def score_cbm3d(pairs: list[Pair], folder: Path) -> dict:
    """Blind CBM3D per image; each result PNG is kept, so an interrupted run redoes only what is missing."""
    from experiments.study.cbm3d import cbm3d_blind

    cached = _cached(folder, None)
    if cached:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    outputs, sigmas, t0 = [], {}, time.perf_counter()
    with progress("image") as bar:
        task = bar.add_task("CBM3D", total=len(pairs))
        for name, noisy, _ in pairs:
            path = folder / _stem(name)
            sig_path = folder / (Path(name).stem + ".sigma")
            if path.exists() and sig_path.exists():
                out, sigma = read_image(path)[0], float(sig_path.read_text())
            else:
                out, sigma = cbm3d_blind(noisy)
                write_image(path, out)
                atomic_write_text(sig_path, f"{sigma!r}\n")
            outputs.append((name, out))
            sigmas[name] = sigma
            bar.advance(task)
    result = score_arrays([out for _, out in outputs], pairs)
    result["sigma"] = sigmas
    result["seconds"] = time.perf_counter() - t0
    return _save(folder, result)


def score_checkpoint(
    model_path: Path, pairs: list[Pair], folder: Path, device: torch.device, in_patch_windows: bool = False
) -> dict:
    """Denoise and score with a checkpoint (ours or the official format), saving the results as PNG.

    Whole images, as ``aprrd evaluate``; ``in_patch_windows`` runs the network in windows of
    its training patch size instead (``--patch-windows``).
    """
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model

    cached = _cached(folder, model_path)
    if cached:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model_path)
    console.print(f"scoring {model_path} ({loaded.kind}, {loaded.arch}) on {len(pairs)} pairs")

    def keep(name: str, noisy, den: np.ndarray, gt, p: float, s: float) -> None:
        write_image(folder / _stem(name), den)

    t0 = time.perf_counter()
    den = (
        Denoiser.for_loaded(loaded, device, in_patch_windows=True)
        if in_patch_windows
        else Denoiser(loaded.model, device)
    )
    result = score_model(den, pairs, on_image=keep)
    result["seconds"] = time.perf_counter() - t0
    result["model"] = str(model_path)
    result["iteration"] = loaded.iteration
    return _save(folder, result)


def denoised(folder: Path, name: str) -> np.ndarray:
    return read_image(folder / _stem(name))[0]


def noise_kept(out: np.ndarray, noisy: np.ndarray, gt: np.ndarray) -> float:
    """How much of the input's noise a result keeps: the least-squares slope of its error
    (out - gt) on the noise (noisy - gt). 1 for the noisy input itself, 0 for an error
    uncorrelated with the noise: a blind-spot network that learned to copy spatially
    correlated noise keeps a visibly larger share than one that did not."""
    n = noisy.astype(np.float64) - gt
    e = out.astype(np.float64) - gt
    n -= n.mean()
    return float((n * (e - e.mean())).sum() / max((n * n).sum(), 1e-12))


def mean_noise_kept(folder: Path | None, pairs: list[Pair]) -> float:
    """``noise_kept`` averaged over a method's saved results (``folder`` None: the noisy input)."""
    vals = [noise_kept(noisy if folder is None else denoised(folder, name), noisy, gt) for name, noisy, gt in pairs]
    return float(np.mean(vals))
