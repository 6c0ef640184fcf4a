"""The two training stages plugged into the one engine: APR (the teacher) and RD (the student).

Each entry point sets up the process (DDP, device, threads, precision), checks its inputs
before any heavy work, takes the run folder's lock, builds its network, its loss and its
generators, and hands them to ``engine.train``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from aprrd_cli.console import console, warn
from aprrd_cli.data.store import TrainStore
from aprrd_cli.device import (
    cleanup_distributed,
    describe,
    init_distributed,
    is_main,
    precision_with_reason,
    resolve_device,
    set_determinism,
    set_fp32_math,
    set_threads,
    use_device,
)
from aprrd_cli.errors import AprrdError
from aprrd_cli.losses.apr import APRDraw, apr_step_loss
from aprrd_cli.losses.ensemble import ensemble_step_loss
from aprrd_cli.losses.rd import rd_step_loss
from aprrd_cli.models import ATBSN, STUDENTS, build, count_params
from aprrd_cli.models.checkpoint import load_model
from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions, TrainConfig
from aprrd_cli.training.engine import Stage, TrainResult, preflight, train
from aprrd_cli.training.state import read_state
from aprrd_cli.utils.locks import DirLock

# Offsets that decorrelate the stage's generator from the sampler's and the weights' seeds.
DRAW_SEED_OFFSET = 0x5EED_A9


def generator(device: torch.device, seed: int) -> torch.Generator:
    """The stage's own generator, on the training device so draws never leave it."""
    return torch.Generator(device=device).manual_seed(seed + DRAW_SEED_OFFSET)


def tensors_digest(sd: dict[str, torch.Tensor]) -> str:
    """A content hash of a state_dict: the same weights, whatever the file or its format."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_digest(store) -> str:
    """The training set's identity: names, shapes and the prepare step's fingerprints."""
    items = [(e.get("name"), e.get("shape"), e.get("fingerprint")) for e in store.entries]
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def saved_config(run_dir: Path) -> dict | None:
    """The configuration a run folder's checkpoint was started with (to fill options on --resume)."""
    raw = read_state(Path(run_dir))
    return None if raw is None else dict(raw["training"]["config"])


def saved_options(run_dir: Path) -> dict:
    """The run options the checkpoint's run last ran with (to fill options on --resume); from
    ``config.json`` for checkpoints written before the checkpoint held them."""
    raw = read_state(Path(run_dir))
    if raw is None:
        return {}
    options = raw["training"].get("options")
    if not isinstance(options, dict):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            options = json.loads((Path(run_dir) / "config.json").read_text()).get("options")
    return dict(options) if isinstance(options, dict) else {}


@contextlib.contextmanager
def run_lock(run_dir: Path, what: str, main: bool) -> Iterator[None]:
    """One run per folder: rank 0 holds ``RUN/.aprrd.lock`` for the whole run; a second run is
    refused with the lock's path and the holder's PID, a lock left by a killed run is taken over."""
    if not main:
        yield
        return
    with DirLock(Path(run_dir), what=what):
        yield


def _open_data(opts: RunOptions, cfg: TrainConfig, rank: int, world: int):
    from aprrd_cli.data.sampler import RELEASE_CROPS, PatchSampler, ReleaseSampler
    from aprrd_cli.data.store import open_train_store

    store = open_train_store(Path(opts.data))
    side = cfg.crop_size if cfg.sampling == "release" else cfg.patch_size
    if side > store.min_side:
        crop = side if side > cfg.patch_size else None
        store = _without_small_images(store, cfg.patch_size, Path(opts.data), announce=rank == 0, crop=crop)
    if cfg.sampling != "release":
        return store, PatchSampler(store, cfg.patch_size, cfg.batch_size, cfg.seed, rank=rank, world_size=world)
    sampler = ReleaseSampler(store, cfg.patch_size, cfg.batch_size, cfg.seed, rank, world, crop_size=side)
    if rank == 0:
        centre = f", the centre {cfg.patch_size}^2 of each" if side > cfg.patch_size else ""
        console.print(
            f"sampling: the release's order, {RELEASE_CROPS} crops of {side}^2 per image drawn once{centre}, "
            f"in order: {sampler.epoch_samples:,} samples an epoch, "
            f"{cfg.iters * cfg.batch_size / sampler.epoch_samples:.3g} epochs in {cfg.iters:,} iterations"
        )
    return store, sampler


