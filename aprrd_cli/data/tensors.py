"""Pixel values: files' samples (uint8, uint16, float) to float [0, 1] and back, with the check that a
float file is on that scale; the images' arrays (``H x W x C``) to the networks' tensors
(``B x 3 x H x W`` float in [0, 1]); and the field's 8-bit rounding of an output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aprrd_cli.errors import InputError

# Float images must lie in [0, 1]. Small overshoots (rounding, a few highlights) are clipped with a
# warning; when at least FLOAT_REFUSE_FRACTION of the values lie outside FLOAT_REFUSE_RANGE the
# file was exported on another scale (0..255, 0..65535, -1..1) and is refused instead.
FLOAT_REFUSE_RANGE = (-0.5, 1.5)
FLOAT_REFUSE_FRACTION = 0.01


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> float64 integer values 0..255: clip, scale by 255, round half to even.

    The scaling and rounding happen in the input's own precision, so a float32 output
    quantizes to exactly the uint8 image ``aprrd denoise`` writes (``from_float``).
    """
    if not x.is_floating_point():
        return x.to(torch.float64)
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.float64)


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


def to_float(arr: np.ndarray, path: str | Path = "image") -> tuple[np.ndarray, int]:
    """Scale to float32 in [0, 1]; returns the array and how many values were clipped.

    NaN or infinite values are an error (they would spread through the network). Finite
    values outside [0, 1] (float files only) are clipped and counted, unless at least 1% of
    them lie outside [-0.5, 1.5]: then the file is on another scale (a 0..255 or 0..65535
    export) and clipping would wash it out, so it is refused with what was found.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 0
    a = arr.astype(np.float32, copy=True)
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} pixel values are NaN or infinite; fix or re-export the image")
    lo, hi = FLOAT_REFUSE_RANGE
    far = int(np.count_nonzero((a < lo) | (a > hi)))
    if far and far >= FLOAT_REFUSE_FRACTION * a.size:
        raise InputError(_wrong_scale_message(a, far, path))
    clipped = int(np.count_nonzero((a < 0) | (a > 1)))
    if clipped:
        np.clip(a, 0.0, 1.0, out=a)
    return a, clipped


def _wrong_scale_message(a: np.ndarray, far: int, path: str | Path) -> str:
    """What a float image on the wrong scale holds, and what to do about it, on one line."""
    lo, hi = FLOAT_REFUSE_RANGE
    high = int(np.count_nonzero(a > hi)) >= far / 2
    if high:
        top = float(a.max())
        found = f"values up to {top:.4g} (99th percentile {float(np.percentile(a, 99)):.4g})"
        scale = ""
        if 100 < top <= 255.5:
            scale = " (looks like a 0..255 export)"
        elif 1000 < top <= 65535.5:
            scale = " (looks like a 0..65535 export)"
    else:
        found = f"values down to {float(a.min()):.4g} (1st percentile {float(np.percentile(a, 1)):.4g})"
        scale = ""
    return (
        f"{path}: float {found}{scale}, {100 * far / a.size:.0f}% of them outside [{lo}, {hi}], but float images "
        "must lie in [0, 1]; re-export it as [0, 1] float or as 8/16-bit"
    )


def from_float(img: np.ndarray, dtype: str) -> np.ndarray:
    """Float [0, 1] to the target dtype: clip, then round for integers."""
    img = np.clip(img, 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(img * 255.0).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(img * 65535.0).astype(np.uint16)
    return img.astype(np.float32)
