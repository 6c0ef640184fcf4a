"""The steps of the GPU check. Each takes the ``Context`` and a ``report`` callback through which it
hands over its results as they come (so a step stopped at its time limit still reports what it
measured), and returns its final result."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_check.context import Context, Report, aprrd

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Step:
    name: str
    seconds: int  # limit on the GPU
    tiny_seconds: int  # limit with --tiny
    fn: Callable[[Context, Report], dict]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def rate(fn: Callable[[], object], n: int, warmup: int, device: torch.device) -> float:
    """Calls per second of ``fn`` after ``warmup`` calls, the device synchronised around."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return n / (time.perf_counter() - t0)


# --- environment ----------------------------------------------------------------------------


def environment(ctx: Context, report: Report) -> dict:
    from aprrd_cli import __version__

    info: dict = {
        "aprrd": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu cores": os.cpu_count(),
        "compiler": shutil.which("cc") or shutil.which("gcc") or None,
    }
    with contextlib.suppress(ImportError):
        import triton

        info["triton"] = triton.__version__
    with contextlib.suppress(OSError):
        shm = shutil.disk_usage("/dev/shm")
        info["/dev/shm free (MB)"] = round(shm.free / 2**20)
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.dev)
        info |= {
            "gpu": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory (GB)": round(p.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
            "gpus visible": torch.cuda.device_count(),
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    return {"status": "ok", "info": info}


# --- the suite's device tests ----------------------------------------------------------------


def device_tests(ctx: Context, report: Report) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", "--device", ctx.device]
    cmd += ["tests/test_on_device.py", "-o", "addopts=-ra"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    (ctx.out / "pytest.txt").write_text(text)
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or [""]
    return {"status": "ok" if proc.returncode == 0 else "failed", "summary": last[0], "exit": proc.returncode}


# --- throughput at the paper's settings --------------------------------------------------------


def throughput(ctx: Context, report: Report) -> dict:
    """APR (batch 8 x 256^2) and RD (batch 8 x 128^2) iterations per second as the engine runs
    them (fused Adam, channels-last), in each precision; with a loss read every step and
    without; peak memory; and the projected time of the paper's 400k + 200k iterations."""
    from aprrd_cli.device import set_fp32_math

    width, (b, p_apr, p_rd) = (8, (1, 64, 64)) if ctx.tiny else (48, (8, 256, 128))
    modes = ["fp32", "bf16"] if not ctx.cuda else ["fp32", "tf32", "bf16", "bf16+compile"]
    if ctx.tiny and ctx.cuda:
        modes = modes[:3]
    rows: dict[str, dict] = {}
    result: dict = {"status": "ok", "batch": b, "apr_patch": p_apr, "rd_patch": p_rd, "width": width, "rows": rows}
    for mode in modes:
        rows[mode], flops = measure_mode(ctx, mode, width, b, p_apr, p_rd)
        if flops:
            result["apr_flops"], result["rd_flops"] = flops
        report(result)
        if ctx.cuda:
            torch.cuda.empty_cache()
    set_fp32_math("fp32")
    best = max(rows, key=lambda m: rows[m]["apr_it_s"])
    result["best"] = best
    if ctx.cuda and "apr_flops" in result:
        result["bf16_peak_tflops"] = 790  # H200's dense bf16 rate quoted in the issue (about)
        result["fraction_of_peak"] = result["apr_flops"] * rows[best]["apr_it_s"] / 790e12
    result["sync_per_step"] = sync_check(ctx)
    return result


def measure_mode(
    ctx: Context, mode: str, width: int, b: int, p_apr: int, p_rd: int
) -> tuple[dict, tuple[int, int] | None]:
    """One row of the throughput table (and, for fp32, the FLOPs of an APR and an RD step)."""
    from aprrd_cli.device import autocast, set_fp32_math
    from aprrd_cli.losses.apr import apr_step_loss
    from aprrd_cli.losses.rd import rd_step_loss
    from aprrd_cli.models import ATBSN, NBSN100
    from aprrd_cli.training.config import APRConfig
    from aprrd_cli.training.schedule import make_optimizer
    from aprrd_cli.training.stages import CompiledTeacher, generator
    from benchmarks.harness import count_flops

    dev = ctx.dev
    n, warm = (2, 1) if ctx.tiny else (10, 3)
    precision, compiled = mode.split("+")[0], mode.endswith("+compile")
    set_fp32_math(precision)
    torch.manual_seed(0)
    layout = {"memory_format": torch.channels_last} if ctx.cuda else {}
    teacher = ATBSN(width=width).to(dev, **layout)
    student = NBSN100(width=width).to(dev, **layout)
    frozen = ATBSN(width=width).to(dev, **layout).eval().requires_grad_(False)
    cfg = APRConfig(iters=1, lr=3e-4)
    opt_t, opt_s = make_optimizer(teacher.parameters(), cfg, dev), make_optimizer(student.parameters(), cfg, dev)
    y = torch.rand(b, 3, p_apr, p_apr, device=dev).contiguous(memory_format=torch.channels_last)
    y2 = torch.rand(b, 3, p_rd, p_rd, device=dev).contiguous(memory_format=torch.channels_last)
    gen = generator(dev, 0)
    t_net, s_net, targets = teacher, student, frozen
    t0 = time.perf_counter()
    if compiled:
        t_net, s_net, targets = torch.compile(teacher), torch.compile(student), CompiledTeacher(frozen)

    def apr(read: bool) -> None:
        opt_t.zero_grad(set_to_none=True)
        with autocast(dev, precision):
            loss = apr_step_loss(t_net, y, gen)
        loss.backward()
        opt_t.step()
        if read:
            loss.item()

    def rd(read: bool) -> None:
        opt_s.zero_grad(set_to_none=True)
        with autocast(dev, precision):
            loss = rd_step_loss(s_net, targets, y2, gen)
        loss.backward()
        opt_s.step()
        if read:
            loss.item()

    row: dict = {}
    if compiled:
        apr(True)
        rd(True)
        sync(dev)
        row["compile_seconds"] = round(time.perf_counter() - t0, 1)
    reset_peak(dev)
    row["apr_it_s_read"] = rate(lambda: apr(True), n, warm, dev)
    row["apr_peak_gb"] = peak_gb(dev)
    row["apr_it_s"] = rate(lambda: apr(False), n, warm, dev)
    reset_peak(dev)
    row["rd_it_s_read"] = rate(lambda: rd(True), n, warm, dev)
    row["rd_peak_gb"] = peak_gb(dev)
    row["rd_it_s"] = rate(lambda: rd(False), n, warm, dev)
    row["projected_hours"] = (400_000 / row["apr_it_s"] + 200_000 / row["rd_it_s"]) / 3600
    flops = (count_flops(lambda: apr(False)), count_flops(lambda: rd(False))) if mode == "fp32" else None
    return row, flops


def sync_check(ctx: Context) -> dict:
    """Synchronisations the engine's own step makes (train_step + apply_update, no loss read due),
    counted by CUDA's sync debug mode: the target is none."""
    if not ctx.cuda:
        return {"skipped": "CUDA's sync debug mode needs a GPU"}
    from aprrd_cli.training import engine
    from aprrd_cli.training.config import APRConfig, RunOptions
    from aprrd_cli.training.stages import apr_stage

    b, p = (1, 64) if ctx.tiny else (8, 256)
    cfg = APRConfig(iters=1000, batch_size=b, patch_size=p, width=8 if ctx.tiny else 48)
    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(run_dir=Path(tmp), device=ctx.device, show_progress=False, log_every=1000, save_every=1000)
        stage = apr_stage(cfg, ctx.dev, opts, "sync")
        run = engine.open_run(stage, cfg, opts, ctx.dev, "bf16", (0, 1))
        y = torch.rand(b, 3, p, p).pin_memory()
        for it in range(3):  # warm-up: caches, cuDNN's choices
            engine.apply_update(run, engine.train_step(run, engine.next_batch(iter([(it, y)]), it, run), it), 1e-4)
        torch.cuda.synchronize()
        counted = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for it in range(3, 8):
                    batch = engine.next_batch(iter([(it, y)]), it, run)
                    engine.apply_update(run, engine.train_step(run, batch, it), 1e-4)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            counted = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": 5, "synchronisations": len(counted), "first": counted[:3]}


# --- the engine end to end ------------------------------------------------------------------


def noisy_folder(ctx: Context, work: Path, n: int = 4) -> Path:
    """The real noisy photos (cc15) when carried here, else random ones (the engine does not care)."""
    real = ctx.photos / "cc15" / "noisy"
    if real.is_dir():
        return real
    from aprrd_cli.data.images import write_image

    folder = work / "photos"
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(folder / f"p{i}.png", rng.integers(0, 256, (320, 384, 3), dtype=np.uint8))
    return folder


def log_rate(run_dir: Path) -> float | None:
    """Iterations per second of a run from its log (the engine's own clock: data, reads, saves included)."""
    recs = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if '"seconds"' in ln]
    if len(recs) < 2:
        return None
    first, last = recs[0], recs[-1]
    return (last["iteration"] - first["iteration"]) / max(last["seconds"] - first["seconds"], 1e-9)


def engine_end_to_end(ctx: Context, report: Report) -> dict:
    """train-apr with workers and pinned memory, stopped and resumed; distill; a one-rank DDP step."""
    result: dict = {"status": "ok"}
    size = ["--batch-size", "1", "--patch-size", "64", "--width", "8"] if ctx.tiny else ["--batch-size", "8"]
    k = 3 if ctx.tiny else 40
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        aprrd("prepare-data", noisy_folder(ctx, work), "--out", work / "prep")
        common = ["--data", work / "prep", "--device", ctx.device, "--workers", "1" if ctx.tiny else "4"]
        common += ["--log-every", "1" if ctx.tiny else "10", "--save-every", str(k)]
        precision = ["--precision", "bf16"]
        aprrd("train-apr", *common, *size, *precision, "--run-dir", work / "apr", "--iters", 2 * k, "--stop-at", k)
        aprrd("train-apr", "--run-dir", work / "apr", "--resume")
        result["apr_it_s"] = log_rate(work / "apr")
        result["resumed_to"] = torch.load(work / "apr" / "teacher.pth", weights_only=True)["iteration"]
        report(result)
        rd_size = size if ctx.tiny else ["--batch-size", "8"]
        aprrd("distill", *common, *rd_size, *precision, "--teacher", work / "apr" / "teacher.pth",
              "--run-dir", work / "rd", "--iters", k)  # fmt: skip
        result["rd_it_s"] = log_rate(work / "rd")
        report(result)
    result["ddp"] = one_rank_ddp(ctx)
    return result


def one_rank_ddp(ctx: Context) -> dict:
    """One APR step under DistributedDataParallel in a one-process group (NCCL on a GPU)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from aprrd_cli.losses.apr import apr_step_loss
    from aprrd_cli.models import ATBSN
    from aprrd_cli.training.stages import generator

    backend = "nccl" if ctx.cuda else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        net = ATBSN(width=8).to(ctx.dev)
        ddp = DDP(net, device_ids=[ctx.dev.index or 0] if ctx.cuda else None)
        loss = apr_step_loss(ddp, torch.rand(2, 3, 64, 64, device=ctx.dev), generator(ctx.dev, 0))
        loss.backward()
        ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        result = {"backend": backend, "ok": bool(ok), "loss": float(loss.detach())}
    finally:
        # gloo's teardown of a finished group was seen to hang once in a loaded CI run (the step then
        # timed out with its work done): wait for it a bounded time, then go on; the step's process
        # ends right after writing its result (run_step), so a stuck teardown thread cannot hold it
        teardown = threading.Thread(target=dist.destroy_process_group, daemon=True)
        teardown.start()
        teardown.join(TEARDOWN_SECONDS)
    if teardown.is_alive():
        result["teardown"] = f"destroy_process_group still running after {TEARDOWN_SECONDS} s; left behind"
    return result


TEARDOWN_SECONDS = 30  # how long a finished DDP group's teardown may take before the step goes on


# --- inference on a 12 MP photo -----------------------------------------------------------------


def inference(ctx: Context, report: Report) -> dict:
    """The student on a 12 MP photo, whole and tiled: time (first call and later), peak memory,
    and how far the tiled result is from the whole one."""
    from aprrd_cli.data.images import read_image
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models import NBSN100
    from aprrd_cli.models.checkpoint import load_model

    h, w = (256, 320) if ctx.tiny else (3000, 4000)
    src = sorted((ctx.photos / "cc15" / "noisy").glob("*.png"))
    if src:
        img = torch.from_numpy(read_image(src[0])[0].astype(np.float32) / 255).permute(2, 0, 1)[None]
    else:
        img = torch.rand(1, 3, 512, 512)
    reps = (-(-h // img.shape[2]), -(-w // img.shape[3]))
    x = img.repeat(1, 1, *reps)[:, :, :h, :w].contiguous()  # a real photo tiled to size (its noise is real)
    if ctx.official.is_file():
        model, what = load_model(ctx.official).model, "official 1.00M student"
    else:
        model, what = NBSN100(width=8 if ctx.tiny else 48), "random student"
    result: dict = {"status": "ok", "model": what, "size": f"{w}x{h}"}
    outs = {}
    for name, tile in (("whole", 0), ("tiled", None)):
        den = Denoiser(model, ctx.dev, tile=tile)
        reset_peak(ctx.dev)
        times = []
        for _ in range(2):
            sync(ctx.dev)
            t0 = time.perf_counter()
            with contextlib.suppress(torch.OutOfMemoryError):
                outs[name] = den(x)
            sync(ctx.dev)
            times.append(time.perf_counter() - t0)
        result[name] = {"first_s": times[0], "later_s": times[1], "peak_gb": peak_gb(ctx.dev),
                        "fit": name in outs}  # fmt: skip
        report(result)
    if len(outs) == 2:
        result["max_diff_grey_levels"] = float((outs["whole"] - outs["tiled"]).abs().max() * 255)
    return result


# --- the runner of one step --------------------------------------------------------------------


def real(ctx: Context, report: Report) -> dict:
    from benchmarks.gpu_check.real_run import real_run

    return real_run(ctx, report)


STEPS = (
    Step("environment", 30, 60, environment),
    Step("device-tests", 75, 240, device_tests),
    Step("throughput", 105, 120, throughput),
    Step("engine", 50, 180, engine_end_to_end),
    Step("inference", 35, 60, inference),
    Step("real-run", 185, 300, real),
)


def run_step(ctx: Context, name: str) -> int:
    """In the child: run one step, writing what it has so far for the parent after every report."""
    step = next(s for s in STEPS if s.name == name)
    file = ctx.out / f".step-{name}.json"

    def report(partial: dict) -> None:
        tmp = file.with_suffix(".part")
        tmp.write_text(json.dumps({**partial, "status": "partial"}, default=str))
        tmp.replace(file)

    from aprrd_cli.utils.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        result = step.fn(ctx, report)
    except Exception as e:
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(e).__name__}: {str(e).strip()[:300]}"}
        with contextlib.suppress(OSError, ValueError):
            result = {**json.loads(file.read_text()), **result}
    tmp = file.with_suffix(".part")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(file)
    code = 0 if result.get("status") in ("ok", "skipped") else 1
    if any(t.daemon and t.is_alive() for t in threading.enumerate()):
        # a library's thread left stuck (a process group's teardown): its interpreter shutdown could
        # hang on it, and the result is written, so end the process now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
