"""The study, end to end, for each set: prepare and train on the noisy images
(``train_set``), score every method on the full pairs, then write the curves, crops,
tables and ``OUT/report.md`` / ``OUT/results.json``."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from aprrd_cli.console import console
from aprrd_cli.data.pairs import load_pairs
from aprrd_cli.device import describe, resolve_device, set_threads
from aprrd_cli.evaluation.protocols import score_arrays, score_model
from aprrd_cli.inference import far_larger_than_patch, patch_windows, window_side
from aprrd_cli.training.records import read_log
from aprrd_cli.utils.atomic import atomic_write_text
from experiments.study import report, scoring
from experiments.study.budget import StudyOptions
from experiments.study.train_set import set_paths, train_set

TRAINED = {"bsn": "teacher.pth", "apr": "teacher.pth", "rd": "student.pth"}


def _train_seconds(run_dir: Path) -> float | None:
    """Training wall time of a run (the engine's elapsed seconds, excluding validation pauses' absence)."""
    recs = [r for r in read_log(run_dir / "log.jsonl") if "seconds" in r] if (run_dir / "log.jsonl").exists() else []
    return float(recs[-1]["seconds"]) if recs else None


def trained_on(run_dir: Path) -> str | None:
    """Where a run trained (device and threads, from its config.json)."""
    cfg = run_dir / "config.json"
    if not cfg.exists():
        return None
    c = json.loads(cfg.read_text())
    threads = c.get("options", {}).get("threads")
    return f"{c.get('device')}" + (f", {threads} threads" if threads else "") + f", {c.get('precision')}"


def needs_windows(pairs: list, patch: int) -> bool:
    """Whether some image is far larger than the training patch, where ``aprrd denoise`` warns about teachers."""
    return any(far_larger_than_patch(*noisy.shape[:2], patch) for _, noisy, _ in pairs)


def score_set(opts: StudyOptions, name: str, device: torch.device) -> dict:
    """Every method's scores on the set's full pairs, the curves' data and the pictures."""
    paths = set_paths(opts, name)
    pairs = load_pairs(paths["pairs"])
    out = paths["outputs"]
    scores: dict[str, dict] = {"noisy": scoring.score_noisy(pairs, out / "noisy")}
    if opts.cbm3d:
        scores["cbm3d"] = scoring.score_cbm3d(pairs, out / "cbm3d")
    for key, file in TRAINED.items():
        model = paths["runs"] / key / file
        if model.exists():
            scores[key] = scoring.score_checkpoint(model, pairs, out / key, device)
        if key == "apr" and model.exists() and needs_windows(pairs, opts.budget.patch_size):
            # the teacher also as it saw its training data: images over twice the patch can make it drift
            scores["apr_windows"] = scoring.score_checkpoint(
                model, pairs, out / "apr_windows", device, in_patch_windows=True
            )
    if opts.official is not None and Path(opts.official).exists():
        scores["official"] = scoring.score_checkpoint(Path(opts.official), pairs, out / "official", device)
    for key, sc in scores.items():
        sc["noise_kept"] = scoring.mean_noise_kept(None if key == "noisy" else out / key, pairs)
    return {"scores": scores, "pairs": pairs}


def val_lines(opts: StudyOptions, name: str, device: torch.device) -> dict[str, float]:
    """The curves' reference levels on the validation crops: the noisy input and the official student."""
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model

    pairs = load_pairs(set_paths(opts, name)["val"])
    lines = {"noisy input": score_arrays([y for _, y, _ in pairs], pairs)["psnr"]}
    if opts.official is not None and Path(opts.official).exists():
        model = load_model(Path(opts.official)).model
        with torch.no_grad():
            lines["official"] = score_model(Denoiser(model, device, tile=0), pairs)["psnr"]
    return lines


def pictures(opts: StudyOptions, name: str, scored: dict, figures: Path, n_crops: int) -> list[Path]:
    """Side-by-side crops of the first ``n_crops`` images (by name), at their most detailed window."""
    out = set_paths(opts, name)["outputs"]
    scores = scored["scores"]
    written = []
    for name_i, noisy, gt in scored["pairs"][:n_crops]:
        panels = []
        for key in ("noisy", "cbm3d", "bsn", "apr", "rd", "official"):
            if key not in scores:
                continue
            img = noisy if key == "noisy" else scoring.denoised(out / key, name_i)
            rec = next(r for r in scores[key]["images"] if r["name"] == name_i)
            panels.append((img, f"{report.short_label(key)} {rec['psnr']:.2f}"))
        panels.append((gt, "clean"))
        side = min(opts.crop, *gt.shape[:2])
        corner = report.detail_window(gt, side)
        path = figures / f"{name}_crop_{Path(name_i).stem}.png"
        report.save_crops(path, panels, corner, side)
        written.append(path)
    return written


