"""The study's parameters: one budget for the three trained models, so the same study runs
short on a CPU and long on a GPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "real"
DEFAULT_OFFICIAL = REPO.parent / "shared" / "reference" / "nbsn_1.00M_sidd_medium.pth"
ALL_SETS = ("sidd7", "cc15")


@dataclass(frozen=True)
class Budget:
    """What every trained model of the study gets: the same iterations, batch, patch, lr, seed."""

    iters: int = 100
    batch_size: int = 1
    patch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    width: int | None = None  # None: the paper's 48 (smaller only for tests)
    stop_grad: bool = False  # APR only; True departs from the reference

    def to_dict(self) -> dict:
        return asdict(self)

    def train_args(self) -> list[str]:
        """The ``aprrd train-apr`` / ``aprrd distill`` options of this budget."""
        args = ["--iters", str(self.iters), "--batch-size", str(self.batch_size), "--patch-size", str(self.patch_size)]
        args += ["--lr", f"{self.lr:g}", "--seed", str(self.seed)]
        if self.width is not None:
            args += ["--width", str(self.width)]
        return args


@dataclass(frozen=True)
class StudyOptions:
    """Where the study reads and writes, and how it runs."""

    out: Path
    sets: tuple[str, ...] = ALL_SETS
    root: Path = DEFAULT_ROOT
    official: Path | None = DEFAULT_OFFICIAL
    device: str = "auto"
    threads: int | None = None
    val_every: int = 20
    val_crop: int = 128  # validation during training scores the centre crop of this side of each pair
    crop: int = 112  # side of each panel of the side-by-side pictures
    cbm3d: bool = True
    budget: Budget = field(default_factory=Budget)
