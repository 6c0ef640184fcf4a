"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import typer

from aprrd_cli.inference import MEMORY_SHARE, MIN_TILE

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


TILE_HELP = (
    f"Tile core size in pixels, at least {MIN_TILE}; 0 = whole image. Default: the whole image when the network's "
    f"memory fits {MEMORY_SHARE:.0%} of the memory at hand, else the tiles that fit it (docs/performance.md)."
)
