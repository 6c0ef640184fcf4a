"""Side-by-side pictures (noisy | denoised | ground truth) for looking at results.

Numbers say how good a denoiser is on average; a picture shows *what* it does (left-over
noise, smeared texture, colour shifts). Each panel carries a label so a picture makes
sense on its own when shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from aprrd_cli.data.images import write_image
from aprrd_cli.evaluation.metrics import psnr

MAX_SIDE = 512  # larger images are shown as their centre crop, where detail stays visible
LABEL_HEIGHT = 18
GAP = 4


def centre_crop(img: np.ndarray, side: int = MAX_SIDE) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return img[top : top + side, left : left + side]


def _labelled(img: np.ndarray, label: str) -> np.ndarray:
    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    draw.text((3, 3), label, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(canvas)


def side_by_side(panels: list[tuple[np.ndarray, str]], caption: str | None = None) -> np.ndarray:
    """Label each ``H x W x 3`` uint8 image and join them left to right with a white gap; a
    ``caption`` (what made the picture) goes in a strip across the top."""
    parts = [_labelled(centre_crop(img), label) for img, label in panels]
    h = max(p.shape[0] for p in parts)
    gap = np.full((h, GAP, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for p in parts:
        if p.shape[0] < h:
            p = np.concatenate((p, np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)))
        row.extend((p, gap))
    joined = np.concatenate(row[:-1], axis=1)
    if caption is None:
        return joined
    return np.ascontiguousarray(_labelled(joined, caption))


def noisy_psnr(noisy: np.ndarray, gt: np.ndarray) -> float:
    """The noisy image's PSNR against its ground truth (8-bit, as the scores): the baseline a
    denoised score is read against."""
    return float(psnr(torch.from_numpy(noisy).permute(2, 0, 1)[None], torch.from_numpy(gt).permute(2, 0, 1)[None]))


def save_side_by_side(
    path: Path,
    noisy: np.ndarray,
    denoised: np.ndarray,
    gt: np.ndarray | None = None,
    scores: tuple[float, float] | None = None,
    caption: str | None = None,
) -> None:
    """Write ``noisy | denoised | ground truth`` (without ground truth when there is none) as PNG;
    with ground truth the noisy panel gives its own PSNR beside the denoised one's, and ``caption``
    names what denoised it (the model and whether the x8 self-ensemble was used)."""
    images = [noisy, denoised] + ([] if gt is None else [gt])
    write_image(path, side_by_side(list(zip(images, panel_labels(noisy, gt, scores), strict=True)), caption))


def panel_labels(noisy: np.ndarray, gt: np.ndarray | None, scores: tuple[float, float] | None) -> list[str]:
    """``noisy 30.12 dB``, ``denoised 36.40 dB / 0.9312``, ``ground truth`` (the scores where known)."""
    labels = ["noisy" if gt is None else f"noisy {noisy_psnr(noisy, gt):.2f} dB"]
    labels.append("denoised" if scores is None else f"denoised {scores[0]:.2f} dB / {scores[1]:.4f}")
    return labels + ([] if gt is None else ["ground truth"])
