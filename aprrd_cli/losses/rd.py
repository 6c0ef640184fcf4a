"""RD, Recharged Distillation: the teacher's six targets, the Recharger and L_RD (docs/method.md section 4).

The frozen teacher runs its rotated UNet ONCE on the reflect-padded patch and gives one
target per shift factor 0..5. The Recharger then puts the noisy pixel back into exactly
one of the six targets at every pixel (the target chosen uniformly), bringing back the
high-frequency detail that the blind spot removes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.models.constants import TEACHER_PAD as PAD

SHIFTS = (0, 1, 2, 3, 4, 5)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, y: torch.Tensor, shifts: Sequence[int] = SHIFTS) -> torch.Tensor:
    """``len(shifts) x B x 3 x H x W``: the frozen teacher's outputs, one UNet pass (pad 16, crop 16)."""
    yp = F.pad(y, (PAD, PAD, PAD, PAD), mode="reflect")
    outs = teacher.forward_multi(yp, shifts)
    return torch.stack([o[:, :, PAD:-PAD, PAD:-PAD] for o in outs], 0)


def recharge_choice(
    batch: int, height: int, width: int, generator: torch.Generator, n_targets: int = len(SHIFTS)
) -> torch.Tensor:
    """``B x 1 x H x W``: for each pixel, the one target (0..n-1) that gets the noisy pixel back."""
    return torch.randint(0, n_targets, (batch, 1, height, width), generator=generator, device=generator.device)


def recharge(targets: torch.Tensor, y: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Targets with pixel ``p`` (all channels) of target ``choice[p]`` replaced by ``y[p]``."""
    n = targets.shape[0]
    ids = torch.arange(n, device=targets.device).view(n, 1, 1, 1, 1)
    mask = choice.to(targets.device).unsqueeze(0) == ids  # n x B x 1 x H x W
    return torch.where(mask, y.to(targets.dtype).unsqueeze(0), targets)


def rd_loss(student_out: torch.Tensor, targets: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_s mean|g - T_s|`` over the (recharged) targets."""
    if isinstance(targets, torch.Tensor):
        return (student_out.unsqueeze(0) - targets).abs().mean(dim=tuple(range(1, targets.dim()))).sum()
    return sum((student_out - t).abs().mean() for t in targets)


def rd_step_loss(
    student: nn.Module,
    teacher: nn.Module,
    y: torch.Tensor,
    generator: torch.Generator,
    *,
    share: tuple[int, int] = (0, 1),
    choice: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_RD of one training batch. Under DDP (``share = (rank, world)``) the recharge
    choice is drawn for the whole global batch and each rank takes its rows.
    ``choice``: the global batch's recharge choice (``B x 1 x H x W``, 0..5), given instead of
    drawn (a replay of a recorded one; the generator is then left untouched)."""
    rank, world = share
    b, _, h, w = y.shape
    if choice is None:
        choice = recharge_choice(b * world, h, w, generator)
    elif tuple(choice.shape) != (b * world, 1, h, w):
        raise ValueError(f"a given recharge choice of shape {tuple(choice.shape)} does not fit {b * world}x1x{h}x{w}")
    choice = choice[rank * b : (rank + 1) * b]
    # float32 before recharging: under bf16 autocast the targets are bf16, and putting the noisy
    # pixel back into a bf16 tensor would round it to 8 bits of mantissa
    targets = recharge(teacher_targets(teacher, y).float(), y.float(), choice)
    return rd_loss(student(y).float(), targets)
