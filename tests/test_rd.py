"""RD: the six teacher targets (golden), the Recharger's invariants, L_RD (golden)."""

from __future__ import annotations

import pytest
import torch

from aprrd_cli.losses.rd import rd_loss, rd_step_loss, recharge, recharge_choice, teacher_targets
from aprrd_cli.models import ATBSN, NBSN100
from aprrd_cli.models.checkpoint import load_model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rd_loss_matches_official_golden(golden):
    a = torch.from_numpy(golden["loss_in_a"])
    targets = torch.from_numpy(golden["loss_rd_targets"])
    want = float(golden["loss_rd__a_targets"])
    assert rd_loss(a, targets).item() == pytest.approx(want, abs=1e-5)
    assert rd_loss(a, list(targets)).item() == pytest.approx(want, abs=1e-5)


def test_six_targets_match_official_golden(golden, random_teacher_path):
    teacher = load_model(random_teacher_path, expect="teacher").model
    y = torch.from_numpy(golden["atbsn_in_128"])
    got = teacher_targets(teacher, y)
    want = torch.from_numpy(golden["atbsn__multitarget_T_shifts0to5_pad16__in_128"])
    assert got.shape == (6, 1, 3, 128, 128)
    assert (got - want).abs().max() < 1e-4
    assert not got.requires_grad


def test_every_pixel_recharged_in_exactly_one_target():
    b, h, w = 3, 48, 64
    y = torch.rand(b, 3, h, w, generator=gen(1)) + 10  # noisy values no target has
    targets = torch.rand(6, b, 3, h, w, generator=gen(2))
    choice = recharge_choice(b, h, w, gen(3))
    out = recharge(targets, y, choice)
    is_y = (out == y.unsqueeze(0)).all(2)  # 6 x B x H x W: pixel replaced, all channels
    assert torch.equal(is_y.sum(0), torch.ones(b, h, w, dtype=torch.long))
    kept = ~is_y.unsqueeze(2).expand_as(out)
    assert torch.equal(out[kept], targets[kept])  # every other pixel untouched
    share = is_y.float().mean((1, 2, 3))
    assert share.sum().item() == pytest.approx(1.0)
    assert (share - 1 / 6).abs().max() < 0.02  # ~1/6 each (n = 9216; sd ~0.004)
    assert torch.equal(is_y.long().argmax(0), choice[:, 0])


def test_choice_is_a_pure_function_of_the_generator():
    assert torch.equal(recharge_choice(2, 8, 8, gen(4)), recharge_choice(2, 8, 8, gen(4)))


def test_step_loss_and_rank_shares():
    torch.manual_seed(0)
    teacher, student = ATBSN(width=8).eval(), NBSN100(width=8)
    y = torch.rand(2, 3, 32, 32, generator=gen(5))
    loss = rd_step_loss(student, teacher, y, gen(6))
    targets = recharge(teacher_targets(teacher, y), y, recharge_choice(2, 32, 32, gen(6)))
    assert loss.item() == pytest.approx(rd_loss(student(y), targets).item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen
    halves = [rd_step_loss(student, teacher, y[r : r + 1], gen(6), share=(r, 2)).item() for r in range(2)]
    assert sum(halves) / 2 == pytest.approx(loss.item(), rel=1e-5)


def test_under_bf16_the_recharged_pixels_are_the_noisy_ones_exactly(monkeypatch):
    """Under bf16 autocast the teacher's targets are bf16; the noisy pixel put back must keep its
    float32 value (rounding it to bf16 moved it by up to 2^-9, the size of the detail RD recharges)."""
    from aprrd_cli.losses import rd

    torch.manual_seed(0)
    teacher, student = ATBSN(width=8).eval(), NBSN100(width=8)
    y = torch.rand(1, 3, 32, 32, generator=gen(7)) * 0.37 + 0.31  # values bf16 cannot hold exactly
    assert not torch.equal(y.bfloat16().float(), y)
    seen = {}
    real = rd.rd_loss

    def spy(out, targets):
        seen["targets"] = targets
        return real(out, targets)

    monkeypatch.setattr(rd, "rd_loss", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rd.rd_step_loss(student, teacher, y, gen(8))
    t = seen["targets"]
    choice = recharge_choice(1, 32, 32, gen(8))
    assert t.dtype == torch.float32
    mask = (choice.unsqueeze(0) == torch.arange(6).view(6, 1, 1, 1, 1)).expand_as(t)
    assert torch.equal(t[mask], y.unsqueeze(0).expand_as(t)[mask])


def test_a_given_recharge_choice_replaces_the_drawn_one():
    """The replay seam: a given choice gives the drawn one's loss, leaves the generator untouched,
    and one that does not fit the batch is refused."""
    torch.manual_seed(0)
    teacher, student = ATBSN(width=8).eval(), NBSN100(width=8)
    y = torch.rand(2, 3, 32, 32, generator=gen(5))
    choice = recharge_choice(2, 32, 32, gen(6))
    untouched = gen(12)
    before = untouched.get_state()
    given = rd_step_loss(student, teacher, y, untouched, choice=choice)
    assert given.item() == pytest.approx(rd_step_loss(student, teacher, y, gen(6)).item(), rel=1e-6)
    assert torch.equal(untouched.get_state(), before)
    with pytest.raises(ValueError, match="does not fit"):
        rd_step_loss(student, teacher, y, gen(6), choice=choice[:1])
