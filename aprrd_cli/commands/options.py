"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import torch
import typer

from aprrd_cli.device import precision_with_reason
from aprrd_cli.errors import AprrdError
from aprrd_cli.inference import DEFAULT_TILE, MEMORY_SHARE, MIN_TILE

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (auto: first CUDA GPU, else CPU).")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice).")
PATCH_WINDOWS = typer.Option(
    False,
    "--patch-windows",
    help="Run the network in windows the size of its training patches (for a teacher trained on patches "
    "much smaller than the images; needs a checkpoint written by aprrd).",
)


def inference_precision(default: str) -> object:
    return typer.Option(
        default,
        "--precision",
        help="auto (bf16 where the CPU or GPU computes it natively, else fp32), fp32 or bf16 (the image-making last "
        "layer stays fp32).",
    )


def resolve_inference_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision a denoiser runs in, and why (for the one-line model description)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise AprrdError(f"--precision must be auto, fp32 or bf16 for inference, got {precision!r}", exit_code=2)
    return precision_with_reason(precision, device)


TILE_HELP = (
    f"Tile core size in pixels, at least {MIN_TILE}; 0 = whole image. Default: the whole image when the network's "
    f"memory fits {MEMORY_SHARE:.0%} of the memory at hand, else the tiles that fit it (docs/performance.md)."
)


def check_windows_options(patch_windows: bool, tile: int | None) -> None:
    """--patch-windows sizes the tiles itself, so a --tile beside it would be silently overridden;
    a tile far smaller than the networks' context repeats the context's work thousands of times."""
    if patch_windows and tile is not None:
        raise AprrdError("give --patch-windows or --tile, not both (--patch-windows sizes the tiles)", exit_code=2)
    if tile is not None and 0 < tile < MIN_TILE:
        raise AprrdError(
            f"--tile {tile} is below the {MIN_TILE}-pixel minimum: every tile is run with its context margin "
            f"(--overlap) on each side, so tiles this small repeat most of the work thousands of times; "
            f"use --tile {DEFAULT_TILE} (fits any machine), or 0 for whole images",
            exit_code=2,
        )
