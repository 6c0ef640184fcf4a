"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import typer

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (auto: first CUDA GPU, else CPU).")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice).")
