"""``python -m benchmarks.rss_child CMD ...``: run CMD and print the peak resident memory (KiB) of
its process tree, so that the memory benchmark measures a command alone, not its own process."""

from __future__ import annotations

import resource
import subprocess
import sys


def main(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


if __name__ == "__main__":
    main(sys.argv[1:])
