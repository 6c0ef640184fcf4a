"""``make demo``: the whole method end to end on the embedded demo set, on a CPU, in minutes.

demo set -> prepare-data -> train-apr -> distill -> evaluate (teacher and student) ->
denoise, each step run as the ``aprrd`` command a user would type (printed first),
everything under ``./demo/``. The budget is small (APR_ITERS / RD_ITERS) but uses 128x128
patches: the five-level blind UNet does not learn early on smaller ones (docs/method.md section 3).

The demo photos carry NOISE_SCALE times the simulator's default shot-noise variance (noisy
input about 22 dB instead of 25-29 dB): a teacher trained for a couple of minutes reaches
about 25 dB whatever the noise (measured), so only a noisier input shows the gain that a
full training run gives on real photos.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from aprrd_cli.cli import main as aprrd
from aprrd_cli.console import console, out

DEMO = Path("demo")
APR_ITERS = 150  # teacher: batch 1 of 128x128
RD_ITERS = 200  # student: batch 1 of 128x128 (a step costs about a quarter of an APR step)
PATCH = 128
LR = "1e-3"  # a short run needs a larger step than the paper's 3e-4 over 400k iterations
IMAGE = "astronaut.png"
NOISE_SCALE = 4.0  # x the simulated camera's noise variance (prepare-data --demo-noise)


def run(*args: str | Path) -> None:
    argv = [str(a) for a in args]
    console.print(f"\n[bold]$ aprrd {shlex.join(argv)}[/bold]")
    code = aprrd(argv)
    if code != 0:
        raise SystemExit(code)


def noisy_scores(pairs_dir: Path) -> tuple[float, float]:
    """PSNR / SSIM of the noisy inputs themselves (the "no denoising" row)."""
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.evaluation.protocols import score_arrays

    pairs = load_pairs(pairs_dir)
    scores = score_arrays([noisy for _, noisy, _ in pairs], pairs)
    return scores["psnr"], scores["ssim"]


def main() -> int:
    t0 = time.perf_counter()
    demo_set, prep, runs, results = DEMO / "set", DEMO / "prepared", DEMO / "runs", DEMO / "results"
    if runs.exists():
        console.print(f"removing the previous demo runs in {runs}")
        shutil.rmtree(runs)
    pairs = demo_set / "pairs"
    common = ("--data", prep, "--patch-size", str(PATCH), "--batch-size", "1", "--lr", LR, "--device", "cpu")

    run("prepare-data", "--demo", demo_set, "--demo-noise", f"{NOISE_SCALE:g}", "--out", prep)
    run("train-apr", *common, "--run-dir", runs / "apr", "--iters", str(APR_ITERS), "--save-every", "50")
    run(
        "distill",
        *common,
        "--teacher",
        runs / "apr" / "teacher.pth",
        "--run-dir",
        runs / "rd",
        "--iters",
        str(RD_ITERS),
    )
    scores = {}
    for name, model in (("teacher", runs / "apr" / "teacher.pth"), ("student", runs / "rd" / "student.pth")):
        js = results / f"{name}.json"
        run(
            "evaluate",
            "--model",
            model,
            "--pairs",
            pairs,
            "--json",
            js,
            "--out",
            results / name,
            "--save-images",
            "--device",
            "cpu",
        )
        scores[name] = json.loads(js.read_text())
    run("denoise", pairs / "noisy" / IMAGE, results / f"denoised_{IMAGE}", "--model", runs / "rd" / "student.pth")

    noisy = noisy_scores(pairs)
    minutes = (time.perf_counter() - t0) / 60
    out.print(
        f"\nAPR-RD demo ({APR_ITERS} APR + {RD_ITERS} RD iterations on {PATCH}x{PATCH} patches, {minutes:.1f} min)"
    )
    out.print(f"  {'':18}{'PSNR (dB)':>10}{'SSIM':>9}")
    out.print(f"  {'noisy input':18}{noisy[0]:>10.2f}{noisy[1]:>9.4f}")
    for name in ("teacher", "student"):
        out.print(
            f"  {name + ' (AT-BSN)' if name == 'teacher' else name + ' (NBSN)':18}"
            f"{scores[name]['psnr']:>10.2f}{scores[name]['ssim']:>9.4f}"
        )
    out.print(f"  denoised picture: {results / ('denoised_' + IMAGE)}")
    out.print(f"  noisy | denoised | clean panels: {results / 'teacher'}/, {results / 'student'}/")
    out.print(f"  loss and PSNR curves: {runs / 'apr' / 'loss.png'}, {runs / 'rd' / 'loss.png'}")
    gain = scores["student"]["psnr"] - noisy[0]
    if gain < 1.0:
        console.print(f"[yellow]warning:[/yellow] the student is only {gain:+.2f} dB over the noisy input")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
