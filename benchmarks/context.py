"""What every benchmark shares: the run's ``Context`` (mode, reference files, the machine's peak, a scratch
folder), the repository's place and the note on how far from the peak a network runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.models import build
from aprrd_cli.models.checkpoint import load_model
from benchmarks.harness import matmul_peak

REPO = Path(__file__).resolve().parents[1]

CPU = torch.device("cpu")


@dataclass
class Context:
    """What every benchmark needs: the mode, the reference files, the machine's peak, a scratch folder."""

    quick: bool
    shared: Path
    peak_gflops: float
    tmp: Path
    log: Callable[[str], None] = print
    tiny: bool = False  # tests: 64x64 inputs, one repetition

    def size(self, full: int, quick: int) -> int:
        return 64 if self.tiny else quick if self.quick else full

    def reps(self, full: int, quick: int) -> int:
        return 1 if self.tiny else quick if self.quick else full

    def refresh_peak(self) -> float:
        """Re-measure the matmul peak just before a benchmark (the load changes); keep the best seen."""
        if not self.tiny:
            self.peak_gflops = max(self.peak_gflops, matmul_peak(1.0))
        return self.peak_gflops

    @property
    def reference(self) -> Path:
        return self.shared / "reference"

    def _reference(self, file: str, arch: str, found: str, absent: str) -> tuple[torch.nn.Module, str]:
        """A reference network from ../shared, else the same network with random weights (same speed)."""
        path = self.reference / file
        if path.exists():
            return load_model(path).model, found
        torch.manual_seed(0)
        return build(arch).eval(), absent

    def student(self) -> tuple[torch.nn.Module, str]:
        return self._reference(
            "nbsn_1.00M_sidd_medium.pth",
            "nbsn-1.00M",
            "official 1.00M student",
            "1.00M student with random weights (../shared absent)",
        )

    def teacher(self) -> tuple[torch.nn.Module, str]:
        return self._reference(
            "atbsn_random_seed0.pth", "atbsn", "AT-BSN (atbsn_random_seed0.pth)", "AT-BSN with random weights"
        )

    def photos(self) -> list[Path]:
        folder = self.shared / "data" / "real" / "cc15" / "noisy"
        return sorted(folder.glob("*.png")) if folder.is_dir() else []

    def photo(self, h: int, w: int) -> torch.Tensor:
        """``1 x 3 x h x w`` in [0, 1]: a real noisy photo, mirrored to size, or noise when none is here."""
        photos = self.photos()
        if not photos:
            return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        from aprrd_cli.data.images import read_image
        from aprrd_cli.data.tensors import to_float

        img = to_float(read_image(photos[0])[0])[0][:, :, :3]
        tile = np.concatenate([img, img[::-1]], 0)
        tile = np.concatenate([tile, tile[:, ::-1]], 1)
        big = np.tile(tile, (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1))[:h, :w]
        return torch.from_numpy(np.ascontiguousarray(big.transpose(2, 0, 1)))[None]


def peak_note(ctx: Context, label: str, flops: int, seconds: float, ours_flops: int) -> str:
    rate = flops / seconds / 1e9
    return (
        f"{label}: the baseline computes {flops / 1e9:.1f} GFLOP, ours {ours_flops / 1e9:.1f} GFLOP "
        f"(the folded upsample+conv); ours runs at {ours_flops / seconds / 1e9:.0f} GFLOP/s of its own work "
        f"= {ours_flops / seconds / 1e9 / ctx.peak_gflops:.0%} of the measured fp32 peak "
        f"({ctx.peak_gflops:.0f} GFLOP/s), {rate:.0f} GFLOP/s in baseline FLOPs "
        f"({rate / ctx.peak_gflops:.0%} of peak)"
    )
