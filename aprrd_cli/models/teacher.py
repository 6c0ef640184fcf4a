"""The AT-BSN teacher: a blind UNet run on four rotations, shifted, then mixed by 1x1 convs.

``shift`` is the reference's shift factor ``s`` (hole size ``2s - 1``; ``s = 0`` sees the
centre pixel). ``forward_multi`` runs the UNet once and returns the outputs for several
shift factors, which is what Recharged Distillation needs (docs/method.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.models.blocks import LEAK, in_fp32, init_weights, rot, shift_down, unrot
from aprrd_cli.models.constants import INFER_SHIFT
from aprrd_cli.models.unet import UNet


class ATBSN(nn.Module):
    """The teacher (1,268,547 parameters at width 48)."""

    kind = "teacher"
    arch = "atbsn"

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        c = width
        self.width = width
        self.reference_form = False  # blocks.use_reference_form
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
        orientation share a batch (same result as running each rotation alone). The reference
        form takes the second way for every shape, and halves the batches without reading their size.
        """
        if self.reference_form:
            even = self.unet(torch.cat((x, rot(x, 2)), 0)).chunk(2, 0)
            odd = self.unet(torch.cat((rot(x, 1), rot(x, 3)), 0)).chunk(2, 0)
            return [even[0], odd[0], even[1], odd[1]]
        b = x.shape[0]
        if x.shape[2] == x.shape[3]:
            feats = self.unet(torch.cat([rot(x, r) for r in range(4)], 0))
            return list(feats.split(b, 0))
        even = self.unet(torch.cat((x, rot(x, 2)), 0)).split(b, 0)
        odd = self.unet(torch.cat((rot(x, 1), rot(x, 3)), 0)).split(b, 0)
        return [even[0], odd[0], even[1], odd[1]]

    def _head(self, feats: list[torch.Tensor], shift: int) -> torch.Tensor:
        z = shifted_unrotated_cat(feats, shift, self.reference_form)
        z = F.leaky_relu(self.nin_A(z), LEAK, inplace=True)
        z = F.leaky_relu(self.nin_B(z), LEAK, inplace=True)
        return in_fp32(self.nin_C, z)  # the image itself: fp32 under autocast

    def forward(self, x: torch.Tensor, shift: int = INFER_SHIFT) -> torch.Tensor:
        if shift < 0:
            raise ValueError(f"shift factor must be >= 0, got {shift}")
        return self._head(self._unet_rotated(x), shift)

    def forward_multi(self, x: torch.Tensor, shifts: Sequence[int]) -> list[torch.Tensor]:
        """Outputs for several shift factors from one UNet pass."""
        feats = self._unet_rotated(x)
        return [self._head(feats, s) for s in shifts]


def shifted_unrotated_cat(feats: Sequence[torch.Tensor], k: int, reference_form: bool = False) -> torch.Tensor:
    """``cat([unrot(shift_down(f_r, k), r) for r], 1)`` written straight into one buffer.

    The shift drops the last ``k`` rows of the rotated frame; after un-rotating, those rows
    become a strip of zeros on one side of the result (top, left, bottom, right for r = 0..3).
    Only the kept rows are un-rotated and copied: no padded copies and no concatenation.
    ``reference_form``: the concatenation, whatever the grad mode.
    """
    if reference_form or torch.is_grad_enabled():
        # training: a copy into slices of one buffer makes autograd copy the whole gradient once per
        # slice; concatenation's backward is free views
        return torch.cat([unrot(shift_down(f, k), r) for r, f in enumerate(feats)], 1)
    b, c, h, w = feats[0].shape
    ref = feats[0]
    z = torch.empty((b, 4 * c, h, w), dtype=ref.dtype, device=ref.device, memory_format=torch.channels_last)
    for r, f in enumerate(feats):
        dst = z[:, r * c : (r + 1) * c]
        kk = min(k, f.shape[2])
        src = unrot(f[:, :, : f.shape[2] - kk], r)
        if r == 0:
            dst[:, :, kk:].copy_(src)
            dst[:, :, :kk].zero_()
        elif r == 1:
            dst[:, :, :, kk:].copy_(src)
            dst[:, :, :, :kk].zero_()
        elif r == 2:
            dst[:, :, : h - kk].copy_(src)
            dst[:, :, h - kk :].zero_()
        else:
            dst[:, :, :, : w - kk].copy_(src)
            dst[:, :, :, w - kk :].zero_()
    return z
