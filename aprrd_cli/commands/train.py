"""``aprrd train-apr`` and ``aprrd distill``: the two training stages.

Options left out take the stage's paper defaults, or, with ``--resume``, the values the
run was started with; an option given with ``--resume`` must agree with the saved run.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path

import typer

from aprrd_cli.app import app
from aprrd_cli.commands.options import THREADS
from aprrd_cli.training.config import (
    INHERITED_OPTIONS,
    APRConfig,
    RDConfig,
    RunOptions,
    TrainConfig,
    option_name,
)


def _iters(default: int) -> object:
    return typer.Option(None, "--iters", min=1, help=f"Training iterations (default: {default}).", show_default=False)


def _patch(default: int) -> object:
    # no min= here: the range Typer would print (x>=1) contradicts the rule, which cfg.check explains
    return typer.Option(
        None, "--patch-size", help=f"Square patch side, a multiple of 32 (default: {default}).", show_default=False
    )


BATCH = typer.Option(None, "--batch-size", min=1, help="Global batch (split over DDP processes) (default: 8).")
LR = typer.Option(None, "--lr", help="Initial learning rate, cosine-decayed to 0 (default: 3e-4).")
SEED = typer.Option(None, "--seed", help="Seed of the weights, the patches and the APR/recharge draws (default: 0).")
# Run options: left out on --resume, they take the run's values (INHERITED_OPTIONS); else these defaults
DATA = typer.Option(None, "--data", help="Prepared store (aprrd prepare-data) (default: prepared).", show_default=False)
TRAIN_DEVICE = typer.Option(
    None,
    "--device",
    help="auto, cpu, cuda, cuda:N or mps (default: auto: first CUDA GPU, else CPU).",
    show_default=False,
)
WORKERS = typer.Option(None, "--workers", min=0, help="Data-loading processes (default: 0 on CPU, 4 on GPU).")
SAVE_EVERY = typer.Option(
    None, "--save-every", min=1, help="Write RUN/checkpoints/last.pth every N iterations (default: 1000)."
)
SAVE_MINUTES = typer.Option(
    None,
    "--save-minutes",
    min=0,
    help="Also write the checkpoint when M minutes have passed since the last save, so a kill -9 or a power cut "
    "loses at most that much (default: 2; 0: only every --save-every).",
)
STOP_AT = typer.Option(None, "--stop-at", min=1, help="Stop after iteration N with a checkpoint (resume later).")
RESUME = typer.Option(
    False,
    "--resume",
    help="Continue the run in --run-dir from its last checkpoint; options left out take the run's values.",
)
VAL = typer.Option(
    None, "--val", help="Validate on a folder of pairs (noisy/ + gt/) or on 'sidd-val' from --data.", show_default=False
)
VAL_EVERY = typer.Option(None, "--val-every", min=0, help="Validate every N iterations (default: 0, at the end only).")
PRECISION = typer.Option(
    None,
    "--precision",
    help="auto, fp32 (true fp32), tf32 (GPU), bf16 or fp16 (default: auto, bf16 where the GPU or CPU computes it "
    "natively, else fp32).",
)
DETERMINISTIC = typer.Option(
    None,
    "--deterministic/--no-deterministic",
    help="Deterministic GPU kernels: a resumed run repeats the uninterrupted one bit for bit, slower (default: off; "
    "the CPU is always deterministic).",
)
COMPILE = typer.Option(
    None, "--compile/--no-compile", help="torch.compile the network (falls back to eager if it fails) (default: off)."
)
LOG_EVERY = typer.Option(
    None,
    "--log-every",
    min=1,
    help="Write a log.jsonl record (the mean loss) every N iterations (default: iters/50, at most 100).",
)
TENSORBOARD = typer.Option(
    None,
    "--tensorboard/--no-tensorboard",
    help="Also write TensorBoard events into RUN/tensorboard: loss, learning rate, validation PSNR/SSIM and a "
    "noisy | output picture at each validation (needs pip install 'aprrd[tensorboard]') (default: off).",
    show_default=False,
)
WARMUP = typer.Option(
    None,
    "--warmup",
    min=0,
    help="Iterations of linear learning-rate warm-up before the cosine (default: 0, the paper's).",
)
INIT = typer.Option(
    None,
    "--init",
    metavar="<path|name>",
    help="Start from these weights, not at random: a checkpoint or a named model (official, official-1.02M). "
    "For a teacher, a student's weights fill its UNet but the last layer; the head stays random.",
    show_default=False,
)
SAMPLING = typer.Option(
    None,
    "--sampling",
    help="Data order: random (fresh random crops of random images at every step) or release (the release's: 200 "
    "crops per image drawn once, in order, epochs repeating; RD on their centre) (default: random; docs/training.md).",
    show_default=False,
)
WIDTH = typer.Option(
    None, "--width", min=4, help="Network width (default: 48, the paper's; smaller is faster and weaker)."
)
# distill with a student network as --teacher (self-ensemble distillation): measured on cc15 in
# docs/results.md, about 5 minutes on a 2-core CPU in bf16
ENSEMBLE_DEFAULTS = {"iters": 300, "batch_size": 2, "patch_size": 256, "lr": 1e-4}
RUN_DEFAULTS = {
    "data": Path("prepared"),
    "device": "auto",
    "save_every": 1000,
    "save_minutes": 2.0,
    "val_every": 0,
    "compile": False,
    "deterministic": False,
    "tensorboard": False,
}


def _workers(n: int | None, device: str) -> int:
    if n is not None:
        return n
    gpu = device.startswith("cuda") or (device == "auto" and _cuda())
    return min(4, max(1, (os.cpu_count() or 2) - 1)) if gpu else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _config(cls: type[TrainConfig], run_dir: Path, resume: bool, given: dict) -> TrainConfig:
    """Paper defaults, or the saved run's values on --resume, overridden by the options given."""
    base: TrainConfig = cls()
    if resume:
        from aprrd_cli.training.stages import COMMANDS, saved_config
        from aprrd_cli.training.state import check_resumable

        check_resumable(run_dir, COMMANDS[cls.stage])  # before anything reads the run's options
        saved = saved_config(run_dir)
        if saved is not None and saved.get("stage") == cls.stage:
            base = cls.from_dict(saved)
    names = {f.name for f in fields(cls)}
    return replace(base, **{k: v for k, v in given.items() if v is not None and k in names})