def _without_small_images(
    store: TrainStore, patch: int, data: Path, announce: bool, crop: int | None = None
) -> TrainStore:
    """The store without the images that cannot hold one patch (a thumbnail in a folder of photos),
    named in a warning; an error when no image is left. ``crop``: the side of ``--sampling
    release``'s crops, when larger than the patch (RD's, twice the patch)."""
    need = crop or patch
    what = f"--patch-size {patch}" + ("" if crop is None else f" --sampling release (crops of {crop} px)")
    sides = [min(a.shape[:2]) for a in store.images]
    keep = [e for e, side in zip(store.entries, sides, strict=True) if side >= need]
    if not keep:
        fits = max(sides) * patch // need // 32 * 32
        advice = (
            f"use --patch-size {fits} or less"
            if fits >= 32
            else f"every image is smaller than {need * 32 // patch} px, the smallest {'crop' if crop else 'patch'}; "
            "prepare larger photos"
        )
        raise AprrdError(
            f"{what} is larger than every training image in {data} (the largest has a shortest "
            f"side of {max(sides)} px); {advice}",
            exit_code=2,
        )
    small = [name for name, side in zip(store.names, sides, strict=True) if side < need]
    if announce:
        shown = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
        warn(f"training without {len(small)} of {len(sides)} images smaller than {what}: {escape(shown)}")
    return TrainStore(store.prep_dir, keep)


def make_validator(val: str, prep: Path, device: torch.device, picture: bool = False) -> Callable[[nn.Module], dict]:
    """Validation PSNR/SSIM on a folder of pairs or on SIDD validation (one block per image);
    ``picture``: also noisy | output of the first image, under the key ``picture`` (--tensorboard)."""
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.evaluation.pictures import side_by_side
    from aprrd_cli.evaluation.protocols import score_model
    from aprrd_cli.inference import Denoiser

    if val == "sidd-val":
        from aprrd_cli.data.store import open_eval_set

        es = open_eval_set(prep, "sidd-val")
        pairs = [(f"{i:02d}_00", es.noisy[i, 0], es.gt[i, 0]) for i in range(es.noisy.shape[0])]
    else:
        pairs = load_pairs(Path(val), option="--val")

    def validate(model: nn.Module) -> dict:
        first: list[np.ndarray] = []

        def keep_first(name: str, noisy: np.ndarray, out: np.ndarray, gt: np.ndarray, p: float, s: float) -> None:
            if picture and not first:
                first.append(side_by_side([(noisy, "noisy"), (out, f"output {p:.2f} dB / {s:.4f}")]))

        with torch.no_grad():  # large images tiled, as aprrd evaluate does: whole 12 MP photos would not fit a GPU
            scores = score_model(Denoiser(model, device), pairs, on_image=keep_first)
        return {**scores, "picture": first[0] if first else None}

    return validate


def _setup(opts: RunOptions, cfg: TrainConfig) -> tuple[int, int, torch.device, tuple[str, str]]:
    rank, world, local = init_distributed(opts.device)
    device = resolve_device(opts.device)
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{local}")
    use_device(device)
    set_threads(opts.threads)
    precision, why = precision_with_reason(opts.precision, device)
    set_fp32_math(precision)
    set_determinism(device, opts.deterministic)
    cfg.check(world)
    if opts.save_every < 1:
        raise AprrdError(f"--save-every must be at least 1, got {opts.save_every}", exit_code=2)
    if not (math.isfinite(opts.save_minutes) and opts.save_minutes >= 0):
        raise AprrdError(f"--save-minutes must be a number of minutes >= 0, got {opts.save_minutes}", exit_code=2)
    if opts.stop_at is not None and opts.stop_at < 1:
        raise AprrdError(f"--stop-at must be at least 1, got {opts.stop_at}", exit_code=2)
    return rank, world, device, (precision, why)


def prepare_model(model: nn.Module, device: torch.device, opts: RunOptions) -> nn.Module:
    """A network on the training device, in the memory layout the run asks for."""
    model = model.to(device)
    if device.type == "cuda" and opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _announce(title: str, cfg: TrainConfig, model: nn.Module, device, precision: tuple[str, str], world, opts) -> None:
    console.print(
        f"{title}: {count_params(model):,} parameters; {cfg.iters:,} iterations of batch {cfg.batch_size} "
        f"x {cfg.patch_size}^2, lr {cfg.lr:g} cosine{f' after {cfg.warmup} warm-up' if cfg.warmup else ''}; "
        f"{describe(device)}, {precision[0]} ({precision[1]})"
        + (f", {world} processes (DDP)" if world > 1 else "")
        + f"; run folder {opts.run_dir}"
    )


