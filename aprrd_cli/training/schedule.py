"""The optimiser and the learning-rate schedule, chosen by a run's configuration.

The paper's: Adam (0.9, 0.999) at ``lr``, decayed to 0 by a cosine over the whole run and
stepped every iteration, no warm-up. ``warmup`` > 0 prepends a linear warm-up of that many
iterations (a departure for short runs; the cosine still ends the run at 0). Change the
schedule or the optimiser here, not in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from aprrd_cli.training.config import TrainConfig

BETAS = (0.9, 0.999)


def cosine(total: int) -> Callable[[int], float]:
    """Learning-rate factor of iteration i (0-based): cosine from 1 to 0 over ``total``."""

    def factor(i: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total))

    return factor


def warmup_cosine(total: int, warmup: int) -> Callable[[int], float]:
    """(i+1)/warmup for the first ``warmup`` iterations, then the cosine over the whole run."""
    cos = cosine(total)
    if warmup <= 0:
        return cos
    return lambda i: (i + 1) / warmup if i < warmup else cos(i)


def make_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """Adam; on a GPU its fused kernel (one launch for all parameters, the same arithmetic)."""
    fused = device is not None and device.type == "cuda"
    return torch.optim.Adam(params, lr=cfg.lr, betas=BETAS, fused=fused or None)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.iters, cfg.warmup))
