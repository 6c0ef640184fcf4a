"""Opening a denoiser for a model: the one place that turns "this model, on this device, in this
precision, with these tiles" into a ready ``Denoiser``.

``aprrd denoise``, ``aprrd evaluate`` and the Python API (aprrd_cli/api.py) all come through
here, so the model lookup (a name fetched and verified, or a path), the precision's choice and
the checks of the tiling options are the same everywhere, and so is the one-line description.
Nothing here changes process-wide state (threads, fp32 maths, the current device): the
commands set those themselves before opening, a library caller keeps its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from aprrd_cli.denoise import resolve_model
from aprrd_cli.device import describe, precision_with_reason, resolve_device
from aprrd_cli.errors import AprrdError
from aprrd_cli.inference import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_TILE, Denoiser
from aprrd_cli.models.checkpoint import LoadedModel, load_model

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Opened:
    """A denoiser and what was opened: the checkpoint, how to name it, the precision and why."""

    denoiser: Denoiser
    loaded: LoadedModel
    path: Path
    label: str
    precision: str
    why: str

    def describe(self, with_reason: bool = True) -> str:
        """The one-line model description the commands print."""
        d = self.denoiser
        return (
            f"model: {self.label}; {self.loaded.kind} {self.loaded.arch} ({self.loaded.source} format) "
            f"on {describe(d.device)}, {self.precision}" + (f" ({self.why})" if with_reason else "")
        )


def check_precision(precision: str, device: torch.device, flag: str = "--precision") -> tuple[str, str]:
    """The precision a denoiser runs in, and why (auto made concrete for ``device``)."""
    if precision not in INFERENCE_PRECISIONS:
        raise AprrdError(f"{flag} must be auto, fp32 or bf16 for inference, got {precision!r}", exit_code=2)
    return precision_with_reason(precision, device)


def check_windows_options(
    patch_windows: bool, tile: int | None, flags: tuple[str, str] = ("--patch-windows", "--tile")
) -> None:
    """--patch-windows sizes the tiles itself, so a --tile beside it would be silently overridden;
    a tile far smaller than the networks' context repeats the context's work thousands of times.
    ``flags``: how the caller names the two options (the API says ``patch_windows=True``, ``tile=``)."""
    pw, t = flags
    sep = "" if t.endswith("=") else " "
    if patch_windows and tile is not None:
        raise AprrdError(f"give {pw} or {t.rstrip('=')}, not both ({pw} sizes the tiles)", exit_code=2)
    if tile is not None and (tile < 0 or 0 < tile < MIN_TILE):
        raise AprrdError(
            f"{t}{sep}{tile} is below the {MIN_TILE}-pixel minimum: every tile is run with its context margin "
            f"(overlap) on each side, so tiles this small repeat most of the work thousands of times; "
            f"use {t}{sep}{DEFAULT_TILE} (fits any machine), or 0 for whole images",
            exit_code=2,
        )


def open_denoiser(
    model: str | Path | None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    patch_windows: bool = False,
    flags: tuple[str, str, str] = ("--precision", "--patch-windows", "--tile"),
) -> Opened:
    """A denoiser for ``model`` (a checkpoint path, a named model, or None for the default).

    The options are checked first (a bad tile or precision fails before the model loads); the
    checkpoint is read on the CPU and the network moved to ``device`` by the Denoiser.
    """
    check_windows_options(patch_windows, tile, flags[1:])
    if overlap < 0:
        raise AprrdError(f"overlap must be 0 or more pixels, got {overlap}", exit_code=2)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    prec, why = check_precision(precision, dev, flags[0])
    path, label = resolve_model(None if model is None else str(model))
    loaded = load_model(path, map_location="cpu")
    den = Denoiser.for_loaded(loaded, dev, tile=tile, overlap=overlap, in_patch_windows=patch_windows, precision=prec)
    return Opened(den, loaded, path, label, prec, why)
