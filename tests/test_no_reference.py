"""The check without clean images (issue 17: no silent harm): colour shift, noise removed,
agreement with the official student; through evaluate --photos and after training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import write_image
from aprrd_cli.evaluation.no_reference import check_photos
from aprrd_cli.inference import Denoiser
from aprrd_cli.models import NBSN100
from aprrd_cli.models.checkpoint import load_model, save_model
from tests.helpers import flat

CPU = torch.device("cpu")


class Shifted(torch.nn.Module):
    """The input plus a constant: a 'denoiser' that changes the photo's colour and removes nothing."""

    kind = "student"

    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.by


def photos(n: int = 3) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    base = np.clip(120 + 40 * np.sin(np.arange(64) / 6)[None, :, None] + rng.normal(0, 8, (64, 64, 3)), 0, 255)
    return [(f"p{i}.png", np.roll(base, 7 * i, axis=1).astype(np.uint8)) for i in range(n)]


def test_a_colour_shift_and_a_model_that_removes_nothing_are_flagged() -> None:
    same = check_photos(Denoiser(Shifted(0.0), CPU), photos())
    assert same["max_colour_shift"] == pytest.approx(0.0, abs=1e-9) and same["mean_removed"] < 1e-9
    assert any("removes almost nothing" in w for w in same["warnings"])
    moved = check_photos(Denoiser(Shifted(15 / 255), CPU), photos())
    assert moved["max_colour_shift"] == pytest.approx(15.0, abs=0.01)
    assert any("colour departs from the input's by more than 5 grey levels" in w for w in moved["warnings"])
    vs_ref = check_photos(Denoiser(Shifted(3 / 255), CPU), photos(), Denoiser(Shifted(0.0), CPU))
    assert vs_ref["images"][0]["shift_from_reference"] == pytest.approx([3.0] * 3, abs=0.01)
    assert any("departs from the official student's by more than 2 grey levels" in w for w in vs_ref["warnings"])
    assert not any("input's" in w for w in vs_ref["warnings"])  # 3 grey levels from the input is allowed


class Blur(torch.nn.Module):
    """A box filter of side ``k``: removes noise, and beyond a small ``k`` detail as well."""

    kind = "student"

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, self.k, 1, self.k // 2, count_include_pad=False)


class Noisier(torch.nn.Module):
    """The input with more noise: a 'denoiser' worse than doing nothing."""

    kind = "student"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return x + 0.04 * torch.randn(x.shape, generator=g)


def test_worse_than_the_input_is_flagged_against_the_official_output() -> None:
    ref = Denoiser(Blur(3), CPU)
    same = check_photos(Denoiser(Blur(3), CPU), photos(), ref)
    assert same["warnings"] == [] and same["farther_than_input"] == 0
    assert same["mean_removed"] == pytest.approx(same["reference_removed"])
    smooth = check_photos(Denoiser(Blur(9), CPU), photos(), ref)
    assert smooth["mean_removed"] > 1.15 * smooth["reference_removed"]
    assert any("more than the official student" in w and "detail goes too" in w for w in smooth["warnings"])
    worse = check_photos(Denoiser(Noisier(), CPU), photos(), ref)
    assert worse["farther_than_input"] == 3
    assert any("on 3 of 3 photo(s) the output is farther from the official student's than the noisy photo" in w
               for w in worse["warnings"])  # fmt: skip
    alone = check_photos(Denoiser(Noisier(), CPU), photos())  # without the official output these cannot be told
    assert "farther_than_input" not in alone and not any("official" in w for w in alone["warnings"])


