"""The ONE training engine. A stage (APR or RD) hands it a network, its loss and its random
generators; the engine owns everything else: the optimiser and schedule (``schedule``), mixed
precision, DDP, checkpoints and resuming (``state``), signals, the NaN guard, validation,
logs and the progress display.

Determinism: a step's batch is a pure function of (seed, step) (the data sampler), the APR
draw / recharge choice come from the stage's own generators, which the checkpoint saves
with every other random state. Resuming from ``checkpoints/last.pth`` therefore repeats the
uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from rich.markup import escape
from rich.progress import TextColumn
from torch import nn

from aprrd_cli.console import console, duration, progress, warn
from aprrd_cli.device import autocast, barrier, is_main
from aprrd_cli.errors import AprrdError
from aprrd_cli.models.checkpoint import model_payload, save_model, save_payload
from aprrd_cli.training.config import TrainConfig
from aprrd_cli.training.records import RunLog, collapse_warning, plot, write_json
from aprrd_cli.training.schedule import make_optimizer, make_schedule
from aprrd_cli.training.state import (
    STATE_FORMAT,
    capture_rng,
    checkpoint_path,
    remove_leftovers,
    restore_rng,
    resume_state,
)
from aprrd_cli.training.tensorboard import Board
from aprrd_cli.utils.interrupts import hold_signals


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
    closing_note: str | None = None  # said after the result instead of the paper-budget note


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


@dataclass
class Run:
    """One run in progress: what is trained and how (fixed once it starts), and where it stands.

    The engine's steps are plain functions of it (``train_step``, ``apply_update``,
    ``save_checkpoint``, ``validate_now``); an interruption saves what it says.
    """

    stage: Stage
    cfg: TrainConfig
    opts: Any
    device: torch.device
    precision: str
    share: tuple[int, int]
    main: bool  # rank 0: the one process that writes files, logs and the display
    net: nn.Module  # what the step calls: the model, wrapped in DDP and/or compiled
    eager: nn.Module  # the same without compilation (the fall-back)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    log: RunLog | None
    start: int  # the iteration this process began at
    stop: int  # the iteration it ends at (--stop-at, or the run's total)
    log_every: int
    read_every: int  # the loss is read from the device every this many iterations (1 on the CPU)
    done: int = 0
    saved_at: int = 0
    elapsed_before: float = 0.0  # training time of the earlier processes of this run
    t0: float = field(default_factory=time.perf_counter)
    window: list[float] = field(default_factory=list)  # losses since the last log record
    unread: list[torch.Tensor] = field(default_factory=list)  # losses of iterations not read yet
    last_loss: float | None = None
    last_val: dict | None = None
    collapse_warned: bool = False
    drawn_to_done: dict[str, torch.Tensor] = field(default_factory=dict)  # generator states after ``done``
    last_save: float = field(default_factory=time.monotonic)  # when this process last saved (or began)
    timed_save: bool = False  # --save-minutes is up: save after this iteration
    board: Board | None = None  # TensorBoard events (--tensorboard), rank 0

    @property
    def model(self) -> nn.Module:
        return self.stage.model

    @property
    def checkpoint(self) -> Path:
        return checkpoint_path(Path(self.opts.run_dir))

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def remember_draws(self) -> None:
        """The draw state after iteration ``done``: what an interruption in the next step saves."""
        self.drawn_to_done = {k: g.get_state() for k, g in self.stage.generators.items()}


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


def preflight(cfg: TrainConfig, opts) -> None:
    """Refuse a run that cannot start here before anything heavy happens (the identity of the
    data and the teacher, which need them loaded, is checked again by ``train``)."""
    resume_state(cfg, Path(opts.run_dir), opts.resume)


def _mean_across_ranks(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


def train(
    stage: Stage,
    cfg: TrainConfig,
    opts,
    sampler: Sampler,
    device: torch.device,
    precision: str = "fp32",
    validate: Callable[[nn.Module], dict] | None = None,
    share: tuple[int, int] = (0, 1),
    precision_reason: str = "",
) -> TrainResult:
    """Train ``stage.model`` to ``cfg.iters`` (or ``opts.stop_at``), resuming if asked."""
    run = open_run(stage, cfg, opts, device, precision, share, precision_reason)
    batch_bytes = cfg.batch_size // share[1] * 3 * cfg.patch_size**2 * 4
    workers = workers_that_fit(opts.workers, batch_bytes, announce=run.main)
    loader = sampler.loader(run.start, num_workers=workers, pin_memory=device.type == "cuda")
    columns = (TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"))
    shown = run.main and opts.show_progress
    try:
        with progress("it", *columns) if shown else contextlib.nullcontext() as bar:
            task = (
                bar.add_task(stage.title, total=run.stop, completed=run.start, loss="--", lr=f"{cfg.lr:.2e}")
                if shown
                else None
            )
            for it in range(run.start, run.stop):
                y = next_batch(loader, it, run)
                lr = run.opt.param_groups[0]["lr"]
                loss = train_step(run, y, it)
                apply_update(run, loss, lr)
                if task is not None:
                    shown_loss = "--" if run.last_loss is None else f"{run.last_loss:.4f}"
                    bar.update(task, completed=run.done, loss=shown_loss, lr=f"{lr:.2e}")
                if (validate is not None or opts.val) and validation_due(run):  # opts.val: the other DDP ranks
                    if validate is not None and run.main:
                        validate_now(run, validate, bar.console.print if task is not None else None)
                    barrier()  # the other ranks wait here, not inside their next gradient exchange
                if save_due(run):
                    save_checkpoint(run)
    except KeyboardInterrupt:
        save_interrupted(run)
        raise
    finally:
        if run.board is not None:
            run.board.close()
    return finish(run)


def open_run(
    stage: Stage,
    cfg: TrainConfig,
    opts,
    device: torch.device,
    precision: str,
    share: tuple[int, int],
    precision_reason: str = "",
) -> Run:
    """Everything a run needs before its first step: the optimiser and schedule, the checkpoint
    it continues (after every check), the wrapped network, the log and ``config.json``."""
    rank, world = share
    main = rank == 0 and is_main()
    run_dir = Path(opts.run_dir)
    model = stage.model
    model.train()
    opt = make_optimizer(model.parameters(), cfg, device)
    sched = make_schedule(opt, cfg)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    saved = resume_state(cfg, run_dir, opts.resume, stage.identity)
    start, elapsed = 0, 0.0
    if saved is not None:
        state = saved["training"]
        model.load_state_dict(saved["model_state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        moved = restore_rng(state["rng"], stage.generators)
        start, elapsed = int(saved["iteration"]), float(state.get("elapsed", 0.0))
        if moved and main:
            warn(
                f"this run made its {', '.join(moved)} draws on {state['rng'].get('device', 'another device')} and "
                f"continues on {device.type}: a generator's state cannot move between devices, so from iteration "
                f"{start + 1} on those draws differ from an uninterrupted run's (the training is otherwise the same)"
            )
    stop = cfg.iters if opts.stop_at is None else min(opts.stop_at, cfg.iters)
    if stop <= start:
        raise AprrdError(f"--stop-at {opts.stop_at} is not after the checkpoint's iteration {start}", exit_code=2)

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    eager = net
    if opts.compile:
        net = torch.compile(net)

    log = None
    if main:
        remove_leftovers(run_dir)
        log = RunLog(run_dir / "log.jsonl", start if opts.resume else None)
        write_json(
            run_dir / "config.json",
            {
                "config": cfg.to_dict(),
                "options": opts.to_dict(),
                "device": str(device),
                "precision": precision,
                "precision_reason": precision_reason,
                "world_size": world,
                "identity": {k: v[0] for k, v in stage.identity.items()},
            },
        )
    log_every = opts.log_every or max(1, min(100, cfg.iters // 50))
    read_every = read_interval(device, log_every)
    run = Run(stage, cfg, opts, device, precision, share, main, net, eager, opt, sched, scaler, log, start, stop,
              log_every, read_every, done=start, saved_at=start, elapsed_before=elapsed)  # fmt: skip
    run.remember_draws()
    if main and getattr(opts, "tensorboard", False):
        run.board = Board(run_dir, start)
    return run


def read_interval(device: torch.device, log_every: int) -> int:
    """How often the loss is brought to the host: every step on the CPU, where that costs nothing
    and a NaN then stops the run before its update; every log record elsewhere, since on a GPU
    each read waits for all queued work and nothing else in a step does."""
    return 1 if device.type == "cpu" else log_every


def next_batch(loader: Iterator[tuple[int, Any]], it: int, run: Run) -> torch.Tensor:
    """The batch of iteration ``it`` on the device, in the run's memory layout."""
    s, y = next(loader)
    if s != it:
        raise RuntimeError(f"sampler returned step {s} for iteration {it}")
    y = y.to(run.device, non_blocking=True)
    if run.device.type == "cuda" and run.opts.channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    return y


