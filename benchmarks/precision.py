"""The bf16 benchmark: our code in bf16 autocast against our code in fp32, on a CPU that computes
bf16 natively (issue 15): the student, the teacher, an APR and an RD step, and ``aprrd denoise``
of a folder end to end against the official test script, with how far the outputs and losses
move."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.device import autocast, cpu_bf16_native
from aprrd_cli.inference import Denoiser
from aprrd_cli.models import build
from benchmarks.context import CPU, REPO, Context
from benchmarks.harness import Row, Section, interleaved, max_abs, median


def bf16(ctx: Context) -> Section:
    native, why = cpu_bf16_native()
    sec = Section(
        "bf16 on the CPU",
        "Ours in bf16 autocast (the layers that read or make the image stay fp32) against ours in fp32, same "
        "process, interleaved; the 'baseline' column is fp32. Steps: forward, backward and Adam from the same "
        "weights and draw. End to end: `aprrd denoise` of real photos, fresh processes, against the official "
        f"test script. This CPU: {why}.",
        target="steps >= 1.7x; denoise of a folder >= 3x the official script, within 2 grey levels (fp32: 1)",
    )
    if not native:
        sec.notes.append("not measured: bf16 is emulated on this CPU, slower than fp32, and aprrd never picks it")
        return sec
    ok = True
    model, what = ctx.student()
    size = ctx.size(512, 256)
    x = ctx.photo(size, size)
    for label, net, kw in (("student", model, {}), ("teacher", ctx.teacher()[0], {})):
        fp32, half = Denoiser(net, CPU, tile=0, **kw), Denoiser(net, CPU, tile=0, precision="bf16", **kw)
        t = interleaved({"base": lambda d=fp32: d(x), "ours": lambda d=half: d(x)}, reps=ctx.reps(5, 2))
        diff = max_abs(fp32(x), half(x)) * 255
        sec.rows.append(Row(f"{label} {size}x{size}", median(t["base"]), median(t["ours"]), diff=f"{diff:.2f} grey"))
    sec.notes.append(f"student: {what}; the teacher's weights are random unless ../shared holds a trained one")

    for row in steps(ctx).values():
        sec.rows.append(row)
        ok &= ctx.quick or row.ratio >= 1.7
    e2e = end_to_end(ctx)
    sec.rows += e2e
    if len(e2e) == 2 and not ctx.quick:
        ok &= e2e[1].ratio >= 3.0 and e2e[0].ratio is not None
    sec.passed = None if ctx.quick else ok
    return sec


def steps(ctx: Context) -> dict[str, Row]:
    """An APR step (batch 1 of 256^2, as the CPU trains) and an RD step (batch 8 of 128^2), fp32 vs bf16."""
    from aprrd_cli.losses.apr import apr_step_loss
    from aprrd_cli.losses.rd import rd_step_loss

    p = ctx.size(256, 64)
    rows = {}
    for kind in ("APR", "RD"):
        runs: dict[str, list[float]] = {"base": [], "ours": []}
        fns = {}
        for key, precision in (("base", "fp32"), ("ours", "bf16")):
            torch.manual_seed(0)
            teacher = build("atbsn", width=16 if ctx.quick else 48)
            net = teacher if kind == "APR" else build("nbsn-1.00M", width=16 if ctx.quick else 48)
            frozen = teacher.eval().requires_grad_(False) if kind == "RD" else None
            opt = torch.optim.Adam(net.parameters(), lr=3e-4)
            gen = torch.Generator().manual_seed(1)
            if kind == "APR":
                y = ctx.photo(p, p)
            else:  # 8 crops of p/2 from a real photo
                q = p // 2
                big = ctx.photo(2 * q, 4 * q)
                y = torch.cat([big[:, :, i * q : (i + 1) * q, j * q : (j + 1) * q] for i in range(2) for j in range(4)])

            def step(net=net, opt=opt, gen=gen, y=y, frozen=frozen, precision=precision, out=runs[key]) -> None:
                opt.zero_grad(set_to_none=True)
                with autocast(CPU, precision):
                    loss = apr_step_loss(net, y, gen) if frozen is None else rd_step_loss(net, frozen, y, gen)
                loss.backward()
                opt.step()
                out.append(loss.item())

            fns[key] = step
        t = interleaved(fns, reps=ctx.reps(3, 1), warmup=1)
        diff = abs(runs["base"][0] - runs["ours"][0]) / abs(runs["base"][0])  # the first step: same weights, draw
        shape = "batch 1 of 256x256" if kind == "APR" else "batch 8 of 128x128"
        rows[kind] = Row(f"{kind} step, {shape if not ctx.quick else 'small'}", median(t["base"]), median(t["ours"]),
                         diff=f"loss {diff:.1e} (relative)")  # fmt: skip
    return rows


def _digest(path: Path) -> np.ndarray:
    from aprrd_cli.data.images import read_image

    return read_image(path)[0].astype(np.int32)


def end_to_end(ctx: Context) -> list[Row]:
    """``aprrd denoise`` of the photos in fp32 and in bf16 (auto), each against the official script."""
    photos = ctx.photos()[: (2 if ctx.quick else 8)]
    model = ctx.reference / "nbsn_1.00M_sidd_medium.pth"
    if not photos or not model.exists():
        return []
    src = ctx.tmp / "bf16_in"
    src.mkdir(exist_ok=True)
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    aprrd = Path(sys.executable).parent / "aprrd"
    ours = [str(aprrd)] if aprrd.exists() else [sys.executable, "-m", "aprrd_cli"]
    out = {k: ctx.tmp / f"bf16_{k}" for k in ("base", "fp32", "auto")}
    cmds = {
        "base": [sys.executable, "-m", "benchmarks.official_script", str(model), str(src), str(out["base"])],
        "fp32": [*ours, "denoise", str(src), str(out["fp32"]), "--model", str(model), "--precision", "fp32"],
        "auto": [*ours, "denoise", str(src), str(out["auto"]), "--model", str(model)],
    }
    t = interleaved(
        {k: (lambda c=c: subprocess.run(c, check=True, capture_output=True, cwd=REPO)) for k, c in cmds.items()},
        reps=1 if ctx.quick else 3,
    )
    rows = []
    for key, label in (("fp32", "--precision fp32"), ("auto", "auto (bf16)")):
        worst = max(int(np.abs(_digest(out["base"] / p.name) - _digest(out[key] / p.name)).max()) for p in photos)
        rows.append(Row(f"denoise {len(photos)} photos, {label}, vs the official script", median(t["base"]),
                        median(t[key]), diff=f"{worst} grey level(s)"))  # fmt: skip
    return rows
