"""``python -m experiments.study --set sidd7|cc15|all --iters N --batch-size B --patch-size P --out DIR``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.study.budget import ALL_SETS, DEFAULT_OFFICIAL, DEFAULT_ROOT, Budget, StudyOptions


def parse(argv: list[str] | None = None) -> StudyOptions:
    p = argparse.ArgumentParser(
        prog="python -m experiments.study",
        description="Fully self-supervised study on real camera noise: train on a set's noisy images only, "
        "compare noisy input, blind CBM3D, plain BSN, APR teacher, RD student and the official student.",
    )
    p.add_argument("--set", default="all", help=f"a set under --root ({' or '.join(ALL_SETS)}) or 'all'")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder holding SET/noisy and SET/gt")
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="study folder (resumable)")
    p.add_argument("--iters", type=int, default=Budget.iters, help="iterations of EACH trained model")
    p.add_argument("--batch-size", type=int, default=Budget.batch_size)
    p.add_argument("--patch-size", type=int, default=Budget.patch_size)
    p.add_argument("--lr", type=float, default=Budget.lr)
    p.add_argument("--seed", type=int, default=Budget.seed)
    p.add_argument("--width", type=int, default=None, help="network width (default 48; smaller for tests)")
    p.add_argument("--stop-grad", action="store_true", help="APR with f(y) without gradients (a departure)")
    p.add_argument("--val-every", type=int, default=20, help="validation PSNR every N iterations (the curves)")
    p.add_argument("--val-crop", type=int, default=128, help="validation scores centre crops of this side")
    p.add_argument("--crop", type=int, default=112, help="panel side of the side-by-side pictures")
    p.add_argument("--official", default=str(DEFAULT_OFFICIAL), help="official student checkpoint ('' to skip)")
    p.add_argument("--no-cbm3d", action="store_true", help="skip CBM3D (slow: ~40 s per 512x512 image on a CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    for flag, v in (("--iters", a.iters), ("--batch-size", a.batch_size), ("--val-every", a.val_every)):
        if v < 1:
            p.error(f"{flag} must be at least 1")
    sets = ALL_SETS if a.set == "all" else tuple(a.set.split(","))
    budget = Budget(a.iters, a.batch_size, a.patch_size, a.lr, a.seed, a.width, a.stop_grad)
    return StudyOptions(
        out=a.out,
        sets=sets,
        root=a.root,
        official=Path(a.official) if a.official else None,
        device=a.device,
        threads=a.threads,
        val_every=a.val_every,
        val_crop=a.val_crop,
        crop=a.crop,
        cbm3d=not a.no_cbm3d,
        budget=budget,
    )


def main(argv: list[str] | None = None) -> int:
    from aprrd_cli.console import console
    from aprrd_cli.errors import AprrdError
    from aprrd_cli.utils.allocator import keep_freed_memory
    from experiments.study.driver import run_study

    opts = parse(argv)
    keep_freed_memory()
    try:
        run_study(opts)
    except AprrdError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        return e.exit_code or 1
    except KeyboardInterrupt:
        console.print("interrupted; run the same command again to continue")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
