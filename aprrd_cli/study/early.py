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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aprrd_cli.study.early", description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, required=True, help="iterations of linear warm-up")
    p.add_argument("train_apr_args", nargs=argparse.REMAINDER, help="-- then the options of aprrd train-apr")
    a = p.parse_args(argv)
    args = [x for x in a.train_apr_args if x != "--"]
    if a.warmup < 1:
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