def test_the_official_student_passes_on_real_photos(official_student_path, official_student_102_path, sidd7) -> None:
    from aprrd_cli.data.pairs import load_photos
    from aprrd_cli.evaluation.no_reference import crops_of

    crops = crops_of(load_photos(sidd7 / "noisy"))[:3]
    official = Denoiser(load_model(official_student_path).model, CPU)
    report = check_photos(official, crops)
    assert report["warnings"] == [] and report["mean_removed"] > 5
    # the release's other student, against the 1.00M: close, never worse than the input, same removal
    other = check_photos(Denoiser(load_model(official_student_102_path).model, CPU), crops, official)
    assert other["warnings"] == [] and other["farther_than_input"] == 0
    assert 0.9 < other["mean_removed"] / other["reference_removed"] < 1.1


def test_evaluate_photos_reports_and_exits_1_on_a_failed_check(cli, tmp_path: Path, tiny_student) -> None:
    for name, img in photos():
        write_image(tmp_path / "ph" / name, img)
    bad = NBSN100(width=8)
    sd = load_model(tiny_student).model.state_dict()
    sd["unet.dec1.conv2.conv.bias"] = sd["unet.dec1.conv2.conv.bias"] + 0.2
    bad.load_state_dict(sd)
    save_model(tmp_path / "bad.pth", bad, iteration=0)
    code, out, err = cli("evaluate", "-m", tmp_path / "bad.pth", "--photos", tmp_path / "ph", "--reference", "none",
                         "--json", tmp_path / "r.json")  # fmt: skip
    assert code == 1, err
    assert "no-reference check" in flat(out) and "p0.png" in out
    assert "warning: the output's colour departs from the input's" in flat(err)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["max_colour_shift"] > 5 and len(report["images"]) == 3 and report["warnings"]
    # against a reference (here the model itself): the distance, and the reference's own removal
    code, _, err = cli("evaluate", "-m", tiny_student, "--photos", tmp_path / "ph", "--reference", tiny_student,
                       "--json", tmp_path / "self.json")  # fmt: skip
    mine = json.loads((tmp_path / "self.json").read_text())
    assert mine["farther_than_input"] == 0 and mine["reference_removed"] == pytest.approx(mine["mean_removed"])
    assert "farther from its output than the noisy photo on 0 of 3)" in flat(err)
    assert code == (1 if mine["warnings"] else 0)
    code, _, err = cli("evaluate", "-m", tiny_student, "--photos", tmp_path / "nope")
    assert code == 1 and "--photos expects a folder of noisy photos" in flat(err)
    code, _, err = cli("evaluate", "-m", tiny_student, "--photos", tmp_path / "ph", "--pairs", tmp_path)
    assert code == 2 and "exactly one" in err


def test_training_ends_with_a_self_check(cli, tmp_path: Path) -> None:
    for name, img in photos(2):
        write_image(tmp_path / "ph" / name, img)
    assert cli("prepare-data", tmp_path / "ph", "--out", tmp_path / "prep")[0] == 0
    code, _, err = cli("train-apr", "--data", tmp_path / "prep", "--run-dir", tmp_path / "r", "--iters", "2",
                       "--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "self-check on 2 of the training photos (no clean image): colour shift at most" in flat(err)
    # 2 iterations of 1 x 32^2 against the paper's 400k x 8 x 256^2: the summary says what such budgets gave
    assert "budget: this run saw 1/102,400,000 of the paper's training" in flat(err)
    assert f"aprrd evaluate --model {tmp_path / 'r' / 'teacher.pth'} --photos DIR" in flat(err)


def test_the_budget_note_is_for_short_runs_only() -> None:
    from aprrd_cli.training.config import APRConfig, RDConfig
    from aprrd_cli.training.engine import budget_note

    out = Path("runs/x.pth")
    note = budget_note(APRConfig(iters=1000, batch_size=1, patch_size=256), 1000, out)
    assert note is not None and "1/3,200 of the paper's training" in note and "--photos DIR" in note
    assert "1/800 " in budget_note(RDConfig(iters=1000, batch_size=2, patch_size=128), 1000, out)
    assert budget_note(APRConfig(iters=20_000, batch_size=8, patch_size=256), 20_000, out) is None  # 1/20: quiet
    assert budget_note(APRConfig(), 400_000, out) is None
