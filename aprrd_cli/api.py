"""The public Python API: load a model, denoise arrays, tensors and files, score results.

Everything here is re-exported from the package's top level (``import aprrd_cli as aprrd;
aprrd.load("official")``); what is not here is internal and may change. Each entry point runs
the code the commands run: the model is opened by ``opening.open_denoiser`` (as ``aprrd denoise``
opens it), arrays and files go through ``denoise.denoise_array`` and ``denoise.denoise_file``,
scores through ``evaluation.protocols.score_image`` (as ``aprrd evaluate`` scores). A call never
changes process-wide state: the thread count and the current device stay the caller's, and the
true-fp32 maths (no TF32 on NVIDIA GPUs) is set for the call only. Warnings (values clipped, a
teacher far from its training size) are printed and also raised as ``AprrdWarning`` through
Python's ``warnings``, to be filtered or made errors. See docs/api.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, overload

import numpy as np
import torch

from aprrd_cli.console import AprrdWarning, python_warnings
from aprrd_cli.data.tensors import from_float, to_float
from aprrd_cli.denoise import Job, denoise_array, denoise_file, plan_jobs, read_checked
from aprrd_cli.device import fp32_math
from aprrd_cli.errors import AprrdError, InputError
from aprrd_cli.evaluation.protocols import score_image
from aprrd_cli.inference import DEFAULT_OVERLAP, self_ensemble
from aprrd_cli.opening import Opened, open_denoiser
from aprrd_cli.utils.atomic import check_output_dir

__all__ = ["AprrdError", "AprrdWarning", "Model", "load", "psnr", "ssim"]

ARRAY_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
API_FLAGS = ("precision=", "patch_windows=True", "tile=")

Image = TypeVar("Image", np.ndarray, torch.Tensor)


class Model:
    """A denoiser ready for images of any size; made by ``load``.

    ``denoise`` takes a numpy image or a torch tensor and gives back the same kind; ``denoise_file``
    writes a file as ``aprrd denoise`` does. Large images are tiled as the command tiles them.
    """

    def __init__(self, opened: Opened, ensemble: bool = False) -> None:
        self._opened = opened
        self.ensemble = ensemble

    @property
    def kind(self) -> str:
        """``"student"`` or ``"teacher"``."""
        return self._opened.loaded.kind

    @property
    def arch(self) -> str:
        """The network: ``nbsn-1.00M``, ``nbsn-1.02M`` or ``atbsn``."""
        return self._opened.loaded.arch

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return self._opened.denoiser.device

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16`` (``auto`` made concrete)."""
        return self._opened.precision

    @property
    def path(self) -> Path:
        """The checkpoint file (for a named model, its verified copy in the cache)."""
        return self._opened.path

    @property
    def network(self) -> torch.nn.Module:
        """The bare network (``B x 3 x H x W``, sides multiples of 32, no padding): for your own code."""
        return self._opened.denoiser.model

    def __repr__(self) -> str:
        return (
            f"Model({self._opened.label!r}, {self.kind} {self.arch}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, ensemble={self.ensemble})"
        )

    def _runner(self, ensemble: bool | None) -> Callable[..., torch.Tensor]:
        """What ``denoise_array`` calls: the Denoiser, or its x8 self-ensemble."""
        den = self._opened.denoiser
        if not (self.ensemble if ensemble is None else ensemble):
            return den

        def run(x: torch.Tensor, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
            return self_ensemble(den, x, on_tile)

        return run

    @overload
    def denoise(self, image: np.ndarray, *, ensemble: bool | None = None) -> np.ndarray: ...
    @overload
    def denoise(self, image: torch.Tensor, *, ensemble: bool | None = None) -> torch.Tensor: ...

    def denoise(self, image: Image, *, ensemble: bool | None = None) -> Image:
        """Denoise a photo; returns the same kind of image, the same size.

        - a numpy array ``H x W x 3`` (colour), ``H x W`` (grey) or ``H x W x 4`` (alpha passed
          through), uint8, uint16, or float in [0, 1]: the result has the same shape and dtype;
        - a torch tensor ``B x 3 x H x W``, float in [0, 1], on any device: the result is a
          tensor of the same dtype on the same device, clipped to [0, 1].

        ``ensemble``: the x8 self-ensemble (eight times the work; default: the model's setting).
        """
        run = self._runner(ensemble)
        with fp32_math("fp32"), python_warnings():
            if isinstance(image, torch.Tensor):
                return self._denoise_tensor(image, run)
            if isinstance(image, np.ndarray):
                return self._denoise_array(image, run)
        raise AprrdError(f"denoise takes a numpy array or a torch tensor, got {type(image).__name__}")

    @staticmethod
    def _denoise_array(arr: np.ndarray, run: Callable[..., torch.Tensor]) -> np.ndarray:
        if arr.dtype.name not in ARRAY_DTYPES:
            raise InputError(f"image dtype {arr.dtype} is not supported; give uint8, uint16 or float in [0, 1]")
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4))):
            raise InputError(
                f"expected an H x W or H x W x C image (C = 1, 2, 3 or 4), got shape {arr.shape}; "
                "for a torch-style C x H x W array use arr.transpose(1, 2, 0)"
            )
        hwc = arr[:, :, None] if arr.ndim == 2 else arr
        dtype = arr.dtype.name if arr.dtype.kind == "u" else "float32"
        out = denoise_array(run, hwc, None, dtype, "image")
        return out.reshape(arr.shape).astype(arr.dtype, copy=False)

    def _denoise_tensor(self, x: torch.Tensor, run: Callable[..., torch.Tensor]) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise InputError(
                f"expected a float B x 3 x H x W tensor in [0, 1], got {x.dtype} of shape {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise InputError("the tensor holds NaN or infinite values")
        y = run(x.detach().float().clamp(0.0, 1.0))
        return y.clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)  # out of place: not an inference tensor

    def denoise_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        *,
        bit_depth: int | None = None,
        quality: int | None = None,
        ensemble: bool | None = None,
    ) -> Path:
        """Denoise one image file into another, as ``aprrd denoise SRC DST`` does; returns DST.

        The output's format follows DST's suffix (.png, .tif, .jpg, .heic, .webp, .avif); it keeps
        the input's bit depth (or ``bit_depth`` 8 or 16), colour profile, EXIF, XMP and IPTC where
        the format holds them, grey stays grey and alpha passes through. The file is written whole
        or not at all. ``quality``: the quality of lossy outputs, 1-100 (None: the format's default,
        as ``aprrd denoise --quality``; 100 writes lossless WebP).
        """
        if bit_depth not in (None, 8, 16):
            raise AprrdError(f"bit_depth must be 8 or 16, got {bit_depth}")
        if quality is not None and not 1 <= quality <= 100:
            raise AprrdError(f"quality must be 1-100, got {quality}")
        jobs, is_folder = plan_jobs(Path(src), Path(dst))
        if is_folder:
            raise InputError(f"{src} is a folder; denoise_file takes one image (aprrd denoise takes folders)")
        job: Job = jobs[0]
        check_output_dir(job.dst.parent)
        image = read_checked(job, bit_depth)
        with fp32_math("fp32"), python_warnings():
            denoise_file(self._runner(ensemble), job, bit_depth, image=image, quality=quality)
        return job.dst


