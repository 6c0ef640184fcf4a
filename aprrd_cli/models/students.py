"""The two students (docs/method.md section 2): NBSN "1.00M" (default) and the AT-BSN paper's "1.02M"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.models.blocks import LEAK, channels_last, in_fp32, init_weights, up_cat_conv, upsample
from aprrd_cli.models.unet import UNet


class NBSN100(nn.Module):
    """The non-blind UNet with 3 outputs (1,003,011 parameters); its output passes a LeakyReLU."""

    kind = "student"
    arch = "nbsn-1.00M"

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.width = width
        self.unet = UNet(n_out=3, blind=False, width=width)
        init_weights(self)

    def config(self) -> dict:
        return {"width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)


class _Conv(nn.Module):
    """A named 3x3 conv so that keys read ``enc1.conv.weight`` as in the official file."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.full_precision = False  # under autocast: fp32 for the layer that reads the image (blocks.in_fp32)
        self.reference_form = False  # blocks.use_reference_form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_precision and torch.is_autocast_enabled(x.device.type):
            return in_fp32(self._plain, x)
        return self._plain(x)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), LEAK, inplace=not self.reference_form)

    def up_cat(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``self(cat(upsample(z), skip))``, folded (see ``blocks.up_cat_conv``)."""
        if self.reference_form:
            return self(torch.cat((upsample(z), skip), 1))
        return F.leaky_relu(up_cat_conv(self.conv, z, skip), LEAK, inplace=True)


class NBSN102(nn.Module):
    """The plain UNet of the AT-BSN paper (1,021,107 parameters); linear output."""

    kind = "student"
    arch = "nbsn-1.02M"

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        c = width
        self.width = width
        self.enc1 = _Conv(3, c)
        self.enc1.full_precision = True
        for i in range(2, 7):
            setattr(self, f"enc{i}", _Conv(c, c))
        self.dec5_2 = _Conv(2 * c, 2 * c)
        self.dec5_1 = _Conv(2 * c, 2 * c)
        for i in (4, 3, 2, 1):
            setattr(self, f"dec{i}_2", _Conv(3 * c, 2 * c))
        for i in (4, 3, 2):
            setattr(self, f"dec{i}_1", _Conv(2 * c, 2 * c))
        self.dec1_1 = nn.Conv2d(2 * c, 3, 3, padding=1)
        init_weights(self)

    def config(self) -> dict:
        return {"width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        z = channels_last(x)
        for i in range(1, 6):
            z = getattr(self, f"enc{i}")(z)
            skips.append(z)
            z = F.max_pool2d(z, 2)
        z = self.enc6(z)
        for i in (5, 4, 3, 2):
            z = getattr(self, f"dec{i}_1")(getattr(self, f"dec{i}_2").up_cat(z, skips[i - 1]))
        return in_fp32(self.dec1_1, self.dec1_2.up_cat(z, skips[0]))
