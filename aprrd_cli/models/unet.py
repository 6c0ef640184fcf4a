"""The five-level UNet shared by the teacher (blind) and the 1.00M student (docs/method.md section 2).

Module names match the official state_dict keys (``unet.enc1.conv1.conv.weight`` ...),
so official checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from aprrd_cli.models.blocks import ConvBlock, channels_last, pool


class Enc(nn.Module):
    def __init__(self, cin: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.conv1 = ConvBlock(cin, cout, blind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class Dec(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.conv1 = ConvBlock(cin, cmid, blind)
        self.conv2 = ConvBlock(cmid, cout, blind)

    def forward(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The two convs on ``cat(upsample(z), skip)``."""
        return self.conv2(self.conv1.up_cat(z, skip))


class UNet(nn.Module):
    """Width-48 UNet; inputs must be multiples of 32 in height and width."""

    def __init__(self, n_out: int, blind: bool, width: int = 48, in_ch: int = 3) -> None:
        super().__init__()
        c = width
        self.blind = blind
        self.reference_form = False  # blocks.use_reference_form
        self.intro = ConvBlock(in_ch, c, blind)
        self.enc1 = Enc(c, c, blind)
        self.enc2 = Enc(c, c, blind)
        self.enc3 = Enc(c, c, blind)
        self.enc4 = Enc(c, c, blind)
        self.enc5 = Enc(c, c, blind)
        self.enc6 = Enc(c, c, blind)
        self.dec5 = Dec(2 * c, 2 * c, 2 * c, blind)
        self.dec4 = Dec(3 * c, 2 * c, 2 * c, blind)
        self.dec3 = Dec(3 * c, 2 * c, 2 * c, blind)
        self.dec2 = Dec(3 * c, 2 * c, 2 * c, blind)
        self.dec1 = Dec(2 * c + in_ch, 2 * c, n_out, blind)
        # under autocast, what reads the image itself or makes it stays fp32 (blocks.in_fp32)
        self.intro.full_precision = True
        self.dec1.conv1.image_skip = True
        self.dec1.conv2.full_precision = n_out == 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ref = self.blind, self.reference_form
        x = channels_last(x)
        x0 = self.intro(x)
        x1 = pool(self.enc1(x0), b, ref)
        x2 = pool(self.enc2(x1), b, ref)
        x3 = pool(self.enc3(x2), b, ref)
        x4 = pool(self.enc4(x3), b, ref)
        x5 = pool(self.enc5(x4), b, ref)
        z = self.enc6(x5)
        z = self.dec5(z, x4)
        z = self.dec4(z, x3)
        z = self.dec3(z, x2)
        z = self.dec2(z, x1)
        return self.dec1(z, x)
