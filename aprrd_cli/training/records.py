"""The run folder's human-facing records: ``config.json``, ``log.jsonl`` and ``loss.png``.

Only rank 0 writes them. ``log.jsonl`` is appended line by line (a kill can at worst leave
one broken last line, which readers skip); on resume it is cut back to the checkpoint's
iteration so the curves never hold steps that were thrown away.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from aprrd_cli.utils.atomic import atomic_path, atomic_write_text


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


def val_points(records: list[dict]) -> list[tuple[int, float]]:
    """(iteration, validation PSNR) of the log's validation records, in order."""
    return [(int(r["iteration"]), float(r["val_psnr"])) for r in records if "val_psnr" in r]


# A fall this far below the best validation so far is a collapse, not noise: the healthy
# runs of docs/results.md fell by at most about 3 dB from one validation to the next.
COLLAPSE_DB = 10.0


def collapse_warning(records: list[dict]) -> str | None:
    """The warning to give when the newest validation PSNR fell far below the best before it.

    Why: an APR teacher on 128x128 patches at lr 1e-3 fell from 29.7 to 5.8 dB within one
    validation interval and never recovered, while its loss looked as usual (docs/results.md);
    only the validation shows it, and a run can have hours left.
    """
    vals = [(it, v) for it, v in val_points(records) if math.isfinite(v)]
    if len(vals) < 2:
        return None
    it, now = vals[-1]
    best_it, best = max(vals[:-1], key=lambda v: v[1])
    if now >= best - COLLAPSE_DB:
        return None
    return (
        f"validation PSNR fell from {best:.2f} dB (iteration {best_it}) to {now:.2f} dB at iteration {it}: "
        "the run may have collapsed; consider stopping it and training again with the paper's --lr 3e-4 "
        "or a larger --patch-size (docs/results.md)"
    )


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
    vals = val_points(records)
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
