"""Padding and tiling: any size works, tiles agree with the whole image."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aprrd_cli.inference import (
    DEFAULT_OVERLAP,
    MIN_TILE,
    MULTIPLE,
    Denoiser,
    padding_for,
    patch_windows,
    reflect_pad,
    tile_spans,
    window_side,
)
from aprrd_cli.models import ATBSN, NBSN100
from aprrd_cli.models.checkpoint import load_model


def test_reflect_pad_equals_torch_where_torch_can() -> None:
    x = torch.rand(1, 3, 10, 12)
    assert torch.equal(reflect_pad(x, 3, 4, 5, 6), torch.nn.functional.pad(x, (5, 6, 3, 4), mode="reflect"))


def test_reflect_pad_beyond_the_image_and_of_one_pixel() -> None:
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    y = reflect_pad(x, 2, 1, 5, 5)
    assert y.shape == (1, 1, 4, 13)
    assert y[0, 0, 0].tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]
    assert torch.equal(y[0, 0, 0], y[0, 0, 3])  # a one-row image can only be replicated


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), extra=st.sampled_from([0, 16]))
def test_padder_property(h: int, w: int, extra: int) -> None:
    t, b, left, r = padding_for(h, w, extra)
    assert (h + t + b) % MULTIPLE == 0 and (w + left + r) % MULTIPLE == 0
    assert min(t, b, left, r) >= extra and max(t - b, b - t, left - r, r - left) <= 1 + 0
    y = reflect_pad(torch.rand(1, 3, h, w), t, b, left, r)
    assert y.shape == (1, 3, h + t + b, w + left + r)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40).map(lambda k: k * MULTIPLE),
    core=st.integers(16, 600),
    margin=st.integers(0, 128),
)
def test_tiler_property(n: int, core: int, margin: int) -> None:
    """Cores partition the range, windows are equal multiples of 32 inside it and hold their cores."""
    spans = tile_spans(n, core, margin)
    covered = np.zeros(n, dtype=int)
    sizes = set()
    for w0, w1, c0, c1 in spans:
        assert 0 <= w0 <= c0 < c1 <= w1 <= n
        assert (w1 - w0) % MULTIPLE == 0 and w0 % MULTIPLE == 0
        sizes.add(w1 - w0)
        covered[c0:c1] += 1
        if len(spans) > 1:  # every core has its margin of context unless clamped at the ends
            assert c0 - w0 >= min(margin, c0) and w1 - c1 >= min(margin, n - c1)
    assert (covered == 1).all() and len(sizes) == 1


@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 33), (31, 5), (64, 64), (45, 100)])
def test_any_size_comes_back_the_same_size(h: int, w: int) -> None:
    torch.manual_seed(0)
    for model in (NBSN100(width=8), ATBSN(width=8)):
        y = Denoiser(model, torch.device("cpu"))(torch.rand(1, 3, h, w))
        assert y.shape == (1, 3, h, w) and torch.isfinite(y).all()


def test_tiles_are_exact_when_the_margin_covers_the_receptive_field() -> None:
    """Windows on the 32-pixel grid: with enough context, tiling changes nothing at all.

    (Random weights spread over the whole receptive field, about 160 pixels for the
    student and 288 for the blind teacher; trained ones are local enough that the default
    margin of 96 gives one grey level, tested on a real photo below.)
    """
    torch.manual_seed(0)
    x = torch.rand(1, 3, 500, 620)
    model = NBSN100(width=8)
    whole = Denoiser(model, torch.device("cpu"), tile=0)(x)
    den = Denoiser(model, torch.device("cpu"), tile=64, overlap=160)
    assert len(tile_spans(512, 64, 160)) * len(tile_spans(640, 64, 160)) > 2
    assert (whole - den(x)).abs().max().item() < 1e-5


def test_tiled_equals_whole_on_a_real_photo(official_student_path, sidd7) -> None:
    """The official student on a real 512x512 SIDD crop: tiled within 1 grey level of whole."""
    from aprrd_cli.data.images import read_image
    from aprrd_cli.data.tensors import to_float

    arr, _ = read_image(sidd7 / "noisy" / "NOISY_0.png")
    x = torch.from_numpy(to_float(arr)[0].transpose(2, 0, 1).copy())[None]
    model = load_model(official_student_path).model
    whole = Denoiser(model, torch.device("cpu"), tile=0)(x)
    tiled = Denoiser(model, torch.device("cpu"), tile=128, overlap=96)(x)
    assert Denoiser(model, torch.device("cpu"), tile=128).will_tile(*x.shape[-2:])
    diff = ((whole.clamp(0, 1) * 255).round() - (tiled.clamp(0, 1) * 255).round()).abs()
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_default_tiling_follows_the_memory_at_hand(monkeypatch) -> None:
    """Whole while the working memory fits half of what is at hand; tiles that fit it otherwise; --tile wins."""
    from aprrd_cli.inference import MEMORY_PER_MP, MEMORY_SHARE

    d = Denoiser(NBSN100(width=8), torch.device("cpu"))
    per_pixel = MEMORY_PER_MP[("student", "fp32")] / 1e6
    monkeypatch.setenv("APRRD_MEMORY_GB", "64")
    assert d.core_for(3000, 4000) == (0, 0)  # 12 MP x 1.4 GB/MP = 17 GB: fits half of 64 GB, whole
    monkeypatch.setenv("APRRD_MEMORY_GB", "8")
    ch, cw = d.core_for(3000, 4000)
    wh, ww = min(3008, window_side(ch, DEFAULT_OVERLAP)), min(4000, window_side(cw, DEFAULT_OVERLAP))
    assert wh * ww * per_pixel <= MEMORY_SHARE * 8 * 2**30  # windows within half of 8 GB...
    assert wh * ww * per_pixel > MEMORY_SHARE * 8 * 2**30 / 2  # ...and not far below it
    assert d.core_for(800, 1000) == (0, 0)  # a small photo stays whole
    monkeypatch.setenv("APRRD_MEMORY_GB", "0.01")
    assert d.core_for(3000, 4000) == (MIN_TILE, MIN_TILE)  # nothing fits: the smallest tile, not a refusal
    assert d.core_for(3000, 4000, batch=2) == (MIN_TILE, MIN_TILE)
    assert Denoiser(NBSN100(width=8), torch.device("cpu"), tile=0).core_for(5000, 5000) == (0, 0)
    assert Denoiser(NBSN100(width=8), torch.device("cpu"), tile=256).core_for(100, 100) == (256, 256)
    monkeypatch.setenv("APRRD_MEMORY_GB", "8")
    teacher = Denoiser(NBSN100(width=8), torch.device("cpu"))
    teacher.is_teacher = True  # the teacher needs about 7x the memory a pixel: smaller windows
    th, tw = teacher.core_for(3000, 4000)
    assert 0 < th * tw < ch * cw
    assert d.core_for(1500, 2000, batch=4) != (0, 0) and d.core_for(1500, 2000) == (0, 0)  # a batch needs more


def test_plan_tile_computes_the_fewest_pixels_that_fit() -> None:
    """Among the tilings whose windows fit, the one with the least repeated margin work, not simply the largest."""
    from aprrd_cli.inference import covered, plan_tile

    h, w, margin, per_pixel, budget = 3008, 4000, 96, 1000.0, 2.5e9
    ch, cw = plan_tile(h, w, margin, per_pixel, budget)
    room = budget - h * w * 24

    def fits(a: int, b: int) -> bool:
        return min(h, window_side(a, margin)) * min(w, window_side(b, margin)) * per_pixel <= room

    assert fits(ch, cw)
    work = covered(h, ch, margin) * covered(w, cw, margin)
    every = [(a, b) for a in range(64, h + 32, 32) for b in range(64, w + 32, 32) if fits(a, b)]
    assert work == min(covered(h, a, margin) * covered(w, b, margin) for a, b in every)
    squares = [c for c in range(64, w, 32) if fits(c, c)]
    assert work < min(covered(h, c, margin) * covered(w, c, margin) for c in squares)  # beats any --tile N
    assert plan_tile(64, 64, margin, per_pixel, 1e12) == (0, 0)


def test_auto_tiled_output_matches_whole_within_one_grey_level(monkeypatch, official_student_path, sidd7) -> None:
    """With little memory at hand the default tiles a real photo, and agrees with the whole image."""
    from aprrd_cli.data.images import read_image
    from aprrd_cli.data.tensors import to_float

    arr, _ = read_image(sidd7 / "noisy" / "NOISY_0.png")
    x = torch.from_numpy(to_float(arr[:288, :320])[0].transpose(2, 0, 1).copy())[None]
    model = load_model(official_student_path).model
    whole = Denoiser(model, torch.device("cpu"), tile=0)(x)
    monkeypatch.setenv("APRRD_MEMORY_GB", "0.12")  # half of it: windows of about 0.05 MP
    auto = Denoiser(model, torch.device("cpu"))
    core = auto.core_for(*x.shape[-2:])
    assert core != (0, 0) and len(tile_spans(288, core[0], 96)) * len(tile_spans(320, core[1], 96)) > 1
    y = auto(x)
    if core[0] == core[1]:
        assert torch.equal(y, Denoiser(model, torch.device("cpu"), tile=core[0])(x))  # the same as asking for it
    diff = ((whole.clamp(0, 1) * 255).round() - (y.clamp(0, 1) * 255).round()).abs()
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_a_teacher_warns_once_on_images_far_larger_than_its_training_patches(tmp_path, cli) -> None:
    from aprrd_cli.data.images import write_image
    from aprrd_cli.models.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path / "teacher.pth"
    save_model(path, ATBSN(width=8).eval(), iteration=10, training={"stage": "apr", "patch_size": 32})
    rng = np.random.default_rng(0)
    for name, side in (("small.png", 64), ("big.png", 96), ("big2.png", 100)):
        write_image(tmp_path / "in" / name, rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    code, out, err = cli("denoise", tmp_path / "in" / "small.png", tmp_path / "o.png", "--model", path)
    assert code == 0 and "warning" not in out + err  # 64 = twice the patch: fine
    code, out, err = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", path)
    said = " ".join((out + err).split())
    assert code == 0
    assert said.count("this teacher was trained on 32x32 patches and is applied to a 96x96 image") == 1
    assert said.count("trained on 32x32 patches") == 1  # once per run, not per image


def test_training_and_inference_paths_compute_the_same_networks() -> None:
    """Training runs other code (pads and concatenations whose backward is cheaper): same numbers."""
    torch.manual_seed(0)
    teacher, student = ATBSN(width=16), NBSN100(width=16)
    x = torch.rand(2, 3, 96, 64)
    for shift in (0, 1, 5):
        with torch.no_grad():
            want = teacher(x, shift)
        torch.testing.assert_close(teacher(x, shift).detach(), want, atol=2e-6, rtol=0)
    with torch.no_grad():
        want = student(x)
    torch.testing.assert_close(student(x).detach(), want, atol=2e-6, rtol=0)


@pytest.mark.parametrize("patch", [64, 96, 128, 256, 512])
def test_patch_windows_are_the_training_patch(patch: int) -> None:
    core, margin = patch_windows(patch)
    assert window_side(core, margin) == patch
    assert core > 0 and margin == patch // 8
    spans = tile_spans(2048, core, margin)
    assert {w1 - w0 for w0, w1, _, _ in spans} == {patch}
    assert spans[0][2] == 0 and spans[-1][3] == 2048  # the cores cover the whole range
    assert all(a[3] == b[2] for a, b in pairwise(spans))
    assert window_side(*patch_windows(32)) == 64  # the smallest window the tiling can cut


def test_a_teacher_in_patch_windows_sees_only_training_size_windows(monkeypatch) -> None:
    torch.manual_seed(0)
    den = Denoiser(ATBSN(width=8), torch.device("cpu"), trained_patch=64, in_patch_windows=True)
    seen: list[tuple[int, int]] = []
    net = den._net
    monkeypatch.setattr(den, "_net", lambda x: seen.append(tuple(x.shape[-2:])) or net(x))
    x = torch.rand(1, 3, 150, 200)
    y = den(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert len(seen) > 4 and set(seen) == {(64, 64)}
    # no windows asked: one whole-image pass
    seen.clear()
    whole = Denoiser(den.model, torch.device("cpu"), tile=0, trained_patch=64)
    monkeypatch.setattr(whole, "_net", lambda x: seen.append(tuple(x.shape[-2:])) or net(x))
    whole(x)
    assert len(seen) == 1


def test_patch_windows_need_a_recorded_patch_size() -> None:
    from aprrd_cli.errors import InputError

    with pytest.raises(InputError, match="does not record the patch size"):
        Denoiser(ATBSN(width=8), torch.device("cpu"), in_patch_windows=True)


def test_patch_windows_from_the_command_line(tmp_path, cli) -> None:
    from aprrd_cli.data.images import write_image
    from aprrd_cli.models.checkpoint import save_model

    torch.manual_seed(0)
    ours, official = tmp_path / "teacher.pth", tmp_path / "official.pth"
    save_model(ours, ATBSN(width=8).eval(), iteration=10, training={"stage": "apr", "patch_size": 32})
    torch.save({"model_state_dict": ATBSN(width=8).state_dict()}, official)
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "big.png", rng.integers(0, 256, (100, 96, 3), dtype=np.uint8))
    write_image(tmp_path / "pairs" / "noisy" / "a.png", rng.integers(0, 256, (100, 96, 3), dtype=np.uint8))
    write_image(tmp_path / "pairs" / "gt" / "a.png", rng.integers(0, 256, (100, 96, 3), dtype=np.uint8))
    src = tmp_path / "in" / "big.png"

    code, out, err = cli("denoise", src, tmp_path / "w.png", "--model", ours, "--patch-windows")
    assert code == 0 and "warning" not in out + err  # windows of its patch: nothing to warn about
    code, out, err = cli("denoise", src, tmp_path / "x.png", "--model", ours, "--patch-windows", "--tile", "64")
    assert code == 2 and err.strip().splitlines() == [
        "error: give --patch-windows or --tile, not both (--patch-windows sizes the tiles)"
    ]
    assert not (tmp_path / "x.png").exists()
    code, out, err = cli("denoise", src, tmp_path / "y.png", "--model", official, "--patch-windows")
    assert code != 0 and "does not record the patch size" in err and "Traceback" not in err
    assert not (tmp_path / "y.png").exists()
    code, out, err = cli(
        "evaluate", "--pairs", tmp_path / "pairs", "--model", ours, "--patch-windows", "--json", tmp_path / "s.json"
    )
    assert code == 0 and "warning" not in out + err
    assert (tmp_path / "s.json").exists()
