"""What an evaluation measured, recorded with its scores: the one builder of ``evaluate --json``.

Two score files must be told apart without their command lines: which model (its path, its
network and the SHA-256 of its file), in what precision, with or without the x8 self-ensemble,
tiled how, on which pairs, photos or prepared set, by which aprrd and when. Every mode (pairs,
photos, a prepared set) writes the same descriptive keys, the ones that do not apply as null,
followed by its scores (``n``, ``psnr``, ``ssim``, ``images``, ... as before).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from aprrd_cli import __version__
from aprrd_cli.models.checkpoint import LoadedModel
from aprrd_cli.models.zoo import sha256_of


@dataclass(frozen=True)
class Measured:
    """The set-up of one evaluation, as the command resolved it."""

    spec: str | None  # --model as given (a named model, a path), or None for the default
    path: Path  # the checkpoint file that was loaded
    loaded: LoadedModel
    device: str  # described: "cpu (2 threads of 2 cores)", "cuda:0 (NVIDIA H100 ...)"
    precision: str
    precision_reason: str
    ensemble: bool
    tile: int | None  # None: automatic (whole when it fits half the memory at hand)
    overlap: int
    patch_windows: bool
    pairs: Path | None = None
    photos: Path | None = None
    eval_set: str | None = None
    data: Path | None = None  # the prepared store of --set

    @property
    def caption(self) -> str:
        """One line naming the model and the ensemble, for pictures shared on their own."""
        passes = "x8 self-ensemble" if self.ensemble else "single pass"
        return f"{self.spec or self.path} ({self.loaded.kind} {self.loaded.arch}), {passes}"


def _absolute(path: Path | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def build_report(measured: Measured, scores: dict) -> dict:
    """The JSON report of an evaluation: what was measured (the same keys in every mode), then
    the mode's scores."""
    m = measured
    return {
        "aprrd": {
            "version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "model": {
            "name": m.spec,
            "path": _absolute(m.path),
            "sha256": sha256_of(m.path),
            "kind": m.loaded.kind,
            "network": m.loaded.arch,
            "format": m.loaded.source,
            "iteration": m.loaded.iteration,
        },
        "device": m.device,
        "precision": m.precision,
        "precision_reason": m.precision_reason,
        "ensemble": m.ensemble,
        "tiling": {
            "tile": "auto" if m.tile is None else m.tile,  # auto: inference.plan_tile's rule
            "overlap": m.overlap,
            "patch_windows": m.patch_windows,
        },
        "pairs": _absolute(m.pairs),
        "photos": _absolute(m.photos),
        "set": m.eval_set,
        "data": _absolute(m.data) if m.eval_set is not None else None,
        **scores,
    }


__all__ = ["Measured", "build_report"]
