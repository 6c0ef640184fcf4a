"""What every step of the GPU check is given: the ``Context`` (where to write, which device, the
photos and the official student), the ``Report`` callback, and ``aprrd`` (the CLI in-process).
Its own module so that the steps and the real run both import it without importing each other."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

Report = Callable[[dict], None]


@dataclass
class Context:
    out: Path
    device: str
    photos: Path
    official: Path
    tiny: bool

    @property
    def dev(self) -> torch.device:
        return torch.device(self.device)

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    def previous(self, step: str) -> dict:
        """What an earlier step reported (from ``results.json``), or nothing."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.out / "results.json").read_text())["steps"].get(step, {})
        return {}


def aprrd(*args: object) -> None:
    from aprrd_cli.cli import main

    code = main([str(a) for a in args])
    if code != 0:
        raise RuntimeError(f"aprrd {' '.join(map(str, args[:2]))} ... exited with {code}")
