"""CBM3D with a blindly estimated noise level: the classical reference a user could run on the
same photos without any training and without ground truth.

The noise level is scikit-image's ``estimate_sigma`` (wavelet median absolute deviation) of
the noisy image, averaged over the channels; it assumes white noise, so on spatially
correlated real noise it underestimates the level and CBM3D removes little (the shared
data's README: cc15 33.54 dB blind against 34.91 dB with the true level). ``bm3d`` is a
benchmark-only dependency (the ``results`` extra).
"""

from __future__ import annotations

import numpy as np

from aprrd_cli.errors import AprrdError


def blind_sigma(noisy: np.ndarray) -> float:
    """Noise standard deviation of a uint8 H x W x 3 image, in [0, 1] units, from the image alone."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(noisy.astype(np.float64) / 255.0, channel_axis=-1, average_sigmas=True))


def cbm3d_blind(noisy: np.ndarray) -> tuple[np.ndarray, float]:
    """CBM3D of a uint8 H x W x 3 image at its blindly estimated noise level: (uint8 result, sigma)."""
    try:
        from bm3d import bm3d_rgb
    except ImportError as e:
        raise AprrdError("CBM3D needs the bm3d package: pip install -e '.[results]' (or run with --no-cbm3d)") from e
    sigma = blind_sigma(noisy)
    z = noisy.astype(np.float64) / 255.0
    out = bm3d_rgb(z, max(sigma, 1e-4))
    return np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8), sigma
