"""bf16 against fp32 training on real photos (issue 15): the validation curves of runs made with
the same seeds and iterations, side by side, and their final scores.

The runs are plain commands (docs/results.md, "bf16 on the CPU" gives them); this reads their
``log.jsonl`` and the final models' scores::

    python -m experiments.precision --runs RUNS --set cc15 --pairs ../shared/data/real/cc15 \\
        --plot docs/results/precision_cc15.png

where ``RUNS/SET/sSEED-PRECISION/{apr,rd}`` are the run folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from experiments.figures import pyplot, save
from experiments.study.report import val_curve


def runs_of(root: Path, name: str) -> dict[tuple[int, str], Path]:
    """(seed, precision) -> the run pair's folder, for every ``sSEED-PRECISION`` under ROOT/SET."""
    out = {}
    for d in sorted((root / name).glob("s*-*")):
        if d.is_dir():
            seed, precision = d.name[1:].split("-", 1)
            out[(int(seed), precision)] = d
    return out


def scores(run: Path, pairs: list, stage: str) -> dict:
    from aprrd_cli.evaluation.protocols import score_model
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model

    model = run / stage / ("teacher.pth" if stage == "apr" else "student.pth")
    if not model.exists():
        return {}
    with torch.no_grad():
        r = score_model(Denoiser(load_model(model).model, torch.device("cpu")), pairs)
    return {"psnr": r["psnr"], "ssim": r["ssim"]}


def plot(path: Path, runs: dict[tuple[int, str], Path], title: str) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    colours = {"fp32": "tab:blue", "bf16": "tab:orange"}
    for (seed, precision), run in sorted(runs.items()):
        for ax, stage in zip(axes, ("apr", "rd"), strict=True):
            pts = val_curve(run / stage)
            if pts:
                style = "-" if seed == 0 else "--"
                ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3, color=colours.get(precision),
                        label=f"{precision}, seed {seed}")  # fmt: skip
    for ax, stage in zip(axes, ("APR teacher", "RD student"), strict=True):
        ax.set_title(f"{title}: {stage}", fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation PSNR (dB), whole photos")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    from aprrd_cli.data.pairs import load_pairs

    p = argparse.ArgumentParser(prog="python -m experiments.precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--set", required=True)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    a = p.parse_args(argv)
    runs = runs_of(a.runs, a.set)
    pairs = load_pairs(a.pairs)
    rows = ["| run | APR teacher PSNR / SSIM | RD student PSNR / SSIM |", "|---|---|---|"]
    table: dict = {}
    for (seed, precision), run in sorted(runs.items()):
        t, s = scores(run, pairs, "apr"), scores(run, pairs, "rd")
        table[(seed, precision)] = (t, s)
        cells = [f"{x['psnr']:.2f} / {x['ssim']:.4f}" if x else "-" for x in (t, s)]
        rows.append(f"| seed {seed}, {precision} | {cells[0]} | {cells[1]} |")
    rows.append("")
    for stage, k in (("APR teacher", 0), ("RD student", 1)):
        seeds = sorted({seed for seed, _ in table})
        diffs = [
            table[(seed, "bf16")][k]["psnr"] - table[(seed, "fp32")][k]["psnr"]
            for seed in seeds
            if table.get((seed, "bf16"), ({}, {}))[k] and table.get((seed, "fp32"), ({}, {}))[k]
        ]
        if diffs:
            each = ", ".join(f"{d:+.2f}" for d in diffs)
            rows.append(f"bf16 - fp32, {stage}: {each} dB (mean {np.mean(diffs):+.3f})")
    print("\n".join(rows))
    if a.plot:
        plot(a.plot, runs, a.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
