"""The ONNX benchmark (issue 23): the student exported by ``aprrd export`` and run in onnxruntime
on the CPU, against aprrd's own inference in fp32 and in its default precision, same process,
interleaved."""

from __future__ import annotations

import importlib.util

import torch

from aprrd_cli.device import auto_precision
from aprrd_cli.export import export_model
from aprrd_cli.inference import Denoiser
from aprrd_cli.models.checkpoint import save_model
from benchmarks.context import CPU, Context
from benchmarks.harness import Row, Section, interleaved, max_abs, median


def onnx_runtime(ctx: Context) -> Section:
    """onnxruntime (CPU) against ours in fp32 and in the default precision"""
    model, what = ctx.student()
    default, why = auto_precision(CPU)
    sec = Section(
        "ONNX Runtime",
        f"NBSN 1.00M ({what}) exported with `aprrd export` (ONNX, padding in the graph) and run by onnxruntime's "
        "CPU provider with as many threads as torch, on a real noisy photo, whole image; the 'baseline' column "
        f"is onnxruntime, 'ours' `inference.Denoiser` in fp32, then in our default precision ({default}: {why}).",
    )
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        sec.notes.append("not measured: onnx and onnxruntime are not installed (pip install -e '.[dev]')")
        return sec
    import onnxruntime as ort

    ckpt, path = ctx.tmp / "student.pth", ctx.tmp / "student.onnx"
    save_model(ckpt, model)
    export_model(str(ckpt), path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    size = ctx.size(512, 256)
    x = ctx.photo(size, size)

    def run_ort() -> torch.Tensor:
        return torch.from_numpy(sess.run(["denoised"], {"noisy": x.numpy()})[0])

    for precision in dict.fromkeys(("fp32", default)):
        den = Denoiser(model, CPU, tile=0, precision=precision)
        t = interleaved({"base": run_ort, "ours": lambda d=den: d(x)}, reps=ctx.reps(7, 2))
        diff = max_abs(run_ort(), den(x).clamp(0, 1))
        sec.rows.append(Row(f"{size}x{size}, ours in {precision}", median(t["base"]), median(t["ours"]), max_diff=diff))
    sec.notes.append(
        "the ONNX graph is the networks' reference form (upsample, concatenate, convolve), not aprrd's folded "
        "decoder convolutions; onnxruntime fuses and plans it with its own kernels"
    )
    return sec
