"""The allocator benchmark: our code in fresh processes with glibc's default allocator and with
freed memory kept (``aprrd_cli/utils/allocator.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import torch

from aprrd_cli.inference import Denoiser
from aprrd_cli.models import build
from benchmarks.context import CPU, REPO, Context
from benchmarks.harness import Row, Section


def alloc_workload(name: str, size: int) -> Callable[[], object]:
    """A repeatable piece of work for the allocator benchmark (random weights: speed only)."""
    from aprrd_cli.losses.apr import apr_step_loss

    torch.manual_seed(0)
    if name == "teacher":
        den = Denoiser(build("atbsn").eval(), CPU, tile=0)
        x = torch.rand(1, 3, size, size)
        return lambda: den(x)
    if name == "student":
        den = Denoiser(build("nbsn-1.00M").eval(), CPU)
        shapes = [(size, size), (size * 3 // 4, size * 5 // 4), (size * 2, size * 3 // 2), (size // 2, size)]
        xs = [torch.rand(1, 3, h, w) for h, w in shapes]
        return lambda: [den(x) for x in xs]
    net = build("atbsn").train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    y, gen = torch.rand(1, 3, size, size), torch.Generator().manual_seed(0)

    def steps() -> None:
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            apr_step_loss(net, y, gen).backward()
            opt.step()

    return steps


def allocator(ctx: Context) -> Section:
    """Our code with the system allocator vs with freed memory kept, in fresh processes."""
    sec = Section(
        "Allocator",
        "The same work of ours in fresh processes, with glibc's default allocator (`APRRD_MALLOC=default`, the "
        "'baseline' column) and as the `aprrd` command runs it, keeping freed memory for reuse instead of "
        "unmapping every block over 32 MB (`aprrd_cli/utils/allocator.py`). Seconds of the second run of the work in "
        "each process (the first warms up), and the process's peak resident memory.",
        target="",
    )
    cases = [
        ("teacher", ctx.size(512, 256), "teacher inference, {s}x{s}"),
        ("student", ctx.size(512, 256), "student on 4 photos of different sizes around {s}x{s}"),
        ("apr", ctx.size(128, 64), "3 APR steps, batch 1 of {s}x{s}"),
    ]
    env_default = {**os.environ, "APRRD_MALLOC": "default"}
    env_ours = {k: v for k, v in os.environ.items() if k != "APRRD_MALLOC"}
    for name, size, label in cases:
        got = {}
        for key, env in (("base", env_default), ("ours", env_ours)):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.alloc_child", name, str(size)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            ).stdout.split()
            got[key] = (float(out[-2]), int(out[-1]) / 1024)
        sec.rows.append(
            Row(
                label.format(s=size),
                got["base"][0],
                got["ours"][0],
                diff=f"peak RSS {got['base'][1]:,.0f} -> {got['ours'][1]:,.0f} MB",
            )
        )
    sec.notes.append(
        "without it, every activation over 32 MB is a fresh mmap that the kernel zero-fills page by page (the "
        "teacher at 512x512 took 1.4 million page faults a pass, most of its time); kept, the blocks are reused. "
        "The cost is peak memory: freed blocks cannot always be reused at once (alignment, fragmentation). "
        "`APRRD_MALLOC=default` turns it off; setting glibc's own MALLOC_* variables also leaves it off"
    )
    return sec
