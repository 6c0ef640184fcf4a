"""aprrd: APR-RD, self-supervised denoising of real camera noise.

The public Python API (docs/api.md): ``load``, ``Model``, ``psnr``, ``ssim``, ``AprrdError`` and
``AprrdWarning``, from aprrd_cli/api.py. They are imported on first use, so that ``import
aprrd_cli`` (and ``aprrd --version``) does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["AprrdError", "AprrdWarning", "Model", "__version__", "load", "psnr", "ssim"]
_PUBLIC = {"AprrdError", "AprrdWarning", "Model", "load", "psnr", "ssim"}

if TYPE_CHECKING:
    from aprrd_cli.api import AprrdError, AprrdWarning, Model, load, psnr, ssim


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        from aprrd_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'aprrd_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
