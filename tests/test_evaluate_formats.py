"""End to end from the published file formats: .mat blocks and a DND tree -> prepare-data -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aprrd_cli.data.tensors import from_float, to_tensor
from aprrd_cli.inference import Denoiser
from aprrd_cli.models import build
from aprrd_cli.models.checkpoint import load_model, save_model
from tests.helpers import dnd_crop, write_dnd


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A SIDD validation/benchmark + DND tree in the real formats, prepared by ``aprrd prepare-data``."""
    from aprrd_cli.cli import main

    base = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    clean = np.stack((xx, yy, xx * yy), -1)[None, None] * rng.uniform(0.4, 1, (2, 3, 1, 1, 3))
    truth = {
        "gt": from_float(clean, "uint8"),
        "noisy": from_float(clean + rng.normal(0, 0.06, clean.shape), "uint8"),
    }
    val = base / "root" / "SIDD_Validation_sRGB"
    val.mkdir(parents=True)
    sio.savemat(val / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": truth["noisy"]})
    sio.savemat(val / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": truth["gt"]})
    sio.savemat(val / "BenchmarkNoisyBlocksSrgb.mat", {"BenchmarkNoisyBlocksSrgb": truth["noisy"][:, :2]})
    truth["dnd_imgs"] = [rng.random((96, 80, 3), dtype=np.float32) for _ in range(2)]
    truth["dnd_boxes"] = [np.array([[1, 1, 64, 64], [33, 17, 96, 80]])] * 2
    write_dnd(base / "root", truth["dnd_imgs"], truth["dnd_boxes"])
    assert main(["prepare-data", str(base / "root"), "--out", str(base / "prep")]) == 0
    torch.manual_seed(1)
    save_model(base / "student.pth", build("nbsn-1.00M"), iteration=0)
    return base, truth


def reference(model: Path, noisy: np.ndarray) -> np.ndarray:
    """The model's float output for one H x W x 3 input, denoised on its own (as --batch-size 1 does)."""
    den = Denoiser(load_model(model).model, torch.device("cpu"), tile=0)
    return den(to_tensor(noisy))[0].numpy().transpose(1, 2, 0)


def test_sidd_val_from_mat_files_agrees_with_skimage(world, cli, tmp_path):
    base, truth = world
    code, _, err = cli(
        "evaluate", "-m", base / "student.pth", "--set", "sidd-val", "--data", base / "prep",
        "--batch-size", "1", "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    ps, ss = [], []
    for i in range(2):
        for b in range(3):
            den = from_float(reference(base / "student.pth", truth["noisy"][i, b]), "uint8")
            gt = truth["gt"][i, b]
            ps.append(peak_signal_noise_ratio(gt, den, data_range=255))
            ss.append(
                structural_similarity(
                    den, gt, gaussian_weights=True, use_sample_covariance=False, channel_axis=2, data_range=255
                )
            )
            assert report["images"][i]["blocks"]["psnr"][b] == pytest.approx(ps[-1], abs=1e-9)
    assert report["n"] == 6
    assert report["psnr"] == pytest.approx(np.mean(ps), abs=1e-9)
    assert report["ssim"] == pytest.approx(np.mean(ss), abs=1e-9)


def test_sidd_bench_from_mat_file(world, cli, tmp_path):
    base, truth = world
    code, _, err = cli(
        "evaluate", "-m", base / "student.pth", "--set", "sidd-bench", "--data", base / "prep",
        "--batch-size", "1", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    cells = sio.loadmat(tmp_path / "SubmitSrgb.mat")["DenoisedBlocksSrgb"]
    assert cells.shape == (2, 2)
    want = from_float(reference(base / "student.pth", truth["noisy"][1, 0]), "uint8")
    np.testing.assert_array_equal(cells[1, 0], want)


def test_dnd_from_v73_tree(world, cli, tmp_path):
    base, truth = world
    code, _, err = cli(
        "evaluate", "-m", base / "student.pth", "--set", "dnd", "--data", base / "prep",
        "--batch-size", "1", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    crop = sio.loadmat(tmp_path / "0002_02.mat")["Idenoised_crop"]
    noisy = dnd_crop(truth["dnd_imgs"][1], truth["dnd_boxes"][1][1])
    want = np.clip(reference(base / "student.pth", noisy), 0, 1)
    np.testing.assert_allclose(crop, want, atol=1e-6)
    bundle = sio.loadmat(tmp_path / "bundled" / "0002.mat")["Idenoised"]
    assert bundle.shape == (1, 2) and bundle[0, 1].shape == (64, 64, 3)