COMMANDS = {"apr": "train-apr", "rd": "distill"}


def run_stage(
    cfg: TrainConfig, opts: RunOptions, build_stage: Callable[[torch.device, TrainStore], Stage]
) -> TrainResult:
    """Run a stage from start to end: the process set-up, the checks before heavy work, the run
    folder's lock, the data and validation, then the engine. ``build_stage(device, store)``
    makes the stage's network, loss and generators: the entry point of every stage, the study's
    baselines included."""
    rank, world, device, (precision, why) = _setup(opts, cfg)
    main = rank == 0
    interrupted = False
    try:
        with run_lock(opts.run_dir, f"aprrd {COMMANDS.get(cfg.stage, cfg.stage)}", main):
            preflight(cfg, opts)
            store, sampler = _open_data(opts, cfg, rank, world)
            validate = (
                make_validator(opts.val, Path(opts.data), device, opts.tensorboard) if (opts.val and main) else None
            )
            stage = build_stage(device, store)
            if main:
                _announce(stage.title, cfg, stage.model, device, (precision, why), world, opts)
            result = train(stage, cfg, opts, sampler, device, precision, validate, (rank, world), why)
            if main and result.output is not None:
                self_check(result.output, store, device)
            return result
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        cleanup_distributed(interrupted)


def initial_weights(model: nn.Module, spec: str, announce: bool = True) -> int:
    """Copy into ``model`` every tensor of checkpoint ``spec`` (a path or a named model) whose name
    and shape it shares; the others keep their seeded initial values. Returns how many were copied.

    A student's weights fit a student of its kind whole; into a teacher they fit its UNet but
    the last layer (32 of its 40 tensors), the head staying random."""
    from aprrd_cli.models.zoo import path_of

    path = path_of(spec)
    if not path.exists():
        raise AprrdError(f"--init {spec}: no such file; give a checkpoint or a named model (official, official-1.02M)")
    source = load_model(path)
    src, dst = source.model.state_dict(), model.state_dict()
    fit = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    if not fit:
        raise AprrdError(
            f"--init {spec}: none of its tensors fit this {model.arch} (it holds a {source.arch}); give weights of "
            "the same network, or for a teacher an AT-BSN or the 1.00M student"
        )
    with torch.no_grad():
        for k, v in fit.items():
            dst[k].copy_(v)
    if announce:
        rest = ", the rest seeded" if len(fit) < len(dst) else ""
        console.print(f"initial weights: {len(fit)} of {len(dst)} tensors from {spec} ({source.arch}){rest}")
    return len(fit)


SELF_CHECK_PHOTOS = 6


def self_check(model_path: Path, store: TrainStore, device: torch.device) -> dict | None:
    """The no-reference check of a finished model on a few of its own training photos (their centre
    256x256): a model that makes photos worse (a colour shift, nothing removed) does not pass
    unnoticed. Compares with the official student only when its weights are already cached."""
    from aprrd_cli.evaluation.no_reference import check_photos
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.zoo import NAMED, cached_path

    picks = np.linspace(0, len(store) - 1, min(SELF_CHECK_PHOTOS, len(store))).round().astype(int)
    photos = []
    for i in sorted(set(picks.tolist())):
        img = store.images[i]
        side = min(256, *img.shape[:2]) // 32 * 32
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        crop = store.crop(i, top, left, side)
        if crop.dtype == np.uint16:
            crop = np.rint(crop / 257.0).astype(np.uint8)
        photos.append((store.names[i], crop))
    loaded = load_model(model_path)
    official = cached_path(NAMED["official"])
    reference = Denoiser(load_model(official).model, device) if official.is_file() else None
    with torch.no_grad():
        report = check_photos(Denoiser.for_loaded(loaded, device), photos, reference)
    line = (
        f"self-check on {len(photos)} of the training photos (no clean image): colour shift at most "
        f"{report['max_colour_shift']:.2f} grey levels, noise removed {report['mean_removed']:.2f} on average"
    )
    if "mean_agreement_db" in report:
        line += (
            f", {report['mean_agreement_db']:.2f} dB from the official student's output (which removes "
            f"{report['reference_removed']:.2f})"
        )
    console.print(line)
    for w in report["warnings"]:
        warn(w)
    return report


