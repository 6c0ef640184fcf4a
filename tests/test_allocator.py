"""The allocator tuning: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from aprrd_cli.utils.allocator import keep_freed_memory
on = keep_freed_memory()
for _ in range(12):  # glibc settles on reusing the freed blocks after a few rounds
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # allocate 64 MB, touch every page, free
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(64 * 2**20 // 4).fill_(1.0)
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="the tuning applies to glibc only",
)


def probe(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "APRRD_MALLOC"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_freed_blocks_are_reused_without_page_faults() -> None:
    on, faults = probe()
    assert on
    assert faults < 200  # 64 MB is 16,384 pages: re-faulting them four times would be 65,536


@glibc
def test_default_allocator_refaults_every_block() -> None:
    on, faults = probe(APRRD_MALLOC="default")
    assert not on
    assert faults > 4 * 16_000  # the behaviour the tuning removes (what the teacher paid 2.3 s of 2.8 s for)


@glibc
def test_users_own_glibc_settings_are_left_alone() -> None:
    on, _ = probe(MALLOC_ARENA_MAX_="2")
    assert not on
