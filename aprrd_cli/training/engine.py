"""The ONE training engine. A stage (APR or RD) hands it a network, its loss and its random
generators; the engine owns everything else: Adam and the cosine schedule, mixed precision,
DDP, checkpoints and resuming, signals, the NaN guard, logs, the progress bar.

Determinism: a step's batch is a pure function of (seed, step) (the data sampler), the APR
draw / recharge choice come from the stage's own generators, which the checkpoint saves
with every other random state. Resuming from ``checkpoints/last.pth`` therefore repeats the
uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import TextColumn
from torch import nn

from aprrd_cli.console import console, duration, progress, warn
from aprrd_cli.device import autocast, is_main
from aprrd_cli.errors import AprrdError
from aprrd_cli.fsutil import remove_partials
from aprrd_cli.interrupts import hold_signals
from aprrd_cli.models.checkpoint import model_payload, read_raw, save_model, save_payload
from aprrd_cli.training.config import TrainConfig, differences, option_name
from aprrd_cli.training.records import RunLog, collapse_warning, plot, write_json

STATE_FORMAT = "aprrd-training-state"
BETAS = (0.9, 0.999)


class NonFiniteLoss(AprrdError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""


class Sampler(Protocol):
    def loader(self, start_step: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[tuple[int, Any]]: ...


@dataclass
class Stage:
    """What a training stage plugs into the engine."""

    name: str  # "apr" | "rd"
    title: str  # for messages: "APR (teacher)"
    model: nn.Module  # the network being trained, unwrapped, on the device
    loss: Callable[[nn.Module, torch.Tensor, tuple[int, int]], torch.Tensor]  # (net, batch, (rank, world))
    generators: dict[str, torch.Generator]  # saved and restored with the checkpoint
    identity: dict[str, Any] = field(default_factory=dict)  # must match on resume: {"option": (value, what)}
    meta: dict[str, Any] = field(default_factory=dict)  # extra entries of the final model file


@dataclass
class TrainResult:
    iteration: int
    total: int
    finished: bool
    output: Path | None
    checkpoint: Path
    seconds: float
    loss: float | None
    val: dict | None


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pth"


def read_state(run_dir: Path) -> dict | None:
    """The training state of ``RUN/checkpoints/last.pth`` (None when there is none)."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        return None
    raw = read_raw(path)
    state = raw.get("training")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AprrdError(f"{path} is not an aprrd training checkpoint; choose another --run-dir")
    return raw


def remove_leftovers(run_dir: Path) -> None:
    """Delete temporary files a ``kill -9`` during a save left behind (the lock is held)."""
    remove_partials(run_dir, run_dir / "checkpoints")


# --- random states -------------------------------------------------------------------------


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss)},
        "numpy_gauss": float(gauss),
        "python": list(random.getstate()[1]),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], state["numpy_gauss"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


# --- the schedule --------------------------------------------------------------------------


def cosine(total: int) -> Callable[[int], float]:
    """Learning-rate factor of iteration i (0-based): cosine from 1 to 0 over ``total``."""

    def factor(i: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))

    return factor


# --- the engine ----------------------------------------------------------------------------


