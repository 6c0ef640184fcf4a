"""The memory benchmark: peak resident memory of real ``aprrd`` commands (a 12 MP photo, training on
a store larger than memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aprrd_cli.inference import MEMORY_SHARE
from aprrd_cli.utils.memory import available_bytes
from benchmarks.context import REPO, Context
from benchmarks.data import write_store
from benchmarks.harness import Row, Section


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MB) of ``cmd`` run in a fresh process tree (ru_maxrss of the children)."""
    child = [sys.executable, "-m", "benchmarks.rss_child", *cmd]
    out = subprocess.run(child, check=True, capture_output=True, text=True, cwd=REPO)
    return int(out.stdout.split()[-1]) / 1024


def memory(ctx: Context) -> Section:
    sec = Section(
        "Memory",
        "Peak resident memory (`ru_maxrss` of a child process) of real commands.",
        target=f"12 MP denoise: --tile 512 < 3 GB, the default within {MEMORY_SHARE:.0%} of the memory at hand "
        "plus 1 GB; training on a 20+ GB store < 2 GB",
    )
    bin_dir = Path(sys.executable).parent
    aprrd = [str(bin_dir / "aprrd")] if (bin_dir / "aprrd").exists() else [sys.executable, "-m", "aprrd_cli"]
    ok = True
    model = ctx.reference / "nbsn_1.00M_sidd_medium.pth"
    if not model.exists():
        from aprrd_cli.models.checkpoint import save_model

        model = ctx.tmp / "student.pth"
        save_model(model, ctx.student()[0])
    if ctx.quick:
        sec.notes.append("12 MP denoise: skipped (--quick)")
    else:
        from aprrd_cli.data.images import write_image
        from aprrd_cli.data.tensors import from_float

        big = ctx.tmp / "photo12mp.png"
        write_image(big, from_float(ctx.photo(3000, 4000)[0].numpy().transpose(1, 2, 0), "uint8"))
        budget_mb = MEMORY_SHARE * available_bytes() / 1e6 + 1000  # the network's share, and the process itself
        denoise = [*aprrd, "denoise", str(big), str(ctx.tmp / "photo12mp_out.png"), "--model", str(model)]
        mb = peak_rss_mb(denoise)
        sec.rows.append(Row("aprrd denoise, 4000x3000 PNG (default tiling)", None, mb, unit="MB"))
        ok &= mb < budget_mb
        mb = peak_rss_mb([*denoise, "--tile", "512"])
        sec.rows.append(Row("aprrd denoise, 4000x3000 PNG, --tile 512", None, mb, unit="MB"))
        ok &= mb < 3000
        sec.notes.append(
            f"the default tiling may use {MEMORY_SHARE:.0%} of the memory at hand for speed (here "
            f"{budget_mb - 1000:,.0f} MB); --tile 512 is the bound for machines that need the memory elsewhere"
        )
    gb = 0.05 if ctx.quick else 21.6
    side = int((gb * 1e9 / 3 / 4 / 1.25) ** 0.5)
    store_dir = ctx.tmp / "store_large"
    ctx.log(f"  writing a {gb:g} GB store of random images")
    write_store(store_dir, [(side, int(side * 1.25))] * 4)
    size = sum(f.stat().st_size for f in (store_dir / "train").glob("*.npy")) / 1e9
    iters = 4 if ctx.quick else 30
    cmd = [
        *aprrd,
        "train-apr",
        "--data",
        str(store_dir),
        "--run-dir",
        str(ctx.tmp / "run_mem"),
        "--iters",
        str(iters),
        "--batch-size",
        "8",
        "--patch-size",
        "64",
        "--width",
        "16",
        "--save-every",
        str(iters),
    ]
    try:
        mb = peak_rss_mb(cmd)
        sec.rows.append(Row(f"aprrd train-apr, {size:.1f} GB store, {iters} iterations", None, mb, unit="MB"))
        ok &= mb < 2000
    except subprocess.CalledProcessError as e:
        sec.notes.append(f"training run failed: {(e.stderr or '')[-200:]}")
        ok = False
    finally:
        for f in (store_dir / "train").glob("*.npy"):
            f.unlink()
    sec.notes.append(
        "the store is memory-mapped: only the pages the crops touch are resident, and they count in RSS; the "
        "official loader would hold the whole store in memory (15 GB for SIDD Medium)"
    )
    sec.passed = None if ctx.quick else ok
    return sec