def train_step(run: Run, y: torch.Tensor, it: int) -> torch.Tensor:
    """Forward and backward of one iteration; returns the loss, detached, on the device (the
    update comes after). The first step under --compile falls back to eager mode, with the same
    draws, if compiling fails."""
    if it != run.start or not run.opts.compile:
        return _forward_backward(run, y, it)
    before = {k: g.get_state() for k, g in run.stage.generators.items()}
    try:
        return _forward_backward(run, y, it)
    except NonFiniteLoss:
        raise
    except Exception as e:  # compilation failed: train eagerly instead
        warn(f"--compile failed ({type(e).__name__}: {str(e).strip()[:120]}); training without it")
        for k, g in run.stage.generators.items():
            g.set_state(before[k])
        run.net = run.eager
        return _forward_backward(run, y, it)


def _forward_backward(run: Run, y: torch.Tensor, it: int) -> torch.Tensor:
    run.opt.zero_grad(set_to_none=True)
    with autocast(run.device, run.precision):
        loss = run.stage.loss(run.net, y, run.share)
    detached = loss.detach().float()
    if run.read_every == 1:  # on the CPU a read costs nothing: a NaN stops the run before its update
        value = _mean_across_ranks(detached, run.share[1]).item()
        if not math.isfinite(value):
            _non_finite(run, value, it + 1)
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    return detached


