"""``aprrd denoise INPUT OUTPUT``: the everyday command."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from aprrd_cli.app import app
from aprrd_cli.commands.options import DEVICE, PATCH_WINDOWS, THREADS, TILE_HELP, inference_precision
from aprrd_cli.console import console, progress, warn
from aprrd_cli.data import formats
from aprrd_cli.denoise import MODEL_HELP, denoise_file, plan_jobs, read_checked
from aprrd_cli.device import resolve_device, set_fp32_math, set_threads, use_device
from aprrd_cli.errors import AprrdError, CheckpointError, OutputError
from aprrd_cli.inference import DEFAULT_OVERLAP
from aprrd_cli.opening import check_windows_options, open_denoiser
from aprrd_cli.utils.atomic import check_output_dir

MIN_RATE_MP = 0.05  # below this many megapixels a seconds-per-megapixel figure measures only overheads


@app.command()
def denoise(
    input: Path = typer.Argument(
        ..., metavar="INPUT", help=f"An image ({formats.names()}) or a folder of them.", show_default=False
    ),
    output: Path = typer.Argument(
        ..., metavar="OUTPUT", help="Output image, or folder when INPUT is a folder.", show_default=False
    ),
    model: str = typer.Option(None, "--model", "-m", metavar="<path|name>", help=MODEL_HELP, show_default=False),
    device: str = DEVICE,
    tile: int = typer.Option(
        None,
        "--tile",
        min=0,
        help=TILE_HELP,
        show_default=False,
    ),
    overlap: int = typer.Option(DEFAULT_OVERLAP, "--overlap", min=0, help="Context margin around each tile."),
    patch_windows: bool = PATCH_WINDOWS,
    bit_depth: int = typer.Option(
        None, "--bit-depth", help="8 or 16 bits per channel (default: as the input).", show_default=False
    ),
    out_format: str = typer.Option(
        None,
        "--format",
        metavar=formats.choice_list(),
        help="Output format of a folder run (default: each output keeps its input's). For one image the "
        "OUTPUT's suffix decides.",
        show_default=False,
    ),
    quality: int = typer.Option(
        None,
        "--quality",
        min=1,
        max=100,
        help=f"Quality of lossy outputs, 1-100: {formats.quality_help()}.",
        show_default=False,
    ),
    precision: str = inference_precision("auto"),
    threads: int = THREADS,
    skip_existing: bool = typer.Option(
        False,
        "--skip-existing",
        help="Leave outputs that already exist (outputs are written whole or not at all): continues an "
        "interrupted folder run.",
    ),
) -> None:
    """Denoise an image or a folder of images (sub-folders kept, bad files reported and skipped)."""
    if bit_depth not in (None, 8, 16):
        raise AprrdError(f"--bit-depth must be 8 or 16, got {bit_depth}", exit_code=2)
    check_windows_options(patch_windows, tile)
    jobs, is_folder = plan_jobs(input, output, out_format)
    if quality is not None and not any(formats.for_path(j.dst).lossy for j in jobs):
        warn(
            f"--quality applies to {formats.names(formats.lossy(), 'and')} outputs only, and none of the outputs is one"
        )
    kept = 0
    if skip_existing:
        todo = [j for j in jobs if not j.dst.is_file()]
        kept, jobs = len(jobs) - len(todo), todo
        if not jobs:
            console.print(f"nothing to do: all {kept} outputs exist in {output} (--skip-existing)")
            return
    # everything that can be refused is refused before the model loads: the output place, and a
    # single input file itself (a folder's bad files are reported and skipped one by one)
    check_output_dir(output if is_folder else jobs[0].dst.parent)
    first = None if is_folder else read_checked(jobs[0], bit_depth)
    dev = resolve_device(device)
    use_device(dev)
    set_fp32_math("fp32")  # evaluation and photos in true fp32 on GPUs too (no TF32)
    set_threads(threads)
    opened = open_denoiser(model, dev, precision, tile, overlap, patch_windows)
    den = opened.denoiser
    console.print(opened.describe())

    failed: list[tuple[Path, str]] = []
    mp_total, t0 = 0.0, time.perf_counter()
    with progress("img" if is_folder else "tile") as bar:
        images = bar.add_task("images", total=len(jobs)) if is_folder else None
        tiles = bar.add_task("tiles", total=None, visible=not is_folder)

        def on_tile(done: int, total: int) -> None:
            bar.update(tiles, completed=done, total=total, visible=total > 1 or not is_folder)

        for job in jobs:
            bar.reset(tiles, total=None)
            if is_folder:
                bar.update(images, description=job.src.name[:30])
            try:
                mp_total += denoise_file(den, job, bit_depth, on_tile, image=first, quality=quality)
            except (OutputError, CheckpointError) as e:  # a full disk, a broken model: every next image would fail too
                if not is_folder:
                    raise
                written = jobs.index(job) - len(failed)
                raise type(e)(f"{e} (stopped at {job.src}; {written} image(s) written before it are kept)") from e
            except AprrdError as e:
                if not is_folder:
                    raise
                failed.append((job.src, str(e)))
                bar.console.print(f"[yellow]skipped[/yellow] {e}")
            if images is not None:
                bar.advance(images)
    seconds = time.perf_counter() - t0
    done = len(jobs) - len(failed)
    rate = f", {seconds / mp_total:.2f} s/MP" if mp_total >= MIN_RATE_MP else ""  # tiny images: start-up, not speed
    console.print(
        f"denoised {done} image{'s' if done != 1 else ''} ({mp_total:.2f} MP) in {seconds:.1f} s{rate}"
        + (f"; {len(failed)} failed" if failed else "")
        + (f"; {kept} already there, left as they were" if kept else "")
        + f" -> {output}"
    )
    if failed:
        raise typer.Exit(1)
