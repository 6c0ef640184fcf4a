"""The short real training run of the GPU check: APR then RD on the noisy photos of cc15 and
sidd7 together (self-supervised: the clean references only score), at the paper's batch and
patch size in bf16, then teacher, student and the official student scored on each set, with
the validation curve (``curves.png``) and side-by-side crops (``crops.png``)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_check.context import Context, Report, aprrd

SETS = ("cc15", "sidd7")
APR_SECONDS, RD_SECONDS = 100, 30  # of the step's limit; the rest prepares, validates and scores


def planned_iterations(ctx: Context, seconds: float, key: str, fallback: float) -> int:
    """As many iterations as fit in ``seconds`` at the engine's rate measured by the earlier steps."""
    rate = ctx.previous("engine").get(key) or fallback
    return max(30, int(seconds * rate * 0.8) // 30 * 30)


def real_run(ctx: Context, report: Report) -> dict:
    sets = [s for s in SETS if (ctx.photos / s / "noisy").is_dir() and (ctx.photos / s / "gt").is_dir()]
    if not sets:
        return {"status": "skipped", "reason": f"no cc15/sidd7 pairs under {ctx.photos}; run make gpu-photos first"}
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.evaluation.protocols import score_arrays, score_model
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model
    from aprrd_cli.training.records import read_log

    result: dict = {"status": "ok", "sets": sets}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for s in sets:  # per set: its pairs (two with --tiny); all noisy photos train, all pairs validate
            names = sorted(p.name for p in (ctx.photos / s / "noisy").iterdir())[: 2 if ctx.tiny else None]
            for name in names:
                for sub in ("noisy", "gt"):
                    for dst in (work / "pairs" / s / sub / name, work / "val" / sub / f"{s}__{name}"):
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(ctx.photos / s / sub / name, dst)
                (work / "train" / s).mkdir(parents=True, exist_ok=True)
                shutil.copy(ctx.photos / s / "noisy" / name, work / "train" / s / name)
        aprrd("prepare-data", work / "train", "--out", work / "prep")
        if ctx.tiny:
            apr_iters, rd_iters = 4, 4
            shape = ["--batch-size", "1", "--width", "8"]
            apr_patch, rd_patch = "64", "64"
        else:
            apr_iters = planned_iterations(ctx, APR_SECONDS, "apr_it_s", 5.0)
            rd_iters = planned_iterations(ctx, RD_SECONDS, "rd_it_s", 15.0)
            shape, apr_patch, rd_patch = ["--batch-size", "8"], "256", "128"
        result |= {"apr_iters": apr_iters, "rd_iters": rd_iters}
        report(result)
        common = ["--data", work / "prep", "--device", ctx.device, "--precision", "bf16", "--lr", "3e-4"]
        common += ["--val", work / "val", "--workers", "1" if ctx.tiny else "4", *shape]
        t0 = time.perf_counter()
        aprrd("train-apr", *common, "--patch-size", apr_patch, "--iters", apr_iters, "--run-dir", work / "apr",
              "--val-every", max(1, apr_iters // 6), "--save-every", apr_iters)  # fmt: skip
        result["apr_seconds"] = time.perf_counter() - t0
        report(result)
        t0 = time.perf_counter()
        aprrd("distill", *common, "--patch-size", rd_patch, "--iters", rd_iters, "--run-dir", work / "rd",
              "--teacher", work / "apr" / "teacher.pth", "--val-every", max(1, rd_iters // 3),
              "--save-every", rd_iters)  # fmt: skip
        result["rd_seconds"] = time.perf_counter() - t0
        curves = {name: read_log(work / name / "log.jsonl") for name in ("apr", "rd")}
        result["curves"] = {name: [(r["iteration"], r["val_psnr"]) for r in recs if "val_psnr" in r]
                            for name, recs in curves.items()}  # fmt: skip
        report(result)

        models = {"teacher": work / "apr" / "teacher.pth", "student": work / "rd" / "student.pth"}
        if ctx.official.is_file():
            models["official"] = ctx.official
        scores: dict = {}
        outputs: dict = {}
        for s in sets:
            pairs = load_pairs(work / "pairs" / s)
            noisy = score_arrays([y for _, y, _ in pairs], pairs)
            scores[s] = {"noisy": {"psnr": noisy["psnr"], "ssim": noisy["ssim"]}}
            for key, path in models.items():
                kept: dict = {}

                def keep(name: str, noisy_img, den, gt, p: float, q: float, kept=kept) -> None:
                    if not kept:
                        kept.update(name=name, noisy=noisy_img, den=den, gt=gt)

                with torch.no_grad():
                    sc = score_model(Denoiser(load_model(path).model, ctx.dev), pairs, on_image=keep)
                scores[s][key] = {"psnr": sc["psnr"], "ssim": sc["ssim"]}
                outputs.setdefault(s, {})[key] = kept
            report({**result, "scores": scores})
        result["scores"] = scores
        plot_curves(ctx.out / "curves.png", curves, scores)
        save_crops(ctx.out / "crops.png", outputs)
    return result


def plot_curves(path: Path, logs: dict[str, list[dict]], scores: dict) -> None:
    """Validation PSNR (both sets' pairs together) against iterations and against seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    offset = 0.0
    for name, label in (("apr", "APR teacher"), ("rd", "RD student")):
        recs = logs[name]
        seconds = {r["iteration"]: r["seconds"] for r in recs if "seconds" in r}
        pts = [(r["iteration"], r["val_psnr"]) for r in recs if "val_psnr" in r]
        if not pts:
            continue
        its, ps = zip(*pts, strict=True)
        axes[0].plot(its, ps, marker="o", ms=3, label=label)
        secs = [offset + seconds.get(i, np.nan) for i in its]
        axes[1].plot(secs, ps, marker="o", ms=3, label=label)
        offset += max(seconds.values(), default=0.0)
    axes[0].set_xlabel("iteration (each stage from 0)")
    axes[1].set_xlabel("training seconds (RD after APR)")
    for ax in axes:
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("GPU check, short real run: " + json.dumps({s: round(v["official"]["psnr"], 2)
                 for s, v in scores.items() if "official" in v}) + " official", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_crops(path: Path, outputs: dict) -> None:
    """One row per set: noisy | teacher | student | official | clean, the same 160-pixel window."""
    from PIL import Image, ImageDraw

    rows = []
    for per_model in outputs.values():
        first = next(iter(per_model.values()))
        side = min(160, *first["gt"].shape[:2])
        top = (first["gt"].shape[0] - side) // 2
        left = (first["gt"].shape[1] - side) // 2
        tiles = [first["noisy"]] + [m["den"] for m in per_model.values()] + [first["gt"]]
        rows.append(np.concatenate([np.asarray(t)[top : top + side, left : left + side, :3] for t in tiles], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    picture = Image.fromarray(np.pad(np.concatenate(rows, 0), ((14, 0), (0, 0), (0, 0)), constant_values=255))
    labels = ["noisy", *next(iter(outputs.values())).keys(), "clean"]
    draw = ImageDraw.Draw(picture)
    for i, label in enumerate(labels):
        draw.text((i * width // len(labels) + 3, 1), label, fill=(0, 0, 0))
    picture.save(path)
