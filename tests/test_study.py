"""The results study end to end on a tiny set: 64x64 pairs written here, width-8 networks,
two iterations per model, CBM3D on the tiny images; checks the files it writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from aprrd_cli.data.images import write_image
from aprrd_cli.losses.blind_spot import plain_bsn_loss
from aprrd_cli.models import build
from aprrd_cli.models.checkpoint import load_model, save_model
from experiments.study.__main__ import main as study_main
from experiments.study.__main__ import parse
from experiments.study.cbm3d import blind_sigma, cbm3d_blind
from experiments.study.report import detail_window


def _tiny_set(root, name="tiny", n=3, side=64, sigma=20.0):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(n):
        clean = np.stack([(xx * (3 + i)) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], axis=2).astype(np.float64)
        noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255)
        write_image(root / name / "noisy" / f"im{i}.png", noisy.astype(np.uint8))
        write_image(root / name / "gt" / f"im{i}.png", clean.astype(np.uint8))
    return root


@pytest.fixture
def tiny_official(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "official.pth"
    save_model(path, build("nbsn-1.00M", width=8), 0)
    return path


def test_study_end_to_end(tmp_path, tiny_official):
    root = _tiny_set(tmp_path / "data", side=72)  # over twice the 32-pixel patch: the windows row too
    out = tmp_path / "study"
    args = ["--set", "tiny", "--root", str(root), "--out", str(out), "--iters", "2", "--patch-size", "32"]
    args += ["--width", "8", "--val-every", "1", "--val-crop", "48", "--crop", "40", "--device", "cpu"]
    args += ["--official", str(tiny_official), "--threads", "1"]
    assert study_main(args) == 0

    res = json.loads((out / "results.json").read_text())
    assert res["budget"]["iters"] == 2 and res["budget"]["patch_size"] == 32
    s = res["sets"]["tiny"]
    assert set(s["scores"]) == {"noisy", "cbm3d", "bsn", "apr", "apr_windows", "rd", "official"}
    assert list(s["scores"]).index("apr_windows") == list(s["scores"]).index("apr") + 1
    assert s["window_side"] == 64  # the smallest window tiling cuts (patch 32)
    assert s["scores"]["noisy"]["noise_kept"] == pytest.approx(1.0)
    for key, sc in s["scores"].items():
        assert sc["n"] == 3, key
        assert math.isfinite(sc["psnr"]) and 5 < sc["psnr"] < 60, key
        assert 0 <= sc["ssim"] <= 1, key
    # CBM3D actually denoises white Gaussian noise at a blindly estimated level
    assert s["scores"]["cbm3d"]["psnr"] > s["scores"]["noisy"]["psnr"] + 1
    for sig in s["cbm3d_sigma"].values():
        assert 10 / 255 < sig < 30 / 255
    # validation every iteration for the three trained models, and the trained networks saved
    for key in ("bsn", "apr", "rd"):
        assert [it for it, _ in s["curves"][key]] == [1, 2], key
        assert s["train_seconds"][key] > 0
    assert load_model(out / "tiny/runs/bsn/teacher.pth", expect="teacher").meta.get("train_shift") == 1
    pngs = [out / s["curve_png"], *(out / c for c in s["crops"])]
    assert len(pngs) == 3
    for p in pngs:
        w, h = Image.open(p).size
        assert w > 40 and h > 40 and p.stat().st_size < 300_000
    crop_w = Image.open(out / s["crops"][0]).size[0]
    assert crop_w >= 7 * 40  # noisy | CBM3D | plain BSN | APR | RD | official | clean
    report = (out / "report.md").read_text()
    assert "| APR teacher |" in report and "| official student (SIDD) |" in report
    assert "| APR teacher, in windows |" in report and "64x64 windows" in report
    assert "aprrd train-apr" in (out / "commands.txt").read_text()

    # a second run finds everything done: nothing is retrained, scores are the cached ones
    mtime = (out / "tiny/runs/apr/teacher.pth").stat().st_mtime
    assert study_main(args) == 0
    assert (out / "tiny/runs/apr/teacher.pth").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text())["sets"]["tiny"]["scores"]["apr"]["psnr"] == pytest.approx(
        s["scores"]["apr"]["psnr"]
    )
    assert "already done" in (out / "commands.txt").read_text()
    # another budget into the same folder is refused, naming the difference
    assert study_main([*args, "--iters", "3"]) != 0


def test_missing_set_is_one_line_error(tmp_path, capsys):
    code = study_main(["--set", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code != 0
    assert "has no noisy/ folder" in capsys.readouterr().err


def test_parse_budget_and_sets():
    o = parse(["--set", "all", "--iters", "7", "--batch-size", "2", "--patch-size", "64", "--stop-grad"])
    assert o.sets == ("sidd7", "cc15")
    assert (o.budget.iters, o.budget.batch_size, o.budget.patch_size, o.budget.stop_grad) == (7, 2, 64, True)
    assert "--stop-grad" not in o.budget.train_args() and "--iters" in o.budget.train_args()
    with pytest.raises(SystemExit):
        parse(["--iters", "0"])


def test_plain_bsn_loss_is_l1_to_input():
    class Echo(torch.nn.Module):
        def forward(self, x, shift=1):
            assert shift == 1
            return x + 0.25

    y = torch.rand(2, 3, 8, 8)
    assert plain_bsn_loss(Echo(), y).item() == pytest.approx(0.25)


def test_blind_sigma_and_cbm3d_on_flat_noise():
    rng = np.random.default_rng(3)
    noisy = np.clip(np.round(128 + rng.normal(0, 10, (40, 40, 3))), 0, 255).astype(np.uint8)
    assert blind_sigma(noisy) * 255 == pytest.approx(10, rel=0.2)
    out, sigma = cbm3d_blind(noisy)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert np.abs(out.astype(float) - 128).mean() < np.abs(noisy.astype(float) - 128).mean() / 3


def test_detail_window_finds_texture():
    gt = np.zeros((64, 64, 3), np.uint8)
    gt[32:, 32:] = (np.indices((32, 32)).sum(0) % 2 * 255)[..., None]
    assert detail_window(gt, 32) == (32, 32)


def test_warmup_then_the_paper_cosine():
    from aprrd_cli.training.schedule import cosine, warmup_cosine

    f = warmup_cosine(100, 10)
    assert [round(f(i), 3) for i in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert f(50) == pytest.approx(cosine(100)(50)) and f(100) == pytest.approx(0.0)
    assert warmup_cosine(100, 0)(0) == 1.0 and warmup_cosine(100, 0)(50) == pytest.approx(0.5)


def test_noise_kept():
    from experiments.study.scoring import noise_kept

    rng = np.random.default_rng(0)
    gt = rng.integers(50, 200, (32, 32, 3)).astype(np.float64)
    noisy = gt + rng.normal(0, 10, gt.shape)
    assert noise_kept(noisy, noisy, gt) == pytest.approx(1.0)
    assert noise_kept(gt, noisy, gt) == pytest.approx(0.0)
    assert noise_kept(gt + 0.5 * (noisy - gt), noisy, gt) == pytest.approx(0.5)


def test_precision_report_reads_paired_runs(tmp_path, capsys) -> None:
    """experiments.precision: the runs' curves plotted and their final models scored, with the paired
    bf16 - fp32 differences."""
    from aprrd_cli.models import ATBSN, NBSN100
    from experiments.precision import main as precision_main

    rng = np.random.default_rng(0)
    for sub in ("noisy", "gt"):
        write_image(tmp_path / "pairs" / sub / "a.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for prec in ("fp32", "bf16"):
        run = tmp_path / "runs" / "cc15" / f"s0-{prec}"
        for stage, net, file in (("apr", ATBSN, "teacher.pth"), ("rd", NBSN100, "student.pth")):
            (run / stage).mkdir(parents=True)
            torch.manual_seed(0 if prec == "fp32" else 1)
            save_model(run / stage / file, net(width=8), iteration=2)
            log = [{"iteration": i, "val_psnr": 20.0 + i, "val_ssim": 0.5} for i in (1, 2)]
            (run / stage / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    code = precision_main(["--runs", str(tmp_path / "runs"), "--set", "cc15", "--pairs", str(tmp_path / "pairs"),
                           "--plot", str(tmp_path / "p.png")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "| seed 0, bf16 |" in out and "| seed 0, fp32 |" in out
    assert "bf16 - fp32, APR teacher:" in out and "bf16 - fp32, RD student:" in out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