def run_study(opts: StudyOptions, n_crops: int = 2) -> dict:
    """Train, score and report every set of ``opts.sets``; returns what ``results.json`` holds."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(opts.threads)
    device = resolve_device(opts.device)
    figures = out / "figures"
    results: dict = {
        "budget": opts.budget.to_dict(),
        "val_every": opts.val_every,
        "val_crop": opts.val_crop,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}",
        "scored_on": describe(device),
        "sets": {},
    }
    commands: list[str] = []
    for name in opts.sets:
        t0 = time.perf_counter()
        train_set(opts, name, commands)
        t_train = time.perf_counter() - t0
        console.print(f"[bold]{name}: scoring[/bold]")
        scored = score_set(opts, name, device)
        runs = set_paths(opts, name)["runs"]
        curves = {k: report.val_curve(runs / k) for k in TRAINED}
        lines = val_lines(opts, name, device)
        curve_png = figures / f"{name}_curves.png"
        b = opts.budget
        title = f"{name}: {b.iters} it, batch {b.batch_size} x {b.patch_size}^2, lr {b.lr:g}"
        title += f" (val: {opts.val_crop}^2 crops)"
        report.plot_curves(curve_png, title, curves, lines)
        crops = pictures(opts, name, scored, figures, n_crops)
        results["sets"][name] = {
            "scores": {
                k: {kk: v[kk] for kk in ("psnr", "ssim", "noise_kept", "n", "images")}
                for k, v in scored["scores"].items()
            },
            "train_seconds": {k: _train_seconds(runs / k) for k in TRAINED},
            "trained_on": {k: trained_on(runs / k) for k in TRAINED},
            "cbm3d_sigma": scored["scores"].get("cbm3d", {}).get("sigma"),
            "window_side": window_side(*patch_windows(b.patch_size)),
            "curves": curves,
            "val_lines": lines,
            "curve_png": str(curve_png.relative_to(out)),
            "crops": [str(p.relative_to(out)) for p in crops],
            "study_seconds": time.perf_counter() - t0,
            "train_step_seconds": t_train,
        }
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "commands.txt", "\n".join(commands) + "\n")
    atomic_write_text(out / "report.md", render(results))
    console.print(f"study -> {out / 'report.md'}")
    return results


def render(results: dict) -> str:
    """The markdown report: budget, then a table, the curve and the crops per set."""
    b = results["budget"]
    lines = [
        "# Study results",
        "",
        f"Budget per trained model: {b['iters']} iterations, batch {b['batch_size']}, {b['patch_size']}x"
        f"{b['patch_size']} patches, lr {b['lr']:g} (cosine), seed {b['seed']}"
        + (f", width {b['width']}" if b.get("width") else "")
        + (", APR with --stop-grad" if b.get("stop_grad") else "")
        + f"; {results['machine']}.",
        "",
    ]
    for name, s in results["sets"].items():
        notes = {}
        for k, sec in s["train_seconds"].items():
            if sec is not None and k in s["scores"]:
                where = s["trained_on"].get(k)
                notes[k] = f"trained {sec / 60:.1f} min" + (f" ({where})" if where else "")
        if "apr_windows" in s["scores"]:
            side = s["window_side"]
            what = "the training patch size" if side == b["patch_size"] else "the smallest the tiling cuts"
            notes["apr_windows"] = f"{side}x{side} windows, {what} (`--patch-windows`)"
        if s.get("cbm3d_sigma"):
            sig = list(s["cbm3d_sigma"].values())
            notes["cbm3d"] = f"estimated sigma {255 * min(sig):.2f}-{255 * max(sig):.2f} (of 255)"
        scores = {k: v for k, v in s["scores"].items()}
        lines += [f"## {name}", "", report.markdown_table(scores, notes), ""]
        lines += [f"![{name} curves]({s['curve_png']})", ""]
        lines += [f"![{name} crop]({c})" for c in s["crops"]]
        lines.append("")
    return "\n".join(lines)
