"""Train the study's three models on one set's NOISY images: the APR teacher (``aprrd
train-apr``), the RD student distilled from it (``aprrd distill``) and the plain blind-spot
baseline (our own stage on the same engine). The clean images are used only to score: the
validation pairs are centre crops of the set's pairs, scored every ``val_every`` iterations
for the PSNR-vs-iteration curves.

Every step is skipped when its result exists and resumed when its run folder holds a
checkpoint, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import numpy as np

from aprrd_cli.console import console
from aprrd_cli.data.images import write_image
from aprrd_cli.data.pairs import load_pairs
from aprrd_cli.errors import AprrdError
from aprrd_cli.training.config import RunOptions
from aprrd_cli.training.state import checkpoint_path
from experiments.study.budget import Budget, StudyOptions

MODELS = ("bsn", "apr", "rd")  # run folders under OUT/SET/runs


def set_paths(opts: StudyOptions, name: str) -> dict[str, Path]:
    base = Path(opts.out) / name
    return {
        "pairs": Path(opts.root) / name,
        "base": base,
        "prepared": base / "prepared",
        "val": base / "val",
        "runs": base / "runs",
        "outputs": base / "outputs",
    }


def run_cli(argv: list[str], log: list[str]) -> None:
    """Run one ``aprrd`` command in this process (so its options are exactly the CLI's), noting it."""
    from aprrd_cli.cli import main

    log.append("aprrd " + shlex.join(argv))
    console.print(f"[bold]$ aprrd {shlex.join(argv)}[/bold]", highlight=False)
    code = main(argv)
    if code:
        raise AprrdError(f"'aprrd {argv[0]}' failed (exit code {code}); see its message above")


def write_val_crops(pairs_dir: Path, val_dir: Path, side: int) -> int:
    """Centre crops of every pair (same place in noisy and clean), for cheap validation during training."""
    pairs = load_pairs(pairs_dir)
    for sub in ("noisy", "gt"):
        (val_dir / sub).mkdir(parents=True, exist_ok=True)
    for name, noisy, gt in pairs:
        h, w = noisy.shape[:2]
        s = min(side, h, w)
        top, left = (h - s) // 2, (w - s) // 2
        stem = Path(name).stem + ".png"
        for sub, arr in (("noisy", noisy), ("gt", gt)):
            path = val_dir / sub / stem
            if not path.exists():
                write_image(path, np.ascontiguousarray(arr[top : top + s, left : left + s]))
    return len(pairs)


def _common(opts: StudyOptions, paths: dict[str, Path]) -> list[str]:
    args = ["--data", str(paths["prepared"]), "--device", opts.device, "--val", str(paths["val"])]
    args += ["--val-every", str(opts.val_every), "--save-every", str(max(1, opts.val_every))]
    if opts.threads:
        args += ["--threads", str(opts.threads)]
    return args


def _state(run_dir: Path, output: str, budget: Budget) -> str:
    """ "done", "resume" or "new"; a run folder made with another budget is refused rather than
    silently reused (the table would then compare models of different budgets)."""
    cfg_file = run_dir / "config.json"
    if cfg_file.exists():
        saved = json.loads(cfg_file.read_text()).get("config", {})
        want = {"iters": budget.iters, "batch_size": budget.batch_size, "patch_size": budget.patch_size}
        want |= {"lr": budget.lr, "seed": budget.seed, "width": budget.width or 48}
        diff = [f"--{k.replace('_', '-')} {saved.get(k)} (asked {v})" for k, v in want.items() if saved.get(k) != v]
        if diff:
            raise AprrdError(
                f"{run_dir} was trained with {', '.join(diff)}; "
                "use another --out for another budget, or the same options to continue it"
            )
    if (run_dir / output).exists():
        return "done"
    return "resume" if checkpoint_path(run_dir).exists() else "new"


def train_set(opts: StudyOptions, name: str, log: list[str]) -> dict[str, float]:
    """Prepare one set and train its three models; returns the wall time of each training (s)."""
    paths = set_paths(opts, name)
    if not (paths["pairs"] / "noisy").is_dir():
        raise AprrdError(f"{paths['pairs']} has no noisy/ folder; --root must hold SET/noisy and SET/gt")
    b = opts.budget
    run_cli(["prepare-data", str(paths["pairs"] / "noisy"), "--out", str(paths["prepared"])], log)
    write_val_crops(paths["pairs"], paths["val"], opts.val_crop)
    times: dict[str, float] = {}

    apr_dir = paths["runs"] / "apr"
    st = _state(apr_dir, "teacher.pth", b)
    argv = ["train-apr", "--run-dir", str(apr_dir), *b.train_args(), *_common(opts, paths)]
    argv += ["--stop-grad"] if b.stop_grad else []
    if st == "done":
        log.append(f"aprrd {shlex.join(argv)}  # already done")
    else:
        t = time.perf_counter()
        run_cli(argv + (["--resume"] if st == "resume" else []), log)
        times["apr"] = time.perf_counter() - t

    bsn_dir = paths["runs"] / "bsn"
    st = _state(bsn_dir, "teacher.pth", b)
    from experiments.study.plain_bsn import PlainBSNConfig, train_plain_bsn

    cfg = PlainBSNConfig(
        iters=b.iters, batch_size=b.batch_size, patch_size=b.patch_size, lr=b.lr, seed=b.seed, width=b.width or 48
    )
    note = f"# plain BSN -> {bsn_dir} (experiments.study.plain_bsn.train_plain_bsn, same options): {cfg.to_dict()}"
    if st == "done":
        log.append(note + "  # already done")
    else:
        t = time.perf_counter()
        ro = RunOptions(
            run_dir=bsn_dir,
            data=paths["prepared"],
            device=opts.device,
            threads=opts.threads,
            save_every=max(1, opts.val_every),
            resume=st == "resume",
            val=str(paths["val"]),
            val_every=opts.val_every,
        )
        log.append(note)
        console.print(f"[bold]plain blind-spot baseline -> {bsn_dir}[/bold]")
        train_plain_bsn(cfg, ro)
        times["bsn"] = time.perf_counter() - t

    rd_dir = paths["runs"] / "rd"
    st = _state(rd_dir, "student.pth", b)
    argv = ["distill", "--teacher", str(apr_dir / "teacher.pth"), "--run-dir", str(rd_dir)]
    argv += [*b.train_args(), *_common(opts, paths)]
    if st == "done":
        log.append(f"aprrd {shlex.join(argv)}  # already done")
    else:
        t = time.perf_counter()
        run_cli(argv + (["--resume"] if st == "resume" else []), log)
        times["rd"] = time.perf_counter() - t
    return times
