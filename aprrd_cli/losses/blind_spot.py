"""The plain blind-spot loss, ``mean|f(y) - y|``: what APR replaces, and the study's baseline.

A blind-spot network (the AT-BSN at a hole of one pixel, shift factor 1) trained to reproduce
its noisy input learns the clean image when the noise is independent from pixel to pixel.
Real camera noise is spatially correlated (cc15: 0.72 between horizontal neighbours), so the
network can predict part of the noise from the pixels around the hole and learns to copy it;
APR (``losses.apr``) breaks that correlation (docs/method.md section 3).
"""

from __future__ import annotations

import torch
from torch import nn

from aprrd_cli.models.constants import INFER_SHIFT


def plain_bsn_loss(model: nn.Module, y: torch.Tensor, shift: int = INFER_SHIFT) -> torch.Tensor:
    """``mean|f(y) - y|`` in float32 (the network may run under autocast)."""
    return (model(y, shift).float() - y.float()).abs().mean()
