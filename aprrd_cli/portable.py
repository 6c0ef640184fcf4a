"""A network as one self-contained module: any image size in, the same size out, padding inside.

``PaddedNet`` is what ``torch.hub`` hands out (hubconf.py) and what ``aprrd export`` writes
to ONNX and TorchScript. It pads as ``aprrd denoise`` does for a whole image (reflect padding
up to a multiple of 32, split between both sides; the teacher 16 more on every side, its
shift factor that of inference), runs the network and crops back, with no tiling. The size
arithmetic is written with tensor operations of the input's shape, so a traced graph keeps it
symbolic: the exported file takes any batch, height and width (down to ``min_side``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.inference import padding_for, reflect_pad
from aprrd_cli.models.blocks import use_reference_form
from aprrd_cli.models.constants import INFER_SHIFT, SIZE_MULTIPLE, TEACHER_PAD


def min_side(is_teacher: bool) -> int:
    """The smallest side an exported graph takes: its reflect padding (ONNX ``Pad``) must be
    shorter than the side. The eager module (torch.hub) reflects repeatedly and takes any side."""
    return 2 * TEACHER_PAD + 1 if is_teacher else SIZE_MULTIPLE // 2 + 1


class PaddedNet(nn.Module):
    """``B x 3 x H x W`` float in [0, 1], any H and W -> the denoised ``B x 3 x H x W`` (not clipped).

    ``for_export``: a private copy of the network switched to its reference form
    (``models.blocks.use_reference_form``), the one path a trace can record whatever the size;
    otherwise the network is used as it is (its fast paths), and the module may be trained.
    ``clip``: clip the output to [0, 1], as an image (export); off, the network's raw output.
    """

    def __init__(self, net: nn.Module, for_export: bool = False, clip: bool = False) -> None:
        super().__init__()
        if for_export:
            net = copy.deepcopy(net)
            use_reference_form(net)
        self.net = net
        self.is_teacher = getattr(net, "kind", "student") == "teacher"
        self.extra = TEACHER_PAD if self.is_teacher else 0
        self.for_export = for_export
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != 3):
            raise ValueError(f"expected a B x 3 x H x W tensor, got shape {tuple(x.shape)}")
        if self.for_export:
            y = self._traceable(x)
        else:
            h, w = x.shape[-2:]
            t, b, lft, r = padding_for(h, w, self.extra)
            y = self._net(reflect_pad(x, t, b, lft, r))[:, :, t : t + h, lft : lft + w]
        return y.clamp(0.0, 1.0) if self.clip else y

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, INFER_SHIFT) if self.is_teacher else self.net(x)

    def _traceable(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` with the padding computed from ``x.shape`` as a tracer records it (sizes
        stay symbolic), the same numbers as ``inference.padding_for``."""
        h, w = x.shape[2], x.shape[3]
        e = self.extra
        th = (SIZE_MULTIPLE - (h + 2 * e) % SIZE_MULTIPLE) % SIZE_MULTIPLE
        tw = (SIZE_MULTIPLE - (w + 2 * e) % SIZE_MULTIPLE) % SIZE_MULTIPLE
        top, left = e + th // 2, e + tw // 2
        bottom, right = e + th - th // 2, e + tw - tw // 2
        y = self._net(F.pad(x, [left, right, top, bottom], mode="reflect"))
        return y[:, :, top : top + h, left : left + w]
