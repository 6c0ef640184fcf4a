"""The BASELINE the benchmarks measure us against: APR-RD written the straightforward way.

This is the computation of METHOD sections 1-5 as the official release writes it, kept
here (and only used by the benchmarks) so that every speed-up we claim is measured
against it in the same run: eager float32, NCHW tensors, a blind layer as "pad one zero
row on top, 3x3 conv with padding 1, drop the last row", nearest upsampling followed by a
concatenation, the four rotations stacked in the batch (each rotation alone for a
non-square input), and ``torch.no_grad`` inference. Module names follow the official
state_dict keys, so the official checkpoints and ours load into it unchanged.

It is written from the method description for this project; nothing here is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.1


class ShiftDown(nn.Module):
    """A zero row on top and the last row dropped: the blind spot's one-row shift."""

    def __init__(self, rows: int = 1) -> None:
        super().__init__()
        self.rows = rows
        self.pad = nn.ZeroPad2d((0, 0, rows, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows == 0:
            return x
        return self.pad(x)[:, :, : x.shape[2], :]


class BaseConv(nn.Module):
    """3x3 conv + LeakyReLU; the blind one pads a row on top and crops the last row."""

    def __init__(self, cin: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.blind = blind
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blind:
            x = F.pad(x, (0, 0, 1, 0))
            x = self.conv(x)
            x = x[:, :, :-1, :]
        else:
            x = self.conv(x)
        return self.act(x)


class BasePool(nn.Module):
    def __init__(self, blind: bool) -> None:
        super().__init__()
        self.blind = blind
        self.shift = ShiftDown(1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.shift(x) if self.blind else x)


class BaseEnc(nn.Module):
    def __init__(self, cin: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(cin, cout, blind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class BaseDec(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int, blind: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(cin, cmid, blind)
        self.conv2 = BaseConv(cmid, cout, blind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class BaseUNet(nn.Module):
    """The five-level UNet (METHOD section 2), blind or not."""

    def __init__(self, n_out: int, blind: bool, width: int = 48, in_ch: int = 3) -> None:
        super().__init__()
        c = width
        self.intro = BaseConv(in_ch, c, blind)
        for i in range(1, 7):
            setattr(self, f"enc{i}", BaseEnc(c, c, blind))
        self.dec5 = BaseDec(2 * c, 2 * c, 2 * c, blind)
        self.dec4 = BaseDec(3 * c, 2 * c, 2 * c, blind)
        self.dec3 = BaseDec(3 * c, 2 * c, 2 * c, blind)
        self.dec2 = BaseDec(3 * c, 2 * c, 2 * c, blind)
        self.dec1 = BaseDec(2 * c + in_ch, 2 * c, n_out, blind)
        self.pool = BasePool(blind)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        z = self.intro(x)
        for i in range(1, 6):
            z = self.pool(getattr(self, f"enc{i}")(z))
            skips.append(z)
        z = self.enc6(skips.pop())
        for i in (5, 4, 3, 2, 1):
            z = getattr(self, f"dec{i}")(torch.cat((self.up(z), skips.pop()), 1))
        return z


def rotate(x: torch.Tensor, quarter: int) -> torch.Tensor:
    """Rotation by ``quarter`` x 90 degrees, with the reference's tensor operations."""
    if quarter == 1:
        return x.transpose(2, 3).flip(3)
    if quarter == 2:
        return x.flip(2).flip(3)
    if quarter == 3:
        return x.transpose(2, 3).flip(2)
    return x


def rotate_back(x: torch.Tensor, quarter: int) -> torch.Tensor:
    if quarter == 1:
        return x.transpose(2, 3).flip(2)
    if quarter == 2:
        return x.flip(2).flip(3)
    if quarter == 3:
        return x.transpose(2, 3).flip(3)
    return x


class BaselineATBSN(nn.Module):
    """The teacher: rotations stacked in the batch, the UNet, a k-row shift, un-rotate, 1x1 convs."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        c = width
        self.unet = BaseUNet(2 * c, blind=True, width=c)
        self.nin_A = nn.Conv2d(8 * c, 8 * c, 1)
        self.nin_B = nn.Conv2d(8 * c, 2 * c, 1)
        self.nin_C = nn.Conv2d(2 * c, 3, 1)
        self.act = nn.LeakyReLU(LEAK)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = x.shape[0]
        if x.shape[2] == x.shape[3]:
            stacked = torch.cat([rotate(x, q) for q in range(4)], 0)
            return list(torch.split(self.unet(stacked), n, 0))
        return [self.unet(rotate(x, q)) for q in range(4)]

    def head(self, feats: Sequence[torch.Tensor], shift: int) -> torch.Tensor:
        shifter = ShiftDown(shift)
        z = torch.cat([rotate_back(shifter(f), q) for q, f in enumerate(feats)], 1)
        return self.nin_C(self.act(self.nin_B(self.act(self.nin_A(z)))))

    def forward(self, x: torch.Tensor, shift: int = 1) -> torch.Tensor:
        return self.head(self.features(x), shift)

    def forward_multi(self, x: torch.Tensor, shifts: Sequence[int]) -> list[torch.Tensor]:
        feats = self.features(x)
        return [self.head(feats, s) for s in shifts]


class BaselineNBSN100(nn.Module):
    """The 1.00M student: the non-blind UNet with 3 outputs."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.unet = BaseUNet(3, blind=False, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)


class _Named(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class BaselineNBSN102(nn.Module):
    """The 1.02M student of the AT-BSN paper: plain UNet, linear last conv."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        c = width
        self.enc1 = _Named(3, c)
        for i in range(2, 7):
            setattr(self, f"enc{i}", _Named(c, c))
        self.dec5_2, self.dec5_1 = _Named(2 * c, 2 * c), _Named(2 * c, 2 * c)
        for i in (4, 3, 2, 1):
            setattr(self, f"dec{i}_2", _Named(3 * c, 2 * c))
        for i in (4, 3, 2):
            setattr(self, f"dec{i}_1", _Named(2 * c, 2 * c))
        self.dec1_1 = nn.Conv2d(2 * c, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        z = x
        for i in range(1, 6):
            z = getattr(self, f"enc{i}")(z)
            skips.append(z)
            z = self.pool(z)
        z = self.enc6(z)
        for i in (5, 4, 3, 2):
            z = torch.cat((self.up(z), skips.pop()), 1)
            z = getattr(self, f"dec{i}_1")(getattr(self, f"dec{i}_2")(z))
        z = torch.cat((self.up(z), skips.pop()), 1)
        return self.dec1_1(self.dec1_2(z))


BASELINES = {"atbsn": BaselineATBSN, "nbsn-1.00M": BaselineNBSN100, "nbsn-1.02M": BaselineNBSN102}


def baseline_like(model: nn.Module) -> nn.Module:
    """The baseline network holding the same weights as ``model`` (one of ours)."""
    base = BASELINES[model.arch](width=model.width)
    base.load_state_dict(model.state_dict(), strict=True)
    return base.eval()


def load_official(path: str | Path) -> nn.Module:
    """Load an official ``{'model_state_dict': ...}`` file into the baseline network."""
    sd = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    if "nin_A.weight" in sd:
        arch = "atbsn"
    elif "dec1_1.weight" in sd:
        arch = "nbsn-1.02M"
    else:
        arch = "nbsn-1.00M"
    base = BASELINES[arch]()
    base.load_state_dict(sd, strict=True)
    return base.eval()


def baseline_infer(net: nn.Module, x: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Inference as the official test script does it: no_grad, float32, the teacher reflect-padded by 16."""
    with torch.no_grad():
        if isinstance(net, BaselineATBSN):
            xp = F.pad(x, (16, 16, 16, 16), mode="reflect")
            return net(xp, shift)[:, :, 16:-16, 16:-16]
        return net(x)
