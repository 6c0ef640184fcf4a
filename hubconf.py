"""torch.hub entry points of aprrd: the APR-RD release's students, and any aprrd or official checkpoint.

    import torch
    net = torch.hub.load("<owner>/<repo>", "official")            # or a local checkout, source="local"
    denoised = net(noisy)                                          # B x 3 x H x W float in [0, 1], any H, W

Each entry point returns an ``nn.Module`` in eval mode that takes a ``B x 3 x H x W`` float
tensor in [0, 1] of any height and width and returns the denoised tensor of the same shape
(not clipped): the reflect padding to a multiple of 32 and the crop back happen inside, as
``aprrd denoise`` pads a whole image (no tiling: for photos of many megapixels use the Python
API's ``aprrd_cli.load``, which tiles). Pretrained weights are downloaded once into aprrd's
cache and verified by SHA-256 (``APRRD_CACHE``, ``APRRD_WEIGHTS_URL``: docs/api.md).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

# what torch.hub checks is importable before it loads an entry point (the hub convention)
dependencies = ["torch", "numpy", "rich"]


def _wrap(net: nn.Module) -> nn.Module:
    from aprrd_cli.portable import PaddedNet

    return PaddedNet(net).eval()


def _named(name: str, arch: str, pretrained: bool) -> nn.Module:
    from aprrd_cli.models import build
    from aprrd_cli.models.checkpoint import load_model
    from aprrd_cli.models.zoo import fetch

    if not pretrained:
        return _wrap(build(arch))
    return _wrap(load_model(fetch(name)).model)


def official(pretrained: bool = True) -> nn.Module:
    """The APR-RD release's 1.00M student (NBSN), trained on SIDD Medium.

    Takes a B x 3 x H x W float tensor in [0, 1], any H and W; returns the denoised tensor, the
    same shape. ``pretrained``: the released weights (downloaded once, verified by SHA-256);
    False gives the same network with random weights, to train.
    """
    return _named("official", "nbsn-1.00M", pretrained)


def official_102(pretrained: bool = True) -> nn.Module:
    """The APR-RD release's 1.02M student (the AT-BSN paper's plain UNet), trained on SIDD Medium.

    Takes a B x 3 x H x W float tensor in [0, 1], any H and W; returns the denoised tensor, the
    same shape. ``pretrained``: the released weights (downloaded once, verified by SHA-256);
    False gives the same network with random weights.
    """
    return _named("official-1.02M", "nbsn-1.02M", pretrained)


def checkpoint(path: str | Path) -> nn.Module:
    """A teacher or student from a checkpoint file: aprrd's own (train-apr, distill) or the
    official release's format.

    Takes a B x 3 x H x W float tensor in [0, 1], any H and W; returns the denoised tensor, the
    same shape (a teacher with its 16-pixel reflect border and shift factor of inference).
    """
    from aprrd_cli.models.checkpoint import load_model

    return _wrap(load_model(Path(path)).model)
