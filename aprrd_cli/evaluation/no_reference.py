"""A check of a denoiser on one's own noisy photos, without any clean image.

Self-supervised training on a CPU budget can give a model that makes photos worse than their
noisy input while its loss looks fine (docs/results.md: a student that shifted colours by up to
15 grey levels). Three things show it without a reference:

- **colour shift**: camera noise has (nearly) zero mean, so a denoiser keeps each channel's mean
  close to the input's; not exactly, since clipped darks and brights bias the noisy means (the
  official student moves them by up to 1.1 grey levels on cc15 and 7.9 on sidd7, where the clean
  references differ from the noisy photos by as much). A shift over 5 grey levels and over half
  the noise removed is flagged; against the official student's output the bar is 2 grey levels;
- **noise removed**: the standard deviation of ``noisy - output`` (grey levels): near zero, the
  model does nothing; far above the photos' noise level, it also removes detail;
- **agreement with the official student** (when its weights are at hand): the PSNR between the
  two outputs; a model far from it on photos the official student handles well is suspect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from aprrd_cli.data.tensors import to_tensor, to_uint8_hwc
from aprrd_cli.inference import Denoiser

COLOUR_SHIFT_LIMIT = 5.0  # grey levels from the input's means (and half the noise removed): the photo changed
REFERENCE_SHIFT_LIMIT = 2.0  # grey levels from the official student's output means
AGREEMENT_LIMIT = 30.0  # dB between our output and the official student's: below it, the two disagree a lot
REMOVED_FLOOR = 0.3  # grey levels of noise removed: below it the model leaves the photo as it was


def check_photos(
    denoiser: Denoiser, photos: Sequence[tuple[str, np.ndarray]], reference: Denoiser | None = None
) -> dict:
    """Per photo and overall: colour shift, noise removed, agreement with ``reference``; and warnings."""
    images = []
    for name, noisy in photos:
        x = to_tensor(noisy)
        out = to_uint8_hwc(denoiser(x)[0]).astype(np.float64)
        src = noisy.astype(np.float64)
        rec = {
            "name": name,
            "colour_shift": [float(v) for v in (out.mean(axis=(0, 1)) - src.mean(axis=(0, 1)))],
            "removed": float((src - out).std()),
        }
        if reference is not None:
            ref = to_uint8_hwc(reference(x)[0]).astype(np.float64)
            mse = float(((out - ref) ** 2).mean())
            rec["agreement_db"] = float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
            rec["shift_from_reference"] = [float(v) for v in (out.mean(axis=(0, 1)) - ref.mean(axis=(0, 1)))]
        images.append(rec)
    return {"images": images, **summarise(images)}


def summarise(images: list[dict]) -> dict:
    worst = max(images, key=lambda r: max(abs(v) for v in r["colour_shift"]))
    shift = max(abs(v) for v in worst["colour_shift"])
    out: dict = {
        "max_colour_shift": shift,
        "mean_abs_colour_shift": float(np.mean([np.abs(r["colour_shift"]).mean() for r in images])),
        "mean_removed": float(np.mean([r["removed"] for r in images])),
        "warnings": [],
    }
    shifted = [
        r for r in images if max(abs(v) for v in r["colour_shift"]) > max(COLOUR_SHIFT_LIMIT, 0.5 * r["removed"])
    ]
    if shifted:
        out["warnings"].append(
            f"the output's colour departs from the input's by more than {COLOUR_SHIFT_LIMIT:g} grey levels (and half "
            f"the noise removed) on {len(shifted)} of {len(images)} photo(s) (up to {shift:.1f}, {worst['name']}): "
            "camera noise has nearly zero mean, so this model changes the photos; train longer (docs/results.md) "
            "or use --model official"
        )
    off = [r for r in images if max(abs(v) for v in r.get("shift_from_reference", [0.0])) > REFERENCE_SHIFT_LIMIT]
    if off:
        most = max(max(abs(v) for v in r["shift_from_reference"]) for r in off)
        out["warnings"].append(
            f"the output's colour departs from the official student's by more than {REFERENCE_SHIFT_LIMIT:g} grey "
            f"levels on {len(off)} of {len(images)} photo(s) (up to {most:.1f}): look at the pictures before "
            "trusting it"
        )
    if out["mean_removed"] < REMOVED_FLOOR:
        out["warnings"].append(
            f"the model removes almost nothing (on average {out['mean_removed']:.2f} grey levels): it leaves the "
            "photos as they were"
        )
    agreements = [r["agreement_db"] for r in images if "agreement_db" in r]
    if agreements:
        out["min_agreement_db"] = float(min(agreements))
        out["mean_agreement_db"] = float(np.mean(agreements))
        far = [a for a in agreements if a < AGREEMENT_LIMIT]
        if far:
            out["warnings"].append(
                f"on {len(far)} of {len(agreements)} photo(s) the output is far from the official student's "
                f"(as close as {min(agreements):.1f} dB, under {AGREEMENT_LIMIT:g}); look at the pictures before "
                "trusting it"
            )
    return out


@torch.no_grad()
def crops_of(photos: Sequence[tuple[str, np.ndarray]], side: int = 512) -> list[tuple[str, np.ndarray]]:
    """The centre ``side`` x ``side`` of each photo: the check's cost bounded on 12 MP photos."""
    out = []
    for name, img in photos:
        h, w = img.shape[:2]
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        out.append((name, np.ascontiguousarray(img[top : top + side, left : left + side, :3])))
    return out
