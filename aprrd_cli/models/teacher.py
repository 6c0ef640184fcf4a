"""The AT-BSN teacher: a blind UNet run on four rotations, shifted, then mixed by 1x1 convs.

``shift`` is the reference's shift factor ``s`` (hole size ``2s - 1``; ``s = 0`` sees the
centre pixel). ``forward_multi`` runs the UNet once and returns the outputs for several
shift factors, which is what Recharged Distillation needs (METHOD section 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.models.blocks import LEAK, init_weights, rot, shift_down, unrot
from aprrd_cli.models.unet import UNet

TRAIN_SHIFT = 5  # hole 9, both APR teacher calls (METHOD section 3)
INFER_SHIFT = 1  # hole 1 (METHOD section 5)


def hole_to_shift(hole: int) -> int:
    """The reference's ``k = (hole + 1) // 2``."""
    return (hole + 1) // 2


class ATBSN(nn.Module):
    """The teacher (1,268,547 parameters at width 48)."""

    kind = "teacher"
    arch = "atbsn"

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        c = width
        self.width = width
        self.unet = UNet(n_out=2 * c, blind=True, width=c)
        self.nin_A = nn.Conv2d(8 * c, 8 * c, 1)
        self.nin_B = nn.Conv2d(8 * c, 2 * c, 1)
        self.nin_C = nn.Conv2d(2 * c, 3, 1)
        init_weights(self)
        nn.init.kaiming_normal_(self.nin_C.weight, nonlinearity="linear")

    def config(self) -> dict:
        return {"width": self.width}

    def _unet_rotated(self, x: torch.Tensor) -> list[torch.Tensor]:
        """UNet features of the four rotations, each in its rotated frame.

        Square inputs go through in one batch; otherwise the two rotations of each
        orientation share a batch (same result as running each rotation alone).
        """
        b = x.shape[0]
        if x.shape[2] == x.shape[3]:
            feats = self.unet(torch.cat([rot(x, r) for r in range(4)], 0))
            return list(feats.split(b, 0))
        even = self.unet(torch.cat((x, rot(x, 2)), 0)).split(b, 0)
        odd = self.unet(torch.cat((rot(x, 1), rot(x, 3)), 0)).split(b, 0)
        return [even[0], odd[0], even[1], odd[1]]

    def _head(self, feats: list[torch.Tensor], shift: int) -> torch.Tensor:
        z = torch.cat([unrot(shift_down(f, shift), r) for r, f in enumerate(feats)], 1)
        z = F.leaky_relu(self.nin_A(z), LEAK)
        z = F.leaky_relu(self.nin_B(z), LEAK)
        return self.nin_C(z)

    def forward(self, x: torch.Tensor, shift: int = INFER_SHIFT) -> torch.Tensor:
        if shift < 0:
            raise ValueError(f"shift factor must be >= 0, got {shift}")
        return self._head(self._unet_rotated(x), shift)

    def forward_multi(self, x: torch.Tensor, shifts: Sequence[int]) -> list[torch.Tensor]:
        """Outputs for several shift factors from one UNet pass."""
        feats = self._unet_rotated(x)
        return [self._head(feats, s) for s in shifts]