def _check_replay(recorded: Iterator | None, opts: RunOptions) -> None:
    """Recorded draws are taken one per call of the loss; --compile's fall-back calls it twice
    for the first step, which would take the next step's draw."""
    if recorded is not None and opts.compile:
        raise ValueError("a replay of recorded draws runs eagerly: build the stage without --compile")


def apr_stage(
    cfg: APRConfig, device: torch.device, opts: RunOptions, data_id: str = "", draws: Iterator[APRDraw] | None = None
) -> Stage:
    """The APR stage: a fresh AT-BSN (seeded, or from ``--init``), L_APR and the APR draw's generator.

    ``draws``: one recorded draw per step, taken in order instead of the generator's (the replay
    of the release's training in tests/test_replay.py runs the engine's own step this way)."""
    _check_replay(draws, opts)
    torch.manual_seed(cfg.seed)
    teacher = ATBSN(width=cfg.width)
    if cfg.init and not opts.resume:
        initial_weights(teacher, cfg.init)
    model = prepare_model(teacher, device, opts)
    gen = generator(device, cfg.seed)

    def loss(net: nn.Module, y: torch.Tensor, share: tuple[int, int]) -> torch.Tensor:
        given = None if draws is None else next(draws)
        return apr_step_loss(
            net, y, gen, gamma=cfg.gamma, shift=cfg.shift, stop_grad=cfg.stop_grad, share=share, drawn=given
        )

    return Stage("apr", "APR (teacher)", model, loss, {"apr_draw": gen}, identity={"data": (data_id, "training data")})


def train_apr(cfg: APRConfig, opts: RunOptions) -> TrainResult:
    """Train the teacher with L_APR; writes ``RUN/teacher.pth``."""
    return run_stage(cfg, opts, lambda device, store: apr_stage(cfg, device, opts, data_digest(store)))


def teacher_is_student(spec: str | None) -> bool:
    """Whether ``--teacher`` names a student network (a named model, or a file holding a student):
    distill then learns that network's x8 self-ensemble instead of RD's targets. Read before the
    run's defaults are chosen; an unreadable file is left for ``distill`` to report."""
    from aprrd_cli.models.zoo import is_named

    if spec is None:
        return False
    if is_named(spec):
        return True
    try:
        return load_model(Path(spec)).kind == "student"
    except (AprrdError, OSError):
        return False


def patch_for_small_photos(data: Path, patch: int, batch: int) -> tuple[int, int] | None:
    """For the own-camera recipe's default patch: when no prepared photo can hold a ``patch``
    crop (a folder of small crops), the largest multiple of 32 that fits them all, with the
    batch raised to see as many pixels an iteration. None when the default fits some photo
    (the smaller ones are left out with a warning, as always) or the store cannot be read
    (the run reports that itself)."""
    from aprrd_cli.data.store import open_train_store

    try:
        sides = [min(a.shape[:2]) for a in open_train_store(Path(data)).images]
    except (AprrdError, OSError, ValueError):
        return None
    if not sides or max(sides) >= patch or min(sides) < 32:
        return None
    fit = min(sides) // 32 * 32
    return fit, max(batch, round(batch * patch**2 / fit**2))


def load_teacher(path: Path) -> tuple[nn.Module, str]:
    """A frozen network of either kind (ours or the official format) and the hash of its weights:
    a blind-spot teacher for RD, a student network for self-ensemble distillation."""
    loaded = load_model(path)
    teacher = loaded.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, tensors_digest(teacher.state_dict())


class CompiledTeacher:
    """The frozen teacher's six-target pass (``forward_multi``, most of an RD step's work) under
    ``torch.compile`` with --compile; eager again, with one warning, if compiling fails."""

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher
        self.compiled = torch.compile(teacher.forward_multi)

    def forward_multi(self, x: torch.Tensor, shifts: Sequence[int]) -> list[torch.Tensor]:
        if self.compiled is not None:
            try:
                return self.compiled(x, shifts)
            except Exception as e:
                warn(
                    f"--compile failed for the teacher ({type(e).__name__}: {str(e).strip()[:120]}); running it eagerly"
                )
                self.compiled = None
        return self.teacher.forward_multi(x, shifts)


def _student(cfg: RDConfig, device: torch.device, opts: RunOptions) -> nn.Module:
    torch.manual_seed(cfg.seed)
    student = build(STUDENTS[cfg.student], width=cfg.width)
    if cfg.init and not opts.resume:
        initial_weights(student, cfg.init)
    return prepare_model(student, device, opts)