def _non_finite(run: Run, value: float, iteration: int) -> None:
    advice = nan_advice(run.precision, run.saved_at, run.checkpoint, run.cfg.lr)
    raise NonFiniteLoss(f"the loss became {value} at iteration {iteration}; stopped: {advice}")


def save_due(run: Run) -> bool:
    return run.done % run.opts.save_every == 0 or run.done == run.stop or run.timed_save


def timed_save_due(run: Run) -> bool:
    """Whether ``--save-minutes`` have passed since the last save, decided once an iteration (in
    ``apply_update``, so the losses are read before the save). Under DDP every rank must make the
    same choice: rank 0's clock decides, at the log records, where the ranks meet anyway."""
    minutes = run.opts.save_minutes
    if not minutes:
        return False
    world = run.share[1]
    if world > 1 and run.done % run.log_every:
        return False
    due = time.monotonic() - run.last_save >= 60 * minutes
    if world > 1:
        flag = torch.tensor(float(due), device=run.device)
        dist.broadcast(flag, 0)
        due = bool(flag.item())
    return due


def apply_update(run: Run, loss: torch.Tensor, lr: float) -> None:
    """The optimiser step and its records: all of a step or none of it, whatever signal comes.

    The losses are read from the device every ``read_every`` iterations and before every
    checkpoint: on a GPU nothing else waits for the device inside a step, and a NaN is caught
    before a checkpoint could hold it.
    """
    with hold_signals():
        if run.scaler is not None:
            scale = run.scaler.get_scale()
            run.scaler.step(run.opt)
            run.scaler.update()
            if run.scaler.get_scale() >= scale:  # a skipped step (inf gradients) lowers the scale
                run.sched.step()  # the schedule follows the updates that were made
        else:
            run.opt.step()
            run.sched.step()
        run.done += 1
        run.remember_draws()
        run.timed_save = timed_save_due(run)
        run.unread.append(loss)
        if run.done % run.read_every == 0 or run.done % run.log_every == 0 or save_due(run):
            _read_losses(run, lr)


