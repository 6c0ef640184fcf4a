"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import typer

from aprrd_cli.errors import AprrdError

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (auto: first CUDA GPU, else CPU).")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice).")
PATCH_WINDOWS = typer.Option(
    False,
    "--patch-windows",
    help="Run the network in windows the size of its training patches (for a teacher trained on patches "
    "much smaller than the images; needs a checkpoint written by aprrd).",
)


def check_windows_options(patch_windows: bool, tile: int | None) -> None:
    """--patch-windows sizes the tiles itself, so a --tile beside it would be silently overridden."""
    if patch_windows and tile is not None:
        raise AprrdError("give --patch-windows or --tile, not both (--patch-windows sizes the tiles)", exit_code=2)