def _mean_across_ranks(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


def nan_advice(precision: str, saved_at: int, ckpt: Path, lr: float) -> str:
    """What is kept and what to try after a NaN, offering only what is possible: no --resume
    without a checkpoint, no fp32 when the run already was."""
    lower = f"a lower --lr (e.g. {lr / 3:.1e})"
    if not saved_at:
        other = f"{lower} or --precision fp32" if precision != "fp32" else lower
        return f"no checkpoint had been written yet; start again with {other}"
    fixes = ["continue from it with --resume --precision fp32"] if precision != "fp32" else []
    fixes.append(f"start a new --run-dir with {lower}")
    return f"the last good checkpoint {ckpt} (iteration {saved_at}) is kept; {', or '.join(fixes)}"


def check_resume(saved: dict, cfg: TrainConfig, identity: dict, run_dir: Path) -> None:
    """Refuse a resume whose numbers would differ from the run it continues."""
    from aprrd_cli.training.config import config_from_dict

    state = saved["training"]
    old = config_from_dict(state["config"])
    if old.stage != cfg.stage:
        raise AprrdError(
            f"{run_dir} holds a {old.stage.upper()} run, not {cfg.stage.upper()}; choose another --run-dir"
        )
    diff = differences(old, cfg)
    if diff:
        raise AprrdError(
            f"cannot resume {run_dir}: {'; '.join(diff)} differs from the saved run; "
            "drop the option (resuming keeps the saved values) or start a new --run-dir"
        )
    for key, (value, what) in identity.items():
        before = state.get("identity", {}).get(key)
        if before is not None and before[0] != value:
            raise AprrdError(
                f"cannot resume {run_dir}: {option_name(key)} {what} differs from the one the run started with; "
                "use the same one or start a new --run-dir"
            )
    done = saved.get("iteration") or 0
    if done >= cfg.iters:
        raise AprrdError(
            f"nothing to resume: {run_dir} already finished ({done} of {cfg.iters} iterations); "
            f"its result is {run_dir / cfg.output}"
        )


def preflight(cfg: TrainConfig, opts) -> None:
    """Refuse a run that cannot start here before anything heavy happens (identity checks,
    which need the data and the teacher, come again in ``train``)."""
    run_dir = Path(opts.run_dir)
    saved = read_state(run_dir)
    if opts.resume:
        if saved is None:
            raise AprrdError(f"nothing to resume: {checkpoint_path(run_dir)} does not exist; start without --resume")
        check_resume(saved, cfg, {}, run_dir)
    elif saved is not None:
        raise AprrdError(
            f"{run_dir} already holds a run (checkpoint at iteration {saved.get('iteration')}); "
            "pass --resume to continue it, or choose another --run-dir"
        )


def train(
    stage: Stage,
    cfg: TrainConfig,
    opts,
    sampler: Sampler,
    device: torch.device,
    precision: str = "fp32",
    validate: Callable[[nn.Module], dict] | None = None,
    share: tuple[int, int] = (0, 1),
) -> TrainResult:
    """Train ``stage.model`` to ``cfg.iters`` (or ``opts.stop_at``), resuming if asked."""
    rank, world = share
    main = rank == 0 and is_main()
    run_dir = Path(opts.run_dir)
    ckpt = checkpoint_path(run_dir)
    model = stage.model
    model.train()

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=BETAS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(cfg.iters))
    fp16 = precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16) if fp16 else None
    identity = {k: v for k, v in stage.identity.items()}

    saved = read_state(run_dir)
    start, elapsed_before = 0, 0.0
    if opts.resume:
        if saved is None:
            raise AprrdError(f"nothing to resume: {ckpt} does not exist; start without --resume")
        check_resume(saved, cfg, identity, run_dir)
        state = saved["training"]
        model.load_state_dict(saved["model_state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], stage.generators)
        start = int(saved["iteration"])
        elapsed_before = float(state.get("elapsed", 0.0))
    elif saved is not None:
        raise AprrdError(
            f"{run_dir} already holds a run (checkpoint at iteration {saved.get('iteration')}); "
            "pass --resume to continue it, or choose another --run-dir"
        )

    stop = cfg.iters if opts.stop_at is None else min(opts.stop_at, cfg.iters)
    if stop <= start:
        raise AprrdError(f"--stop-at {opts.stop_at} is not after the checkpoint's iteration {start}", exit_code=2)
    log_every = opts.log_every or max(1, min(100, cfg.iters // 50))

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    eager = net
    if opts.compile:
        net = torch.compile(net)

    if main:
        remove_leftovers(run_dir)
    log = RunLog(run_dir / "log.jsonl", start if opts.resume else None) if main else None
    if main:
        write_json(
            run_dir / "config.json",
            {
                "config": cfg.to_dict(),
                "options": opts.to_dict(),
                "device": str(device),
                "precision": precision,
                "world_size": world,
                "identity": {k: v[0] for k, v in identity.items()},
            },
        )

    def state_payload(done: int, elapsed: float) -> dict:
        return model_payload(
            model,
            done,
            training={
                "format": STATE_FORMAT,
                "config": cfg.to_dict(),
                "identity": {k: list(v) for k, v in identity.items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": capture_rng(stage.generators),
                "elapsed": elapsed,
                "world_size": world,
                "options": opts.to_dict(),
            },
        )

    def save(done: int, elapsed: float) -> None:
        if main:
            save_payload(ckpt, state_payload(done, elapsed))
            plot(log.records, run_dir / "loss.png", stage.title)

    t0 = time.perf_counter()
    done, saved_at = start, start
    # the stage generators' state after iteration ``done``: an interruption in the middle of the next
    # step has already drawn from them, and the checkpoint must hold the state that step will redraw
    drawn_to_done = {k: g.get_state() for k, g in stage.generators.items()}
    window: list[float] = []
    last_loss: float | None = None
    last_val: dict | None = None
    collapse_warned = False
    first_step = True

    def step(y: torch.Tensor, it: int) -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = stage.loss(net, y, share)
        value = _mean_across_ranks(loss.detach().float(), world).item()
        if not math.isfinite(value):
            advice = nan_advice(precision, saved_at, ckpt, cfg.lr)
            raise NonFiniteLoss(f"the loss became {value} at iteration {it + 1}; stopped: {advice}")
        (scaler.scale(loss) if scaler else loss).backward()
        return value

    columns = (TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"))
    bar = progress("it", *columns) if (main and opts.show_progress) else contextlib.nullcontext()
    loader = sampler.loader(start, num_workers=opts.workers, pin_memory=device.type == "cuda")
    try:
        with bar:
            task = (
                bar.add_task(stage.title, total=stop, completed=start, loss="--", lr=f"{cfg.lr:.2e}")
                if main and opts.show_progress
                else None
            )
            for it in range(start, stop):
                s, y = next(loader)
                if s != it:
                    raise RuntimeError(f"sampler returned step {s} for iteration {it}")
                y = y.to(device, non_blocking=True)
                if device.type == "cuda" and opts.channels_last:
                    y = y.contiguous(memory_format=torch.channels_last)
                lr = opt.param_groups[0]["lr"]
                if first_step and opts.compile:
                    before = {k: g.get_state() for k, g in stage.generators.items()}
                    try:
                        value = step(y, it)
                    except NonFiniteLoss:
                        raise
                    except Exception as e:  # compilation failed: train eagerly instead
                        warn(f"--compile failed ({type(e).__name__}: {str(e).strip()[:120]}); training without it")
                        for k, g in stage.generators.items():
                            g.set_state(before[k])
                        net = eager
                        value = step(y, it)
                else:
                    value = step(y, it)
                first_step = False
                with hold_signals():  # the update and its records: all of a step or none of it
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    sched.step()
                    done = it + 1
                    drawn_to_done = {k: g.get_state() for k, g in stage.generators.items()}
                    window.append(value)
                    last_loss = value
                    elapsed = elapsed_before + time.perf_counter() - t0
                    if main and (done % log_every == 0 or done == stop):
                        log.add({"iteration": done, "loss": sum(window) / len(window), "lr": lr, "seconds": elapsed})
                        window = []
                if main:
                    if task is not None:
                        bar.update(task, completed=done, loss=f"{value:.4f}", lr=f"{lr:.2e}")
                if (
                    validate is not None
                    and main
                    and ((opts.val_every and done % opts.val_every == 0) or done == cfg.iters)
                ):
                    last_val = validate(model)
                    model.train()
                    log.add({"iteration": done, "val_psnr": last_val["psnr"], "val_ssim": last_val["ssim"]})
                    if task is not None:
                        bar.console.print(
                            f"iteration {done}: validation PSNR {last_val['psnr']:.2f} dB, SSIM {last_val['ssim']:.4f}"
                        )
                    if not collapse_warned and (collapsed := collapse_warning(log.records)):
                        collapse_warned = True  # once a run: the user has been told
                        warn(collapsed)
                if done % opts.save_every == 0 or done == stop:
                    save(done, elapsed)
                    saved_at = done
    except KeyboardInterrupt:
        for k, g in stage.generators.items():  # undo the draws of the step that did not finish
            g.set_state(drawn_to_done[k])
        if done > saved_at:
            save(done, elapsed_before + time.perf_counter() - t0)
            saved_at = done
        if main:
            console.print(
                f"{stage.title}: interrupted after iteration {done} of {cfg.iters}; checkpoint {ckpt}; "
                "continue with the same command and --resume"
            )
        raise

    seconds = elapsed_before + time.perf_counter() - t0
    finished = done >= cfg.iters
    output = run_dir / cfg.output if finished else None
    if main:
        if finished:
            save_model(output, model, done, training=cfg.to_dict(), **stage.meta)
        _summary(stage, cfg, start, done, seconds, time.perf_counter() - t0, log, ckpt, output, last_val)
    return TrainResult(done, cfg.iters, finished, output, ckpt, seconds, last_loss, last_val)


def _summary(stage, cfg, start, done, seconds, this_run, log, ckpt, output, val) -> None:
    rate = (done - start) / this_run if this_run > 0 else 0.0
    rec = log.last("loss") if log else None
    parts = [
        f"{stage.title}: {done - start} iterations in {duration(this_run)} ({rate:.2f} it/s)",
        f"at {done} of {cfg.iters}",
    ]
    if rec:
        parts.append(f"loss {rec['loss']:.4f}")
    if val:
        parts.append(f"validation PSNR {val['psnr']:.2f} dB / SSIM {val['ssim']:.4f}")
    console.print(", ".join(parts))
    if output is not None:
        console.print(f"finished in {duration(seconds)} of training; result -> {output}")
    else:
        console.print(f"stopped at iteration {done} (--stop-at); checkpoint {ckpt}; continue with --resume")
