"""APR: the draw's statistics and borders, L_APR against the official golden value, the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from aprrd_cli.losses.apr import N_PAIRS, OFFSETS, PAIRS, APRDraw, apr_loss, apr_step_loss, draw, replace
from aprrd_cli.models import ATBSN


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_loss_matches_official_golden(golden):
    a, b, c, d = (torch.from_numpy(golden[f"loss_in_{k}"]) for k in "abcd")
    got = apr_loss(a, b, c, d, gamma=4).item()
    assert got == pytest.approx(float(golden["loss_apr__a_b_c_d__reg4"]), abs=1e-5)


def test_pair_table_is_the_72_ordered_distinct_pairs():
    assert N_PAIRS == 72
    assert len({tuple(p) for p in PAIRS.tolist()}) == 72
    assert (PAIRS[:, 0] != PAIRS[:, 1]).all()
    assert sorted(map(tuple, OFFSETS.tolist())) == [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)]


def test_all_72_pairs_equally_frequent_and_never_equal_offsets():
    b, h, w = 4, 64, 64
    d = draw(b, h, w, gen(1))
    counts = torch.bincount(d.pair.flatten(), minlength=72).numpy()
    assert (counts > 0).all()
    assert chisquare(counts).pvalue > 1e-3  # uniform within sampling error
    # recover the offsets from the gather indices at interior pixels: they differ, always
    rows = torch.arange(h).view(1, h, 1).expand(b, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(b, h, w)
    inner = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
    s1, s2 = d.src1.view(b, h, w), d.src2.view(b, h, w)
    o1 = torch.stack((s1 // w - rows, s1 % w - cols), -1)[inner]
    o2 = torch.stack((s2 // w - rows, s2 % w - cols), -1)[inner]
    assert (o1 != o2).any(-1).all()
    assert o1.abs().max() <= 1 and o2.abs().max() <= 1
    expect = OFFSETS[PAIRS[d.pair[inner]]]  # n x 2 x 2
    assert torch.equal(o1, expect[:, 0]) and torch.equal(o2, expect[:, 1])


def test_borders_are_clamped_and_channels_move_together():
    b, h, w = 3, 5, 7
    d = draw(b, h, w, gen(2))
    # a tensor whose value is its own (row, col): h1 shows where each pixel came from
    r = torch.arange(h).view(1, 1, h, 1).expand(b, 1, h, w).float()
    c = torch.arange(w).view(1, 1, 1, w).expand(b, 1, h, w).float()
    x = torch.cat((r, c, r * 100 + c), 1)
    for out, which in ((d.h1(x), 0), (d.h2(x), 1)):
        off = OFFSETS[PAIRS[d.pair][..., which]]
        want_r = (torch.arange(h).view(1, h, 1) + off[..., 0]).clamp(0, h - 1).float()
        want_c = (torch.arange(w).view(1, 1, w) + off[..., 1]).clamp(0, w - 1).float()
        assert torch.equal(out[:, 0], want_r) and torch.equal(out[:, 1], want_c)
        assert torch.equal(out[:, 2], out[:, 0] * 100 + out[:, 1])  # all channels from the same pixel
        assert out[:, 0].min() >= 0 and out[:, 0].max() <= h - 1


def test_draw_is_a_pure_function_of_the_generator():
    a, b = draw(2, 8, 8, gen(5)), draw(2, 8, 8, gen(5))
    assert torch.equal(a.pair, b.pair) and torch.equal(a.src1, b.src1)
    assert not torch.equal(a.pair, draw(2, 8, 8, gen(6)).pair)


def test_replace_is_a_gather():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    src = torch.tensor([[11, 0, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2]])
    out = replace(x, src)
    assert out[0, 0].flatten().tolist() == [11, 0, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2]
    assert out[0, 1].flatten().tolist() == [v + 12 for v in out[0, 0].flatten().tolist()]


@pytest.fixture(scope="module")
def tiny_teacher() -> ATBSN:
    torch.manual_seed(0)
    return ATBSN(width=8)


def test_step_loss_is_the_formula_on_the_same_draw(tiny_teacher):
    y = torch.rand(2, 3, 32, 32, generator=gen(3))
    loss = apr_step_loss(tiny_teacher, y, gen(7))
    d = draw(2, 32, 32, gen(7))
    fy = tiny_teacher(y, 5)
    manual = apr_loss(tiny_teacher(d.h1(y), 5), d.h2(y), d.h1(fy), d.h2(fy), 4.0)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    # the stop-gradient variant has the same value
    assert apr_step_loss(tiny_teacher, y, gen(7), stop_grad=True).item() == pytest.approx(manual.item(), rel=1e-5)


def test_gradients_flow_through_both_teacher_calls(tiny_teacher):
    """Default = the reference (no stop-gradient): the gradient differs from the stop-grad one."""
    y = torch.rand(1, 3, 32, 32, generator=gen(4))
    grads = []
    for sg in (False, True):
        tiny_teacher.zero_grad()
        apr_step_loss(tiny_teacher, y, gen(8), stop_grad=sg).backward()
        grads.append(tiny_teacher.nin_C.weight.grad.clone())
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])


def test_rank_shares_reassemble_the_global_draw(tiny_teacher):
    """Under DDP each rank draws for the global batch and keeps its rows."""
    full = draw(4, 8, 8, gen(9))
    parts = [full.rows(0, 2), full.rows(2, 4)]
    assert torch.equal(torch.cat([p.src1 for p in parts]), full.src1)
    y = torch.rand(4, 3, 32, 32, generator=gen(1))
    whole = apr_step_loss(tiny_teacher, y, gen(2))
    halves = [apr_step_loss(tiny_teacher, y[r * 2 : r * 2 + 2], gen(2), share=(r, 2)) for r in range(2)]
    assert np.mean([h.item() for h in halves]) == pytest.approx(whole.item(), rel=1e-5)


def test_a_given_draw_replaces_the_sampled_one(tiny_teacher):
    """The replay seam: ``APRDraw.from_pairs`` of the sampled pair numbers is the sampled draw, a
    given draw gives the sampled loss and leaves the generator untouched, and one that does not
    fit the batch is refused."""
    y = torch.rand(2, 3, 32, 32, generator=gen(3))
    sampled = draw(2, 32, 32, gen(7))
    rebuilt = APRDraw.from_pairs(sampled.pair)
    assert torch.equal(rebuilt.src1, sampled.src1) and torch.equal(rebuilt.src2, sampled.src2)
    untouched = gen(11)
    before = untouched.get_state()
    given = apr_step_loss(tiny_teacher, y, untouched, drawn=rebuilt)
    assert given.item() == pytest.approx(apr_step_loss(tiny_teacher, y, gen(7)).item(), rel=1e-6)
    assert torch.equal(untouched.get_state(), before)
    with pytest.raises(ValueError, match="does not fit"):
        apr_step_loss(tiny_teacher, y[:1], gen(7), drawn=rebuilt)
