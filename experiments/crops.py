"""Side-by-side crops of one photo: noisy | each model | ground truth, each model with its PSNR /
SSIM on the whole photo, for docs figures people would rather see than read::

    python -m experiments.crops --pairs ../shared/data/real/cc15 --image d800_iso6400_2.png \\
        --model "official=official" --model "adapted=RUNS/adapt/cc15/student.pth" \\
        --size 160 --out docs/results/adapt_cc15_crops.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def crop_at(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return img[top : top + size, left : left + size]


def main(argv: list[str] | None = None) -> int:
    from aprrd_cli.data.images import write_image
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.data.tensors import from_float, to_tensor
    from aprrd_cli.denoise import resolve_model
    from aprrd_cli.evaluation.metrics import psnr_ssim_uint8
    from aprrd_cli.evaluation.pictures import side_by_side
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model

    p = argparse.ArgumentParser(prog="python -m experiments.crops", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, required=True, help="folder with noisy/ and gt/")
    p.add_argument("--image", required=True, help="file name of the photo in noisy/")
    p.add_argument("--model", action="append", required=True, help="LABEL=CHECKPOINT_OR_NAME, in panel order")
    p.add_argument("--size", type=int, default=160, help="side of the crop, at the photo's centre")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)

    pairs = {name: (noisy, gt) for name, noisy, gt in load_pairs(a.pairs)}
    stem = Path(a.image).stem
    found = [k for k in pairs if Path(k).stem == stem]
    if not found:
        p.error(f"{a.image} is not among the pairs of {a.pairs}")
    noisy, gt = pairs[found[0]]
    size = min(a.size, *noisy.shape[:2])
    top, left = (noisy.shape[0] - size) // 2, (noisy.shape[1] - size) // 2
    panels = [(crop_at(noisy, top, left, size), "noisy")]
    gt_t = torch.from_numpy(np.array(gt)).permute(2, 0, 1)[None].double()  # a writable copy
    for spec in a.model:
        label, _, where = spec.partition("=")
        den = Denoiser(load_model(resolve_model(where)[0]).model, torch.device("cpu"))
        with torch.no_grad():
            out = den(to_tensor(noisy)).clamp(0, 1)
        psnr, ssim = (float(v[0]) for v in psnr_ssim_uint8(out, gt_t))
        img = from_float(out[0].permute(1, 2, 0).numpy(), "uint8")
        panels.append((crop_at(img, top, left, size), f"{label} {psnr:.2f}/{ssim:.3f}"))
        print(f"{label}: {psnr:.2f} dB / {ssim:.4f}")
    panels.append((crop_at(gt, top, left, size), "ground truth"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(a.out, side_by_side(panels))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
