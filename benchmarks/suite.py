"""The benchmarks by name (``make bench`` runs them all, ``--only`` some) and the runner that
keeps one failing benchmark from losing the others' report."""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.allocator import allocator
from benchmarks.context import Context
from benchmarks.data import sampler
from benchmarks.harness import Section
from benchmarks.inference import end_to_end, student_inference, teacher_inference
from benchmarks.memory import memory
from benchmarks.onnx_runtime import onnx_runtime
from benchmarks.precision import bf16
from benchmarks.tiling import tiling
from benchmarks.training import gpu, training_steps

BENCHMARKS: dict[str, Callable[[Context], Section]] = {
    "student": student_inference,
    "teacher": teacher_inference,
    "e2e": end_to_end,
    "onnx": onnx_runtime,
    "train": training_steps,
    "sampler": sampler,
    "memory": memory,
    "allocator": allocator,
    "bf16": bf16,
    "gpu": gpu,
    "tiling": tiling,
}


def run_all(ctx: Context, names: list[str]) -> list[Section]:
    sections = []
    for name in names:
        ctx.log(f"[{name}] {BENCHMARKS[name].__doc__ or ''}".strip())
        t0 = time.perf_counter()
        try:
            sec = BENCHMARKS[name](ctx)
        except Exception as e:  # one broken benchmark must not lose the others' report
            ctx.log(f"  failed: {type(e).__name__}: {e}")
            sec = Section(name, "This benchmark failed.", passed=False, notes=[f"failed: {type(e).__name__}: {e}"])
        ctx.log(
            f"  done in {time.perf_counter() - t0:.0f} s: "
            + "; ".join(
                f"{r.label}: {r.ratio:.2f}x" if r.ratio else f"{r.label}: {r.ours:.1f} {r.unit}" for r in sec.rows
            )
        )
        sections.append(sec)
    return sections
