"""Conversions between the images' arrays (``H x W x C``, uint8 or float) and the networks'
tensors (``B x 3 x H x W`` float in [0, 1]), and the field's 8-bit rounding of an output."""

from __future__ import annotations

import numpy as np
import torch


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