def load(
    model: str | os.PathLike | None = "official",
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    patch_windows: bool = False,
    ensemble: bool = False,
) -> Model:
    """Load a denoiser: a named model or a checkpoint file (ours or the official release's).

    ``model``: ``"official"`` (the release's 1.00M student), ``"official-1.02M"``, a path, or
    None for what ``aprrd denoise`` takes by default (runs/rd/student.pth, else official). Named
    models are downloaded once into the cache and verified by SHA-256, as the commands do.
    ``device``: ``auto`` (the first CUDA GPU, else the CPU), ``cpu``, ``cuda``, ``cuda:N``,
    ``mps`` or a ``torch.device``. ``precision``: ``auto`` (bf16 where the hardware computes it
    natively, as ``aprrd denoise`` chooses), ``fp32`` or ``bf16``. ``tile``: None (the whole
    image when it fits half the memory at hand, else the tiles that fit), 0 (whole images) or a
    core size of at least 64 pixels; ``overlap``: the context margin of each tile.
    ``patch_windows``: run in windows of the training patch size (teachers).
    ``ensemble``: the x8 self-ensemble by default in ``denoise``.
    """
    with python_warnings():
        return Model(open_denoiser(model, device, precision, tile, overlap, patch_windows, API_FLAGS), ensemble)


def _as_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """An image as the 8-bit ``H x W x C`` array the field scores (evaluate's rounding)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"{name}: expected an H x W or H x W x C image, got shape {a.shape}")
    if a.dtype.name not in ARRAY_DTYPES:
        raise InputError(f"{name}: dtype {a.dtype} is not supported; give uint8, uint16 or float in [0, 1]")
    return a if a.dtype == np.uint8 else from_float(to_float(a, name)[0], "uint8")


def _scores(denoised: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    d, c = _as_uint8(denoised, "denoised"), _as_uint8(clean, "clean")
    if d.shape != c.shape:
        raise InputError(f"the images differ in shape: {d.shape} and {c.shape}")
    return score_image(d, c)


def psnr(denoised: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB as ``aprrd evaluate`` reports it: both images rounded to 8 bits, peak 255.

    Images are numpy ``H x W x C`` or ``H x W``, uint8, uint16 or float in [0, 1].
    """
    return _scores(denoised, clean)[0]


def ssim(denoised: np.ndarray, clean: np.ndarray) -> float:
    """SSIM as ``aprrd evaluate`` reports it (scikit-image's Gaussian SSIM on 8-bit images,
    averaged over the channels)."""
    return _scores(denoised, clean)[1]
