"""What ``prepare-data`` finds in a dataset tree and what it did with it: parts and their results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aprrd_cli.data.store import fingerprint
from aprrd_cli.errors import AprrdError
from aprrd_cli.utils.atomic import atomic_write_text

TRAIN_GROUPS = ("sidd-medium", "sidd-bench-frames", "folder")
ALL_PARTS = ("sidd-medium", "sidd-bench-frames", "sidd-val", "sidd-bench", "dnd", "folder")


@dataclass
class Part:
    """One part of a tree: a set of training images, or the files of one evaluation set."""

    key: str  # one of ALL_PARTS
    title: str  # for the report
    where: Path  # the folder (or file) it was found at
    sources: list[Path] = field(default_factory=list)  # training images, or the .mat files of an eval set
    missing: list[tuple[Path, str]] = field(default_factory=list)  # expected files that are absent, and why needed


@dataclass
class PartResult:
    """Counts and problems of one part, for the report table."""

    part: Part
    found: int = 0
    prepared: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, what is wrong / what was expected)
    note: str = ""

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))


def source_fingerprints(paths: list[Path]) -> dict[str, str]:
    return {str(p.resolve()): fingerprint(p) for p in paths}


def read_meta(folder: Path) -> dict[str, Any] | None:
    """An evaluation set's meta.json, or None when absent or unreadable (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def eval_set_current(folder: Path, sources: dict[str, str], arrays: tuple[str, ...]) -> bool:
    """True when ``folder`` holds a complete set made from exactly these unchanged source files."""
    meta = read_meta(folder)
    return bool(meta) and meta.get("sources") == sources and all((folder / a).is_file() for a in arrays)


def begin_eval_set(folder: Path) -> None:
    """Remove meta.json first: a set without it is invisible, so an interrupted rewrite never
    leaves a meta that describes arrays it does not match."""
    try:
        (folder / "meta.json").unlink(missing_ok=True)
    except OSError as e:
        raise AprrdError(f"cannot update {folder}: {e.strerror or e}; check permissions") from e


def finish_eval_set(
    folder: Path, name: str, shape: tuple[int, ...], dtype: str, sources: dict[str, str], **extra: Any
) -> None:
    """Write an evaluation set's ``meta.json``, last, making the set visible: the one writer of
    these records (``store.open_eval_set`` and ``eval_set_current`` read them)."""
    meta = {"name": name, "shape": list(shape), "dtype": dtype, **extra, "sources": sources}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1) + "\n")
