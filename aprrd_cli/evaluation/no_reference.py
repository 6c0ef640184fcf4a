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
  two outputs; a model far from it on photos the official student handles well is suspect;
- **worse than doing nothing**, against the official student's output as a stand-in for the clean
  photo: the output farther from it than the noisy photo itself is, on a third of the photos or
  more; or noise removed well beyond what the official student removes (then detail goes too).
  On cc15, the official 1.02M student removes 0.99 times what the 1.00M removes and is never
  farther than the input; the cc15-trained teachers and students of docs/results.md that score
  below the noisy input remove 1.16 to 1.33 times as much, and the students are farther than the
  input on 7 and 9 of the 15 photos. Calibrated on one camera set: elsewhere a prompt to look.
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
REMOVED_RATIO_LIMIT = 1.15  # times the official student's removal: beyond it, detail is removed too
FARTHER_SHARE = 1 / 3  # of the photos farther from the official student's output than their noisy input


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
            rec["agreement_db"] = _psnr(out, ref)
            rec["input_agreement_db"] = _psnr(src, ref)
            rec["reference_removed"] = float((src - ref).std())
            rec["shift_from_reference"] = [float(v) for v in (out.mean(axis=(0, 1)) - ref.mean(axis=(0, 1)))]
        images.append(rec)
    return {"images": images, **summarise(images)}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


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
        out["warnings"].extend(_worse_than_input(images, out))
    return out


def _worse_than_input(images: list[dict], out: dict) -> list[str]:
    """The checks that take the official student's output for the clean photo (see the module's notes)."""
    warnings = []
    farther = [r["name"] for r in images if r["agreement_db"] < r["input_agreement_db"]]
    out["farther_than_input"] = len(farther)
    if farther and len(farther) >= FARTHER_SHARE * len(images):
        warnings.append(
            f"on {len(farther)} of {len(images)} photo(s) the output is farther from the official student's than "
            f"the noisy photo itself is (e.g. {farther[0]}): it may make them worse than the input; look at the "
            "pictures, train longer, or use --model official"
        )
    reference_removed = float(np.mean([r["reference_removed"] for r in images]))
    out["reference_removed"] = reference_removed
    if reference_removed > REMOVED_FLOOR and out["mean_removed"] > REMOVED_RATIO_LIMIT * reference_removed:
        warnings.append(
            f"it removes {out['mean_removed'] / reference_removed - 1:.0%} more than the official student "
            f"({out['mean_removed']:.2f} against {reference_removed:.2f} grey levels on average): beyond the noise, "
            "so detail goes too; on cc15 every model that did this scored below its noisy input (docs/results.md)"
        )
    return warnings


@torch.no_grad()
def crops_of(photos: Sequence[tuple[str, np.ndarray]], side: int = 512) -> list[tuple[str, np.ndarray]]:
    """The centre ``side`` x ``side`` of each photo: the check's cost bounded on 12 MP photos."""
    out = []
    for name, img in photos:
        h, w = img.shape[:2]
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        out.append((name, np.ascontiguousarray(img[top : top + side, left : left + side, :3])))
    return out
