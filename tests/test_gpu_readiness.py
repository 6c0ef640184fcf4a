"""What breaks only on a GPU, shown on the CPU with mocks where needed (issue 14): resume on
another device, torchrun with too few GPUs, precision and TF32, determinism, the fp16
schedule, no waiting for the device inside a step, /dev/shm, the timed warm-up, out of memory,
an interrupted DDP run, the current device, the RD teacher under --compile."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aprrd_cli import device as dev
from aprrd_cli.data.images import write_image
from aprrd_cli.errors import DeviceError
from aprrd_cli.models import ATBSN, NBSN100
from aprrd_cli.models.checkpoint import load_model
from aprrd_cli.training import engine
from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.engine import train
from aprrd_cli.training.stages import apr_stage, rd_stage
from aprrd_cli.training.state import capture_rng, restore_rng
from tests.helpers import TinySampler, correlated_noisy_image, flat, one_line, rgb

CPU = torch.device("cpu")
IMAGE = correlated_noisy_image()
TINY = APRConfig(iters=4, batch_size=2, patch_size=32, width=8, lr=1e-3)


def run_apr(run_dir: Path, cfg: APRConfig = TINY, **kw):
    o = RunOptions(run_dir=run_dir, device="cpu", save_every=kw.pop("save_every", 100), show_progress=False, **kw)
    return train(apr_stage(cfg, CPU, o, "tiny"), cfg, o, TinySampler(IMAGE, cfg.patch_size, cfg.batch_size), CPU)


# --- 1. resume on another device ------------------------------------------------------------


def test_a_generator_state_from_another_device_is_reseeded_deterministically() -> None:
    g = torch.Generator().manual_seed(1)
    state = capture_rng({"apr_draw": g})
    assert state["device"] == "cpu"
    cuda_like = dict(state, device="cuda", generators={"apr_draw": torch.zeros(16, dtype=torch.uint8)})
    a, b = torch.Generator(), torch.Generator()
    assert restore_rng(cuda_like, {"apr_draw": a}) == ["apr_draw"]
    assert restore_rng(cuda_like, {"apr_draw": b}) == ["apr_draw"]
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))  # the same reseed from the same state
    c = torch.Generator()
    assert restore_rng(state, {"apr_draw": c}) == []  # same device: restored exactly
    assert torch.equal(torch.rand(4, generator=c), torch.rand(4, generator=g))


def test_a_run_started_on_a_gpu_resumes_on_the_cpu(tmp_path: Path, capsys) -> None:
    """The checkpoint of a GPU run (its generator state is CUDA's 16 bytes) resumed on the CPU: it
    crashed in Generator.set_state ('internal error'); now it continues with a warning."""
    run_apr(tmp_path, stop_at=2)
    ckpt = tmp_path / "checkpoints" / "last.pth"
    raw = torch.load(ckpt, weights_only=True)
    raw["training"]["rng"]["device"] = "cuda"
    raw["training"]["rng"]["generators"]["apr_draw"] = torch.arange(16, dtype=torch.uint8)
    torch.save(raw, ckpt)
    result = run_apr(tmp_path, resume=True)
    assert result.finished and result.iteration == 4
    said = flat(capsys.readouterr().err)
    assert "made its apr_draw draws on cuda and continues on cpu" in said and "from iteration 3 on" in said


# --- 2. torchrun with fewer GPUs than processes -----------------------------------------------


def test_more_processes_than_gpus_is_one_clear_line(monkeypatch) -> None:
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device must not be reached"))
    with pytest.raises(DeviceError) as e:
        dev.init_distributed("auto")
    msg = str(e.value)
    assert "started 4 processes" in msg and "only 2 GPU(s)" in msg and "--nproc-per-node 2" in msg


def test_the_ddp_timeout_is_set_and_an_interrupted_group_is_not_destroyed(monkeypatch) -> None:
    import datetime

    import torch.distributed as dist

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("APRRD_DDP_TIMEOUT_MINUTES", "90")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: seen.update(b=backend, t=timeout))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert dev.init_distributed("cpu") == (0, 2, 0)
    assert seen == {"b": "gloo", "t": datetime.timedelta(minutes=90)}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: pytest.fail("destroyed after an interruption"))
    dev.cleanup_distributed(interrupted=True)


# --- 3, 4. determinism and precision ----------------------------------------------------------


@pytest.fixture
def restore_math():
    yield
    dev.set_fp32_math("fp32")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False


def test_precisions_and_what_fp32_means(restore_math) -> None:
    assert dev.resolve_precision("fp32", CPU) == "fp32" and dev.resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(DeviceError, match="tf32 is a mode of NVIDIA GPUs"):
        dev.resolve_precision("tf32", CPU)
    with pytest.raises(DeviceError, match="use auto, fp32, tf32, bf16 or fp16"):
        dev.resolve_precision("fp8", CPU)
    dev.set_fp32_math("fp32")
    assert torch.backends.cudnn.conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    dev.set_fp32_math("tf32")
    assert torch.backends.cudnn.conv.fp32_precision == "tf32" and torch.backends.cuda.matmul.fp32_precision == "tf32"
    dev.set_fp32_math("bf16")  # autocast: what stays fp32 is true fp32
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"


def test_determinism_switches(restore_math, monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cuda = torch.device("cuda")
    dev.set_determinism(cuda, True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    dev.set_determinism(cuda, False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


def test_deterministic_is_a_run_option_taken_on_resume(cli, tmp_path, restore_math) -> None:
    write_image(tmp_path / "ph" / "p.png", rgb(64, 64))
    assert cli("prepare-data", tmp_path / "ph", "--out", tmp_path / "prep")[0] == 0
    args = ("--iters", "2", "--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu")
    code, _, err = cli("train-apr", "--data", tmp_path / "prep", "--run-dir", tmp_path / "r", *args, "--deterministic",
                       "--stop-at", "1")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["options"]["deterministic"] is True
    code, _, err = cli("train-apr", "--run-dir", tmp_path / "r", "--resume")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["options"]["deterministic"] is True


# --- 7. fp16: a skipped step does not advance the schedule -------------------------------------


class FakeScaler:
    """A GradScaler whose steps are skipped (inf gradients) on the iterations listed."""

    def __init__(self, skip: set[int]) -> None:
        self.scale, self.skip, self.calls = 1024.0, skip, 0

    def get_scale(self) -> float:
        return self.scale

    def step(self, opt) -> None:
        self.calls += 1
        if self.calls not in self.skip:
            opt.step()

    def update(self) -> None:
        if self.calls in self.skip:
            self.scale /= 2


def test_a_skipped_fp16_step_leaves_the_schedule(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (i + 1))
    run = SimpleNamespace(
        scaler=FakeScaler(skip={2}), opt=opt, sched=sched, done=0, read_every=100, log_every=100,
        opts=SimpleNamespace(save_every=100, save_minutes=0), stop=100, unread=[], stage=SimpleNamespace(generators={}),
        remember_draws=lambda: None,
    )  # fmt: skip
    for _ in range(3):
        p.grad = torch.ones(1)
        engine.apply_update(run, torch.tensor(0.5), 1.0)
    assert run.done == 3 and sched.last_epoch == 2  # three iterations, two updates made, two schedule steps


# --- 8. nothing waits for the device inside a training step -----------------------------------


def test_the_hot_path_makes_no_tensor_from_python_data(monkeypatch) -> None:
    """On a GPU a tensor made from Python data is a host-to-device copy each step; after the
    first step (which fills the caches) neither loss makes one."""
    from aprrd_cli.losses.apr import apr_step_loss
    from aprrd_cli.losses.rd import rd_step_loss

    torch.manual_seed(0)
    teacher, student = ATBSN(width=8), NBSN100(width=8)
    y, gen = torch.rand(1, 3, 32, 32), torch.Generator().manual_seed(0)
    apr_step_loss(teacher, y, gen).backward()
    rd_step_loss(student, teacher.eval(), y, gen).backward()
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    monkeypatch.setattr(torch, "as_tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    apr_step_loss(teacher.train(), y, gen).backward()
    rd_step_loss(student, teacher.eval(), y, gen).backward()
    assert made == []


def test_on_a_gpu_the_loss_is_read_only_every_log_interval(tmp_path: Path, monkeypatch) -> None:
    """The engine's reads of the loss (each one a wait for the device) happen at the log interval
    and before checkpoints, not every step; the log is the same."""
    reads = []
    real = engine._read_losses
    monkeypatch.setattr(engine, "_read_losses", lambda run, lr: reads.append(run.done) or real(run, lr))
    monkeypatch.setattr(engine, "read_interval", lambda device, log_every: log_every)  # as on CUDA
    cfg = APRConfig(iters=10, batch_size=1, patch_size=32, width=8, lr=1e-3)
    run_apr(tmp_path, cfg, log_every=5, save_every=10)
    assert reads == [5, 10]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [5, 10]


def test_a_nan_read_late_names_its_iteration_and_keeps_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(engine, "read_interval", lambda device, log_every: log_every)
    cfg = APRConfig(iters=12, batch_size=2, patch_size=32, width=8)
    o = RunOptions(run_dir=tmp_path, device="cpu", save_every=4, log_every=4, show_progress=False)
    with pytest.raises(engine.NonFiniteLoss, match=r"loss became nan at iteration 6.*iteration 4\) is kept"):
        train(apr_stage(cfg, CPU, o, "tiny"), cfg, o, TinySampler(IMAGE, 32, 2, poison=5), CPU)
    assert torch.load(tmp_path / "checkpoints" / "last.pth", weights_only=True)["iteration"] == 4


# --- 12. /dev/shm --------------------------------------------------------------------------


def test_workers_are_fitted_to_dev_shm(monkeypatch, capsys) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: usage(64 << 20, 0, 64 << 20))
    batch = 8 * 3 * 256 * 256 * 4  # 6.3 MB
    assert engine.workers_that_fit(4, batch, announce=True) == 2
    assert "/dev/shm has 64 MB free" in flat(capsys.readouterr().err)
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: usage(1 << 30, 0, 1 << 30))
    assert engine.workers_that_fit(4, batch, announce=True) == 4 and capsys.readouterr().err == ""
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: usage(8 << 20, 0, 8 << 20))
    assert engine.workers_that_fit(4, batch, announce=False) == 0
    assert engine.workers_that_fit(0, batch, announce=True) == 0


# --- 14. the timed warm-up is at the real size --------------------------------------------------


def test_the_untimed_warm_up_runs_at_the_real_size() -> None:
    from aprrd_cli.inference import Denoiser, Runner

    shapes = []
    den = Denoiser(NBSN100(width=8), CPU)
    real = den._net
    den._net = lambda x: shapes.append(tuple(x.shape)) or real(x)
    runner = Runner(den)
    runner(torch.rand(2, 3, 96, 128))
    assert shapes == [(1, 3, 96, 128), (2, 3, 96, 128)]  # the warm-up, then the timed run


# --- 15. out of GPU memory is one line ------------------------------------------------------------


def test_out_of_memory_is_one_line_saying_what_to_lower(cli, tiny_student, tmp_path, monkeypatch) -> None:
    from aprrd_cli.inference import Denoiser

    def oom(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)")

    monkeypatch.setattr(Denoiser, "_net", oom)
    write_image(tmp_path / "in.png", rgb(32, 32))
    code, _, err = cli("denoise", "-m", tiny_student, tmp_path / "in.png", tmp_path / "o.png")
    assert code == 1
    line = one_line(err)
    assert line.startswith("error: the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "lower --tile" in line and "internal error" not in err


# --- 17. the current device ----------------------------------------------------------------------


def test_use_device_makes_the_asked_gpu_current(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(torch.cuda, "set_device", seen.append)
    dev.use_device(torch.device("cuda:1"))
    dev.use_device(CPU)
    assert seen == [torch.device("cuda:1")]


# --- 9. RD: the teacher under --compile, with its fall-back ---------------------------------------


def test_rd_compile_failure_falls_back_with_the_same_result(tmp_path: Path, monkeypatch, capsys) -> None:
    torch.manual_seed(1)
    teacher = ATBSN(width=8).eval()
    cfg = RDConfig(iters=3, batch_size=2, patch_size=32, width=8, teacher="t.pth")

    def go(run: Path, **kw):
        o = RunOptions(run_dir=run, device="cpu", show_progress=False, **kw)
        return train(rd_stage(cfg, CPU, o, teacher, "digest", "tiny"), cfg, o, TinySampler(IMAGE, 32, 2), CPU)

    go(tmp_path / "eager")

    def broken_compile(fn):
        def fails(*args, **kwargs):
            raise RuntimeError("no compiler here")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    go(tmp_path / "compiled", compile=True)
    said = flat(capsys.readouterr().err)
    assert said.count("--compile failed for the teacher") == 1 and "--compile failed (RuntimeError" in said
    a, b = (load_model(tmp_path / r / "student.pth").model.state_dict() for r in ("eager", "compiled"))
    assert all(torch.equal(a[k], b[k]) for k in a)
