"""The plain blind-spot baseline: the APR teacher's network (AT-BSN) with a hole of one pixel
(shift factor 1), trained to reproduce its noisy input with L1, ``mean|f(y) - y|``.

This is what APR replaces. On pixel-wise independent noise it learns the clean image; real
camera noise is spatially correlated (cc15: 0.72 between horizontal neighbours), so the
network can predict part of the noise from the pixels around the hole and learns to copy it.
The study trains it on the same engine, data, budget and seed as the APR teacher so that the
two differ only in the loss (and the hole used in training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aprrd_cli.losses.blind_spot import plain_bsn_loss
from aprrd_cli.models import ATBSN
from aprrd_cli.models.constants import INFER_SHIFT
from aprrd_cli.training.config import RunOptions, TrainConfig
from aprrd_cli.training.engine import Stage, TrainResult
from aprrd_cli.training.stages import data_digest, prepare_model, run_stage


@dataclass(frozen=True)
class PlainBSNConfig(TrainConfig):
    """The baseline's numbers: the APR teacher's defaults, no APR-specific options."""

    iters: int = 400_000
    batch_size: int = 8
    patch_size: int = 256
    shift: int = INFER_SHIFT  # hole 1 in training as in inference: the textbook blind-spot network

    stage = "bsn"
    output = "teacher.pth"


def plain_bsn_stage(cfg: PlainBSNConfig, device: torch.device, opts: RunOptions, data_id: str = "") -> Stage:
    """A fresh AT-BSN seeded exactly as the APR stage seeds its teacher (same initial weights)."""
    torch.manual_seed(cfg.seed)
    model = prepare_model(ATBSN(width=cfg.width), device, opts)

    def loss(net: nn.Module, y: torch.Tensor, share: tuple[int, int]) -> torch.Tensor:
        return plain_bsn_loss(net, y, cfg.shift)

    return Stage(
        "bsn",
        "plain BSN (baseline)",
        model,
        loss,
        {},
        identity={"data": (data_id, "training data")},
        meta={"baseline": "plain blind-spot, L1 to the noisy input", "train_shift": cfg.shift},
    )


def train_plain_bsn(cfg: PlainBSNConfig, opts: RunOptions) -> TrainResult:
    """Train the baseline on the engine; writes ``RUN/teacher.pth`` (an AT-BSN, scored at hole 1)."""
    return run_stage(cfg, opts, lambda device, store: plain_bsn_stage(cfg, device, opts, data_digest(store)))
