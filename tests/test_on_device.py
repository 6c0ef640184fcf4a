"""The same checks on the device under test (``pytest --device cuda``; the CPU by default):
networks against each other across devices, both losses, the engine (precisions, channels-last,
workers with pinned memory, compile, resume with the device's random state), inference whole
and tiled, metrics, evaluate. ``make gpu-check`` runs them on a GPU (``-m device``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import write_image
from aprrd_cli.evaluation.metrics import psnr_ssim_uint8
from aprrd_cli.inference import Denoiser
from aprrd_cli.losses.apr import apr_loss, apr_step_loss, draw
from aprrd_cli.losses.rd import rd_step_loss, teacher_targets
from aprrd_cli.models import ATBSN, NBSN100, NBSN102
from aprrd_cli.models.checkpoint import load_model
from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.engine import train
from aprrd_cli.training.stages import apr_stage, generator, rd_stage
from tests.helpers import TinySampler, correlated_noisy_image, rgb

CPU = torch.device("cpu")
IMAGE = correlated_noisy_image()
TOL = 1e-4  # fp32 on two devices: different kernels, different orders of sums


def nets() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [ATBSN(width=16), NBSN100(width=16), NBSN102(width=16)]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_networks_agree_across_devices(device: torch.device, k: int) -> None:
    net = nets()[k].eval()
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        want = net(x)
        got = net.to(device)(x.to(device)).cpu()
    assert got.shape == want.shape and (got - want).abs().max().item() < TOL


def test_official_student_on_device(device: torch.device, golden, official_student_path) -> None:
    m = load_model(official_student_path, expect="student").model.to(device)
    with torch.no_grad():
        y = m(torch.from_numpy(golden["sidd_256"]).to(device)).cpu()
    assert (y - torch.from_numpy(golden["nbsn_1p00M__sidd_256"])).abs().max().item() < TOL


def test_apr_loss_on_device_is_the_formula(device: torch.device) -> None:
    torch.manual_seed(0)
    net = ATBSN(width=8).to(device)
    y = torch.rand(2, 3, 32, 32, device=device)
    gen = generator(device, 0)
    state = gen.get_state()
    loss = apr_step_loss(net, y, gen)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())
    gen.set_state(state)
    d = draw(2, 32, 32, gen)
    with torch.no_grad():
        fh1, fy = net(d.h1(y), 5), net(y, 5)
        want = apr_loss(fh1, d.h2(y), d.h1(fy), d.h2(fy))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_apr_replace_keeps_channels_last(device: torch.device) -> None:
    gen = generator(device, 3)
    x = torch.rand(2, 8, 16, 24, device=device)
    d = draw(2, 16, 24, gen)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = d.h1(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, d.h1(x))


def test_rd_targets_and_loss_on_device(device: torch.device) -> None:
    torch.manual_seed(0)
    teacher, student = ATBSN(width=8).eval(), NBSN100(width=8)
    y = torch.rand(1, 3, 32, 32)
    want = teacher_targets(teacher, y)
    got = teacher_targets(teacher.to(device), y.to(device)).cpu()
    assert (got - want).abs().max().item() < TOL
    loss = rd_step_loss(student.to(device), teacher, y.to(device), generator(device, 0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in teacher.parameters())


def run_apr(run_dir: Path, device: torch.device, cfg: APRConfig, **kw) -> object:
    o = RunOptions(run_dir=run_dir, device=str(device), save_every=kw.pop("save_every", 100), show_progress=False, **kw)
    sampler = TinySampler(IMAGE, cfg.patch_size, cfg.batch_size)
    return train(apr_stage(cfg, device, o, "tiny"), cfg, o, sampler, device, kw.get("precision", "fp32"))


TINY = APRConfig(iters=4, batch_size=2, patch_size=32, width=8, lr=1e-3)


def test_stop_and_resume_repeat_the_run_on_device(device: torch.device, tmp_path: Path) -> None:
    """Bit for bit: on the CPU always, on a GPU with deterministic kernels (``--deterministic``)."""
    from aprrd_cli.device import set_determinism

    set_determinism(device, device.type == "cuda")
    try:
        run_apr(tmp_path / "a", device, TINY)
        run_apr(tmp_path / "b", device, TINY, stop_at=2)
        raw = torch.load(tmp_path / "b" / "checkpoints" / "last.pth", weights_only=True)
        if device.type == "cuda":
            assert "cuda" in raw["training"]["rng"] and raw["training"]["rng"]["device"] == "cuda"
        run_apr(tmp_path / "b", device, TINY, resume=True)
    finally:
        set_determinism(device, False)
    a, b = (load_model(tmp_path / r / "teacher.pth").model.state_dict() for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(device: torch.device, tmp_path: Path, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        pytest.skip("fp16 autocast and its gradient scaler are for GPUs; the CPU refuses --precision fp16")
    result = run_apr(tmp_path, device, APRConfig(iters=6, batch_size=2, patch_size=32, width=8), precision=precision)
    assert result.finished and np.isfinite(result.loss)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in log)


def test_workers_and_pinned_memory_give_the_same_batches(device: torch.device, tmp_path: Path) -> None:
    """The real sampler through 2 DataLoader workers (pinned memory on a GPU) trains exactly as the
    main-process sampler does."""
    from aprrd_cli.cli import main

    write_image(tmp_path / "ph" / "p.png", rgb(64, 80))
    assert main(["prepare-data", str(tmp_path / "ph"), "--out", str(tmp_path / "prep")]) == 0
    args = ["--data", str(tmp_path / "prep"), "--iters", "3", "--batch-size", "2", "--patch-size", "32"]
    args += ["--width", "8", "--device", str(device), "--precision", "fp32", "--threads", "1"]
    args += ["--deterministic"] if device.type == "cuda" else []
    assert main(["train-apr", *args, "--run-dir", str(tmp_path / "w0"), "--workers", "0"]) == 0
    assert main(["train-apr", *args, "--run-dir", str(tmp_path / "w2"), "--workers", "2"]) == 0
    a, b = (load_model(tmp_path / r / "teacher.pth").model.state_dict() for r in ("w0", "w2"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_trains_on_a_gpu(device: torch.device, tmp_path: Path) -> None:
    if device.type != "cuda":
        pytest.skip("torch.compile takes minutes on a 2-core CPU; its fall-back is tested in test_train_engine")
    result = run_apr(tmp_path, device, TINY, compile=True, precision="bf16")
    assert result.finished and np.isfinite(result.loss)
    torch.manual_seed(0)
    teacher = ATBSN(width=8).eval()
    cfg = RDConfig(iters=3, batch_size=2, patch_size=32, width=8, teacher="t.pth")
    o = RunOptions(run_dir=tmp_path / "rd", device=str(device), show_progress=False, compile=True)
    res = train(rd_stage(cfg, device, o, teacher, "d", "tiny"), cfg, o, TinySampler(IMAGE, 32, 2), device, "bf16")
    assert res.finished and np.isfinite(res.loss)


def test_whole_and_tiled_inference_on_device(device: torch.device) -> None:
    torch.manual_seed(1)
    net = NBSN100(width=8).eval()
    x = torch.rand(1, 3, 200, 264)
    cpu_whole = Denoiser(net, CPU, tile=0)(x)
    whole = Denoiser(net, device, tile=0)(x)
    tiled = Denoiser(net, device, tile=64, overlap=96)(x)
    assert whole.device.type == "cpu" and whole.shape == x.shape
    assert (whole - cpu_whole).abs().max().item() < TOL
    assert (tiled - whole).abs().max().item() < 1e-5  # the margin covers the receptive field


def test_metrics_on_device_equal_the_cpu(device: torch.device) -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randint(0, 256, (3, 3, 40, 48), generator=g).to(torch.uint8)
    b = torch.randint(0, 256, (3, 3, 40, 48), generator=g).to(torch.uint8)
    p0, s0 = psnr_ssim_uint8(a, b)
    p1, s1 = psnr_ssim_uint8(a.to(device), b.to(device))
    assert torch.allclose(p1.cpu(), p0, atol=1e-9) and torch.allclose(s1.cpu(), s0, atol=1e-9)


def test_evaluate_on_device_scores_as_the_cpu(device: torch.device, cli, tiny_student, tmp_path: Path) -> None:
    for sub, seed in (("noisy", 0), ("gt", 1)):
        write_image(tmp_path / "p" / sub / "a.png", rgb(48, 64, seed))
    reports = []
    for dev in ("cpu", str(device)):
        out = tmp_path / f"{dev.replace(':', '_')}.json"
        code, _, err = cli("evaluate", "-m", tiny_student, "--pairs", tmp_path / "p", "--device", dev, "--json", out)
        assert code == 0, err
        reports.append(json.loads(out.read_text()))
    assert reports[0]["psnr"] == pytest.approx(reports[1]["psnr"], abs=1e-3)
    assert reports[0]["ssim"] == pytest.approx(reports[1]["ssim"], abs=1e-4)
