"""``aprrd evaluate``: scores on pairs or prepared SIDD/DND sets, and benchmark submission files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from aprrd_cli.app import app
from aprrd_cli.commands.options import DEVICE, PATCH_WINDOWS, THREADS, TILE_HELP, inference_precision
from aprrd_cli.console import console, plural, print_table, progress
from aprrd_cli.data.pairs import load_pairs, load_photos
from aprrd_cli.denoise import MODEL_HELP, resolve_model
from aprrd_cli.device import describe, resolve_device, set_fp32_math, set_threads, use_device
from aprrd_cli.errors import AprrdError
from aprrd_cli.evaluation.no_reference import check_photos, crops_of
from aprrd_cli.evaluation.pictures import save_side_by_side
from aprrd_cli.evaluation.protocols import evaluate_sidd_val, run_dnd, run_sidd_bench, score_model
from aprrd_cli.evaluation.report import Measured, build_report
from aprrd_cli.evaluation.submission import SIDD_FILE, SiddOptionalData
from aprrd_cli.inference import DEFAULT_OVERLAP, Denoiser, Runner
from aprrd_cli.opening import check_windows_options, open_denoiser
from aprrd_cli.utils.atomic import atomic_write_text, check_output_dir

SETS = ("sidd-val", "sidd-bench", "dnd")
DEFAULT_DATA = Path("prepared")
RESULTS = Path("results")


def _table(
    title: str, second: str, rows: list[tuple[str, str, float, float]], mean_label: str, mean: tuple[float, float]
) -> Table:
    """Per-image scores and the mean; ``second`` names the second column (size or blocks)."""
    table = Table(title=title, title_justify="left")
    table.add_column("image", overflow="fold")  # a long name folds onto a second line, whole
    table.add_column(second, justify="right", no_wrap=True)
    table.add_column("PSNR (dB)", justify="right", no_wrap=True)
    table.add_column("SSIM", justify="right", no_wrap=True)
    for name, size, p, s in rows:
        table.add_row(name, size, f"{p:.2f}", f"{s:.5f}")
    table.add_section()
    table.add_row(f"[bold]{mean_label}[/bold]", "", f"[bold]{mean[0]:.2f}[/bold]", f"[bold]{mean[1]:.5f}[/bold]")
    return table


def _check_json_target(path: Path | None) -> None:
    """Fail before the work, not after it, when the report cannot be written."""
    if path is None:
        return
    if path.is_dir():
        raise AprrdError(f"--json {path} is a folder; give a file name such as {path / 'scores.json'}")
    check_output_dir(path.parent, "--json report")


def _write_json(path: Path | None, measured: Measured, scores: dict) -> None:
    """The report (evaluation/report.py): what was measured, the same keys in every mode, then the scores."""
    if path is not None:
        report = build_report(measured, scores)
        clean = json.loads(json.dumps(report), parse_constant=lambda c: None)  # NaN/inf -> null: valid JSON
        atomic_write_text(path, json.dumps(clean, indent=1) + "\n")
        console.print(f"scores -> {path}")


def _rate(spm: float) -> str:
    return f"{spm:.2f} s/MP" if math.isfinite(spm) else "-- s/MP"


@app.command()
def evaluate(
    model: str = typer.Option(None, "--model", "-m", metavar="<path|name>", help=MODEL_HELP, show_default=False),
    pairs: Path = typer.Option(
        None, "--pairs", help="Folder with noisy/ and gt/ images of matching names.", show_default=False
    ),
    photos: Path = typer.Option(
        None,
        "--photos",
        help="A folder of your own noisy photos, no clean images: check the model without a reference "
        "(colour shift, noise removed, agreement with the official student); exits 1 when a check fails.",
        show_default=False,
    ),
    reference: str = typer.Option(
        "official",
        "--reference",
        metavar="<path|name|none>",
        help="With --photos: the model to compare with (a checkpoint, a named model, or none).",
    ),
    eval_set: str = typer.Option(
        None, "--set", help="Prepared set: sidd-val, sidd-bench or dnd (see prepare-data).", show_default=False
    ),
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Prepared data folder (aprrd prepare-data --out)."),
    out_dir: Path = typer.Option(
        None,
        "--out",
        help="Folder for submission files and pictures. Default: results/SET or results/PAIRS-NAME.",
        show_default=False,
    ),
    json_path: Path = typer.Option(None, "--json", help="Write the scores as JSON here.", show_default=False),
    save_images: bool = typer.Option(
        False, "--save-images", help="Write noisy | denoised | ground-truth pictures (PNG) into OUT."
    ),
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the 8 flips/rotations (x8 self-ensemble)."),
    device: str = DEVICE,
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Blocks denoised at once (prepared sets)."),
    tile: int = typer.Option(
        None,
        "--tile",
        min=0,
        help=TILE_HELP,
        show_default=False,
    ),
    patch_windows: bool = PATCH_WINDOWS,
    precision: str = inference_precision("fp32"),
    threads: int = THREADS,
    method_name: str = typer.Option("APR-RD", "--method-name", help="SIDD OptionalData: method name."),
    authors: str = typer.Option("", "--authors", help="SIDD OptionalData: authors."),
    paper_title: str = typer.Option("", "--paper-title", help="SIDD OptionalData: paper title."),
    venue: str = typer.Option("", "--venue", help="SIDD OptionalData: venue."),
    machine_specs: str = typer.Option(
        None, "--machine-specs", help="SIDD OptionalData: the machine (default: the device used).", show_default=False
    ),
    gpu: bool = typer.Option(
        None,
        "--gpu/--cpu",
        help="SIDD OptionalData: timed on a GPU or CPU (default: the device used).",
        show_default=False,
    ),
    notes: str = typer.Option("", "--notes", help="SIDD OptionalData: free notes."),
) -> None:
    """Score a model on pairs or a prepared SIDD/DND set, and write benchmark submission files.

    Scores are the field's: 8-bit output, PSNR and scikit-image's Gaussian SSIM, averaged over
    images (pairs) or blocks (SIDD). --set sidd-bench writes OUT/SubmitSrgb.mat and --set dnd
    OUT/*.mat + OUT/bundled/*.mat, each checked on read-back. See docs/evaluation.md.
    """
    if sum(x is not None for x in (pairs, eval_set, photos)) != 1:
        raise AprrdError(
            "give either --pairs DIR, --photos DIR or --set sidd-val|sidd-bench|dnd (exactly one)", exit_code=2
        )
    if eval_set is not None and eval_set not in SETS:
        raise AprrdError(f"unknown --set {eval_set!r}; choose one of {', '.join(SETS)}", exit_code=2)
    _check_json_target(json_path)
    check_windows_options(patch_windows, tile)

    # the data first: a wrong folder should fail in a second, not after loading a model
    loaded_pairs = load_pairs(pairs) if pairs is not None else None
    loaded_photos = load_photos(photos) if photos is not None else None
    es = None
    if eval_set is not None:
        from aprrd_cli.data.store import open_eval_set

        es = open_eval_set(data, eval_set)
    out_dir = out_dir or RESULTS / (eval_set or (pairs or photos).resolve().name)
    if save_images or eval_set in ("sidd-bench", "dnd"):  # submission files or pictures will go there
        check_output_dir(out_dir, "submission files and pictures" if eval_set else "pictures")
    dev = resolve_device(device)
    use_device(dev)
    set_fp32_math("fp32")  # evaluation and photos in true fp32 on GPUs too (no TF32)
    set_threads(threads)
    opened = open_denoiser(model, dev, precision, tile, DEFAULT_OVERLAP, patch_windows)
    den, model_path = opened.denoiser, opened.path
    runner = Runner(den, ensemble)
    console.print(opened.describe(with_reason=precision == "auto") + (", x8 self-ensemble" if ensemble else ""))
    measured = Measured(
        model, model_path, opened.loaded, describe(dev), opened.precision, opened.why, ensemble, tile,
        DEFAULT_OVERLAP, patch_windows, pairs=pairs, photos=photos, eval_set=eval_set, data=data,
    )  # fmt: skip

    if loaded_pairs is not None:
        _run_pairs(runner, loaded_pairs, pairs, out_dir if save_images else None, json_path, measured)
        return
    if loaded_photos is not None:
        ref = None if reference == "none" else _reference(reference, dev)
        report = check_photos(den, crops_of(loaded_photos), ref)
        _show_check(report, photos, reference if ref is not None else None)
        _write_json(json_path, measured, {"reference": reference if ref is not None else None, **report})
        if report["warnings"]:
            raise typer.Exit(1)
        return
    assert es is not None
    pictures = out_dir / "pictures" if save_images else None
    n = es.noisy.shape[0] * es.noisy.shape[1]
    with progress("block") as bar:
        task = bar.add_task(eval_set, total=n)

        def on_batch(k: int) -> None:
            bar.advance(task, k)

        def on_block(
            image: str,
            block: int,
            noisy: np.ndarray,
            den: np.ndarray,
            gt: np.ndarray | None,
            scores: tuple[float, float] | None,
        ) -> None:
            if block == 0:  # one picture per image: enough to look at, not 1,280 files
                save_side_by_side(pictures / f"{image}_{block + 1:02d}.png", noisy, den, gt, scores, measured.caption)

        on_pic = on_block if pictures is not None else None
        if eval_set == "sidd-val":
            scores = evaluate_sidd_val(runner, es.noisy, es.gt, es.meta, batch_size, on_batch, on_pic)
        elif eval_set == "sidd-bench":
            optional = SiddOptionalData(
                method_name=method_name,
                authors=authors,
                paper_title=paper_title,
                venue=venue,
                machine_specs=machine_specs if machine_specs is not None else describe(dev),
                uses_gpu=gpu if gpu is not None else dev.type == "cuda",
                notes=notes,
            )
            path, spm = run_sidd_bench(runner, es.noisy, es.meta, out_dir, optional, batch_size, on_batch, on_pic)
        else:
            written, spm = run_dnd(runner, es.noisy, es.meta, out_dir, batch_size, on_batch, on_pic)

    if eval_set == "sidd-val":
        report = scores.summary()
        rows = [(r["name"], str(len(r["blocks"]["psnr"])), r["psnr"], r["ssim"]) for r in report["images"]]
        mean = (report["psnr"], report["ssim"])
        print_table(
            _table(f"sidd-val: {model_path.name}", "blocks", rows, f"mean over {plural(report['n'], 'block')}", mean)
        )
        console.print(
            f"sidd-val: {report['psnr']:.3f} dB / {report['ssim']:.5f} over {plural(report['n'], 'block')}, "
            f"{_rate(report['seconds_per_megapixel'])}"
        )
        _write_json(json_path, measured, report)
    elif eval_set == "sidd-bench":
        console.print(
            f"sidd-bench: {n} blocks denoised, {_rate(spm)}; submission -> {path} "
            f"(upload it on the SIDD benchmark page; {SIDD_FILE} checked on read-back)"
        )
        _write_json(json_path, measured, {"n": n, "seconds_per_megapixel": spm, "files": [str(path)]})
    else:
        bundles = [p for p in written if p.parent.name == "bundled"]
        console.print(
            f"dnd: {n} crops denoised, {_rate(spm)}; {len(written) - len(bundles)} crop files in {out_dir}, "
            f"{len(bundles)} bundles in {out_dir / 'bundled'} (zip bundled/ and upload it; all checked on read-back)"
        )
        _write_json(json_path, measured, {"n": n, "seconds_per_megapixel": spm, "files": [str(p) for p in bundles]})
    if pictures is not None:
        console.print(f"pictures -> {pictures}")


def _reference(spec: str, dev) -> Denoiser | None:
    """The comparison model of --photos; when the official weights cannot be had (offline, empty
    cache), the check goes on without it and says so."""
    try:
        path, _ = resolve_model(spec)
    except AprrdError as e:
        console.print(f"[yellow]warning:[/yellow] no comparison with {spec} ({e})")
        return None
    return open_denoiser(path, dev, "fp32").denoiser


def _show_check(report: dict, photos: Path, reference: str | None) -> None:
    table = Table(title=f"no-reference check: {photos} (the centre 512x512 of each photo)", title_justify="left")
    table.add_column("photo", overflow="fold")
    for col in ("colour shift R / G / B", "noise removed"):
        table.add_column(col, justify="right", no_wrap=True)
    if reference:
        table.add_column(f"agreement with {reference}", justify="right", no_wrap=True)
    for r in report["images"]:
        cells = [r["name"], " / ".join(f"{v:+.2f}" for v in r["colour_shift"]), f"{r['removed']:.2f}"]
        if reference:
            cells.append(f"{r['agreement_db']:.2f} dB")
        table.add_row(*cells)
    print_table(table)
    line = (
        f"{photos}: colour shift at most {report['max_colour_shift']:.2f} grey levels, noise removed "
        f"{report['mean_removed']:.2f} grey levels on average"
    )
    if "mean_agreement_db" in report:
        line += (
            f", agreement with {reference} {report['mean_agreement_db']:.2f} dB on average ({reference} removes "
            f"{report['reference_removed']:.2f}; farther from its output than the noisy photo on "
            f"{report['farther_than_input']} of {len(report['images'])})"
        )
    console.print(line)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _run_pairs(
    runner: Runner, pairs: list, pairs_dir: Path, pictures: Path | None, json_path: Path | None, measured: Measured
) -> None:
    sizes = {name: f"{n.shape[1]}x{n.shape[0]}" for name, n, _ in pairs}
    with progress("img") as bar:
        task = bar.add_task("images", total=len(pairs))

        def on_image(name: str, noisy: np.ndarray, den: np.ndarray, gt: np.ndarray, p: float, s: float) -> None:
            if pictures is not None:
                save_side_by_side(pictures / f"{Path(name).stem}.png", noisy, den, gt, (p, s), measured.caption)
            bar.advance(task)

        report = score_model(runner, pairs, on_image=on_image)
    rows = [(r["name"], sizes[r["name"]], r["psnr"], r["ssim"]) for r in report["images"]]
    mean = (report["psnr"], report["ssim"])
    print_table(_table(f"pairs: {pairs_dir}", "size", rows, f"mean over {plural(report['n'], 'image')}", mean))
    console.print(
        f"{pairs_dir}: {report['psnr']:.3f} dB / {report['ssim']:.5f} over {plural(report['n'], 'image')}, "
        f"{_rate(report['seconds_per_megapixel'])}"
    )
    _write_json(json_path, measured, report)
    if pictures is not None:
        console.print(f"pictures -> {pictures}")
