"""Building blocks shared by the teacher and the students (METHOD section 1).

The blind-spot variants look only at rows above (and including) their own: the
"one zero row on top, drop the last row" shift of the reference is folded into the
convolution's own padding (2 rows on top, none below), which gives the same numbers
without a pad and a crop per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.1


class ConvBlock(nn.Module):
    """3x3 conv + LeakyReLU(0.1), blind (sees only rows i-2..i) or normal."""

    def __init__(self, cin: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.blind = blind
        self.conv = nn.Conv2d(cin, cout, 3, padding=0 if blind else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blind:
            x = F.pad(x, (1, 1, 2, 0))
        return F.leaky_relu(self.conv(x), LEAK)


def pool(x: torch.Tensor, blind: bool) -> torch.Tensor:
    """2x2 max-pool; the blind one shifts down one row (zero row on top) first."""
    if blind:
        x = shift_down(x, 1)
    return F.max_pool2d(x, 2)


def shift_down(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad ``k`` zero rows on top and drop the last ``k`` rows."""
    if k == 0:
        return x
    return F.pad(x, (0, 0, k, 0))[:, :, : x.shape[2], :]


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# Rotations exactly as the reference writes them (METHOD section 1).
def rot(x: torch.Tensor, r: int) -> torch.Tensor:
    if r == 0:
        return x
    if r == 1:
        return x.transpose(2, 3).flip(3)
    if r == 2:
        return x.flip(2).flip(3)
    return x.transpose(2, 3).flip(2)


def unrot(z: torch.Tensor, r: int) -> torch.Tensor:
    if r == 0:
        return z
    if r == 1:
        return z.transpose(2, 3).flip(2)
    if r == 2:
        return z.flip(2).flip(3)
    return z.transpose(2, 3).flip(3)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (a=0.1) conv weights, zero biases, as the reference does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=LEAK)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