def rd_stage(
    cfg: RDConfig,
    device: torch.device,
    opts: RunOptions,
    teacher: nn.Module,
    digest: str,
    data_id: str = "",
    choices: Iterator[torch.Tensor] | None = None,
) -> Stage:
    """The RD stage: a fresh student (seeded), the frozen teacher, L_RD and the Recharger's generator.

    ``choices``: one recorded recharge choice per step, taken in order instead of the generator's
    (the replay of the release's training)."""
    _check_replay(choices, opts)
    student = _student(cfg, device, opts)
    frozen = prepare_model(teacher, device, opts)
    targets_from = CompiledTeacher(frozen) if opts.compile else frozen
    gen = generator(device, cfg.seed)

    def loss(net: nn.Module, y: torch.Tensor, share: tuple[int, int]) -> torch.Tensor:
        given = None if choices is None else next(choices)
        return rd_step_loss(net, targets_from, y, gen, share=share, choice=given)

    return Stage(
        "rd",
        f"RD (student {cfg.student})",
        student,
        loss,
        {"recharge": gen},
        identity={"data": (data_id, "training data"), "teacher": (digest, "teacher's weights")},
        meta={"teacher": str(cfg.teacher), "teacher_digest": digest},
    )


def ensemble_stage(
    cfg: RDConfig, device: torch.device, opts: RunOptions, teacher: nn.Module, digest: str, data_id: str = ""
) -> Stage:
    """Self-ensemble distillation: the student (seeded, or from ``--init``) learns the frozen student
    network's x8 self-ensemble on the training photos (losses/ensemble.py). No random draws."""
    student = _student(cfg, device, opts)
    frozen = prepare_model(teacher, device, opts)
    if is_main():
        console.print(
            f"teacher {escape(str(cfg.teacher))} is a student network: the student learns its x8 self-ensemble "
            "(the own-camera recipe, docs/training.md), not RD's targets"
        )

    def loss(net: nn.Module, y: torch.Tensor, share: tuple[int, int]) -> torch.Tensor:
        return ensemble_step_loss(net, frozen, y)

    return Stage(
        "rd",
        f"self-ensemble distillation (student {cfg.student})",
        student,
        loss,
        {},
        identity={"data": (data_id, "training data"), "teacher": (digest, "teacher's weights")},
        meta={"teacher": str(cfg.teacher), "teacher_digest": digest, "targets": "x8 self-ensemble"},
        closing_note=(
            "check it on your photos, no clean image needed: aprrd evaluate --model {output} --photos DIR; "
            "then aprrd denoise --model {output} IN OUT"
        ),
    )


def distill(cfg: RDConfig, opts: RunOptions) -> TrainResult:
    """Distil the student from the frozen teacher; writes ``RUN/student.pth``. A blind-spot teacher
    gives RD's recharged targets; a student network as teacher (``--teacher official``) gives its
    x8 self-ensemble, the own-camera recipe (docs/results.md)."""
    if cfg.student not in STUDENTS:
        raise AprrdError(f"unknown student {cfg.student!r}; choose {' or '.join(STUDENTS)}", exit_code=2)
    from aprrd_cli.models.zoo import path_of

    path = path_of(cfg.teacher)
    if not path.exists():
        raise AprrdError(
            f"no teacher at {cfg.teacher}; run aprrd train-apr first (it writes RUN/teacher.pth, runs/apr/teacher.pth "
            "by default), or pass --teacher PATH, or --teacher official to adapt the official student"
        )
    teacher, digest = load_teacher(path)
    if getattr(teacher, "kind", "teacher") == "student":
        if not cfg.init and not opts.resume:
            warn(
                "the student starts from random weights: learning a student network's self-ensemble from scratch "
                "takes many thousands of iterations; add --init official (or the teacher's file) to adapt it instead"
            )
        make = ensemble_stage
    else:
        make = rd_stage
    return run_stage(cfg, opts, lambda device, store: make(cfg, device, opts, teacher, digest, data_digest(store)))


__all__ = [
    "apr_stage",
    "data_digest",
    "distill",
    "ensemble_stage",
    "load_teacher",
    "patch_for_small_photos",
    "prepare_model",
    "rd_stage",
    "run_stage",
    "saved_config",
    "saved_options",
    "teacher_is_student",
    "train_apr",
]
