"""How much memory this process can still use: what the default tiling of big photos sizes itself by.

On Linux, the kernel's estimate of memory available without swapping (``MemAvailable``), lowered
to the container's limit when a cgroup sets one (a CI runner, a Docker container, a Slurm job);
elsewhere, the free physical pages. ``APRRD_MEMORY_GB`` overrides it (a machine shared with
other jobs, or a test).
"""

from __future__ import annotations

import os
from pathlib import Path

from aprrd_cli.console import warn

ENV = "APRRD_MEMORY_GB"
FALLBACK = 4 << 30  # when nothing can be read: a laptop's worth, so tiles stay modest


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup v2 limit less what the group already uses; None when there is no limit."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def _free_pages() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> int:
    """Bytes of host memory this process may still take without pushing the machine into swap."""
    given = os.environ.get(ENV)
    if given:
        try:
            return int(float(given) * (1 << 30))
        except ValueError:
            warn(f"{ENV}={given!r} is not a number of gigabytes; the memory at hand is measured instead")
    found = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    if not found:
        pages = _free_pages()
        return pages if pages else FALLBACK
    return min(found)
