"""PSNR / SSIM against scikit-image, the reference the field's numbers come from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aprrd_cli.data.images import read_image
from aprrd_cli.data.tensors import from_float
from aprrd_cli.evaluation.metrics import gaussian_taps, psnr, psnr_ssim_uint8, quantize, ssim
from tests.helpers import REAL, need


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, use_sample_covariance=False, channel_axis=2, data_range=255
    )


def to_t(*arrays: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays]))


def test_taps_match_scipy_ndimage():
    from scipy.ndimage import gaussian_filter1d

    impulse = np.zeros(21)
    impulse[10] = 1.0
    ref = gaussian_filter1d(impulse, 1.5, truncate=3.5)[5:16]
    np.testing.assert_allclose(gaussian_taps().numpy(), ref, atol=1e-15)


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (11, 40)])
def test_random_uint8_batch_matches_skimage(shape):
    rng = np.random.default_rng(0)
    h, w = shape
    gt = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(3)]
    # correlated pairs (noisy versions) and one unrelated pair
    den = [np.clip(g.astype(int) + rng.integers(-20, 21, g.shape), 0, 255).astype(np.uint8) for g in gt[:2]]
    den.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    p, s = psnr(to_t(*den), to_t(*gt)), ssim(to_t(*den), to_t(*gt))
    assert p.dtype == torch.float64 and p.shape == (3,) and s.shape == (3,)
    for i in range(3):
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(gt[i], den[i], data_range=255), abs=1e-10)
        assert s[i].item() == pytest.approx(sk_ssim(den[i], gt[i]), abs=1e-10)


def test_float_output_scores_as_written_uint8():
    """psnr_ssim_uint8 scores exactly the uint8 image that `aprrd denoise` would write."""
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    out = (gt / 255.0 + rng.normal(0, 0.05, gt.shape)).astype(np.float32)  # outside [0, 1] too
    q = from_float(out, "uint8")
    p, s = psnr_ssim_uint8(to_t(out), to_t(gt))
    assert p.item() == pytest.approx(peak_signal_noise_ratio(gt, q, data_range=255), abs=1e-10)
    assert s.item() == pytest.approx(sk_ssim(q, gt), abs=1e-10)
    np.testing.assert_array_equal(quantize(to_t(out))[0].numpy().transpose(1, 2, 0), q)


def test_real_pairs_match_skimage():
    folder = need(REAL / "sidd7")
    names = sorted(p.name for p in (folder / "noisy").glob("*.png"))[:3]
    for name in names:
        noisy, _ = read_image(folder / "noisy" / name)
        gt, _ = read_image(folder / "gt" / name)
        p, s = psnr(to_t(noisy), to_t(gt)), ssim(to_t(noisy), to_t(gt))
        assert p.item() == pytest.approx(peak_signal_noise_ratio(gt, noisy, data_range=255), abs=1e-4)
        assert s.item() == pytest.approx(sk_ssim(noisy, gt), abs=1e-4)


def test_identical_images():
    x = to_t(np.full((16, 16, 3), 7, np.uint8))
    assert ssim(x, x).item() == pytest.approx(1.0)
    assert psnr(x, x).item() == float("inf")


def test_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 3, 10, 16), torch.zeros(1, 3, 10, 16))
