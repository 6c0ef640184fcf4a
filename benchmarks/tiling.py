"""The big-photo benchmark: the default tiling against every --tile, on 1, 12 and 24 MP photos, and the
working memory per megapixel that the default's rule (``inference.plan_tile``) is built on."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from aprrd_cli.device import precision_with_reason
from aprrd_cli.inference import MEMORY_PER_MP, MEMORY_SHARE, Denoiser, padding_for, tile_spans, window_side
from aprrd_cli.utils.memory import available_bytes
from benchmarks.context import REPO, Context
from benchmarks.harness import Row, Section

# (label, height, width): a 1.36 MP phone crop, a 12 MP phone photo, a 24 MP camera photo
SIZES = [("1 MP", 1024, 1360), ("12 MP", 3000, 4000), ("24 MP", 4000, 6000)]
QUICK_SIZES = [("0.26 MP", 448, 576), ("1 MP", 1024, 1360)]
TILES = ["whole", "512", "1024", "1536", "2048"]
THREADS = 2
# whole-image runs for the memory per megapixel: the slope between these two sizes
MEMORY_SIDES = (512, 1024)


def child(device: torch.device, precision: str, h: int, w: int, tile: str, reps: int = 1) -> dict:
    args = [str(device), precision, str(h), str(w), tile, str(THREADS), str(reps)]
    cmd = [sys.executable, "-m", "benchmarks.tile_child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def predicted_bytes(den: Denoiser, h: int, w: int, tile: str) -> float:
    """What the rule expects a setting to need, so settings far beyond the machine are not run."""
    t, b, lft, r = padding_for(h, w, 0)
    hp, wp = h + t + b, w + lft + r
    if tile == "whole":
        return hp * wp * den.memory_per_pixel()
    side = window_side(int(tile), den.overlap)
    return min(hp, side) * min(wp, side) * den.memory_per_pixel()


def memory_per_mp(ctx: Context, device: torch.device, precision: str) -> float:
    """Working memory per megapixel, whole image: the slope of the peak between two sizes."""
    small, large = (64, 128) if ctx.tiny else MEMORY_SIDES
    a, b = child(device, precision, small, small, "whole"), child(device, precision, large, large, "whole")
    return ((b["peak"] - b["base"]) - (a["peak"] - a["base"])) / ((large**2 - small**2) / 1e6)


def _setting(tile: str) -> str:
    return "--tile 0" if tile == "whole" else f"--tile {tile}"


def same_work(h: int, w: int, core: tuple[int, int], margin: int) -> tuple:
    """The windows a tiling runs: two settings with the same windows do the same work (one window is the whole)."""
    t, b, lft, r = padding_for(h, w, 0)
    hp, wp = h + t + b, w + lft + r
    ch, cw = (hp, wp) if core == (0, 0) else core
    return tuple(tile_spans(hp, ch, margin)), tuple(tile_spans(wp, cw, margin))


def tiling(ctx: Context) -> Section:
    """The default tiling against every --tile on big photos; the memory per megapixel behind the rule"""
    sec = Section(
        "Big photos",
        "`aprrd denoise`'s default tiling (`inference.plan_tile`: the whole image when the network's working "
        f"memory fits {MEMORY_SHARE:.0%} of the memory at hand, else the row and column tiles whose windows fit "
        "with the fewest pixels computed, margins included) against the whole image and square `--tile` "
        f"settings, the official student, each in a fresh process ({THREADS} threads), the fastest of 2 calls "
        "(3 with --quick) after a warm-up. "
        "Settings that run the same windows are measured once. *baseline* is the fastest fixed setting, *ours* "
        "the default; the peak memory (resident "
        "high-water mark on the CPU, largest CUDA allocation on a GPU) is in the notes. Settings the rule "
        "expects to need more than 80% of the memory at hand are not run.",
        target="the default within 10% of the fastest setting (ratio >= 0.91) at every size",
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    sizes = [("64x96", 64, 96)] if ctx.tiny else QUICK_SIZES if ctx.quick else SIZES
    tiles = ["whole", "512"] if ctx.tiny else TILES
    reps = ctx.reps(2, 3)
    ok = True
    model, what = ctx.student()
    for device in devices:
        precision, why = precision_with_reason("auto", device)
        den = Denoiser(model, torch.device("cpu"), precision=precision)
        for prec in sorted({"fp32", precision}):
            per_mp = memory_per_mp(ctx, device, prec)
            table = MEMORY_PER_MP[("student", prec)]
            sec.notes.append(
                f"{device.type} {prec}: working memory {per_mp / 1e9:.2f} GB per MP measured (whole image, "
                f"{MEMORY_SIDES[0]}^2 to {MEMORY_SIDES[1]}^2); the rule uses {table / 1e9:.2f} GB"
            )
        at_hand = available_bytes() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
        for label, h, w in sizes:
            ctx.log(f"  {device.type} {label} ({w}x{h}), {precision}")
            auto = child(device, precision, h, w, "auto", reps)
            done = {same_work(h, w, tuple(auto["core"]), den.overlap): ("the default", auto)}
            runs = {}
            for tile in tiles:
                work = same_work(h, w, (0, 0) if tile == "whole" else (int(tile), int(tile)), den.overlap)
                if work in done:  # the same windows: measured once (a noisy machine would make them differ)
                    name, runs[tile] = done[work]
                    sec.notes.append(f"{device.type} {label} {_setting(tile)}: the same tiles as {name}, not run again")
                    continue
                need = predicted_bytes(den, h, w, tile)
                if need > 0.8 * at_hand:
                    sec.notes.append(
                        f"{device.type} {label} {_setting(tile)}: not run (needs about {need / 1e9:.0f} GB)"
                    )
                    continue
                runs[tile] = child(device, precision, h, w, "0" if tile == "whole" else tile, reps)
                done[work] = (_setting(tile), runs[tile])
            best_tile = min(runs, key=lambda k: runs[k]["seconds"])
            best = runs[best_tile]
            shown = "whole" if auto["core"] == [0, 0] else f"{auto['core'][0]}x{auto['core'][1]} cores"
            row = Row(
                f"{device.type}, {label} ({w}x{h}), {precision}: default ({shown}) vs {_setting(best_tile)}",
                best["seconds"],
                auto["seconds"],
                diff=f"peak {auto['peak'] / 1e9:.1f} GB vs {best['peak'] / 1e9:.1f} GB",
            )
            sec.rows.append(row)
            ok &= bool(row.ratio and row.ratio >= 0.91)
            every = ", ".join(f"{_setting(k)} {v['seconds']:.2f} s / {v['peak'] / 1e9:.1f} GB" for k, v in runs.items())
            sec.notes.append(
                f"{device.type} {label}: default {auto['seconds']:.2f} s / {auto['peak'] / 1e9:.1f} GB; {every} "
                f"({at_hand / 1e9:.0f} GB at hand)"
            )
        sec.notes.append(f"{device.type}: {precision} ({why}); model: {what}")
    sec.passed = ok
    return sec
