"""The networks against the official release's own outputs (golden.npz) and the method's properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aprrd_cli.inference import Denoiser
from aprrd_cli.models import ATBSN, NBSN100, NBSN102, build, count_params
from aprrd_cli.models.checkpoint import load_model

TOL = 2e-5


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize(("arch", "n"), [("atbsn", 1_268_547), ("nbsn-1.00M", 1_003_011), ("nbsn-1.02M", 1_021_107)])
def test_parameter_counts(arch: str, n: int) -> None:
    assert count_params(build(arch)) == n


@pytest.mark.parametrize("inp", ["sidd_256", "sidd_256x384"])
def test_students_match_official_outputs(golden, official_student_path, official_student_102_path, inp) -> None:
    x = t(golden[inp])
    for path, key in ((official_student_path, "nbsn_1p00M"), (official_student_102_path, "nbsn_1p02M")):
        m = load_model(path, expect="student").model
        with torch.no_grad():
            y = m(x)
        assert y.shape == x.shape
        assert (y - t(golden[f"{key}__{inp}"])).abs().max().item() < TOL


@pytest.mark.parametrize("inp", ["in_128", "in_96x160"])
@pytest.mark.parametrize("hole", [1, 9])
def test_teacher_matches_official_outputs(golden, random_teacher_path, inp, hole) -> None:
    m = load_model(random_teacher_path, expect="teacher").model
    with torch.no_grad():
        y = m(t(golden[f"atbsn_{inp}"]), (hole + 1) // 2)
    assert (y - t(golden[f"atbsn__hole{hole}__{inp}"])).abs().max().item() < TOL


def test_teacher_padded_inference_matches(golden, random_teacher_path) -> None:
    m = load_model(random_teacher_path).model
    y = Denoiser(m, torch.device("cpu"), tile=0)(t(golden["atbsn_in_128"]))
    assert (y - t(golden["atbsn__infer_pad16_hole1__in_128"])).abs().max().item() < TOL


def test_six_distillation_targets_from_one_pass(golden, random_teacher_path) -> None:
    m = load_model(random_teacher_path).model
    x = torch.nn.functional.pad(t(golden["atbsn_in_128"]), (16,) * 4, mode="reflect")
    with torch.no_grad():
        outs = m.forward_multi(x, range(6))
    got = torch.stack([o[..., 16:-16, 16:-16] for o in outs])
    assert (got - t(golden["atbsn__multitarget_T_shifts0to5_pad16__in_128"])).abs().max().item() < TOL


def test_multi_target_equals_single_calls() -> None:
    torch.manual_seed(0)
    m = ATBSN().eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        multi = m.forward_multi(x, [0, 2, 5])
        for s, y in zip([0, 2, 5], multi, strict=True):
            assert torch.allclose(y, m(x, s), atol=1e-6)


def test_non_square_equals_each_rotation_alone() -> None:
    """Batching rotations two by two must give what four separate UNet runs give."""
    from aprrd_cli.models.blocks import rot

    torch.manual_seed(1)
    m = ATBSN().eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        separate = [m.unet(rot(x, r)) for r in range(4)]
        assert torch.allclose(m(x, 1), m._head(separate, 1), atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_blind_spot_property(k: int) -> None:
    """Shift factor k: blind to the (2k-1)x(2k-1) square around a pixel, not to just outside it."""
    torch.manual_seed(0)
    m = ATBSN().eval()
    x = torch.rand(1, 3, 64, 64)
    r, c = 30, 33
    with torch.no_grad():
        base = m(x, k)[0, :, r, c]
        half = k - 1
        inside = x.clone()
        inside[:, :, r - half : r + half + 1, c - half : c + half + 1] = torch.rand(1, 3, 2 * half + 1, 2 * half + 1)
        assert torch.allclose(m(inside, k)[0, :, r, c], base, atol=1e-6)
        for dr, dc in ((k, 0), (-k, 0), (0, k), (0, -k)):
            outside = x.clone()
            outside[:, :, r + dr, c + dc] += 0.5
            assert not torch.allclose(m(outside, k)[0, :, r, c], base, atol=1e-6)


def test_shift_zero_sees_the_centre_pixel() -> None:
    torch.manual_seed(0)
    m = ATBSN().eval()
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[:, :, 16, 16] += 0.5
    with torch.no_grad():
        assert not torch.allclose(m(x, 0)[0, :, 16, 16], m(y, 0)[0, :, 16, 16])
        assert torch.allclose(m(x, 1)[0, :, 16, 16], m(y, 1)[0, :, 16, 16], atol=1e-6)


def test_students_have_expected_output_shape() -> None:
    x = torch.rand(2, 3, 64, 32)
    for cls in (NBSN100, NBSN102):
        with torch.no_grad():
            assert cls()(x).shape == x.shape


def test_inference_then_training_share_the_cached_constants() -> None:
    """The decoders' tap table is cached per device; made first under inference mode (a validation,
    a denoise) it must still serve a training step's backward."""
    from aprrd_cli.models import blocks

    blocks._UP_TAPS_ON.clear()
    net = NBSN100(width=8)
    with torch.inference_mode():
        net(torch.rand(1, 3, 32, 32))
    net(torch.rand(1, 3, 32, 32)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_folded_weights_made_under_bf16_are_not_reused_in_fp32() -> None:
    """The folded decoder weights are cached for inference; made under bf16 autocast they are bf16,
    and a later fp32 call on the same network (a bf16 denoise, then an fp32 evaluate) crashed."""
    torch.manual_seed(0)
    net, fresh = NBSN100(width=8).eval(), NBSN100(width=8).eval()
    fresh.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x)
        assert torch.equal(net(x), fresh(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net(x), half)
