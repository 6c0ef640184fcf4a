"""``python -m benchmarks.tile_child DEVICE PRECISION H W TILE THREADS REPS``: one big-photo measurement in
a fresh process, as ``aprrd denoise`` runs it (freed memory kept): the official student (random weights
when ../shared is absent) on an ``H x W`` photo with ``--tile TILE`` (``auto``: the default tiling).

Prints one JSON line: the fastest of REPS calls after one that warms up at the same size (the fastest,
since on a shared machine other work only ever adds time), the tiles the call used, and the peak
memory: the process's resident high-water mark on the CPU, the largest CUDA allocation on a GPU.
``TILE`` = ``whole`` runs one call at ``H x W`` with no tiling, for the memory-per-megapixel measurement.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_bytes() -> int:
    """This process's own high-water mark (ru_maxrss would include the process it was forked from)."""
    try:
        return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> None:
    from aprrd_cli.utils.allocator import keep_freed_memory

    keep_freed_memory()  # as the aprrd command does, before torch allocates anything
    import torch

    from aprrd_cli.inference import Denoiser
    from benchmarks.context import REPO, Context

    device, precision, h, w, tile = torch.device(argv[0]), argv[1], int(argv[2]), int(argv[3]), argv[4]
    torch.set_num_threads(int(argv[5]))
    reps = int(argv[6])
    ctx = Context(quick=False, shared=REPO.parent / "shared", peak_gflops=0.0, tmp=REPO, log=lambda _m: None)
    model, _ = ctx.student()
    x = ctx.photo(h, w)
    base = peak_rss_bytes()
    den = Denoiser(
        model, device, tile=0 if tile == "whole" else None if tile == "auto" else int(tile), precision=precision
    )
    core = den.core_for(h, w)
    if tile != "whole":
        den(x)  # warm-up: lazy initialisation, oneDNN's or cuDNN's set-up for these shapes
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds = float("inf")
    for _ in range(1 if tile == "whole" else reps):
        t0 = time.perf_counter()
        den(x)  # returns on the CPU: the device has finished
        seconds = min(seconds, time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
    print(json.dumps({"seconds": seconds, "core": list(core), "peak": peak, "base": base}))


if __name__ == "__main__":
    main(sys.argv[1:])
