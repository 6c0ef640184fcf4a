"""Inference benchmarks: the student and the teacher against the official-style networks, and
``aprrd denoise`` of a folder against the official test script, end to end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.inference import DEFAULT_OVERLAP, DEFAULT_TILE, Denoiser
from aprrd_cli.models import build
from benchmarks import baseline as B
from benchmarks.context import CPU, REPO, Context, peak_note
from benchmarks.harness import Row, Section, count_flops, interleaved, max_abs, median


def student_inference(ctx: Context) -> Section:
    model, what = ctx.student()
    base = B.baseline_like(model)
    den = Denoiser(model, CPU, tile=0)
    sec = Section(
        "Student inference",
        f"NBSN 1.00M ({what}) on a real noisy photo; ours is `inference.Denoiser`, the baseline the "
        "official-style network under `no_grad`.",
        target=">= 1.7x at 512x512 and at 12 MP, outputs within 1e-4",
    )
    ok = True
    size = ctx.size(512, 256)
    x = ctx.photo(size, size)
    ctx.refresh_peak()
    t = interleaved({"base": lambda: B.baseline_infer(base, x), "ours": lambda: den(x)}, reps=ctx.reps(7, 3))
    diff = max_abs(den(x), B.baseline_infer(base, x))
    row = Row(f"{size}x{size}", median(t["base"]), median(t["ours"]), max_diff=diff)
    sec.rows.append(row)
    ok &= row.ratio >= 1.7 and diff < 1e-4
    fb = count_flops(lambda: B.baseline_infer(base, x))
    fo = count_flops(lambda: den(x))
    sec.notes.append(peak_note(ctx, f"{size}x{size}", fb, row.ours, fo))

    base102 = B.baseline_like(build("nbsn-1.02M").eval())
    m102 = build("nbsn-1.02M").eval()
    m102.load_state_dict(base102.state_dict())
    den102 = Denoiser(m102, CPU, tile=0)
    t = interleaved({"base": lambda: B.baseline_infer(base102, x), "ours": lambda: den102(x)}, reps=ctx.reps(5, 3))
    diff = max_abs(den102(x), B.baseline_infer(base102, x))
    sec.rows.append(
        Row(f"{size}x{size}, 1.02M student (random weights)", median(t["base"]), median(t["ours"]), max_diff=diff)
    )
    ok &= diff < 1e-4

    if ctx.quick:
        sec.notes.append("12 MP: skipped (--quick)")
    else:
        ctx.log("  12 MP photo (4000x3000), tiled; this takes a few minutes")
        big = ctx.photo(3000, 4000)
        den_big = Denoiser(model, CPU, tile=DEFAULT_TILE)  # the baseline's 512-pixel tiles, 96-pixel margin
        outs: dict[str, torch.Tensor] = {}

        def run_base() -> None:
            outs["base"] = B.baseline_tiled(base, big, DEFAULT_TILE, DEFAULT_OVERLAP)

        def run_ours() -> None:
            outs["ours"] = den_big(big)

        t = interleaved({"base": run_base, "ours": run_ours}, reps=2, warmup=0)
        diff = max_abs(outs["base"], outs["ours"])
        row = Row("4000x3000 (12 MP), tiled 512 + 96", median(t["base"]), median(t["ours"]), max_diff=diff)
        sec.rows.append(row)
        ok &= row.ratio >= 1.7 and diff < 1e-4
        sec.notes.append(
            "12 MP: the official script would run the whole photo at once, which needs far more memory than "
            "this machine has; both sides therefore use the same tiles (`infer.tile_spans`) and only the "
            "network differs"
        )
    sec.passed = ok if not ctx.quick else None
    return sec


def teacher_inference(ctx: Context) -> Section:
    model, what = ctx.teacher()
    base = B.baseline_like(model)
    den = Denoiser(model, CPU, tile=0)
    size = ctx.size(512, 128)
    x = ctx.photo(size, size)
    ctx.refresh_peak()
    t = interleaved({"base": lambda: B.baseline_infer(base, x), "ours": lambda: den(x)}, reps=ctx.reps(5, 2))
    diff = max_abs(den(x), B.baseline_infer(base, x))
    row = Row(f"{size}x{size} (reflect-padded by 16, hole 1)", median(t["base"]), median(t["ours"]), max_diff=diff)
    fb = count_flops(lambda: B.baseline_infer(base, x))
    fo = count_flops(lambda: den(x))
    sec = Section(
        "Teacher inference",
        f"{what} as docs/method.md section 5 runs it: reflect-pad 16, four rotations, hole 1, crop.",
        rows=[row],
        target=">= 2x, outputs within 1e-4",
        passed=None if ctx.quick else (row.ratio >= 2 and diff < 1e-4),
        notes=[peak_note(ctx, f"{size}x{size}", fb, row.ours, fo)],
    )
    return sec


def _digest(path: Path) -> np.ndarray:
    from aprrd_cli.data.images import read_image

    return read_image(path)[0].astype(np.int32)


def end_to_end(ctx: Context) -> Section:
    """``aprrd denoise`` of eight photos vs the official-style script, each a fresh process."""
    photos = ctx.photos()[: (2 if ctx.quick else 8)]
    model = ctx.reference / "nbsn_1.00M_sidd_medium.pth"
    sec = Section(
        "End to end: aprrd denoise",
        f"`aprrd denoise IN OUT --model nbsn_1.00M_sidd_medium.pth --precision fp32` on {len(photos)} real 512x512 "
        "noisy photos "
        "(CC15), against `python -m benchmarks.official_script` (the official test script's loop: "
        "PIL in, baseline network under no_grad, PNG out); wall time of the whole process, start included.",
        target=">= 1.5x, outputs within 1 grey level",
    )
    if not photos or not model.exists():
        sec.notes.append("not measured: the CC15 photos or the official student are absent (../shared)")
        return sec
    src = ctx.tmp / "e2e_in"
    src.mkdir(exist_ok=True)
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    bin_dir = Path(sys.executable).parent
    aprrd = bin_dir / "aprrd"
    ours_cmd = [str(aprrd)] if aprrd.exists() else [sys.executable, "-m", "aprrd_cli"]
    cmds = {
        "base": [sys.executable, "-m", "benchmarks.official_script", str(model), str(src), str(ctx.tmp / "e2e_b")],
        "ours": ours_cmd + ["denoise", str(src), str(ctx.tmp / "e2e_o"), "--model", str(model), "--precision", "fp32"],
    }

    def runner(cmd: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)

    t = interleaved({k: runner(c) for k, c in cmds.items()}, reps=1 if ctx.quick else 3)
    worst = max(
        int(np.abs(_digest(ctx.tmp / "e2e_b" / p.name) - _digest(ctx.tmp / "e2e_o" / p.name)).max()) for p in photos
    )
    row = Row(
        f"{len(photos)} photos, whole process", median(t["base"]), median(t["ours"]), diff=f"{worst} grey level(s)"
    )
    sec.rows.append(row)
    sec.passed = None if ctx.quick else (row.ratio >= 1.5 and worst <= 1)
    return sec
