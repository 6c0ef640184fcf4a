"""``python -m benchmarks [--quick] [--only a,b] [--out docs/performance.md]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from aprrd_cli.utils.atomic import atomic_write_text
from benchmarks.context import REPO, Context
from benchmarks.harness import load_average, machine, matmul_peak, render
from benchmarks.suite import BENCHMARKS, run_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions, slow parts skipped")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md", help="report to (re)write")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="reference files and photos")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = load_average()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log("measuring the fp32 matrix-product peak")
    peak = matmul_peak()
    log(f"  {peak:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory(prefix="aprrd-bench-") as tmp:
        ctx = Context(quick=args.quick, shared=args.shared, peak_gflops=peak, tmp=Path(tmp), log=log)
        sections = run_all(ctx, names)
    command = "python -m benchmarks" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    info = machine()
    info["allocator"] = (
        "the system default for both sides of the in-process comparisons; the `aprrd` commands run (end to end, "
        "memory) keep freed memory as they do for users (see [Allocator](#allocator))"
    )
    info["fp32 matrix-product peak (measured, 2048^2 matmul, best)"] = f"{peak:.0f} GFLOP/s"
    text = render(sections, info, command, started, (load_before, load_average()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
