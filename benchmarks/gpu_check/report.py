"""``summary.md``: what each step of the GPU check found, rewritten after every step."""

from __future__ import annotations


def _f(v: object, digits: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "-" if v is None else str(v)


def render_summary(results: dict) -> str:
    steps = results.get("steps", {})
    lines = [
        "# GPU check",
        "",
        f"`{results.get('command', '')}`, started {results.get('started', '')}, {_f(results.get('seconds'), 0)} s"
        + (" (--tiny: toy sizes)" if results.get("tiny") else ""),
        "",
        "| step | status | seconds | |",
        "|---|---|---|---|",
    ]
    for name, r in steps.items():
        lines.append(f"| {name} | {r.get('status')} | {_f(r.get('seconds'), 0)} | {r.get('error', '')} |")
    env = steps.get("environment", {}).get("info")
    if env:
        lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    tests = steps.get("device-tests")
    if tests:
        lines += [
            "",
            "## Device tests",
            "",
            f"`pytest -m device --device ...`: {tests.get('summary', '')} (pytest.txt)",
        ]
    tp = steps.get("throughput", {})
    if tp.get("rows"):
        lines += [
            "",
            "## Throughput at the paper's settings",
            "",
            f"APR batch {tp.get('batch')} x {tp.get('apr_patch')}^2, RD batch {tp.get('batch')} x "
            f"{tp.get('rd_patch')}^2, width {tp.get('width')}; fused Adam, channels-last; iterations per second with "
            "the loss read every "
            "step / without; peak memory; the paper's 400k APR + 200k RD at these rates.",
            "",
            "| mode | APR it/s (read) | APR it/s | APR peak GB | RD it/s (read) | RD it/s | RD peak GB "
            "| 400k+200k h | compile s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for mode, r in tp["rows"].items():
            lines.append(
                f"| {mode} | {_f(r.get('apr_it_s_read'))} | {_f(r.get('apr_it_s'))} | {_f(r.get('apr_peak_gb'))} | "
                f"{_f(r.get('rd_it_s_read'))} | {_f(r.get('rd_it_s'))} | {_f(r.get('rd_peak_gb'))} | "
                f"{_f(r.get('projected_hours'))} | {_f(r.get('compile_seconds'), 0)} |"
            )
        if tp.get("fraction_of_peak") is not None:
            lines.append(
                f"\nBest mode {tp.get('best')}: {tp['fraction_of_peak'] * 100:.1f}% of the GPU's "
                f"~{tp['bf16_peak_tflops']} TFLOP/s bf16 (an APR step is {tp['apr_flops'] / 1e12:.2f} TFLOP "
                "as torch counts it)."
            )
        if tp.get("sync_per_step"):
            lines.append(f"\nSynchronisations inside 5 engine steps (no loss read due): {tp['sync_per_step']}")
    eng = steps.get("engine", {})
    if eng.get("apr_it_s") is not None:
        hours = None
        if eng.get("rd_it_s"):
            hours = (400_000 / eng["apr_it_s"] + 200_000 / eng["rd_it_s"]) / 3600
        lines += [
            "",
            "## The engine end to end",
            "",
            f"train-apr with 4 workers and pinned memory, stopped and resumed (to iteration {eng.get('resumed_to')}): "
            f"{_f(eng.get('apr_it_s'))} it/s; distill {_f(eng.get('rd_it_s'))} it/s (the engine's own clock: data, "
            f"loss reads, checkpoints included); 400k + 200k at these rates: {_f(hours)} h. "
            f"One-rank DDP: {eng.get('ddp')}.",
        ]
    inf = steps.get("inference", {})
    if inf.get("whole"):
        lines += ["", f"## Inference, {inf.get('model')} on a {inf.get('size')} photo", "",
                  "| | first call s | later call s | peak GB | fits |", "|---|---|---|---|---|"]  # fmt: skip
        for name in ("whole", "tiled"):
            r = inf.get(name) or {}
            lines.append(f"| {name} | {_f(r.get('first_s'))} | {_f(r.get('later_s'))} | {_f(r.get('peak_gb'))} | "
                         f"{r.get('fit')} |")  # fmt: skip
        if inf.get("max_diff_grey_levels") is not None:
            lines.append(f"\nTiled vs whole: at most {inf['max_diff_grey_levels']:.2f} grey levels apart.")
    real = steps.get("real-run", {})
    if real.get("scores"):
        lines += ["", "## Short real run (self-supervised on the noisy photos only)", "",
                  f"APR {real.get('apr_iters')} iterations ({_f(real.get('apr_seconds'), 0)} s), RD "
                  f"{real.get('rd_iters')} ({_f(real.get('rd_seconds'), 0)} s), bf16, lr 3e-4 cosine; PSNR / SSIM "
                  "against the clean references (curves.png, crops.png).", "",
                  "| set | noisy | teacher | student | official |", "|---|---|---|---|---|"]  # fmt: skip
        for s, sc in real["scores"].items():
            cells = [f"{sc[k]['psnr']:.2f} / {sc[k]['ssim']:.4f}" if k in sc else "-"
                     for k in ("noisy", "teacher", "student", "official")]  # fmt: skip
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    elif real.get("reason"):
        lines += ["", f"## Short real run: skipped ({real['reason']})"]
    return "\n".join(lines) + "\n"