def _read_losses(run: Run, lr: float) -> None:
    """Bring the unread losses to the host (one wait for the device), stop on a non-finite one,
    and write the log records that are due."""
    values = _mean_across_ranks(torch.stack(run.unread), run.share[1]).tolist()
    first = run.done - len(values) + 1
    for i, value in enumerate(values):
        if not math.isfinite(value):
            _non_finite(run, value, first + i)
    run.unread = []
    for i, value in enumerate(values):
        done = first + i
        run.window.append(value)
        run.last_loss = value
        if run.main and (done % run.log_every == 0 or done == run.stop):
            record = {"iteration": done, "loss": sum(run.window) / len(run.window), "lr": lr}
            run.log.add({**record, "seconds": run.elapsed()})
            if run.board is not None:
                run.board.train(done, record["loss"], lr)
            run.window = []


def validation_due(run: Run) -> bool:
    every = run.opts.val_every
    return bool(every and run.done % every == 0) or run.done == run.cfg.iters


def validate_now(run: Run, validate: Callable[[nn.Module], dict], report: Callable[[str], None] | None) -> None:
    """Score the model, log it, and warn once when the score collapsed (docs/training.md)."""
    run.last_val = validate(run.model)
    run.model.train()
    picture = run.last_val.pop("picture", None)  # for TensorBoard only
    psnr, ssim = run.last_val["psnr"], run.last_val["ssim"]
    run.log.add({"iteration": run.done, "val_psnr": psnr, "val_ssim": ssim})
    if run.board is not None:
        run.board.validation(run.done, psnr, ssim, picture)
    if report is not None:
        report(f"iteration {run.done}: validation PSNR {psnr:.2f} dB, SSIM {ssim:.4f}")
    if not run.collapse_warned and (collapsed := collapse_warning(run.log.records)):
        run.collapse_warned = True  # once a run: the user has been told
        warn(collapsed)


def save_checkpoint(run: Run) -> None:
    """``RUN/checkpoints/last.pth`` at iteration ``done`` (rank 0), and the loss plot."""
    if run.main:
        training = {
            "format": STATE_FORMAT,
            "config": run.cfg.to_dict(),
            "identity": {k: list(v) for k, v in run.stage.identity.items()},
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "rng": capture_rng(run.stage.generators),
            "elapsed": run.elapsed(),
            "world_size": run.share[1],
            "options": run.opts.to_dict(),
        }
        save_payload(run.checkpoint, model_payload(run.model, run.done, training=training))
        plot(run.log.records, Path(run.opts.run_dir) / "loss.png", run.stage.title)
    run.saved_at = run.done
    run.last_save, run.timed_save = time.monotonic(), False


def save_interrupted(run: Run) -> None:
    """Ctrl-C or SIGTERM: a checkpoint at the last completed iteration, with the draw state that
    the interrupted step will redraw, so that the resumed run repeats the uninterrupted one."""
    for k, g in run.stage.generators.items():
        g.set_state(run.drawn_to_done[k])
    if run.done > run.saved_at:
        save_checkpoint(run)
    if run.main:
        console.print(
            f"{run.stage.title}: interrupted after iteration {run.done} of {run.cfg.iters}; checkpoint "
            f"{run.checkpoint}; continue with the same command and --resume"
        )


