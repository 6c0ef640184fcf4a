"""Timing, FLOP counting, machine description and the markdown report.

Ratios, not seconds, are what a shared, noisy machine can measure: each benchmark runs
ours and the baseline alternately (A B A B ...) after a warm-up, so both see the same
background load, and reports medians.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Row:
    """One line of a benchmark's table. ``higher_is_better`` for rates (crops/s, it/s)."""

    label: str
    baseline: float | None
    ours: float | None
    unit: str = "s"
    diff: str = ""
    higher_is_better: bool = False
    max_diff: float | None = None  # largest |ours - baseline| of the outputs, when they are tensors

    def __post_init__(self) -> None:
        if self.max_diff is not None and not self.diff:
            self.diff = f"{self.max_diff:.1e}"

    @property
    def ratio(self) -> float | None:
        """How many times better ours is (speed-up for times, gain for rates)."""
        if not self.baseline or not self.ours:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours


@dataclass
class Section:
    """One benchmark: a title, what was measured, its table, its target and free notes."""

    title: str
    what: str
    rows: list[Row] = field(default_factory=list)
    target: str = ""
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run the callables alternately ``warmup`` then ``reps`` times; seconds per call for each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (convolutions and matrix products, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(seconds: float = 2.0) -> float:
    """The best fp32 matrix-product rate (GFLOP/s) on this machine now: the practical peak."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {
        "CPU": f"{cpu_model()}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} threads",
        "GPU": gpu,
        "torch": torch.__version__,
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()}",
    }


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if abs(v) >= 100:
        return f"{v:,.0f} {unit}"
    return f"{v:.2f} {unit}"


# Techniques tried while building this, each measured on its own (2-core CPU, interleaved with the
# baseline, student 1.00M at 512x512 unless said). Kept in the report so the choices stay explained.
TECHNIQUES = [
    "**Channels-last (NHWC)**: oneDNN's convolutions avoid a layout reorder per layer: the decoder's "
    "first conv at 512x512 (upsample + cat + conv) 1.19 s -> 0.87 s. Kept.",
    "**Folding nearest-upsample + concat + 3x3 conv** into a 4x4 stride-2 transposed conv of the "
    "low-resolution input plus a 3x3 conv of the skip (`models/blocks.py: up_cat_conv`): 2.25x fewer "
    "multiplications on the upsampled channels, no upsampled or concatenated tensors. Same decoder conv: "
    "0.87 s -> 0.51 s channels-last (in NCHW it does not pay: 1.14 s). The transposed conv runs at about "
    "140 GFLOP/s, the machine's matmul peak. The whole student: 2.2x the baseline. Kept.",
    "**Four 2x2 phase convolutions + interleave** instead of the transposed conv: 0.32 s vs 0.14 s. Dropped.",
    "**Caching the folded weights** when no gradient is needed (keyed on the weight's version): the "
    "per-call weight folding cost 10-20% on a loaded machine. Kept.",
    "**The blind shift folded into the conv padding** (pad 2 rows top and bottom, keep the first H) and "
    "**the blind pool** as a -inf-padded pool with the first row clamped at 0, and the teacher's head "
    "writing the shifted, un-rotated features into one buffer (no pads, no cat): teacher 1.38x -> 1.97x "
    "the baseline (288x288). Kept.",
    "**In-place LeakyReLU** on fresh conv outputs (and out-of-place on the blind convs' row views, which "
    "gives a dense tensor for the next conv). Kept.",
    "**`torch.compile`** (inductor, C++ compiler present) on top of the above: 32 s of compilation on the "
    "first call, then 0.62 s vs 0.60 s eager at 512x512: no gain for a CLI that denoises a few images. "
    "Not used for inference; training keeps its `--compile` option (falls back to eager when it fails).",
    "**`inference_mode`** instead of `no_grad`: part of `inference.Denoiser`; no measurable difference "
    "next to the convolutions.",
    "**Keeping freed memory** (`aprrd_cli/utils/allocator.py`, glibc `mallopt`: no mmap for big blocks, no heap "
    "trimming): every activation over 32 MB was a fresh mmap zero-filled page by page; the teacher at 512x512 "
    "spent 2.3 s of 2.8 s in the kernel (1.4 million page faults). Kept: teacher 2.8 -> 1.4 s, student on "
    "mixed sizes 1.6x, APR step at 128x128 1.0 -> 0.62 s, for 10-25% more peak memory (see Allocator). "
    "The in-process comparisons above run both sides on the default allocator, so they measure code "
    "against code. Transparent huge pages (`THP_MEM_ALLOC_ENABLE=1`) were tried instead: teacher 2.7 -> "
    "1.6-2.2 s, varying run to run (the kernel compacts memory on demand). Not used.",
    "**Crops by `pread` instead of through the memory map**: a fault on a mapped file maps up to 16 cached "
    "neighbour pages, so 30 steps of 8 x 64^2 left 1 GB of a 21.6 GB store resident (training's peak RSS "
    "1.8 GB); reading each crop row with `os.preadv` leaves none (0.9 GB) and reads 1,700-2,100 crops/s of "
    "256^2 from a cached 2 GB store, against 650-950 through the map once its pages are unmapped. Kept.",
    "**bf16 autocast on CPUs that compute bf16 natively** (AVX512-BF16, AMX; `device.cpu_bf16_native`): "
    "see the bf16 section for the ratios. The layers that read or make the image stay fp32 "
    "(`models/blocks.py: in_fp32`); they cost about 10% of an APR step of 1 x 256^2 (3.22 s against "
    "2.89 s with every layer in bf16, fp32 5.46 s) and keep bf16 inference of the official students "
    "within 0.005 dB of fp32 on the real dev sets, where all-bf16 lost 0.06 dB on cc15. Kept: the "
    "default of `denoise` and of training on such CPUs; `evaluate` stays fp32, the field's arithmetic. "
    "On a CPU without native bf16 oneDNN emulates it, slower than fp32: never chosen there.",
    "**The default tiling sized by the memory at hand** (`inference.plan_tile`; see Big photos). The rule: "
    "the network's working memory is W bytes per megapixel of its padded input, measured as the slope of the "
    "peak resident memory between whole 512^2 and 1024^2 runs (official student: 1.4 GB/MP in fp32, 1.85 GB/MP "
    "in bf16; the teacher 7.6 / 7.9 GB/MP); the image runs whole when W x its megapixels fits 50% of the memory "
    "at hand (MemAvailable, lowered to a cgroup's headroom, `APRRD_MEMORY_GB` to set it; on a GPU its free "
    "memory and this process's cached blocks), since a whole image computes no margin twice; otherwise, with "
    "the padded input and output (24 bytes a pixel) set aside, the row and column tile cores are chosen, among "
    "those whose windows fit, to compute the fewest pixels in all, margins (--overlap, 96: within one grey "
    "level of whole) included, so a 12 MP photo with 10 GB at hand runs as full-height strips computing 14.2 MP "
    "where `--tile 1024` computes 18.7 and the old default (`--tile 512` over 1 MP) 26. The old default "
    "measured 12.3 s and 2.1 GB on a 12 MP photo against 9.6 s and 4.1 GB at `--tile 1024`, and 2.84 s tiled "
    "against 2.22 s whole on a 1.36 MP photo (bf16, this machine). `--tile` and `--overlap` override it; "
    "`--tile 512` keeps the old bound (2.1 GB on a 12 MP photo).",
]


def render(sections: list[Section], info: dict[str, str], command: str, started: str, load: tuple[str, str]) -> str:
    """The whole of ``docs/performance.md``."""
    lines = [
        "# Performance",
        "",
        "Written by `make bench` (`python -m benchmarks`); do not edit by hand, re-run it.",
        "",
        "Each benchmark runs our code and the **baseline** (`benchmarks/baseline.py`: the",
        "method written the straightforward way the official release writes it, eager float32,",
        "a pad/conv/crop per blind layer, nearest upsample + concatenation, the four rotations",
        "stacked in the batch, `no_grad`) in the same run, alternately, after a warm-up, and",
        "reports medians. The machine is shared and noisy: absolute seconds drift, the ratios",
        "measured side by side hold. *max abs diff* compares the outputs (or losses) of both.",
        "",
        "## Machine",
        "",
        f"- command: `{command}`",
        f"- run: {started}; load average before / after: {load[0]} / {load[1]}",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Summary", "", "| benchmark | target | result |", "|---|---|---|"]
    for s in sections:
        verdict = {True: "**met**", False: "**not met**", None: "measured" if s.rows else "not measured"}[s.passed]
        lines.append(f"| [{s.title}](#{_anchor(s.title)}) | {s.target or '—'} | {verdict} |")
    for s in sections:
        lines += ["", f"## {s.title}", "", s.what, ""]
        if s.rows:
            lines += ["| case | baseline | ours | ratio | max abs diff |", "|---|---|---|---|---|"]
            for r in s.rows:
                ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
                lines.append(
                    f"| {r.label} | {_fmt(r.baseline, r.unit)} | {_fmt(r.ours, r.unit)} | {ratio} | {r.diff or '—'} |"
                )
            lines.append("")
        if s.target:
            verdict = {True: "met", False: "NOT met", None: "not judged"}[s.passed]
            lines += [f"Target: {s.target} — {verdict}.", ""]
        lines += [f"- {n}" for n in s.notes]
    lines += ["", "## Techniques, measured one by one", ""] + [f"- {t}" for t in TECHNIQUES]
    return "\n".join(lines).rstrip() + "\n"


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -")
    return keep.replace(" ", "-")
