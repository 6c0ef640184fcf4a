"""APR, the Adjacent Pixel Replacer, and its loss (docs/method.md section 3).

Every pixel of every image independently draws one ordered pair of DIFFERENT offsets
``(o1, o2)`` of the 3x3 window (72 pairs; the centre may be one of them). ``h1`` moves the
pixel at ``clamp(p + o1)`` to ``p``, ``h2`` the one at ``clamp(p + o2)``, all channels
together, and the same draw is applied to the noisy batch ``y`` and to the teacher's
output ``f(y)``. The draw is a pure function of an explicit ``torch.Generator`` so that
tests can pin it and a resumed run repeats it; the gathers run on the tensors' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aprrd_cli.models.constants import TRAIN_SHIFT

GAMMA = 4.0

# The 9 offsets (drow, dcol) of the 3x3 window and the 72 ordered pairs of distinct ones.
OFFSETS = torch.tensor([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)], dtype=torch.long)
PAIRS = torch.tensor([(i, j) for i in range(9) for j in range(9) if i != j], dtype=torch.long)
N_PAIRS = len(PAIRS)  # 72
_ON_DEVICE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PAIRS and OFFSETS on ``device``, copied there once: a copy per step would make every
    training step wait for the GPU."""
    if device not in _ON_DEVICE:
        with torch.inference_mode(False):
            _ON_DEVICE[device] = (PAIRS.to(device), OFFSETS.to(device))
    return _ON_DEVICE[device]


@dataclass(frozen=True)
class APRDraw:
    """One draw for a batch: flat source indices (``B x H*W``) of ``h1`` and ``h2``."""

    pair: torch.Tensor  # B x H x W, the drawn pair's number in PAIRS (0..71)
    src1: torch.Tensor  # B x H*W, flat index of the pixel h1 puts at each position
    src2: torch.Tensor  # B x H*W, same for h2

    def h1(self, x: torch.Tensor) -> torch.Tensor:
        return replace(x, self.src1)

    def h2(self, x: torch.Tensor) -> torch.Tensor:
        return replace(x, self.src2)

    def rows(self, start: int, stop: int) -> APRDraw:
        """The draw of images ``start:stop`` of the batch (a DDP rank's share)."""
        return APRDraw(self.pair[start:stop], self.src1[start:stop], self.src2[start:stop])

    @classmethod
    def from_pairs(cls, pair: torch.Tensor) -> APRDraw:
        """The draw given its pair numbers (``B x H x W``, 0..71, on the device the gathers run on):
        what ``draw`` samples, and how a recorded draw (another implementation's) is replayed."""
        batch, height, width = pair.shape
        dev = pair.device
        pair = pair.long()
        pairs, offsets = _tables(dev)
        rows = torch.arange(height, device=dev).view(1, height, 1)
        cols = torch.arange(width, device=dev).view(1, 1, width)

        def source(which: int) -> torch.Tensor:
            off = offsets[pairs[pair, which]]  # B x H x W x 2
            r = (rows + off[..., 0]).clamp_(0, height - 1)
            c = (cols + off[..., 1]).clamp_(0, width - 1)
            return (r * width + c).view(batch, height * width)

        return cls(pair, source(0), source(1))


def draw(batch: int, height: int, width: int, generator: torch.Generator) -> APRDraw:
    """Draw an offset pair for every pixel, on the generator's device."""
    pair = torch.randint(0, N_PAIRS, (batch, height, width), generator=generator, device=generator.device)
    return APRDraw.from_pairs(pair)


def replace(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[b, :, p] = x[b, :, src[b, p]]``: move whole pixels (all channels) at once.

    A channels-last tensor is gathered as pixels of C values and stays channels-last (the
    networks' layout); any other is gathered per channel.
    """
    b, c, h, w = x.shape
    src = src.to(x.device)
    if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: NHWC is this tensor's memory order
        out = pixels.gather(1, src.unsqueeze(2).expand(b, h * w, c))
        return out.view(b, h, w, c).permute(0, 3, 1, 2)
    index = src.unsqueeze(1).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


def apr_loss(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """``mean|a - b| + gamma * mean|a - b - (c - d)|`` with a = f(h1(y)), b = h2(y), c = h1(f(y)), d = h2(f(y))."""
    diff = a - b
    return diff.abs().mean() + gamma * (diff - (c - d)).abs().mean()


def apr_step_loss(
    model: nn.Module,
    y: torch.Tensor,
    generator: torch.Generator,
    *,
    gamma: float = GAMMA,
    shift: int = TRAIN_SHIFT,
    stop_grad: bool = False,
    share: tuple[int, int] = (0, 1),
    drawn: APRDraw | None = None,
) -> torch.Tensor:
    """L_APR of one training batch (both teacher calls at shift factor 5), in float32
    even when the network runs under autocast.

    ``share = (rank, world_size)``: under DDP each rank holds a slice of the global batch;
    the draw is made for the whole global batch (same generator on every rank) and the
    rank takes its rows, so W ranks see exactly the draw one process would.
    ``stop_grad`` computes ``f(y)`` without gradients: a documented departure from the
    reference (cheaper; off by default).
    ``drawn``: the global batch's draw, given instead of sampled (a replay of a recorded
    draw; the generator is then left untouched).
    """
    rank, world = share
    b, _, h, w = y.shape
    if drawn is None:
        drawn = draw(b * world, h, w, generator)
    elif tuple(drawn.pair.shape) != (b * world, h, w):
        raise ValueError(f"a given draw of shape {tuple(drawn.pair.shape)} does not fit the batch {b * world}x{h}x{w}")
    d = drawn.rows(rank * b, (rank + 1) * b)
    h1y = d.h1(y)
    if stop_grad:
        with torch.no_grad():
            fy = model(y, shift).float()
        fh1 = model(h1y, shift).float()
    else:
        # one forward over [h1(y); y]: both calls share the pass and gradients flow through both
        fh1, fy = model(torch.cat((h1y, y), 0), shift).float().split(b, 0)
    return apr_loss(fh1, d.h2(y), d.h1(fy), d.h2(fy), gamma)
