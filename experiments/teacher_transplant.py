"""Why a teacher started from the official student learns slowly (issue 17, candidate 1).

The AT-BSN teacher is trained, on a camera's noisy photos only, to reproduce the official
student's output at the inference hole (L1 to ``student(y)``, shift factor 1): "hole
distillation". The issue measured the naive transplant (the teacher's UNet filled with the
student's weights, everything trained at lr 1e-3) barely ahead of random weights. This runs
the variants that tell the suspects apart, each from the same seed and crops:

- ``random``: random weights, all trained (the baseline);
- ``copied``: the student's weights in the UNet, all trained at one lr (the naive form);
- ``copied-slow``: copied layers at lr/10, the new ones (last UNet layer, head) at lr;
- ``copied-frozen``: copied layers frozen, only the new ones trained: are the copied
  features themselves worth anything to a blind network?
- ``random-frozen``: the same with random frozen layers, the control for ``copied-frozen``.

Scores are the teacher's (hole 1, the inference setting) PSNR on the whole validation photos
against their clean references, which this study alone reads::

    python -m experiments.teacher_transplant --pairs ../shared/data/real/cc15 \\
        --student ../shared/reference/nbsn_1.00M_sidd_medium.pth --iters 160 --val-every 40 \\
        --out runs/transplant --plot docs/results/teacher_transplant_cc15.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("random", "copied", "copied-slow", "copied-frozen", "random-frozen")


def make_teacher(variant: str, student_path: Path, seed: int) -> tuple[nn.Module, list[dict]]:
    """The teacher of ``variant`` and its optimiser's parameter groups (lr as a factor of the base)."""
    from aprrd_cli.models import ATBSN
    from aprrd_cli.models.checkpoint import load_model
    from aprrd_cli.training.stages import initial_weights

    torch.manual_seed(seed)
    teacher = ATBSN()
    if variant.startswith("copied"):  # exactly what train-apr --init does
        initial_weights(teacher, str(student_path), announce=False)
    student_sd = load_model(student_path).model.state_dict()
    params = dict(teacher.named_parameters())
    # the layers no student tensor fills: the last UNet layer and the head
    new = {k for k, p in params.items() if k not in student_sd or student_sd[k].shape != p.shape}
    old_p = [params[k] for k in params if k not in new]
    new_p = [params[k] for k in params if k in new]
    if variant in ("random", "copied"):
        return teacher, [{"params": old_p + new_p, "factor": 1.0}]
    if variant == "copied-slow":
        return teacher, [{"params": old_p, "factor": 0.1}, {"params": new_p, "factor": 1.0}]
    for p in old_p:  # the frozen variants
        p.requires_grad_(False)
    return teacher, [{"params": new_p, "factor": 1.0}]


def crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``n x 3 x size x size`` random crops of random photos, in [0, 1]."""
    out = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        top, left = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        out.append(img[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255)


def validate(teacher: nn.Module, pairs: list, precision: str) -> float:
    from aprrd_cli.evaluation.protocols import score_model
    from aprrd_cli.inference import Denoiser

    teacher.eval()
    score = score_model(Denoiser(teacher, torch.device("cpu"), tile=0, precision=precision), pairs)["psnr"]
    teacher.train()
    return float(score)


def run(variant: str, a: argparse.Namespace, pairs: list, student: nn.Module) -> list[tuple[int, float, float]]:
    """(iteration, validation PSNR, seconds spent training so far) for one variant."""
    from aprrd_cli.device import autocast
    from aprrd_cli.models.constants import INFER_SHIFT, TEACHER_PAD

    cpu = torch.device("cpu")
    teacher, groups = make_teacher(variant, a.student, a.seed)
    opt = torch.optim.Adam([{"params": g["params"], "lr": a.lr * g["factor"]} for g in groups])
    rng = np.random.default_rng(a.seed)
    photos = [noisy for _, noisy, _ in pairs]
    curve = [(0, validate(teacher, pairs, a.precision), 0.0)]
    print(f"{variant}: it 0 {curve[-1][1]:.2f} dB", flush=True)
    spent = 0.0
    for it in range(1, a.iters + 1):
        t0 = time.perf_counter()
        y = crops(photos, a.batch_size, a.patch_size, rng)
        with torch.no_grad(), autocast(cpu, a.precision):
            target = student(y).float()
        with autocast(cpu, a.precision):
            yp = F.pad(y, (TEACHER_PAD,) * 4, mode="reflect")
            out = teacher(yp, INFER_SHIFT)[:, :, TEACHER_PAD:-TEACHER_PAD, TEACHER_PAD:-TEACHER_PAD]
        loss = (out.float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        spent += time.perf_counter() - t0
        if it % a.val_every == 0 or it == a.iters:
            curve.append((it, validate(teacher, pairs, a.precision), spent))
            rate = spent / it
            print(f"{variant}: it {it} loss {loss.item():.4f} {curve[-1][1]:.2f} dB ({rate:.2f} s/it)", flush=True)
    return curve


def plot(results: dict[str, list], noisy: float, official: float, out: Path, title: str) -> None:
    from experiments.figures import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=90)
    for name, curve in results.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "-o", ms=3, label=name)
    ax.axhline(noisy, color="grey", ls=":", label=f"noisy input {noisy:.2f}")
    ax.axhline(official, color="black", ls="--", label=f"official student {official:.2f}")
    ax.set_xlabel("iterations of hole distillation")
    ax.set_ylabel("teacher PSNR (dB), hole 1")
    ax.set_title(title)
    ax.legend(fontsize=7)
    save(fig, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.teacher_transplant", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, required=True, help="noisy/ and gt/ (gt only for scoring)")
    p.add_argument("--student", type=Path, required=True, help="the official 1.00M student's weights")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--iters", type=int, default=160)
    p.add_argument("--val-every", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="folder for results.json")
    p.add_argument("--plot", type=Path)
    a = p.parse_args(argv)

    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.evaluation.protocols import score_arrays, score_model
    from aprrd_cli.inference import Denoiser
    from aprrd_cli.models.checkpoint import load_model

    torch.set_num_threads(a.threads)
    pairs = load_pairs(a.pairs)
    student = load_model(a.student).model.eval()
    noisy = score_arrays([n for _, n, _ in pairs], pairs)["psnr"]
    official = score_model(Denoiser(student, torch.device("cpu"), tile=0, precision=a.precision), pairs)["psnr"]
    print(f"noisy {noisy:.2f} dB, official student {official:.2f} dB", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.json"
    results: dict[str, list] = json.loads(path.read_text())["variants"] if path.exists() else {}
    for v in a.variants.split(","):
        if v not in VARIANTS:
            p.error(f"unknown variant {v}; choose from {', '.join(VARIANTS)}")
        if v not in results:  # a rerun continues where an interrupted one stopped
            results[v] = run(v, a, pairs, student)
            doc = {"noisy": noisy, "official": official, "args": {k: str(x) for k, x in vars(a).items()}}
            path.write_text(json.dumps({**doc, "variants": results}, indent=1))
    if a.plot:
        plot(results, noisy, official, a.plot, f"{a.pairs.name}: hole distillation from the official student")
    return 0


if __name__ == "__main__":
    sys.exit(main())
