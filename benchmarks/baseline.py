"""The BASELINE the benchmarks measure us against: APR-RD written the straightforward way.

This is the computation of docs/method.md sections 1-5 as the official release writes it, kept
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
    """The five-level UNet (docs/method.md section 2), blind or not."""

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
        arch, width = "atbsn", sd["unet.intro.conv.weight"].shape[0]
    elif "dec1_1.weight" in sd:
        arch, width = "nbsn-1.02M", sd["enc1.conv.weight"].shape[0]
    else:
        arch, width = "nbsn-1.00M", sd["unet.intro.conv.weight"].shape[0]
    base = BASELINES[arch](width=width)
    base.load_state_dict(sd, strict=True)
    return base.eval()


def baseline_infer(net: nn.Module, x: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Inference as the official test script does it: no_grad, float32, the teacher reflect-padded by 16."""
    with torch.no_grad():
        if isinstance(net, BaselineATBSN):
            xp = F.pad(x, (16, 16, 16, 16), mode="reflect")
            return net(xp, shift)[:, :, 16:-16, 16:-16]
        return net(x)


def baseline_tiled(net: nn.Module, x: torch.Tensor, core: int, margin: int) -> torch.Tensor:
    """A student over a large photo, tile by tile on the same windows as ours (``infer.tile_spans``).

    The official script runs whole images; a 12 MP photo does not fit in this machine's
    memory that way, so the baseline reuses our tiling and only the network differs.
    """
    from aprrd_cli.inference import padding_for, reflect_pad, tile_spans

    h, w = x.shape[-2:]
    t, b, lft, r = padding_for(h, w, 0)
    xp = reflect_pad(x, t, b, lft, r)
    H, W = xp.shape[-2:]
    out = torch.empty_like(xp)
    with torch.no_grad():
        for r0, r1, cr0, cr1 in tile_spans(H, core, margin):
            for c0, c1, cc0, cc1 in tile_spans(W, core, margin):
                y = net(xp[:, :, r0:r1, c0:c1])
                out[:, :, cr0:cr1, cc0:cc1] = y[:, :, cr0 - r0 : cr1 - r0, cc0 - c0 : cc1 - c0]
    return out[:, :, t : t + h, lft : lft + w]


# --- Training steps, the straightforward way -------------------------------------------------

_NINE = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
_PAIRS = [(i, j) for i in range(9) for j in range(9) if i != j]


def apr_replace(x: torch.Tensor, pair: torch.Tensor, which: int) -> torch.Tensor:
    """``h1`` (which=0) or ``h2`` (which=1) of APR: every pixel takes its drawn neighbour (clamped)."""
    dev = x.device
    table = torch.tensor([_NINE[p[which]] for p in _PAIRS], device=dev)
    off = table[pair.to(dev)]  # B x H x W x 2
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=dev).view(1, h, 1) + off[..., 0]).clamp(0, h - 1)
    cols = (torch.arange(w, device=dev).view(1, 1, w) + off[..., 1]).clamp(0, w - 1)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def apr_step(net: nn.Module, opt: torch.optim.Optimizer, y: torch.Tensor, gen: torch.Generator) -> float:
    """One APR iteration: two teacher calls at shift 5, the loss with gamma 4, backward, Adam."""
    opt.zero_grad()
    b, _, h, w = y.shape
    pair = torch.randint(0, len(_PAIRS), (b, h, w), generator=gen, device=gen.device)
    h1y, h2y = apr_replace(y, pair, 0), apr_replace(y, pair, 1)
    f_h1y = net(h1y, 5)
    f_y = net(y, 5)
    diff = f_h1y - h2y
    loss = diff.abs().mean() + 4.0 * (diff - (apr_replace(f_y, pair, 0) - apr_replace(f_y, pair, 1))).abs().mean()
    loss.backward()
    opt.step()
    return loss.item()


def rd_step(
    student: nn.Module, teacher: nn.Module, opt: torch.optim.Optimizer, y: torch.Tensor, gen: torch.Generator
) -> float:
    """One RD iteration: six teacher targets (pad 16), recharged, L1 to each, backward, Adam."""
    opt.zero_grad()
    b, _, h, w = y.shape
    choice = torch.randint(0, 6, (b, 1, h, w), generator=gen, device=gen.device)
    with torch.no_grad():
        yp = F.pad(y, (16, 16, 16, 16), mode="reflect")
        targets = [o[:, :, 16:-16, 16:-16] for o in teacher.forward_multi(yp, range(6))]
        targets = [torch.where(choice == s, y, t) for s, t in enumerate(targets)]
    out = student(y)
    loss = sum((out - t).abs().mean() for t in targets)
    loss.backward()
    opt.step()
    return loss.item()


class OfficialStyleLoader:
    """The official data loader's design: every image held in memory, and each sample crops
    all ``n_patches`` patches of an image (with one random flip/rotation) to return one."""

    def __init__(self, images: list, patch: int, n_patches: int = 200, seed: int = 0) -> None:
        import numpy as np

        self.np = np
        self.images = [np.array(im) for im in images]  # a private in-memory copy, as the official loader keeps
        self.patch = patch
        self.n_patches = n_patches
        self.rng = np.random.default_rng(seed)

    def sample(self, index: int) -> torch.Tensor:
        np = self.np
        img = self.images[index % len(self.images)]
        p = self.patch
        crops = []
        for _ in range(self.n_patches):
            top = int(self.rng.integers(0, img.shape[0] - p + 1))
            left = int(self.rng.integers(0, img.shape[1] - p + 1))
            crop = img[top : top + p, left : left + p]
            k = int(self.rng.integers(0, 8))
            crop = np.rot90(crop, k % 4)
            if k >= 4:
                crop = crop[:, ::-1]
            crops.append(np.ascontiguousarray(crop))
        patches = np.stack(crops)
        one = patches[int(self.rng.integers(0, self.n_patches))]
        return torch.from_numpy(one.transpose(2, 0, 1).astype(np.float32) / 255.0)
