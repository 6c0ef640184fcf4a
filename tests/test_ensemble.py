"""Self-ensemble distillation's loss (losses/ensemble.py): the target is the mean of the frozen
network's outputs over the 8 flips/rotations, mapped back; only the student learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aprrd_cli.losses.ensemble import ensemble_step_loss, ensemble_target
from aprrd_cli.models import NBSN100
from aprrd_cli.utils.dihedral import dihedral, undo_dihedral


def test_target_is_the_mean_of_the_eight_views():
    torch.manual_seed(0)
    teacher = NBSN100(width=8).eval()
    y = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        views = [undo_dihedral(teacher(dihedral(y, k)), k) for k in range(8)]
        want = torch.stack(views).mean(0)
        single = teacher(y)
    got = ensemble_target(teacher, y)
    assert got.dtype == torch.float32 and got.shape == y.shape
    assert torch.allclose(got, want, atol=1e-6)
    # the network is not equivariant, so the ensemble differs from one pass
    assert (got - single).abs().max() > 1e-4


def test_an_equivariant_network_is_its_own_ensemble():
    """A 1x1 convolution commutes with every flip/rotation: averaging its views changes nothing."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 3, 1)
    y = torch.rand(1, 3, 32, 48)  # not square: each view is mapped back to the input's shape
    with torch.no_grad():
        assert torch.allclose(ensemble_target(conv, y), conv(y), atol=1e-6)


def test_loss_is_l1_to_the_target_and_trains_only_the_student():
    torch.manual_seed(2)
    teacher, student = NBSN100(width=8).eval(), NBSN100(width=8)
    for p in teacher.parameters():
        p.requires_grad_(False)
    y = torch.rand(1, 3, 64, 64)
    loss = ensemble_step_loss(student, teacher, y)
    want = (student(y) - ensemble_target(teacher, y)).abs().mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_a_copy_of_the_teacher_starts_at_its_single_pass_gap():
    """Started from the teacher's own weights (--init), the loss is the gap between one pass and
    the ensemble: what the adaptation closes."""
    torch.manual_seed(3)
    teacher = NBSN100(width=8).eval()
    student = NBSN100(width=8)
    student.load_state_dict(teacher.state_dict())
    y = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        gap = (teacher(y) - ensemble_target(teacher, y)).abs().mean().item()
        assert ensemble_step_loss(student, teacher, y).item() == pytest.approx(gap, rel=1e-5)
