"""Denoising files and folders: the library behind ``aprrd denoise``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aprrd_cli.console import warn
from aprrd_cli.data import formats
from aprrd_cli.data.images import (
    ImageInfo,
    check_writable,
    format_for,
    is_image_path,
    read_image,
    write_image,
)
from aprrd_cli.data.tensors import from_float, to_float
from aprrd_cli.errors import AprrdError, InputError
from aprrd_cli.inference import Denoiser
from aprrd_cli.models.zoo import NAMED, describe_named, fetch, is_named

DEFAULT_MODEL = Path("runs/rd/student.pth")
BIT_DEPTHS = {bits: dtype for dtype, bits in formats.BIT_DEPTHS.items()}
# --format: the output suffix it gives (folder runs; a single OUTPUT's own suffix decides)
FORMAT_SUFFIXES = {choice: fmt.suffix for choice, fmt in formats.BY_CHOICE.items()}


@dataclass
class Job:
    src: Path
    dst: Path


def _format_suffix(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    suffix = FORMAT_SUFFIXES.get(fmt.lower())
    if suffix is None:
        raise AprrdError(f"--format must be one of {formats.choice_list(', ')}, got {fmt!r}", exit_code=2)
    return suffix


def plan_jobs(inp: Path, out: Path, fmt: str | None = None) -> tuple[list[Job], bool]:
    """The (input, output) pairs for a file or a folder; True when INPUT is a folder.

    ``fmt`` (png, jpg, tif, heic, webp, avif): in a folder run every output gets that suffix (by default each keeps
    its input's). A single file's OUTPUT names its format by its suffix; ``fmt`` must then agree
    (a usage error otherwise), or picks the suffix when OUTPUT is a folder (an OUTPUT without a
    suffix that does not exist yet, ``newdir/``, is a new folder, made before the model loads).
    """
    suffix = _format_suffix(fmt)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    if inp.resolve() == out.resolve():
        raise InputError(f"output {out} is the input itself; choose another output path")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} is a file, but INPUT is a folder; give an output folder")
        out_resolved = out.resolve()
        jobs = []
        for root, dirs, files in os.walk(inp):
            rootp = Path(root)
            # never read back our own outputs when OUTPUT lies inside INPUT
            dirs[:] = sorted(d for d in dirs if (rootp / d).resolve() != out_resolved and not d.startswith("."))
            for name in sorted(files):
                p = rootp / name
                if is_image_path(p) and not name.startswith("."):
                    dst = out / p.relative_to(inp)
                    jobs.append(Job(p, dst if suffix is None else dst.with_suffix(suffix)))
        if not jobs:
            raise InputError(f"{inp} holds no {formats.names()} images")
        _refuse_shared_outputs(jobs)
        return jobs, True
    if out.is_dir() or (not out.exists() and not out.suffix):  # a folder, or a new one (``newdir/``): made
        out = out / (inp.name if suffix is None else inp.stem + suffix)
        if out.resolve() == inp.resolve():
            raise InputError(f"output {out} is the input itself; choose another output path")
    elif suffix is not None and format_for(out) != format_for(Path("x" + suffix)):
        raise AprrdError(
            f"--format {fmt} disagrees with OUTPUT {out}: for one image the OUTPUT's suffix sets the format; "
            f"name it {out.with_suffix(suffix).name} or leave out --format",
            exit_code=2,
        )
    format_for(out)
    return [Job(inp, out)], False


def _refuse_shared_outputs(jobs: list[Job]) -> None:
    """Two inputs that would write one output (a.png and a.jpg with --format tif): refuse before any work."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        first = seen.setdefault(job.dst, job.src)
        if first != job.src:
            raise InputError(
                f"{first} and {job.src} would both be written to {job.dst}; rename one, or leave out --format"
            )


def target_dtype(info: ImageInfo, dst: Path, bit_depth: int | None) -> str:
    """The output dtype: the input's, unless --bit-depth says otherwise or the format can't hold it."""
    if bit_depth is not None:
        dtype = BIT_DEPTHS[bit_depth]
        check_writable(dst, dtype)
        return dtype
    fmt = formats.for_path(dst)
    if fmt.holds(info.dtype):
        return info.dtype
    return "uint16" if fmt.holds("uint16") else fmt.dtypes[0]  # float: 16 bits where the format has them


def read_checked(job: Job, bit_depth: int | None) -> tuple[np.ndarray, ImageInfo]:
    """Read one input and refuse, before any model work, what cannot be written or denoised: a bit
    depth the output format cannot hold, NaN, or a float image on another scale."""
    image = read_image(job.src)
    target_dtype(image[1], job.dst, bit_depth)
    if image[1].dtype == "float32":
        to_float(image[0], job.src)
    return image


def _convert_alpha(alpha: np.ndarray, dtype: str) -> np.ndarray:
    if alpha.dtype.name == dtype:
        return alpha  # untouched
    f, _ = to_float(alpha)
    return from_float(f, dtype)


def denoise_array(
    denoiser: Denoiser,
    arr: np.ndarray,
    info: ImageInfo,
    dtype: str,
    name: str = "image",
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Denoise an ``H x W x C`` array of any supported kind; grey stays grey, alpha passes through."""
    f, clipped = to_float(arr, name)
    if clipped:
        warn(f"{name}: {clipped} values outside [0, 1] were clipped")
    c = f.shape[2]
    colour = f[:, :, :3] if c >= 3 else np.repeat(f[:, :, :1], 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1)))[None]
    y = denoiser(x, on_tile)[0].numpy().transpose(1, 2, 0)
    if c <= 2:
        y = y.mean(axis=2, keepdims=True)
    out = from_float(y, dtype)
    if c in (2, 4):
        out = np.concatenate((out, _convert_alpha(arr[:, :, -1:], dtype)), axis=2)
    return out


def denoise_file(
    denoiser: Denoiser,
    job: Job,
    bit_depth: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    image: tuple[np.ndarray, ImageInfo] | None = None,
    quality: int | None = None,
) -> float:
    """Denoise one file atomically; returns its megapixels. ``image``: the file already read.

    The output carries the input's ICC profile, EXIF and XMP (orientation 1: the pixels are upright)
    and IPTC, whatever the two formats, where the output format holds them (a warning names what it
    cannot); alpha going into a JPEG is left out with a warning. ``quality``: lossy formats' (None:
    the format's default).
    """
    arr, info = image if image is not None else read_image(job.src)
    dtype = target_dtype(info, job.dst, bit_depth)
    out = denoise_array(denoiser, arr, info, dtype, str(job.src), on_tile)
    fmt = formats.for_path(job.dst)
    if not fmt.alpha and out.shape[2] in (2, 4):  # the table says which formats hold alpha (JPEG does not)
        warn(
            f"{job.src}: {fmt.label} output {job.dst} cannot hold transparency; alpha left out (to keep it, name "
            "the output .png or .tif; in a folder run, give --format png or tif)"
        )
        out = out[:, :, :-1]
    write_image(
        job.dst, out, icc_profile=info.icc_profile, exif=info.exif, xmp=info.xmp, iptc=info.iptc, quality=quality
    )
    return arr.shape[0] * arr.shape[1] / 1e6


MODEL_HELP = (
    "A checkpoint file (ours or the official format), or a named model downloaded once and verified: "
    "official (the release's 1.00M student) or official-1.02M. Default: runs/rd/student.pth when it exists, "
    "else official."
)


def resolve_model(spec: str | None) -> tuple[Path, str]:
    """The checkpoint file that ``--model`` names, and how the one-line model description calls it.

    No ``--model``: the student of the user's last ``distill`` when there is one here, else the
    official student (fetched once). A named model wins over a file of the same name; ``./official``
    names the file.
    """
    if spec is None:
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL, f"{DEFAULT_MODEL}, the default: the student of your last distill"
        return fetch("official"), f"{describe_named('official')}, the default while there is no {DEFAULT_MODEL} here"
    if is_named(spec):
        return fetch(spec), describe_named(spec)
    path = Path(spec)
    if not path.exists():
        raise AprrdError(
            f"no model at {path}; give a checkpoint file, or a named model: {', '.join(NAMED)} "
            "(or train your own: aprrd train-apr, then aprrd distill)"
        )
    return path, str(path)