def _run_options(args: dict) -> RunOptions:
    """The run options from a command's arguments: the same fields for both stages.

    An option left out takes, on --resume, the value the run last ran with (the store's
    absolute path included, so a resume needs no --data), else its default.
    """
    names = {f.name for f in fields(RunOptions)}
    kw = {k: v for k, v in args.items() if k in names}
    saved: dict = {}
    if args["resume"]:
        from aprrd_cli.training.stages import saved_options

        saved = saved_options(args["run_dir"])
    for key in INHERITED_OPTIONS:
        if kw.get(key) is None:
            kw[key] = saved.get(key, RUN_DEFAULTS.get(key))
    kw["data"] = Path(kw["data"])
    kw["workers"] = _workers(kw["workers"], kw["device"])
    if kw["tensorboard"]:  # refused before the run starts, not at its first log record
        from aprrd_cli.training.tensorboard import check_available

        check_available()
    return RunOptions(**kw)


@app.command("train-apr")
def train_apr_cmd(
    data: Path = DATA,
    run_dir: Path = typer.Option(Path("runs/apr"), "--run-dir", help="Folder of this run."),
    iters: int = _iters(APRConfig.iters),
    batch_size: int = BATCH,
    patch_size: int = _patch(APRConfig.patch_size),
    lr: float = LR,
    seed: int = SEED,
    gamma: float = typer.Option(None, "--gamma", help="Weight of the APR regulariser (default: 4)."),
    stop_grad: bool = typer.Option(
        False, "--stop-grad", help="f(y) without gradients: ~30% cheaper, departs from the reference."
    ),
    device: str = TRAIN_DEVICE,
    workers: int = WORKERS,
    save_every: int = SAVE_EVERY,
    save_minutes: float = SAVE_MINUTES,
    stop_at: int = STOP_AT,
    resume: bool = RESUME,
    val: str = VAL,
    val_every: int = VAL_EVERY,
    precision: str = PRECISION,
    compile: bool = COMPILE,
    deterministic: bool = DETERMINISTIC,
    threads: int = THREADS,
    log_every: int = LOG_EVERY,
    tensorboard: bool = TENSORBOARD,
    warmup: int = WARMUP,
    init: str = INIT,
    width: int = WIDTH,
    sampling: str = SAMPLING,
) -> None:
    """Train the teacher (AT-BSN) with the Adjacent Pixel Replacer; writes RUN/teacher.pth."""
    from aprrd_cli.training.stages import train_apr

    given = dict(
        iters=iters,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        seed=seed,
        gamma=gamma,
        stop_grad=True if stop_grad else None,
        width=width,
        warmup=warmup,
        init=init,
        sampling=sampling,
    )
    cfg = _config(APRConfig, run_dir, resume, given)
    opts = _run_options(locals())
    train_apr(cfg, opts)


