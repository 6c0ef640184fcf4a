"""``aprrd export MODEL OUTPUT``: a model as an ONNX or TorchScript file (docs/api.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from aprrd_cli.app import app
from aprrd_cli.console import console
from aprrd_cli.denoise import MODEL_HELP
from aprrd_cli.export import DEFAULT_OPSET, export_model


@app.command()
def export(
    model: str = typer.Argument(..., metavar="MODEL", help=MODEL_HELP.split(" Default:")[0], show_default=False),
    output: Path = typer.Argument(
        ..., metavar="OUTPUT", help="The file to write: .onnx (ONNX) or .pt (TorchScript).", show_default=False
    ),
    fmt: str = typer.Option(
        None,
        "--format",
        metavar="onnx|torchscript",
        help="The format (default: from OUTPUT's suffix).",
        show_default=False,
    ),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset version, 11 to 20."),
) -> None:
    """Write a teacher or student (ours or the official) to ONNX or TorchScript.

    The file takes float32 B x 3 x H x W RGB in [0, 1] named "noisy", of any batch and size,
    and gives "denoised" of the same shape in [0, 1], as aprrd denoise computes it on the whole
    image: the padding is inside the graph, no tiling. See docs/api.md.
    """
    done = export_model(model, output, fmt, opset)
    m = done.metadata
    what = f"ONNX opset {m['opset']}" if done.format == "onnx" else "TorchScript"
    console.print(
        f"exported {m['model']}: {m['kind']} {m['arch']} -> {escape(str(done.path))} ({what}; input 'noisy' "
        f"float32 B x 3 x H x W in [0, 1], sides of at least {m['min_side']} pixels; output 'denoised', the same)"
    )
