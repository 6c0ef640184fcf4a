"""``train-apr`` and ``distill`` with no options build the release's configuration: lr 3e-4,
batch 8, 256^2 APR / 128^2 RD patches, 400k / 200k iterations, hole 9 in training and 1 at
inference, gamma 4, shift factors 0..5, reflect padding 16, Adam (0.9, 0.999), cosine to 0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aprrd_cli.inference import Denoiser
from aprrd_cli.losses import rd
from aprrd_cli.models import ATBSN
from aprrd_cli.models.constants import TEACHER_PAD
from aprrd_cli.training import stages
from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.schedule import make_optimizer, make_schedule

CPU = torch.device("cpu")


def config_of(cli, monkeypatch, command: str, entry: str, *args: str):
    """The configuration the command hands to the training entry point, given only ``args``."""
    seen = {}
    monkeypatch.setattr(stages, entry, lambda cfg, opts: seen.update(cfg=cfg, opts=opts))
    code, _, err = cli(command, *args)
    assert code == 0, err
    return seen["cfg"]


def test_train_apr_without_options_is_the_releases_apr(cli, monkeypatch, tmp_path):
    cfg = config_of(cli, monkeypatch, "train-apr", "train_apr", "--run-dir", str(tmp_path))
    assert (cfg.iters, cfg.batch_size, cfg.patch_size, cfg.lr) == (400_000, 8, 256, 3e-4)
    assert (cfg.gamma, cfg.shift, cfg.stop_grad, cfg.warmup, cfg.width) == (4.0, 5, False, 0, 48)
    assert 2 * cfg.shift - 1 == 9  # the training hole: shift factor s blinds 2s - 1 pixels
    assert cfg.init is None and cfg.sampling == "random"  # the data order is a stated departure


def test_distill_without_options_is_the_releases_rd(cli, monkeypatch, tmp_path):
    cfg = config_of(cli, monkeypatch, "distill", "distill", "--run-dir", str(tmp_path))
    assert (cfg.iters, cfg.batch_size, cfg.patch_size, cfg.lr) == (200_000, 8, 128, 3e-4)
    assert (cfg.student, cfg.warmup, cfg.width, cfg.init) == ("1.00M", 0, 48, None)
    assert cfg.crop_size == 256  # --sampling release cuts these 128^2 patches from the centre of 256^2 crops


@pytest.mark.parametrize("cfg", [APRConfig(), RDConfig()], ids=["apr", "rd"])
def test_the_optimiser_and_schedule_are_the_releases(cfg):
    """Adam (0.9, 0.999), eps 1e-8, no weight decay, at 3e-4; a cosine from 1 to 0 over the run,
    stepped every iteration, no warm-up."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([w], cfg, CPU)
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["lr"]) == ((0.9, 0.999), 1e-8, 0, 3e-4)
    assert not group["amsgrad"]
    sched = make_schedule(opt, cfg)
    for i in (0, 1, cfg.iters // 4, cfg.iters // 2, cfg.iters - 1, cfg.iters):
        expected = 3e-4 * 0.5 * (1 + math.cos(math.pi * i / cfg.iters))
        assert sched.lr_lambdas[0](i) * 3e-4 == pytest.approx(expected, rel=1e-12, abs=1e-20), i
    assert sched.lr_lambdas[0](cfg.iters) == 0.0


def test_the_apr_stage_trains_at_hole_9_with_gamma_4(monkeypatch, tmp_path):
    """What the stage's loss passes on each step, not only what the configuration holds."""
    calls = []
    monkeypatch.setattr(stages, "apr_step_loss", lambda *a, **kw: calls.append(kw) or torch.zeros(()))
    cfg = APRConfig(width=8)
    stage = stages.apr_stage(cfg, CPU, RunOptions(run_dir=Path(tmp_path)))
    stage.loss(stage.model, torch.zeros(1, 3, 32, 32), (0, 1))
    assert (calls[0]["shift"], calls[0]["gamma"], calls[0]["stop_grad"]) == (5, 4.0, False)


def test_rd_targets_and_inference_use_the_releases_holes_and_padding():
    """RD's six targets: shift factors 0..5 of the input reflect-padded by 16; the teacher at
    inference: hole 1 (shift factor 1), reflect-padded by 16."""
    assert rd.SHIFTS == (0, 1, 2, 3, 4, 5) and TEACHER_PAD == 16
    torch.manual_seed(0)
    teacher = ATBSN(width=8).eval()
    y = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        got = rd.teacher_targets(teacher, y)
        padded = torch.nn.functional.pad(y, (16,) * 4, mode="reflect")
        for s in rd.SHIFTS:
            torch.testing.assert_close(got[s], teacher(padded, s)[:, :, 16:-16, 16:-16], rtol=0, atol=1e-6)
        assert Denoiser(teacher, CPU).shift == 1
        torch.testing.assert_close(
            Denoiser(teacher, CPU)(y), teacher(padded, 1)[:, :, 16:-16, 16:-16], rtol=0, atol=1e-5
        )