def _fit_small_photos(data: Path, patch: int, batch: int, batch_free: bool) -> dict:
    """The recipe's default patch, lowered when none of the photos can hold it (said in one line)."""
    from rich.markup import escape

    from aprrd_cli.console import console
    from aprrd_cli.training.stages import patch_for_small_photos

    fit = patch_for_small_photos(data, patch, batch)
    if fit is None:
        return {}
    new_patch, new_batch = fit
    console.print(
        f"no photo in {escape(str(data))} holds a {patch}x{patch} crop: patches of {new_patch}x{new_patch}"
        + (f", batch {new_batch} (as many pixels an iteration)" if batch_free else "")
    )
    return {"patch_size": new_patch, **({"batch_size": new_batch} if batch_free else {})}


@app.command("distill")
def distill_cmd(
    teacher: str = typer.Option(
        None,
        "--teacher",
        metavar="<path|name>",
        help="Teacher checkpoint (ours or official) (default: runs/apr/teacher.pth). A student network instead "
        "(a file, or official / official-1.02M) makes the student learn its x8 self-ensemble on your photos: "
        "the own-camera recipe, with --init official; its defaults are then "
        + ", ".join(f"{option_name(k)} {v:g}" for k, v in ENSEMBLE_DEFAULTS.items())
        + " (docs/results.md).",
        show_default=False,
    ),
    student: str = typer.Option(None, "--student", help="Student network: 1.00M or 1.02M (default: 1.00M)."),
    data: Path = DATA,
    run_dir: Path = typer.Option(Path("runs/rd"), "--run-dir", help="Folder of this run."),
    iters: int = _iters(RDConfig.iters),
    batch_size: int = BATCH,
    patch_size: int = _patch(RDConfig.patch_size),
    lr: float = LR,
    seed: int = SEED,
    device: str = TRAIN_DEVICE,
    workers: int = WORKERS,
    save_every: int = SAVE_EVERY,
    save_minutes: float = SAVE_MINUTES,
    stop_at: int = STOP_AT,
    resume: bool = RESUME,
    val: str = VAL,
    val_every: int = VAL_EVERY,
    precision: str = PRECISION,
    compile: bool = COMPILE,
    deterministic: bool = DETERMINISTIC,
    threads: int = THREADS,
    log_every: int = LOG_EVERY,
    tensorboard: bool = TENSORBOARD,
    warmup: int = WARMUP,
    init: str = INIT,
    width: int = WIDTH,
    sampling: str = SAMPLING,
) -> None:
    """Distil the student (NBSN) from a frozen teacher with Recharged Distillation; writes RUN/student.pth.

    With a student network as --teacher, the student learns that network's x8 self-ensemble instead
    (adapting the official student to your camera: docs/results.md)."""
    from aprrd_cli.training.stages import distill, teacher_is_student

    given = dict(
        iters=iters,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        seed=seed,
        student=student,
        teacher=teacher,
        width=width,
        warmup=warmup,
        init=init,
        sampling=sampling,
    )
    if not resume and teacher_is_student(teacher):  # the own-camera recipe's budget, not the paper's
        given = {**ENSEMBLE_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        if patch_size is None:
            given.update(_fit_small_photos(data or RUN_DEFAULTS["data"], given["patch_size"], given["batch_size"],
                                           batch_size is None))  # fmt: skip
    cfg = _config(RDConfig, run_dir, resume, given)
    opts = _run_options(locals())
    distill(cfg, opts)
