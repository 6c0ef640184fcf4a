"""``python -m benchmarks.alloc_child WORK SIZE``: one allocator-benchmark measurement in a fresh
process, as ``aprrd`` runs (freed memory kept unless ``APRRD_MALLOC=default``): the seconds of the
second run of the work (the first warms up) and the process's own peak resident memory (KiB)."""

from __future__ import annotations

import resource
import sys
import time


def main(argv: list[str]) -> None:
    from aprrd_cli.utils.allocator import keep_freed_memory

    keep_freed_memory()  # before torch allocates anything
    import torch

    from benchmarks.allocator import alloc_workload

    torch.set_num_threads(2)
    fn = alloc_workload(argv[0], int(argv[1]))
    fn()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    try:  # this process's own high-water mark: ru_maxrss would include the benchmark process it was forked from
        peak = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(seconds, peak)


if __name__ == "__main__":
    main(sys.argv[1:])
