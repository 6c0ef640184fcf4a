"""``aprrd prepare-data ROOT --out PREP``: SIDD / DND trees or a folder of photos -> the prepared store."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from aprrd_cli.app import app
from aprrd_cli.console import console, out, print_table, progress
from aprrd_cli.data.parts import ALL_PARTS, PartResult
from aprrd_cli.errors import AprrdError

HELP = """Prepare training images and evaluation sets for train-apr, distill and evaluate.

ROOT is a dataset tree, every part optional, laid out as the datasets are published:

\b
  SIDD_Medium_Srgb/Data/*/*_NOISY_SRGB_*.png         training (GT never read)
  SIDD_Benchmark_Data/*/*_NOISY_SRGB_010.png         training
  SIDD_Validation_sRGB/Validation{Noisy,Gt}BlocksSrgb.mat
  SIDD_Benchmark_sRGB/BenchmarkNoisyBlocksSrgb.mat   (or beside validation)
  dnd_2017/info.mat, dnd_2017/images_srgb/*.mat      DND, MATLAB v7.3

or simply a folder of your own noisy photos (PNG, TIFF, JPEG, HEIC, WebP or AVIF; 8 or 16 bits, colour or \
grey, any nesting).

Training images are stored as arrays under PREP/train and read through memory maps; evaluation sets \
under PREP/sidd-val, PREP/sidd-bench and PREP/dnd. Unchanged sources are not redone, so a second run \
takes seconds. Bad files are reported and skipped, the rest is prepared, and the exit code is 1 when \
anything was skipped.

--demo DIR builds a small offline demo set in DIR, a new or empty folder (photos shipped with \
scikit-image plus simulated camera noise: DIR/noisy for training, DIR/pairs/{noisy,gt} for evaluation), \
and prepares DIR/noisy.
"""


def _parse_parts(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in ALL_PARTS]
    if unknown or not parts:
        raise AprrdError(f"--parts: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(ALL_PARTS)}", 2)
    return parts


def render_report(results: list[PartResult], seconds: float, prep: Path) -> None:
    """The table of what was found, prepared, unchanged and skipped, then each skipped file and why."""
    table = Table(title=f"prepare-data -> {prep} ({seconds:.1f} s)", title_justify="left")
    for col, just in (
        ("part", "left"),
        ("found", "right"),
        ("prepared", "right"),
        ("unchanged", "right"),
        ("skipped", "right"),
        ("from", "left"),
    ):
        table.add_column(col, justify=just)
    for r in results:
        table.add_row(
            r.part.key,
            str(r.found),
            str(r.prepared),
            str(r.unchanged),
            f"[red]{len(r.skipped)}[/red]" if r.skipped else "0",
            escape(str(r.part.where)) + (f" ({r.removed} stale removed)" if r.removed else ""),
        )
    print_table(table)
    skipped = [(r.part.key, path, why) for r in results for path, why in r.skipped]
    for key, path, why in skipped:
        if why.startswith(f"{path}: "):  # messages that already name the file
            why = why[len(str(path)) + 2 :]
        out.print(f"[yellow]skipped[/yellow] {escape(f'[{key}] {path}: {why}')}", soft_wrap=True)


@app.command("prepare-data", help=HELP)
def prepare_data(
    root: Path = typer.Argument(
        None, metavar="ROOT", help="Dataset tree or folder of photos (not needed with --demo).", show_default=False
    ),
    out_dir: Path = typer.Option(Path("prepared"), "--out", "-o", help="Folder of the prepared store (PREP)."),
    parts: str = typer.Option(
        None,
        "--parts",
        help=f"Only these parts, comma-separated: {', '.join(ALL_PARTS)} (default: all found).",
        show_default=False,
    ),
    demo: Path = typer.Option(
        None, "--demo", help="Build the embedded demo set in this folder, then prepare it.", show_default=False
    ),
    seed: int = typer.Option(0, "--seed", help="Noise seed of the demo set (with --demo)."),
    demo_noise: float = typer.Option(
        1.0, "--demo-noise", min=0.0, help="Noise variance of the demo set, times the simulated camera's (with --demo)."
    ),
) -> None:
    from aprrd_cli.data.prepare import discover, prepare

    wanted = _parse_parts(parts)
    if demo is not None:
        if root is not None:
            raise AprrdError("give either ROOT or --demo DIR, not both", exit_code=2)
        from aprrd_cli.data.demo_set import build_demo_set
        from aprrd_cli.data.noise_sim import CameraNoise

        root = build_demo_set(demo, seed=seed, cam=CameraNoise().scaled(demo_noise)) / "noisy"
        console.print(f"demo set in {demo}: training photos {root}, evaluation pairs {demo / 'pairs'}")
    elif root is None:
        raise AprrdError("give ROOT (a dataset tree or a folder of photos), or --demo DIR", exit_code=2)

    t0 = time.perf_counter()
    found = discover(root, out_dir, wanted)  # a wrong ROOT fails here, before any progress bar
    with progress("item", transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        results = prepare(
            root,
            out_dir,
            wanted,
            on_start=lambda total: bar.update(task, total=total),
            on_item=lambda desc: bar.update(task, advance=1, description=desc),
            found=found,
        )
    render_report(results, time.perf_counter() - t0, out_dir)
    if any(r.skipped for r in results):
        raise typer.Exit(1)
