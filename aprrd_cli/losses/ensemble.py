"""Self-ensemble distillation: a student learns, on a camera's own noisy photos, to give in one
pass what a frozen student network gives averaged over the 8 flips/rotations of its input.

This is not part of APR-RD (docs/method.md); it is how aprrd adapts the released student to a
camera with no clean image (docs/results.md, "Your own camera on a CPU"): the x8 self-ensemble
of the official student scores above the official student itself on cc15 (35.83 against 35.55
dB), and a copy of the student trained for a few hundred iterations to reproduce it on the
camera's photos keeps most of that gain at the cost of one pass. With an L1 loss to a single
target, the Recharger would change nothing at the optimum (the per-pixel median of the target
taken 5/6 of the time and the noisy pixel 1/6 is the target), so it is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from aprrd_cli.utils.dihedral import dihedral, undo_dihedral

VIEWS = 8


@torch.no_grad()
def ensemble_target(teacher: nn.Module, y: torch.Tensor, views: int = VIEWS) -> torch.Tensor:
    """``B x 3 x H x W`` float32: the mean of the teacher's outputs over the first ``views`` of the 8
    flips/rotations, each mapped back. ``H`` and ``W`` must suit the network (multiples of 32)."""
    acc = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
    for k in range(views):
        acc += undo_dihedral(teacher(dihedral(y, k)).float(), k)
    return acc / views


def ensemble_step_loss(student: nn.Module, teacher: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``mean|g(y) - E(y)|`` with ``E`` the frozen teacher's x8 self-ensemble (no randomness, so
    nothing to share between DDP processes)."""
    return (student(y).float() - ensemble_target(teacher, y)).abs().mean()
