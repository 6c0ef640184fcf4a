"""Training on a camera's own photos (issue 17): validation PSNR against CPU minutes.

A teacher's run and the RD runs made from it, on one time axis (RD starts where APR ended),
and runs that adapt the official student (``distill --teacher official --init official``,
starting at the official student's score), beside the noisy input and the official student.
Minutes are iterations times a measured quiet step time, not the logs' wall time, which
includes validations and whatever else shared the CPU::

    python -m experiments.own_camera --apr RUNS/cc15/s0-bf16/apr --apr-seconds 2.9 \\
        --rd "from random=RUNS/cc15/s0-bf16/rd" --rd "from the official student=RUNS/own/e2/rd" \\
        --rd-seconds 0.45 --noisy 33.41 --official 35.55 --title cc15 --out docs/results/own_cc15.png
    python -m experiments.own_camera --adapt "all 15 photos=RUNS/adapt/cc15" --adapt-seconds 1.05 \\
        --noisy 33.41 --official 35.55 --line "official, x8 self-ensemble=35.83" --out docs/results/adapt_cc15.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aprrd_cli.training.records import read_log
from experiments.figures import pyplot, save
from experiments.study.report import val_curve


def curve(run: Path, seconds_per_it: float, start_min: float = 0.0) -> list[tuple[float, float]]:
    """(minutes, validation PSNR) of a run folder's log, shifted by ``start_min``."""
    return [(start_min + it * seconds_per_it / 60, psnr) for it, psnr in val_curve(run)]


def last_iteration(run: Path) -> int:
    recs = [r for r in read_log(run / "log.jsonl") if "iteration" in r]
    return max((int(r["iteration"]) for r in recs), default=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.own_camera", description=__doc__.split("\n\n")[0])
    p.add_argument("--apr", type=Path, help="the teacher's run folder")
    p.add_argument("--apr-seconds", type=float, help="seconds per APR iteration, measured quiet")
    p.add_argument("--rd", action="append", default=[], help="LABEL=RUN_FOLDER of a distillation from that teacher")
    p.add_argument("--rd-seconds", type=float, help="seconds per RD iteration, measured quiet")
    p.add_argument("--adapt", action="append", default=[], help="LABEL=RUN_FOLDER of an adaptation of the official")
    p.add_argument("--adapt-seconds", type=float, help="seconds per adaptation iteration, measured quiet")
    p.add_argument("--line", action="append", default=[], help="LABEL=PSNR: a further reference line")
    p.add_argument("--noisy", type=float, required=True, help="the noisy input's PSNR on the validation pairs")
    p.add_argument("--official", type=float, required=True, help="the official student's PSNR on them")
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.apr is None and not a.adapt:
        p.error("give --apr (with --rd) or --adapt")
    for runs, seconds, option in ((a.apr, a.apr_seconds, "--apr"), (a.rd, a.rd_seconds, "--rd"),
                                  (a.adapt, a.adapt_seconds, "--adapt")):  # fmt: skip
        if runs and seconds is None:
            p.error(f"{option} needs {option}-seconds")

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=90)
    if a.apr is not None:
        apr = curve(a.apr, a.apr_seconds)
        if not apr:
            p.error(f"{a.apr}/log.jsonl holds no validation points (train with --val and --val-every)")
        ax.plot(*zip(*apr, strict=True), "-o", ms=3, color="black", label="APR teacher")
        apr_end = last_iteration(a.apr) * a.apr_seconds / 60
        for spec in a.rd:
            label, _, path = spec.partition("=")
            pts = curve(Path(path), a.rd_seconds, apr_end)
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", ms=3, label=f"RD student, {label}")
            print(f"{label}: " + ", ".join(f"{m:.0f} min {v:.2f} dB" for m, v in pts))
        print("APR: " + ", ".join(f"{m:.1f} min {v:.2f} dB" for m, v in apr))
    for spec in a.adapt:  # an adaptation starts as the official student
        label, _, path = spec.partition("=")
        pts = [(0.0, a.official), *curve(Path(path), a.adapt_seconds)]
        ax.plot(*zip(*pts, strict=True), "-o", ms=3, label=f"adapted official student, {label}")
        print(f"{label}: " + ", ".join(f"{m:.1f} min {v:.2f} dB" for m, v in pts))
    ax.axhline(a.noisy, color="grey", ls=":", label=f"noisy input ({a.noisy:.2f})")
    ax.axhline(a.official, color="tab:green", ls="--", label=f"official student ({a.official:.2f})")
    for spec, style in zip(a.line, ("-.", (0, (1, 3)), (0, (5, 5))), strict=False):
        label, _, value = spec.partition("=")
        ax.axhline(float(value), color="tab:purple", ls=style, label=f"{label} ({float(value):.2f})")
    ax.set_xlabel("CPU minutes (iterations x quiet step time, 2 cores)")
    ax.set_ylabel("validation PSNR (dB), whole photos")
    ax.set_title(f"{a.title}: trained on its own noisy photos only", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
