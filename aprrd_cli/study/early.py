"""Early-phase experiment: ``aprrd train-apr`` with a linear learning-rate warm-up before the
cosine decay, which the engine does not offer (the paper has none).

The engine builds its schedule with ``engine.cosine(total)``; this module swaps that factory
for the duration of one run, so everything else (sampler, APR draw, seeds, validation) is the
very same code as the control run. Nothing is changed for other runs: the original factory is
put back on exit. If warm-up proves useful, the engine should take it as an option (see
docs/results.md for the measured effect)::

    python -m aprrd_cli.study.early --warmup 10 -- --data PREP --run-dir RUN --iters 80 ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from aprrd_cli.training import engine


def warmup_cosine(
    total: int, warmup: int, base: Callable[[int], Callable[[int], float]] | None = None
) -> Callable[[int], float]:
    """Factor of iteration i (0-based): (i+1)/warmup for the first ``warmup`` iterations, then
    the engine's cosine over the whole run (so the end of the run is unchanged)."""
    cos = (base or engine.cosine)(total)
    return lambda i: (i + 1) / warmup if i < warmup else cos(i)


@contextlib.contextmanager
def schedule_with_warmup(warmup: int) -> Iterator[None]:
    """Make the engine use ``warmup_cosine(total, warmup)`` inside the block."""
    original = engine.cosine
    engine.cosine = lambda total: warmup_cosine(total, warmup, original)
    try:
        yield
    finally:
        engine.cosine = original


def plot_runs(
    path: Path, specs: list[str], title: str = "early phase: validation PSNR", upto: int | None = None
) -> int:
    """Validation curves of several runs (``LABEL=RUN_DIR``) on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aprrd_cli.study.report import val_curve

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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aprrd_cli.study.early", description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, help="iterations of linear warm-up")
    p.add_argument(
        "--plot", type=Path, help="instead of training: plot the validation curves of LABEL=RUN_DIR runs into this PNG"
    )
    p.add_argument("--upto", type=int, help="with --plot: iterations up to this one only")
    p.add_argument("--title", default="early phase: validation PSNR", help="with --plot: the plot's title")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the options of aprrd train-apr (or LABEL=RUN_DIR)")
    a = p.parse_args(argv)
    args = [x for x in a.rest if x != "--"]
    if a.plot is not None:
        return plot_runs(a.plot, args, a.title, a.upto)
    if a.warmup is None or a.warmup < 1:
        p.error("--warmup must be at least 1")
    from aprrd_cli.cli import main as cli_main

    with schedule_with_warmup(a.warmup):
        code = cli_main(["train-apr", *args])
    if "--run-dir" in args:
        run_dir = Path(args[args.index("--run-dir") + 1])
        if run_dir.is_dir():
            (run_dir / "warmup.json").write_text(json.dumps({"warmup": a.warmup}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
