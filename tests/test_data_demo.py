"""The camera-noise simulator and the embedded demo set."""

from __future__ import annotations

import numpy as np
import pytest

from aprrd_cli.data.demo_set import PAIRS, TRAIN, build_demo_set
from aprrd_cli.data.images import read_image
from aprrd_cli.data.noise_sim import CameraNoise, bayer_masks, demosaic_bilinear, render_clean, simulate
from aprrd_cli.data.store import open_train_store
from aprrd_cli.evaluation.noise_stats import measure_pairs, neighbour_correlation
from tests.helpers import REAL, need


def test_demosaic_keeps_flat_colours_and_sampled_values():
    rng = np.random.default_rng(0)
    raw = rng.random((12, 10))
    rgb = demosaic_bilinear(raw)
    m = bayer_masks(12, 10)
    assert (m.sum(axis=2) == 1).all() and m[:, :, 1].sum() == 60  # RGGB: one colour a pixel, half green
    for c in range(3):
        np.testing.assert_allclose(rgb[:, :, c][m[:, :, c]], raw[m[:, :, c]])  # sampled values kept
    flat = demosaic_bilinear(np.full((8, 8), 0.3))
    np.testing.assert_allclose(flat, 0.3)


def test_neighbour_correlation_of_independent_and_smoothed_noise():
    rng = np.random.default_rng(1)
    clean = np.full((200, 200, 3), 128, np.uint8)
    iid = np.clip(128 + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
    d1, d2 = neighbour_correlation(iid, clean)
    assert abs(d1) < 0.03 and abs(d2) < 0.03
    rolled = np.clip(128 + 10 * (lambda n: n + np.roll(n, 1, axis=1))(rng.normal(0, 1, clean.shape)), 0, 255)
    d1, d2 = neighbour_correlation(rolled.astype(np.uint8), clean)
    assert 0.45 < d1 < 0.55 and abs(d2) < 0.03  # n + shift(n): 1/2 at distance 1, 0 at 2


def test_simulator_noise_is_spatially_correlated_like_real_srgb_noise():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:128, 0:128]
    clean = np.stack([xx * 2, yy * 2, np.full_like(xx, 120)], axis=2).astype(np.uint8)
    noisy = simulate(clean, rng)
    gt = render_clean(clean)
    d1, d2 = neighbour_correlation(noisy, gt)
    assert 0.43 <= d1 <= 0.72 and 0.06 <= d2 <= 0.39  # between SIDD's and CC's measured values
    psnr = 10 * np.log10(255**2 / np.mean((noisy.astype(float) - gt) ** 2))
    assert 24 < psnr < 33
    # without the in-camera smoothing the demosaicing alone still correlates neighbours
    d1, _ = neighbour_correlation(
        simulate(clean, rng, CameraNoise(nr_sigma=0)), render_clean(clean, CameraNoise(nr_sigma=0))
    )
    assert d1 > 0.4


def test_demo_set_builds_small_deterministic_and_prepares(tmp_path, cli):
    d = build_demo_set(tmp_path / "demo")
    train = sorted((d / "noisy").glob("*.png"))
    assert len(train) == len(TRAIN) and 6 <= len(train) <= 8
    for p in train:
        img, info = read_image(p)
        assert info.dtype == "uint8" and img.shape[2] == 3 and 128 <= min(img.shape[:2]) and max(img.shape[:2]) <= 432
    names = sorted(p.name for p in (d / "pairs" / "noisy").glob("*.png"))
    assert names == sorted(p.name for p in (d / "pairs" / "gt").glob("*.png")) and len(names) == len(PAIRS)
    c1, c2, psnr, n = measure_pairs(d / "pairs")
    assert n == 4 and 0.43 <= c1 <= 0.72 and 0.06 <= c2 <= 0.39 and 24 < psnr < 32

    again = build_demo_set(tmp_path / "other")
    for p in train:
        assert p.read_bytes() == (again / "noisy" / p.name).read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in d.rglob("*.png")}
    build_demo_set(d)
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*.png")} == mtimes  # existing files are left alone

    code, out, _ = cli("prepare-data", "--demo", d, "--out", tmp_path / "prep")
    assert code == 0
    store = open_train_store(tmp_path / "prep")
    assert len(store) == len(TRAIN) and store.min_side >= 128


@pytest.mark.parametrize("name, d1, d2", [("sidd7", 0.43, 0.06), ("cc15", 0.70, 0.36)])
def test_real_pairs_correlation(name, d1, d2):
    c1, c2, _, _ = measure_pairs(need(REAL / name))
    assert c1 == pytest.approx(d1, abs=0.01) and c2 == pytest.approx(d2, abs=0.01)


def test_demo_noise_option_scales_the_noise_and_guards_the_folder(tmp_path, cli):
    """--demo-noise 4 makes a noisier set; a folder made with other settings is not silently reused."""

    def noisy_psnr(folder) -> float:
        name = f"{PAIRS[0][0]}.png"
        noisy, _ = read_image(folder / "pairs" / "noisy" / name)
        gt, _ = read_image(folder / "pairs" / "gt" / name)
        return float(10 * np.log10(255**2 / np.mean((noisy.astype(float) - gt) ** 2)))

    code, _, err = cli("prepare-data", "--demo", tmp_path / "d1", "--out", tmp_path / "p1")
    assert code == 0, err
    code, _, err = cli("prepare-data", "--demo", tmp_path / "d4", "--demo-noise", "4", "--out", tmp_path / "p4")
    assert code == 0, err
    # four times the variance is about 6 dB less PSNR (less where values clip)
    assert 4.0 < noisy_psnr(tmp_path / "d1") - noisy_psnr(tmp_path / "d4") < 6.5
    code, _, err = cli("prepare-data", "--demo", tmp_path / "d4", "--out", tmp_path / "p4")
    assert code == 1 and "made with other noise settings" in err


def test_demo_refuses_a_folder_of_the_users_files(tmp_path, cli):
    """--demo into a non-empty folder that holds no demo set used to overwrite the user's files
    there and mix them into the demo set (issue 13)."""
    mine = tmp_path / "photos"
    (mine / "noisy").mkdir(parents=True)
    (mine / "noisy" / "astronaut_top.png").write_bytes(b"my own photo")
    (mine / "notes.txt").write_text("mine")
    code, _, err = cli("prepare-data", "--demo", mine, "--out", tmp_path / "prep")
    assert code == 1 and "is not empty and holds no demo set" in " ".join(err.split())
    assert (mine / "noisy" / "astronaut_top.png").read_bytes() == b"my own photo"
    assert sorted(p.name for p in mine.rglob("*")) == ["astronaut_top.png", "noisy", "notes.txt"]
    assert not (tmp_path / "prep").exists()
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert build_demo_set(tmp_path / "empty") == tmp_path / "empty"
