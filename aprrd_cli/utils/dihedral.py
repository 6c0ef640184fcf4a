"""The 8 flips/rotations of an image tensor and their inverses: the x8 self-ensemble of
inference (``inference.Runner``) and the targets of self-ensemble distillation
(``losses/ensemble.py``) use the same maps."""

from __future__ import annotations

import torch


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of ``... x H x W`` (k = 0 is the identity)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def undo_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of ``dihedral(., k)``."""
    y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y
