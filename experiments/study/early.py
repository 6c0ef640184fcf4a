"""Early-phase experiment: the validation curves of several runs on one plot.

The runs themselves are plain ``aprrd train-apr`` commands (a warm-up is ``--warmup N``); this
draws their ``log.jsonl`` validation points side by side (docs/results.md, "early phase")::

    python -m experiments.study.early --plot docs/results/early_sidd7.png --upto 40 control=RUN warmup10=RUN2 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.figures import pyplot, save


def plot_runs(
    path: Path, specs: list[str], title: str = "early phase: validation PSNR", upto: int | None = None
) -> int:
    """Validation curves of several runs (``LABEL=RUN_DIR``) on one plot."""
    plt = pyplot()

    from experiments.study.report import val_curve

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=90)
    for spec in specs:
        label, _, run = spec.partition("=")
        pts = [p for p in val_curve(Path(run)) if upto is None or p[0] <= upto]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.study.early", description=__doc__.split("\n\n")[0])
    p.add_argument("--plot", type=Path, required=True, help="the PNG to write")
    p.add_argument("--upto", type=int, help="iterations up to this one only")
    p.add_argument("--title", default="early phase: validation PSNR", help="the plot's title")
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR of each run")
    a = p.parse_args(argv)
    return plot_runs(a.plot, [x for x in a.runs if x != "--"], a.title, a.upto)


if __name__ == "__main__":
    sys.exit(main())
