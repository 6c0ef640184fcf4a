"""Inference, all of it: padding, tiling, the teacher's hole, the x8 self-ensemble and timing.

The networks need sides that are multiples of 32. A whole image is reflect-padded (the
teacher by 16 more on every side, as the method specifies: docs/method.md section 5), run,
and cropped back. Large images are cut into overlapping windows of the *padded* image; each
keeps only its centre, so tiles see the same zero-padded borders the whole image would and
agree with the whole-image result to about one grey level at the default margin.
``Runner`` adds the optional x8 self-ensemble (the eight flips and rotations, each mapped
back and averaged) and times the network alone, the figure SIDD asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aprrd_cli.console import warn
from aprrd_cli.device import autocast
from aprrd_cli.errors import CheckpointError, InputError
from aprrd_cli.models.checkpoint import LoadedModel
from aprrd_cli.models.constants import INFER_SHIFT, TEACHER_PAD
from aprrd_cli.models.constants import SIZE_MULTIPLE as MULTIPLE
from aprrd_cli.utils.dihedral import dihedral, undo_dihedral
from aprrd_cli.utils.memory import available_bytes

DEFAULT_TILE = 512  # a tile that fits any machine (about 0.5 GB with the student): what messages suggest
MIN_TILE = 64  # smallest --tile a user may ask for: below it the margins' work dominates
DEFAULT_OVERLAP = 96
# The default tiling (see plan_tile and docs/performance.md): the whole image when the network's working
# memory fits this share of the memory at hand, else the tiles that compute the fewest pixels within it.
MEMORY_SHARE = 0.5
# Working memory per megapixel of the network's (padded) input, measured as peak resident memory on the
# CPU (benchmarks/tiling.py: slope between 0.26 and 1.05 MP, official student; a random-weight teacher;
# the largest of the runs, which vary by 20% with the allocator's reuse), rounded up. A GPU uses the same
# figures until measured on one (benchmarks/tiling.py prints them there).
MEMORY_PER_MP = {
    ("student", "fp32"): 1.4e9,
    ("student", "bf16"): 1.85e9,
    ("student", "fp16"): 1.85e9,
    ("teacher", "fp32"): 7.6e9,
    ("teacher", "bf16"): 7.9e9,
    ("teacher", "fp16"): 7.9e9,
}
IMAGE_BYTES_PER_PIXEL = 3 * 4 * 2  # the padded input and the output, float32, held whole while tiling


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding of any size, even beyond the image's own extent.

    ``F.pad(mode='reflect')`` needs the pad to be smaller than the side; larger pads
    are built by reflecting repeatedly. A side of one pixel can only be replicated.
    """
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        if h == 1 and (top or bottom):
            x = F.pad(x, (0, 0, top, bottom), mode="replicate")
            top = bottom = 0
            continue
        if w == 1 and (left or right):
            x = F.pad(x, (left, right, 0, 0), mode="replicate")
            left = right = 0
            continue
        t, b = min(top, h - 1), min(bottom, h - 1)
        lft, r = min(left, w - 1), min(right, w - 1)
        x = F.pad(x, (lft, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - lft, right - r
    return x


def padding_for(h: int, w: int, extra: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): ``extra`` on each side, then up to a multiple of 32.

    The rounding is split between both sides so the borders get equal context.
    """

    def split(n: int) -> tuple[int, int]:
        total = -(n + 2 * extra) % MULTIPLE
        return extra + total // 2, extra + total - total // 2

    t, b = split(h)
    lft, r = split(w)
    return t, b, lft, r


def far_larger_than_patch(h: int, w: int, patch: int | None) -> bool:
    """Whether an image side is over twice the training patch: where a teacher trained on small
    patches was seen to drift (docs/results.md), so aprrd warns and the study adds a windowed score."""
    return bool(patch) and max(h, w) > 2 * patch


def patch_windows(patch: int) -> tuple[int, int]:
    """(tile, overlap) whose windows are ``patch`` pixels, the size a network was trained on.

    An eighth of the window is context on each side and the rest the kept core (less the
    31 pixels that aligning windows to the 32-pixel grid may cost). A teacher trained on
    patches much smaller than the photos can drift in brightness on whole images
    (docs/results.md); in windows of its training size it sees what it was trained on.
    Patches under 64 pixels get 64-pixel windows.
    """
    patch = max(patch, 2 * MULTIPLE)
    margin = patch // 8
    return patch - 2 * margin - (MULTIPLE - 1), margin


def window_side(core: int, margin: int) -> int:
    """The side of the windows that ``tile_spans`` cuts for this core and margin."""
    return -(-(core + 2 * margin + MULTIPLE - 1) // MULTIPLE) * MULTIPLE


def covered(length: int, core: int, margin: int) -> int:
    """Pixels along one side that the windows of ``tile_spans`` cover, margins counted each time."""
    return sum(w1 - w0 for w0, w1, _, _ in tile_spans(length, core, margin))


def plan_tile(h: int, w: int, margin: int, per_pixel: float, budget: float, batch: int = 1) -> tuple[int, int]:
    """The default tiling of ``batch`` padded ``h x w`` images: (0, 0) for whole, else (row core, column core).

    Whole when the network's working memory (``per_pixel`` bytes a pixel) fits ``budget``: no
    margin is computed twice, and it was measured fastest. Otherwise the tiles, among those whose
    windows fit (with the whole padded input and output held beside them), that make the network
    compute the fewest pixels in all, margins included: tiles as large as fit, and shaped to the
    photo (full-width strips when a strip fits), since the last tile of a row may mostly repeat its
    neighbour. ``MIN_TILE`` square tiles when not even those fit: the user then gives --tile.
    """
    per_pixel *= batch
    if h * w * per_pixel <= budget:
        return 0, 0
    room = budget - batch * h * w * IMAGE_BYTES_PER_PIXEL
    rows = {c: (min(h, window_side(c, margin)), covered(h, c, margin)) for c in range(MIN_TILE, h + MULTIPLE, MULTIPLE)}
    cols = {c: (min(w, window_side(c, margin)), covered(w, c, margin)) for c in range(MIN_TILE, w + MULTIPLE, MULTIPLE)}
    best, best_cost = (MIN_TILE, MIN_TILE), None
    for ch, (wh, cover_h) in rows.items():
        for cw, (ww, cover_w) in cols.items():
            if wh * ww * per_pixel > room:
                break  # windows only grow with the core
            cost = (cover_h * cover_w, -ch * cw)  # fewest pixels computed; then the fewest, larger tiles
            if best_cost is None or cost < best_cost:
                best, best_cost = (ch, cw), cost
    return best


def tile_spans(length: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Windows over ``[0, length)``: (window start, window end, core start, core end).

    Cores partition the range. Every window has the same size, a multiple of 32 (clamped
    to ``length``, itself a multiple of 32), starts on the 32-pixel grid so that its
    poolings line up with the whole image's, and holds its core plus at least ``margin``
    pixels of context on each side (less only at the ends of the range).
    """
    window = min(length, window_side(core, margin))
    if window >= length:
        return [(0, length, 0, length)]
    step = window - 2 * margin - (MULTIPLE - 1)
    spans = []
    c0 = 0
    while c0 < length:
        c1 = min(c0 + step, length)
        w0 = min(max((c0 - margin) // MULTIPLE * MULTIPLE, 0), length - window)
        spans.append((w0, w0 + window, c0, c1))
        c0 = c1
    return spans


@dataclass
class Denoiser:
    """A network ready for images of any size: padding, tiling and device handling."""

    model: nn.Module
    device: torch.device
    tile: int | None = None  # None: automatic (plan_tile); 0: whole image; N: cores of N pixels
    overlap: int = DEFAULT_OVERLAP
    shift: int = INFER_SHIFT  # teacher only
    trained_patch: int | None = None  # the training patch side, from the checkpoint
    in_patch_windows: bool = False  # run in windows of trained_patch (see patch_windows)
    precision: str = "fp32"  # fp32 or bf16 (autocast; the last layer stays fp32, models/blocks.in_fp32)

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        if self.device.type == "cuda":  # the layout cuDNN's fast kernels want (the networks also convert inputs)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.is_teacher = getattr(self.model, "kind", "student") == "teacher"
        self._size_warned = False
        if self.in_patch_windows:
            if not self.trained_patch:
                raise InputError(
                    "this checkpoint does not record the patch size it was trained on, so --patch-windows "
                    "cannot size its windows; give --tile and --overlap instead"
                )
            self.tile, self.overlap = patch_windows(self.trained_patch)

    @classmethod
    def for_loaded(cls, loaded: LoadedModel, device: torch.device, **kw: object) -> Denoiser:
        """A Denoiser for a loaded checkpoint, knowing its training patch size when recorded."""
        patch = (loaded.meta.get("training") or {}).get("patch_size")
        return cls(loaded.model, device, trained_patch=patch if isinstance(patch, int) else None, **kw)

    def _check_size(self, h: int, w: int) -> None:
        """Warn once when a teacher meets images far larger than its training patches.

        Measured (docs/results.md): an APR teacher trained 1,000 steps on 128x128 patches scored
        33 dB on 128x128 crops of cc15 and 15 dB on the 512x512 photos, its brightness drifting
        with the image size, while the student distilled from it on the same patches scored 33.9 dB.
        """
        p = self.trained_patch
        if self._size_warned or self.in_patch_windows or not self.is_teacher or not far_larger_than_patch(h, w, p):
            return
        self._size_warned = True
        warn(
            f"this teacher was trained on {p}x{p} patches and is applied to a {w}x{h} image: teachers trained on "
            "small patches can drift in brightness on much larger images (docs/results.md); use the distilled "
            "student, add --patch-windows to run the teacher in windows of its training size, or train it on "
            "larger patches"
        )

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            y = self.model(x, self.shift) if self.is_teacher else self.model(x)
        return y.float()

    def memory_per_pixel(self) -> float:
        """Bytes of working memory per pixel of the network's input (MEMORY_PER_MP)."""
        kind = "teacher" if self.is_teacher else "student"
        return MEMORY_PER_MP.get((kind, self.precision), MEMORY_PER_MP[(kind, "fp32")]) / 1e6

    def memory_at_hand(self) -> int:
        """Bytes the network may use: free device memory (and this process's cached blocks) on a GPU."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return available_bytes()

    def core_for(self, h: int, w: int, batch: int = 1) -> tuple[int, int]:
        """Tile cores (rows, columns) for ``batch`` images of ``h x w``: (0, 0) = whole; --tile, else plan_tile's."""
        if self.tile is not None:
            return self.tile, self.tile
        t, b, lft, r = padding_for(h, w, TEACHER_PAD if self.is_teacher else 0)
        budget = MEMORY_SHARE * self.memory_at_hand()
        return plan_tile(h + t + b, w + lft + r, self.overlap, self.memory_per_pixel(), budget, batch)

    def will_tile(self, h: int, w: int, batch: int = 1) -> bool:
        return self.core_for(h, w, batch) != (0, 0)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Denoise ``B x 3 x H x W`` in [0, 1] (any H, W); returns the same shape on the CPU."""
        h, w = x.shape[-2:]
        self._check_size(h, w)
        pads = padding_for(h, w, TEACHER_PAD if self.is_teacher else 0)
        core = self.core_for(h, w, x.shape[0])
        xp = reflect_pad(x.float(), *pads)
        if core == (0, 0):
            y = self._net(xp.to(self.device)).float().cpu()
            if on_tile:
                on_tile(1, 1)
        else:
            y = self._tiled(xp, core, on_tile)
        t, _, lft, _ = pads
        y = y[:, :, t : t + h, lft : lft + w]
        if not torch.isfinite(y).all():  # inputs are finite in [0, 1]: only broken weights get here
            raise CheckpointError(
                "the network's output holds NaN or infinite values: the checkpoint's weights are damaged "
                "(a training run that diverged?); use another checkpoint"
            )
        return y

    def _tiled(
        self, xp: torch.Tensor, core: tuple[int, int], on_tile: Callable[[int, int], None] | None
    ) -> torch.Tensor:
        H, W = xp.shape[-2:]
        rows, cols = tile_spans(H, core[0], self.overlap), tile_spans(W, core[1], self.overlap)
        out = torch.empty((xp.shape[0], 3, H, W), dtype=torch.float32)
        total, done = len(rows) * len(cols), 0
        for r0, r1, cr0, cr1 in rows:
            for c0, c1, cc0, cc1 in cols:
                y = self._net(xp[:, :, r0:r1, c0:c1].to(self.device)).float().cpu()
                out[:, :, cr0:cr1, cc0:cc1] = y[:, :, cr0 - r0 : cr1 - r0, cc0 - c0 : cc1 - c0]
                done += 1
                if on_tile:
                    on_tile(done, total)
        return out


# ---------------------------------------------------------------- the x8 ensemble and timing


@dataclass
class Stopwatch:
    """Network time per megapixel of input, the figure SIDD asks for (``TimeMPSrgb``)."""

    seconds: float = 0.0
    megapixels: float = 0.0

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / self.megapixels if self.megapixels else float("nan")


def self_ensemble(
    denoiser: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, on_pass: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """The x8 self-ensemble: the mean of the outputs for the eight flips and rotations of ``x``,
    each mapped back. ``on_pass(done, 8)`` after each."""
    acc = torch.zeros_like(x, dtype=torch.float32)
    for k in range(8):
        acc += undo_dihedral(denoiser(dihedral(x, k)), k)
        if on_pass:
            on_pass(k + 1, 8)
    return acc / 8


@dataclass
class Runner:
    """A Denoiser with the x8 self-ensemble option and timing."""

    denoiser: Denoiser
    ensemble: bool = False
    watch: Stopwatch = field(default_factory=Stopwatch)
    warmed: bool = False

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self_ensemble(self.denoiser, x) if self.ensemble else self.denoiser(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``B x 3 x H x W`` float [0, 1]; returns float32 on the CPU (not yet clipped)."""
        if not self.warmed:
            # one untimed run at the real size: lazy initialisation, and on a GPU cuDNN's set-up for this
            # shape, stay out of the timed seconds per megapixel (a small warm-up left them inside)
            self.denoiser(x[:1])
            self.warmed = True
        t0 = time.perf_counter()
        y = self._run(x)
        self.watch.seconds += time.perf_counter() - t0  # y is on the CPU, so the device has finished
        self.watch.megapixels += x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6
        return y

    @property
    def metric_device(self) -> torch.device:
        """Score on the GPU when there is one (float64 SSIM), else on the CPU."""
        dev = self.denoiser.device
        return dev if dev.type == "cuda" else torch.device("cpu")
