"""The run folder's human-facing records: ``config.json``, ``log.jsonl`` and ``loss.png``.

Only rank 0 writes them. ``log.jsonl`` is appended line by line (a kill can at worst leave
one broken last line, which readers skip); on resume it is cut back to the checkpoint's
iteration so the curves never hold steps that were thrown away.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from aprrd_cli.fsutil import atomic_path, atomic_write_text


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_log(path: Path) -> list[dict]:
    """Records of ``log.jsonl``, skipping a broken line a kill may have left."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "iteration" in rec:
            out.append(rec)
    return out


class RunLog:
    """Appends training records; keeps them in memory for the plot."""

    def __init__(self, path: Path, resume_at: int | None) -> None:
        self.path = path
        self.records: list[dict] = []
        if resume_at is not None:
            self.records = [r for r in read_log(path) if r["iteration"] <= resume_at]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        else:
            atomic_write_text(path, "")

    def add(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def last(self, key: str) -> dict | None:
        return next((r for r in reversed(self.records) if key in r), None)


def plot(records: list[dict], path: Path, title: str) -> None:
    """Loss and validation-PSNR curves (matplotlib Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(r["iteration"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    vals = [(r["iteration"], r["val_psnr"]) for r in records if "val_psnr" in r]
    fig, axes = plt.subplots(1, 2 if vals else 1, figsize=(11 if vals else 6, 4), squeeze=False)
    ax = axes[0][0]
    if losses:
        ax.plot(*zip(*losses, strict=True), lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (mean over the log interval)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if vals:
        ax = axes[0][1]
        ax.plot(*zip(*vals, strict=True), marker="o", lw=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation PSNR (dB)")
        ax.set_title("validation")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
