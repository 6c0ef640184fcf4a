"""A camera-noise simulator: clean sRGB photo -> the sRGB photo a camera would have made of it.

Real sRGB noise is not pixel-independent: it is added on the Bayer mosaic, in linear light,
then spread over neighbouring pixels by demosaicing, mixed across channels by the colour
matrix and reshaped by the tone curve. That spatial correlation is what APR is built for,
so the demo set must have it. The model, run backwards then forwards:

1. sRGB -> linear light (inverse sRGB curve);
2. linear sRGB -> camera RGB (inverse colour matrix) -> raw (divide by white-balance gains);
3. keep one colour per pixel on an RGGB Bayer mosaic;
4. signal-dependent noise: Poisson shot noise with ``gain`` (variance ``gain * x``) plus
   Gaussian read noise of standard deviation ``read``, on raw values in [0, 1];
5. bilinear demosaicing; 6. in-camera noise reduction: a Gaussian blur of ``nr_sigma``
   pixels, applied to the noise-bearing image (cameras smooth before they sharpen);
7. white-balance gains, colour matrix, clip, sRGB curve, 8-bit rounding.

The inverse steps only produce a plausible clean raw image from a clean sRGB photo; the
noise is then exactly Poisson-Gaussian on the mosaic. See docs/data.md for the measured
correlation against real SIDD and CC pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

# camera RGB -> linear sRGB; rows sum to 1 so that white stays white (a typical phone sensor's shape)
DEFAULT_CCM = ((1.70, -0.55, -0.15), (-0.25, 1.55, -0.30), (0.05, -0.60, 1.55))


@dataclass(frozen=True)
class CameraNoise:
    """Parameters of the simulated camera (defaults: noisy input about 25-29 dB, noise
    correlation between SIDD's and CC's; see docs/data.md)."""

    gain: float = 0.0025  # shot noise: variance gain * x on raw values in [0, 1]
    read: float = 0.003  # read noise standard deviation on raw values
    wb_red: float = 1.9  # white-balance gains applied by the camera
    wb_blue: float = 1.6
    nr_sigma: float = 0.5  # in-camera noise reduction, Gaussian sigma in pixels (0: none)
    ccm: tuple[tuple[float, float, float], ...] = DEFAULT_CCM

    def scaled(self, factor: float) -> CameraNoise:
        """The same camera with ``factor`` times the noise variance (shot and read alike)."""
        return replace(self, gain=self.gain * factor, read=self.read * factor**0.5)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def bayer_masks(h: int, w: int) -> np.ndarray:
    """``H x W x 3`` booleans: where the RGGB mosaic samples red, green and blue."""
    m = np.zeros((h, w, 3), dtype=bool)
    m[0::2, 0::2, 0] = True
    m[0::2, 1::2, 1] = True
    m[1::2, 0::2, 1] = True
    m[1::2, 1::2, 2] = True
    return m


def demosaic_bilinear(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of an RGGB mosaic (``H x W``) into ``H x W x 3``."""
    h, w = raw.shape
    masks = bayer_masks(h, w)
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float64) / 4
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 4
    out = np.empty((h, w, 3), dtype=np.float64)
    for c, k in ((0, k_rb), (1, k_g), (2, k_rb)):
        # normalised convolution: correct at the borders, where some neighbours are missing
        num = ndimage.convolve(raw * masks[:, :, c], k, mode="mirror")
        den = ndimage.convolve(masks[:, :, c].astype(np.float64), k, mode="mirror")
        out[:, :, c] = num / den
    return out


def simulate(clean: np.ndarray, rng: np.random.Generator, cam: CameraNoise = CameraNoise()) -> np.ndarray:
    """A noisy uint8 ``H x W x 3`` sRGB image from a clean uint8 one, as the camera model makes it."""
    if clean.dtype != np.uint8 or clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"simulate expects H x W x 3 uint8, got {clean.shape} {clean.dtype}")
    ccm = np.asarray(cam.ccm, dtype=np.float64)
    wb = np.array([cam.wb_red, 1.0, cam.wb_blue])
    lin = srgb_to_linear(clean.astype(np.float64) / 255.0)
    cam_rgb = np.clip(lin @ np.linalg.inv(ccm).T, 0.0, 1.0) / wb
    h, w = clean.shape[:2]
    raw = (cam_rgb * bayer_masks(h, w)).sum(axis=2)
    shot = rng.poisson(raw / cam.gain) * cam.gain
    noisy_raw = shot + rng.normal(0.0, cam.read, size=raw.shape)
    rgb = demosaic_bilinear(noisy_raw)
    if cam.nr_sigma > 0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(cam.nr_sigma, cam.nr_sigma, 0), mode="mirror")
    out = linear_to_srgb((rgb * wb) @ ccm.T)
    return np.rint(out * 255.0).astype(np.uint8)


def render_clean(clean: np.ndarray, cam: CameraNoise = CameraNoise()) -> np.ndarray:
    """The same pipeline without noise: the ground truth that matches ``simulate``'s output.

    Demosaicing and the in-camera smoothing also blur the image, so the honest clean
    reference is the noise-free render through the same steps, not the original photo.
    """
    ccm = np.asarray(cam.ccm, dtype=np.float64)
    wb = np.array([cam.wb_red, 1.0, cam.wb_blue])
    lin = srgb_to_linear(clean.astype(np.float64) / 255.0)
    cam_rgb = np.clip(lin @ np.linalg.inv(ccm).T, 0.0, 1.0) / wb
    h, w = clean.shape[:2]
    rgb = demosaic_bilinear((cam_rgb * bayer_masks(h, w)).sum(axis=2))
    if cam.nr_sigma > 0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(cam.nr_sigma, cam.nr_sigma, 0), mode="mirror")
    out = linear_to_srgb((rgb * wb) @ ccm.T)
    return np.rint(out * 255.0).astype(np.uint8)
