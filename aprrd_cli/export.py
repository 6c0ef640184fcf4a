"""``aprrd export``: a model as an ONNX or TorchScript file that denoises any size on its own.

The file holds ``portable.PaddedNet`` in export form: the network in its reference form
(``models.blocks.use_reference_form``), the reflect padding to a multiple of 32 (a teacher's
16 more) and the crop back inside the graph, and the clip to [0, 1] at the end. Batch, height
and width are dynamic. What the file takes and gives (names, layout, range, the opset) is
written into it: ONNX ``metadata_props``, TorchScript the extra file ``aprrd.json``.

ONNX goes through PyTorch's TorchScript-based exporter (``dynamo=False``): the networks are
plain convolutions whose trace it records exactly, it needs only the ``onnx`` package (the
``export`` extra), where the dynamo exporter also needs onnxscript and re-derives the graph
through torch.export, slower and with more to go wrong for a graph this simple.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.markup import escape

from aprrd_cli import __version__
from aprrd_cli.denoise import resolve_model
from aprrd_cli.errors import AprrdError
from aprrd_cli.models.checkpoint import LoadedModel, load_model
from aprrd_cli.models.zoo import sha256_of
from aprrd_cli.portable import PaddedNet, min_side
from aprrd_cli.utils.atomic import atomic_path, check_output_dir

FORMATS = {"onnx": (".onnx",), "torchscript": (".pt", ".pts", ".ts")}
DEFAULT_OPSET = 17  # onnxruntime 1.14 (2023) and later run it; every operator the networks use is in it
MIN_OPSET = 11  # reflect Pad with dynamic pads
MAX_OPSET = 20  # the highest that PyTorch's TorchScript-based exporter supports (torch 2.4 to 2.14)
INPUT_NAME = "noisy"
OUTPUT_NAME = "denoised"
PIP_EXTRA = "'aprrd[export]'"
EXTRA_FILE = "aprrd.json"  # the TorchScript file's metadata
TRACE_SIZE = (1, 3, 45, 77)  # odd and non-square: the trace records the padding's arithmetic, not a shortcut


@dataclass
class Exported:
    """What was written: the file, its format and the metadata stored in it."""

    path: Path
    format: str
    metadata: dict[str, str]


def format_of(out: Path, fmt: str | None) -> str:
    """The format ``--format`` names, else the one OUT's suffix names; refuses a disagreement."""
    if fmt is not None and fmt not in FORMATS:
        raise AprrdError(f"--format must be onnx or torchscript, got {fmt!r}", exit_code=2)
    by_suffix = next((name for name, suffixes in FORMATS.items() if out.suffix.lower() in suffixes), None)
    if fmt is not None and by_suffix not in (None, fmt):
        raise AprrdError(
            f"--format {fmt} disagrees with OUTPUT {out} (a {by_suffix} suffix); name it "
            f"{out.with_suffix(FORMATS[fmt][0]).name} or leave out --format",
            exit_code=2,
        )
    if fmt is not None or by_suffix is not None:
        return fmt or by_suffix
    raise AprrdError(
        f"{out}: cannot tell the format from the suffix {out.suffix!r}; name it .onnx (ONNX) or .pt "
        "(TorchScript), or give --format onnx|torchscript",
        exit_code=2,
    )


def need_onnx() -> None:
    """ONNX export writes through the ``onnx`` package, an optional extra."""
    if importlib.util.find_spec("onnx") is None:
        # escaped: the CLI prints errors as rich markup, where [export] would be a style tag
        raise AprrdError(f"ONNX export needs the onnx package: pip install {escape(PIP_EXTRA)} (or pip install onnx)")


def metadata(loaded: LoadedModel, label: str, checkpoint: Path, fmt: str, opset: int | None) -> dict[str, str]:
    """What the exported file takes and gives, as strings (ONNX metadata_props are strings)."""
    side = min_side(loaded.kind == "teacher")
    meta = {
        "producer": f"aprrd {__version__}",
        "model": label,
        "kind": loaded.kind,
        "arch": loaded.arch,
        "checkpoint_format": loaded.source,
        "checkpoint_sha256": sha256_of(checkpoint),
        "input": f"{INPUT_NAME}: float32 B x 3 x H x W, RGB, values in [0, 1] (8-bit / 255, 16-bit / 65535); "
        f"any B, and H, W of at least {side}",
        "output": f"{OUTPUT_NAME}: float32 B x 3 x H x W, the same size, RGB, values in [0, 1]",
        "input_range": "0 1",
        "output_range": "0 1",
        "min_side": str(side),
        "padding": "inside the graph: reflect to a multiple of 32"
        + (" after 16 on every side (the teacher's)" if loaded.kind == "teacher" else ""),
    }
    if opset is not None:
        meta["opset"] = str(opset)
    return meta


def export_model(model: str | None, out: Path, fmt: str | None = None, opset: int = DEFAULT_OPSET) -> Exported:
    """Write ``model`` (a checkpoint path or a named model) to ``out`` as ONNX or TorchScript.

    The file is written whole or not at all; it is read back and run once before it is kept.
    """
    kind = format_of(out, fmt)
    if kind == "onnx":
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise AprrdError(
                f"--opset must be {MIN_OPSET} to {MAX_OPSET} (from reflect padding of any size to the newest this "
                f"exporter writes), got {opset}; {DEFAULT_OPSET}, the default, runs in onnxruntime 1.14 and later",
                exit_code=2,
            )
        need_onnx()
    check_output_dir(out.parent)
    path, label = resolve_model(model)
    loaded = load_model(path, map_location="cpu")
    net = PaddedNet(loaded.model, for_export=True, clip=True).eval()
    meta = metadata(loaded, label, path, kind, opset if kind == "onnx" else None)
    example = torch.rand(*TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(example)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic: recorded as intended
        if kind == "onnx":
            _write_onnx(net, example, tmp, meta, opset)
            got = _run_onnx(tmp, example)
        else:
            _write_torchscript(net, example, tmp, meta)
            got = torch.jit.load(str(tmp))(example)
        err = 0.0 if got is None else float((got - want).abs().max())
        if not err <= 1e-4:
            raise AprrdError(f"the exported {kind} graph disagrees with the model (max difference {err:.3g}); not kept")
    return Exported(out, kind, meta)


def _write_onnx(net: PaddedNet, example: torch.Tensor, path: Path, meta: dict[str, str], opset: int) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "aprrd", __version__
    proto.doc_string = f"APR-RD {meta['kind']} ({meta['arch']}): {meta['input']} -> {meta['output']}"
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _run_onnx(path: Path, example: torch.Tensor) -> torch.Tensor | None:
    """The file's output for ``example`` where onnxruntime is installed (a test dependency, not
    aprrd's); None elsewhere, the file then checked by ``onnx.checker`` only."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})[0])


def _write_torchscript(net: PaddedNet, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta, indent=1)})


def read_torchscript_metadata(path: Path) -> dict[str, str]:
    """The metadata an exported TorchScript file carries."""
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[EXTRA_FILE])
