"""What the study writes for people: a PSNR-vs-iteration curve per set, side-by-side crops
(noisy | CBM3D | plain BSN | APR | RD | official | clean) and the markdown tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aprrd_cli.training.records import read_log, val_points
from experiments.figures import pyplot, save
from experiments.study.scoring import LABELS

CURVE_MODELS = (("bsn", "plain BSN"), ("apr", "APR teacher"), ("rd", "RD student"))
LABEL_H = 13
GAP = 3


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(iteration, validation PSNR) of a run, from its log.jsonl."""
    log = run_dir / "log.jsonl"
    if not log.exists():
        return []
    return val_points(read_log(log))


def plot_curves(path: Path, title: str, curves: dict[str, list[tuple[int, float]]], lines: dict[str, float]) -> None:
    """PSNR-vs-iteration of the trained models, with flat reference lines (noisy input, official)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=90)
    for key, label in CURVE_MODELS:
        pts = curves.get(key) or []
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    for (label, value), style in zip(lines.items(), ("--", ":", "-."), strict=False):
        if np.isfinite(value):
            ax.axhline(value, ls=style, color="grey", lw=1)
            ax.text(0.01, value, f" {label} {value:.2f}", transform=ax.get_yaxis_transform(), va="bottom", fontsize=7)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def detail_window(gt: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side`` window with the most clean-image detail (gradient energy),
    on a grid of half-window steps: where a denoiser's smoothing or left-over noise shows."""
    g = gt.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = g.shape
    side = min(side, h, w)
    best, corner = -1.0, (0, 0)
    step = max(1, side // 2)
    for top in range(0, h - side + 1, step):
        for left in range(0, w - side + 1, step):
            e = float(energy[top : top + side - 1, left : left + side - 1].mean())
            if e > best:
                best, corner = e, (top, left)
    return corner


def _panel(img: np.ndarray, label: str) -> Image.Image:
    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + LABEL_H), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, LABEL_H))
    ImageDraw.Draw(canvas).text((2, 1), label, fill=(0, 0, 0), font=ImageFont.load_default())
    return canvas


def save_crops(path: Path, panels: list[tuple[np.ndarray, str]], corner: tuple[int, int], side: int) -> None:
    """One row of labelled crops, all cut at the same place."""
    top, left = corner
    parts = [_panel(np.ascontiguousarray(img[top : top + side, left : left + side]), lab) for img, lab in panels]
    width = sum(p.width for p in parts) + GAP * (len(parts) - 1)
    row = Image.new("RGB", (width, max(p.height for p in parts)), (255, 255, 255))
    x = 0
    for p in parts:
        row.paste(p, (x, 0))
        x += p.width + GAP
    path.parent.mkdir(parents=True, exist_ok=True)
    row.save(path, optimize=True)


def markdown_table(scores: dict[str, dict], notes: dict[str, str]) -> str:
    rows = ["| method | PSNR (dB) | SSIM | noise kept | notes |", "|---|---|---|---|---|"]
    for key, s in scores.items():
        kept = f"{s['noise_kept']:.3f}" if "noise_kept" in s else ""
        rows.append(f"| {LABELS.get(key, key)} | {s['psnr']:.2f} | {s['ssim']:.4f} | {kept} | {notes.get(key, '')} |")
    return "\n".join(rows)


def short_label(key: str) -> str:
    return {"cbm3d": "CBM3D", "official": "official", "apr": "APR", "rd": "RD", "bsn": "plain BSN"}.get(key, key)