def finish(run: Run) -> TrainResult:
    """The final model file when the run reached its total, and the summary lines."""
    finished = run.done >= run.cfg.iters
    output = Path(run.opts.run_dir) / run.cfg.output if finished else None
    if run.main:
        if finished:
            save_model(output, run.model, run.done, training=run.cfg.to_dict(), **run.stage.meta)
        _summary(run, output)
    return TrainResult(
        run.done, run.cfg.iters, finished, output, run.checkpoint, run.elapsed(), run.last_loss, run.last_val
    )


def _summary(run: Run, output: Path | None) -> None:
    this_run = time.perf_counter() - run.t0
    rate = (run.done - run.start) / this_run if this_run > 0 else 0.0
    rec = run.log.last("loss") if run.log else None
    parts = [
        f"{run.stage.title}: {run.done - run.start} iterations in {duration(this_run)} ({rate:.2f} it/s)",
        f"at {run.done} of {run.cfg.iters}",
    ]
    if rec:
        parts.append(f"loss {rec['loss']:.4f}")
    if run.last_val:
        parts.append(f"validation PSNR {run.last_val['psnr']:.2f} dB / SSIM {run.last_val['ssim']:.4f}")
    console.print(", ".join(parts))
    if output is not None:
        console.print(f"finished in {duration(run.elapsed())} of training; result -> {output}")
        note = run.stage.closing_note.format(output=escape(str(output))) if run.stage.closing_note else None
        note = note or budget_note(run.cfg, run.done, output)
        if note:
            console.print(note)
    else:
        console.print(
            f"stopped at iteration {run.done} (--stop-at); checkpoint {run.checkpoint}; continue with --resume"
        )


# the paper's budget per stage in pixels seen (iterations x batch x patch side^2)
PAPER_PIXELS = {"apr": 400_000 * 8 * 256**2, "rd": 200_000 * 8 * 128**2}
SMALL_BUDGET = 0.05  # below this share of the paper's pixels, say what such runs gave


def budget_note(cfg: TrainConfig, done: int, output: Path) -> str | None:
    """What a short run can be expected to give, and how to check it without a clean image.

    A photographer's CPU evening is about 1/1000 of the paper's budget; at such budgets a model
    trained from scratch on a camera's own photos has stayed below the official SIDD-trained
    student on every set measured, while adapting the official student beat it (docs/results.md);
    a worse-than-input model must not pass unnoticed."""
    paper = PAPER_PIXELS.get(cfg.stage)
    if paper is None:
        return None
    share = done * cfg.batch_size * cfg.patch_size**2 / paper
    if share >= SMALL_BUDGET:
        return None
    return (
        f"budget: this run saw 1/{round(1 / share):,} of the paper's training (pixels: iterations x batch x "
        "patch^2); at up to 1/800 of it on a CPU, models trained from scratch on a camera's own photos stayed "
        "below the official student, and adapting it did better: aprrd distill --teacher official --init "
        "official (docs/results.md). Check it on your photos, no clean image needed: "
        f"aprrd evaluate --model {output} --photos DIR"
    )


def workers_that_fit(workers: int, batch_bytes: int, announce: bool, prefetch: int = 2) -> int:
    """As many data-loading processes as /dev/shm can hold the batches of.

    Workers hand their batches over through shared memory (``prefetch`` batches each in
    flight); a container's default 64 MB ``/dev/shm`` fails with a bus error for 4 workers of
    8 x 256^2 patches. Fewer workers cost little: one process samples thousands of crops a second.
    """
    if workers <= 0:
        return 0
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers  # no /dev/shm (not Linux): the platform's own mechanism
    need = 2 * prefetch * batch_bytes  # twice what is in flight: pinned copies and the next batch overlap
    fit = min(workers, int(free // need))
    if fit < workers and announce:
        where = f"{fit} worker(s)" if fit else "the main process"
        warn(
            f"/dev/shm has {free / 2**20:.0f} MB free, less than {workers} data workers need "
            f"({workers * need / 2**20:.0f} MB); loading in {where} instead (in a container, raise --shm-size)"
        )
    return fit
