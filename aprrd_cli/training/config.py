"""Hyper-parameters: one frozen dataclass per stage with the paper's defaults, plus the run's
practical options (where, on what, how often to save), which may change between a run and
its resumption without changing the result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from aprrd_cli.data.sampler import SAMPLINGS
from aprrd_cli.errors import AprrdError
from aprrd_cli.losses.apr import GAMMA
from aprrd_cli.models.constants import SIZE_MULTIPLE as MULTIPLE
from aprrd_cli.models.constants import TRAIN_SHIFT


@dataclass(frozen=True)
class TrainConfig:
    """What defines a run's numbers: changing any of these makes a different run."""

    iters: int
    batch_size: int = 8
    patch_size: int = 256
    lr: float = 3e-4  # Adam (0.9, 0.999), cosine decay to 0 over ``iters``, stepped every iteration
    seed: int = 0
    width: int = 48  # network width (48 in the paper; smaller only for tests and experiments)
    warmup: int = 0  # iterations of linear learning-rate warm-up before the cosine (the paper: none)
    init: str | None = None  # start from these weights (a checkpoint or a named model) instead of at random
    sampling: str = "random"  # the data order: "random" crops at every step, or the "release"'s (data/sampler.py)

    stage = "base"
    output = "model.pth"

    @property
    def crop_size(self) -> int:
        """The side of the crops ``--sampling release`` draws: the patch itself."""
        return self.patch_size

    def to_dict(self) -> dict:
        return {"stage": self.stage, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The configuration a run saved; fields it predates take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def check(self, world_size: int = 1) -> None:
        if self.iters < 1:
            raise AprrdError(f"--iters must be at least 1, got {self.iters}", exit_code=2)
        if self.batch_size < 1:
            raise AprrdError(f"--batch-size must be at least 1, got {self.batch_size}", exit_code=2)
        if self.batch_size % world_size:
            raise AprrdError(
                f"--batch-size {self.batch_size} (the global batch) must be divisible by the "
                f"{world_size} processes; use a multiple of {world_size}",
                exit_code=2,
            )
        if self.patch_size < MULTIPLE or self.patch_size % MULTIPLE:
            raise AprrdError(
                f"--patch-size must be a positive multiple of {MULTIPLE} (the networks pool five times), "
                f"got {self.patch_size}; try {max(MULTIPLE, round(self.patch_size / MULTIPLE) * MULTIPLE)}",
                exit_code=2,
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AprrdError(f"--lr must be a positive number, got {self.lr}", exit_code=2)
        if self.sampling not in SAMPLINGS:
            raise AprrdError(
                f"--sampling must be {' or '.join(SAMPLINGS)}, got {self.sampling!r} (docs/training.md)", exit_code=2
            )
        if not 0 <= self.warmup < self.iters:
            raise AprrdError(
                f"--warmup must be at least 0 and less than --iters {self.iters}, got {self.warmup}", exit_code=2
            )


@dataclass(frozen=True)
class APRConfig(TrainConfig):
    """The teacher (AT-BSN) trained with L_APR (docs/method.md section 3)."""

    iters: int = 400_000
    batch_size: int = 8
    patch_size: int = 256
    gamma: float = GAMMA  # the method's numbers, defined once (losses/apr.py, models/constants.py)
    shift: int = TRAIN_SHIFT  # both teacher calls at hole 9
    stop_grad: bool = False  # True departs from the reference: f(y) without gradients

    stage = "apr"
    output = "teacher.pth"

    def check(self, world_size: int = 1) -> None:
        super().check(world_size)
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise AprrdError(f"--gamma must be a number >= 0, got {self.gamma}", exit_code=2)


@dataclass(frozen=True)
class RDConfig(TrainConfig):
    """The student (NBSN) distilled from the frozen teacher with L_RD (docs/method.md section 4).

    Patches are sampled at 128 directly rather than cut from the centre of a 256 sample as
    the reference does: the same random-crop distribution, a quarter of the reading (see
    docs/training.md); ``--sampling release`` cuts them from the centre of 256 crops.
    """

    iters: int = 200_000
    batch_size: int = 8
    patch_size: int = 128
    student: str = "1.00M"
    teacher: str = "runs/apr/teacher.pth"

    stage = "rd"
    output = "student.pth"

    @property
    def crop_size(self) -> int:
        """``--sampling release`` trains on the centre of crops twice the patch's side (the release's
        128 of 256): the crops the APR stage saw."""
        return 2 * self.patch_size


# Config fields whose change does not alter the numbers of a resumed run (the teacher is
# compared by content, not by path).
PATH_FIELDS = ("teacher",)


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def differences(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """The options that differ between a saved run and the one asked for, as ``--opt old -> new``."""
    out = []
    for f in fields(saved):
        if f.name in PATH_FIELDS:
            continue
        a, b = getattr(saved, f.name), getattr(new, f.name)
        if a != b:
            out.append(f"{option_name(f.name)} {a} -> {b}")
    return out


@dataclass(frozen=True)
class RunOptions:
    """Where and how a run happens; free to change when resuming."""

    run_dir: Path
    data: Path = Path("prepared")
    device: str = "auto"
    precision: str | None = None  # None: bf16 on GPUs that have it, fp32 elsewhere
    compile: bool = False
    workers: int = 0
    threads: int | None = None
    save_every: int = 1000
    save_minutes: float = 2.0  # also save when this many minutes passed since the last save (0: off)
    stop_at: int | None = None
    resume: bool = False
    val: str | None = None  # a folder of noisy/ + gt/ pairs, or "sidd-val" from the prepared store
    val_every: int = 0  # 0: at the end only (when --val is given)
    log_every: int | None = None  # None: min(100, iters // 50), at least 1
    channels_last: bool = True  # on CUDA only
    deterministic: bool = False  # deterministic kernels on GPUs: bit-exact resume, slower
    show_progress: bool = True
    tensorboard: bool = False  # TensorBoard event files in RUN/tensorboard (the optional extra)

    def to_dict(self) -> dict:
        """JSON-ready, with the data and a --val folder as absolute paths: a ``--resume`` from another
        folder takes them from the run."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        d["data"] = str(Path(self.data).resolve())
        if self.val is not None and self.val != "sidd-val":
            d["val"] = str(Path(self.val).resolve())
        return d


# Run options a --resume takes from the run when they are not given again; the others
# (--run-dir, --resume, --stop-at) belong to the command at hand.
INHERITED_OPTIONS = (
    "data", "device", "precision", "compile", "workers", "threads", "save_every", "save_minutes", "val", "val_every",
    "log_every", "deterministic", "tensorboard",
)  # fmt: skip
