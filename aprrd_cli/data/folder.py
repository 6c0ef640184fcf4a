"""A plain folder of one's own noisy photos (any nesting): the case self-supervision exists for."""

from __future__ import annotations

import os
from pathlib import Path

from aprrd_cli.data.images import is_image_path
from aprrd_cli.data.parts import Part


def find(root: Path, exclude: Path | None = None) -> list[Part]:
    """Every photo (data/formats.py) under ``root`` (hidden files and folders and ``exclude`` left out)."""
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        here = Path(dirpath)
        # never read back the prepared store when it lies inside ROOT
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        found.extend(here / n for n in sorted(files) if not n.startswith(".") and is_image_path(here / n))
    if not found:
        return []
    return [Part("folder", "photos (training)", root, found)]
