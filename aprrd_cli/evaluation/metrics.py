"""PSNR and SSIM exactly as the field reports them (docs/method.md section 6), in batched torch.

Papers on SIDD and DND score 8-bit images: the network's output is clipped to [0, 1],
scaled by 255 and rounded, and compared with the uint8 ground truth. SSIM is
scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False,
channel_axis=2, data_range=255)``: an 11-tap Gaussian window (sigma 1.5, truncated at 3.5
sigma, so radius 5), population covariances, K1 = 0.01, K2 = 0.03, the SSIM map averaged
over each channel with a 5-pixel border dropped, then over channels. We compute the same
in float64 with a separable convolution, so whole batches of blocks score at once on any
device, and agree with scikit-image to about 1e-12.
"""

from __future__ import annotations

import math

import torch

from aprrd_cli.data.tensors import quantize

SIGMA = 1.5
TRUNCATE = 3.5
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5, as scipy.ndimage rounds it: an 11-tap window
K1, K2 = 0.01, 0.03
MAP_BUDGET = 1 << 30  # bytes of float64 SSIM maps held at once


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name}: expected B x C x H x W, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def _compute_device(x: torch.Tensor) -> torch.device:
    """float64 convolutions need CPU or CUDA (Apple MPS has no float64)."""
    return x.device if x.device.type in ("cpu", "cuda") else torch.device("cpu")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR in dB of ``B x C x H x W`` tensors (mean squared error over C, H, W); float64 ``[B]``."""
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_taps(device: torch.device | None = None) -> torch.Tensor:
    """The 11 normalised Gaussian weights scipy.ndimage uses for sigma 1.5, truncate 3.5."""
    t = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 * (t / SIGMA) ** 2)
    return w / w.sum()


def _filter(maps: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable Gaussian over the 'valid' region only: exactly skimage's map with its border cropped.

    skimage filters the whole image with reflect padding and then drops a border of 5;
    the kept pixels never touch the padding, so the valid convolution gives the same values.
    Written as in-place shifted multiply-adds: float64 ``conv2d`` has no fast CPU kernel
    (grouped, it is 7x slower than this on a 512 x 512 image).
    """
    n = len(taps)
    h, w = maps.shape[-2:]
    rows = maps[..., 0 : h - n + 1, :] * taps[0]
    for k in range(1, n):
        rows.add_(maps[..., k : h - n + 1 + k, :], alpha=taps[k])
    out = rows[..., 0 : w - n + 1] * taps[0]
    for k in range(1, n):
        out.add_(rows[..., k : w - n + 1 + k], alpha=taps[k])
    return out


def _ssim_maps_mean(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean of the cropped SSIM map per image and channel: ``B x C`` float64."""
    taps = gaussian_taps().tolist()
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    c = x.shape[1]
    mu_x, mu_y, xx, yy, xy = _filter(torch.cat((x, y, x * x, y * y, x * y), dim=1), taps).split(c, dim=1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).flatten(2).mean(dim=2)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of ``B x C x H x W`` tensors, as scikit-image computes it; float64 ``[B]``.

    The work is split into slices of images and channels of at most ``MAP_BUDGET`` bytes
    of float64 maps, so a batch of blocks runs at once and a 12 MP photograph still fits.
    """
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    b, c, h, w = x.shape
    if min(h, w) < 2 * RADIUS + 1:
        raise ValueError(f"ssim: images must be at least {2 * RADIUS + 1} pixels on each side, got {h} x {w}")
    dev = _compute_device(x)
    per_map = 8 * h * w * 12  # bytes of float64 temporaries per image channel
    per_channel = torch.empty((b, c), dtype=torch.float64, device=dev)
    chans = max(1, min(c, MAP_BUDGET // per_map))
    imgs = max(1, MAP_BUDGET // (per_map * chans))
    for i in range(0, b, imgs):
        for k in range(0, c, chans):
            xs = x[i : i + imgs, k : k + chans].to(dev)
            ys = y[i : i + imgs, k : k + chans].to(dev)
            per_channel[i : i + imgs, k : k + chans] = _ssim_maps_mean(xs, ys, data_range)
    return per_channel.mean(dim=1).to(x.device)


def psnr_ssim_uint8(denoised: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score a float [0, 1] network output against 8-bit ground truth: per-image (PSNR, SSIM).

    ``clean`` may be a uint8 tensor or float values 0..255; both are ``B x 3 x H x W``.
    """
    d = quantize(denoised)
    g = clean.to(torch.float64)
    return psnr(d, g), ssim(d, g)


def mean_or_nan(values: list[float]) -> float:
    """The mean of a list of scores; NaN when empty (no division error in reports)."""
    return math.fsum(values) / len(values) if values else float("nan")
