"""Evaluation protocols, submission files and ``aprrd evaluate`` on tiny fake sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.pairs import load_pairs
from aprrd_cli.data.tensors import from_float, to_tensor
from aprrd_cli.evaluation.protocols import evaluate_sidd_val, score_model
from aprrd_cli.evaluation.submission import SiddOptionalData, write_dnd_image, write_sidd_submission
from aprrd_cli.inference import Denoiser, Runner
from aprrd_cli.models import build
from aprrd_cli.models.checkpoint import load_model, save_model
from aprrd_cli.utils.dihedral import dihedral, undo_dihedral

CPU = torch.device("cpu")


def sk_scores(den: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """The independent computation: skimage on the uint8 images."""
    p = peak_signal_noise_ratio(gt, den, data_range=255)
    s = structural_similarity(
        den, gt, gaussian_weights=True, use_sample_covariance=False, channel_axis=2, data_range=255
    )
    return p, s


@pytest.fixture(scope="module")
def student_path(tmp_path_factory) -> Path:
    """A small random student in our checkpoint format (no training needed to test plumbing)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "student.pth"
    save_model(path, build("nbsn-1.00M"), iteration=0)
    return path


@pytest.fixture(scope="module")
def denoiser(student_path) -> Denoiser:
    return Denoiser(load_model(student_path).model, CPU, tile=0)


def smooth_images(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint8, clean uint8) with some structure, so scores are not degenerate."""
    yy, xx = np.meshgrid(np.linspace(0, 1, shape[-3]), np.linspace(0, 1, shape[-2]), indexing="ij")
    base = np.stack((xx, yy, (xx + yy) / 2), axis=-1)
    clean = np.broadcast_to(base, shape) * rng.uniform(0.5, 1.0, shape[:-3] + (1, 1, 3))
    noisy = clean + rng.normal(0, 0.08, shape)
    return from_float(noisy, "uint8"), from_float(clean, "uint8")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """Prepared eval sets in the store's on-disk layout: SIDD 2 images x 3 blocks, DND 2 x 2, all 64x64."""
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    noisy, gt = smooth_images(rng, (2, 3, 64, 64, 3))
    for name, arrays in (("sidd-val", {"noisy": noisy, "gt": gt}), ("sidd-bench", {"noisy": noisy})):
        (root / name).mkdir()
        for key, arr in arrays.items():
            np.save(root / name / f"{key}.npy", arr)
        (root / name / "meta.json").write_text(json.dumps({"images": ["s1", "s2"]}))
    (root / "dnd").mkdir()
    np.save(root / "dnd" / "noisy.npy", noisy[:, :2].astype(np.float32) / 255.0)
    boxes = [[[1, 1, 64, 64], [65, 1, 128, 64]]] * 2
    (root / "dnd" / "meta.json").write_text(json.dumps({"images": ["0001", "0002"], "boxes": boxes}))
    return root


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    noisy, gt = smooth_images(rng, (2, 40, 48, 3))
    for sub, arr in (("noisy", noisy), ("gt", gt)):
        for i, name in enumerate(("a.png", "b.png")):
            write_image(tmp_path / "pairs" / sub / name, arr[i])
    return tmp_path / "pairs"


# ---------------------------------------------------------------- library


def test_transforms_are_the_eight_dihedral_maps():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    seen = set()
    for k in range(8):
        t = dihedral(x, k)
        assert torch.equal(undo_dihedral(t, k), x)
        seen.add(tuple(t[0, 0].flatten().tolist()))
    assert len(seen) == 8


def test_ensemble_is_the_mean_of_the_mapped_back_outputs(denoiser):
    x = to_tensor(smooth_images(np.random.default_rng(2), (1, 32, 64, 3))[0])
    want = sum(undo_dihedral(denoiser(dihedral(x, k)), k) for k in range(8)) / 8
    got = Runner(denoiser, ensemble=True)(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, denoiser(x), atol=1e-4)


def test_sidd_val_blocks_match_an_independent_computation(denoiser, prep):
    noisy, gt = np.load(prep / "sidd-val" / "noisy.npy"), np.load(prep / "sidd-val" / "gt.npy")
    done = []
    scores = evaluate_sidd_val(Runner(denoiser), noisy, gt, {"images": ["s1", "s2"]}, 4, on_batch=done.append)
    assert scores.psnr.shape == (2, 3) and done == [4, 2] and scores.names == ["s1", "s2"]
    flat_noisy, flat_gt = noisy.reshape(6, 64, 64, 3), gt.reshape(6, 64, 64, 3)
    # the same batches as the protocol (float32 results depend slightly on the batch size)
    outs = torch.cat([denoiser(to_tensor(flat_noisy[a:b])) for a, b in ((0, 4), (4, 6))])
    for k in range(6):
        p, s = sk_scores(from_float(outs[k].numpy().transpose(1, 2, 0), "uint8"), flat_gt[k])
        assert scores.psnr[k // 3, k % 3] == pytest.approx(p, abs=1e-9)
        assert scores.ssim[k // 3, k % 3] == pytest.approx(s, abs=1e-9)
    summary = scores.summary()
    assert summary["n"] == 6 and summary["psnr"] == pytest.approx(scores.psnr.mean())
    assert summary["images"][1]["blocks"]["ssim"] == pytest.approx(scores.ssim[1].tolist())


def test_score_model_with_a_plain_denoiser(denoiser, pairs_dir):
    pairs = load_pairs(pairs_dir)
    assert [p[0] for p in pairs] == ["a.png", "b.png"] and pairs[0][1].dtype == np.uint8
    report = score_model(denoiser, pairs)
    assert set(report) == {"n", "psnr", "ssim", "seconds_per_megapixel", "images"}
    y = denoiser(to_tensor(pairs[1][1]))[0].numpy().transpose(1, 2, 0)
    p, s = sk_scores(from_float(y, "uint8"), pairs[1][2])
    assert report["images"][1] == {"name": "b.png", "psnr": pytest.approx(p), "ssim": pytest.approx(s)}
    assert report["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["images"]]))
    assert report["seconds_per_megapixel"] > 0


def test_sidd_submission_reads_back(tmp_path):
    blocks = np.random.default_rng(3).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    path = write_sidd_submission(tmp_path, blocks, 0.5, SiddOptionalData(method_name="X", notes="n"))
    m = sio.loadmat(path)
    assert m["DenoisedBlocksSrgb"].shape == (2, 3)
    np.testing.assert_array_equal(m["DenoisedBlocksSrgb"][1, 2], blocks[1, 2])
    assert m["TimeMPSrgb"].item() == 0.5
    assert m["OptionalData"]["MethodName"][0, 0][0] == "X" and m["OptionalData"]["Notes"][0, 0][0] == "n"
    assert [p.name for p in tmp_path.iterdir()] == ["SubmitSrgb.mat"]  # no temporary left


def test_dnd_files_read_back(tmp_path):
    crops = [np.full((8, 10, 3), v, np.float32) for v in (0.2, 1.5)]
    written = write_dnd_image(tmp_path, "0007", crops)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["0007_01.mat", "0007_02.mat", "bundled/0007.mat"]
    crop = sio.loadmat(tmp_path / "0007_02.mat")["Idenoised_crop"]
    assert crop.dtype == np.float32 and crop.shape == (8, 10, 3) and crop.max() == 1.0  # clipped to [0, 1]
    b = sio.loadmat(tmp_path / "bundled" / "0007.mat")
    assert b["Idenoised"].shape == (1, 2) and b["Idenoised"][0, 0].dtype == np.float32
    assert b["israw"].item() == 0 and b["eval_version"][0] == "1.0"


# ---------------------------------------------------------------- the command


def test_cli_sidd_val_json_and_pictures(cli, student_path, prep, tmp_path, denoiser):
    report_path = tmp_path / "val.json"
    code, out, err = cli(
        "evaluate", "--model", student_path, "--set", "sidd-val", "--data", prep, "--json", report_path,
        "--out", tmp_path / "o", "--save-images", "--batch-size", "4", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["set"] == "sidd-val" and report["n"] == 6 and [r["name"] for r in report["images"]] == ["s1", "s2"]
    noisy, gt = np.load(prep / "sidd-val" / "noisy.npy"), np.load(prep / "sidd-val" / "gt.npy")
    ref = evaluate_sidd_val(Runner(denoiser), noisy, gt, {}, 6)
    assert report["psnr"] == pytest.approx(ref.psnr.mean(), abs=1e-9)
    assert report["ssim"] == pytest.approx(ref.ssim.mean(), abs=1e-9)
    assert "mean over 6 blocks" in out and "s2" in out
    pics = sorted(p.name for p in (tmp_path / "o" / "pictures").iterdir())
    assert pics == ["s1_01.png", "s2_01.png"]
    img, _ = read_image(tmp_path / "o" / "pictures" / "s1_01.png")
    assert img.shape[1] == 3 * 64 + 2 * 4 and img.shape[0] > 64


def test_cli_sidd_bench_submission(cli, student_path, prep, tmp_path):
    code, _, err = cli(
        "evaluate", "--model", student_path, "--set", "sidd-bench", "--data", prep, "--out", tmp_path,
        "--method-name", "Mine", "--authors", "A. B.", "--cpu", "--notes", "test run", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    m = sio.loadmat(tmp_path / "SubmitSrgb.mat")
    cells = m["DenoisedBlocksSrgb"]
    assert cells.shape == (2, 3) and all(c.dtype == np.uint8 and c.shape == (64, 64, 3) for c in cells.flat)
    assert m["TimeMPSrgb"].item() > 0
    od = m["OptionalData"]
    assert od["MethodName"][0, 0][0] == "Mine" and od["Authors"][0, 0][0] == "A. B."
    assert od["UsesGPU"][0, 0][0] == "no" and od["Notes"][0, 0][0] == "test run"
    assert "SubmitSrgb.mat" in err


def test_cli_dnd_submission(cli, student_path, prep, tmp_path):
    code, _, err = cli("evaluate", "-m", student_path, "--set", "dnd", "--data", prep, "--out", tmp_path, "--ensemble")
    assert code == 0, err
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mat"))
    assert names == ["0001_01.mat", "0001_02.mat", "0002_01.mat", "0002_02.mat", "bundled/0001.mat", "bundled/0002.mat"]
    crop = sio.loadmat(tmp_path / "0002_01.mat")["Idenoised_crop"]
    assert crop.dtype == np.float32 and crop.shape == (64, 64, 3) and 0 <= crop.min() and crop.max() <= 1
    b = sio.loadmat(tmp_path / "bundled" / "0002.mat")
    assert b["Idenoised"].shape == (1, 2)
    np.testing.assert_array_equal(b["Idenoised"][0, 0], crop)
    assert b["israw"].item() == 0 and b["eval_version"][0] == "1.0"
    assert "server expects 50 x 20" in " ".join(err.split())  # a trial set is flagged as incomplete


def test_cli_pairs_with_teacher_and_pictures(cli, random_teacher_path, pairs_dir, tmp_path):
    code, out, err = cli(
        "evaluate", "-m", random_teacher_path, "--pairs", pairs_dir, "--save-images", "--out", tmp_path / "o",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert code == 0, err
    assert "teacher" in err and "a.png" in out and "mean over 2 images" in out
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 2
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]


def test_cli_pairs_official_student_on_sidd7(cli, official_student_path, sidd7, tmp_path):
    """The field's numbers for the official weights, via an independent computation (skimage)."""
    names = ["NOISY_6.png", "NOISY_7.png"]  # the two 256x256 crops: a few seconds on 2 cores
    for sub in ("noisy", "gt"):
        (tmp_path / "p" / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(sidd7 / sub / n, tmp_path / "p" / sub / n)
    report_path = tmp_path / "r.json"
    code, out, err = cli("evaluate", "-m", official_student_path, "--pairs", tmp_path / "p", "--json", report_path)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert set(report) == DESCRIBED | {"n", "psnr", "ssim", "seconds_per_megapixel", "images"} and report["n"] == 2
    den = Denoiser(load_model(official_student_path).model, CPU)
    for rec, n in zip(report["images"], names, strict=True):
        noisy, _ = read_image(sidd7 / "noisy" / n)
        gt, _ = read_image(sidd7 / "gt" / n)
        y = den(to_tensor(noisy))[0].numpy().transpose(1, 2, 0)
        p, s = sk_scores(from_float(y, "uint8"), gt)
        assert (
            rec["name"] == n and rec["psnr"] == pytest.approx(p, abs=1e-4) and rec["ssim"] == pytest.approx(s, abs=1e-4)
        )
        assert rec["psnr"] > 36  # real denoising: the noisy inputs score about 24 dB


# ---------------------------------------------------------------- one-line errors


def _one_line_error(code: int, err: str, *phrases: str) -> None:
    """One message (rich wraps it at the terminal width), no traceback, a non-zero exit."""
    assert code != 0
    assert err.count("error:") == 1 and err.lstrip().startswith("error:") and "Traceback" not in err, err
    text = " ".join(err.split())
    for p in phrases:
        assert p in text, text


def test_error_empty_pairs_folder(cli, student_path, tmp_path):
    (tmp_path / "p" / "noisy").mkdir(parents=True)
    (tmp_path / "p" / "gt").mkdir()
    _one_line_error(*cli("evaluate", "-m", student_path, "--pairs", tmp_path / "p")[::2], "holds no PNG")


def test_error_missing_gt_folder(cli, student_path, tmp_path):
    (tmp_path / "p" / "noisy").mkdir(parents=True)
    _one_line_error(*cli("evaluate", "-m", student_path, "--pairs", tmp_path / "p")[::2], "has no gt/ folder")


def test_error_unmatched_names(cli, student_path, pairs_dir):
    (pairs_dir / "gt" / "b.png").rename(pairs_dir / "gt" / "c.png")
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir)
    _one_line_error(code, err, "names do not match", "b.png", "c.png")


def test_error_size_mismatch(cli, student_path, pairs_dir):
    write_image(pairs_dir / "gt" / "a.png", np.zeros((32, 48, 3), np.uint8))
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir)
    _one_line_error(code, err, "a.png", "48x40", "48x32")


def test_error_missing_prepared_set(cli, student_path, tmp_path):
    code, _, err = cli("evaluate", "-m", student_path, "--set", "sidd-val", "--data", tmp_path)
    _one_line_error(code, err, "sidd-val", "prepare-data")


def test_error_missing_model(cli, pairs_dir, tmp_path):
    code, _, err = cli("evaluate", "-m", tmp_path / "none.pth", "--pairs", pairs_dir)
    _one_line_error(code, err, "no model at")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [((), "exactly one"), (("--pairs", "x", "--set", "dnd"), "exactly one"), (("--set", "kodak"), "unknown --set")],
)
def test_error_bad_choice(cli, args, phrase):
    code, _, err = cli("evaluate", *args)
    assert code == 2
    _one_line_error(code, err, phrase)


def test_error_missing_prepared_set_names_the_files_it_needs(cli, student_path, tmp_path):
    code, _, err = cli("evaluate", "-m", student_path, "--set", "sidd-val", "--data", tmp_path)
    _one_line_error(code, err, "ValidationNoisyBlocksSrgb.mat and ValidationGtBlocksSrgb.mat")
    code, _, err = cli("evaluate", "-m", student_path, "--set", "dnd", "--data", tmp_path)
    _one_line_error(code, err, "dnd_2017/info.mat")


def test_error_colour_noisy_with_grey_reference(cli, student_path, pairs_dir):
    """Scoring an RGB output against a grey reference gave 16 dB and exit 0 (issue 13)."""
    write_image(pairs_dir / "gt" / "b.png", np.zeros((40, 48, 1), np.uint8))
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir)
    _one_line_error(code, err, "b.png is colour in noisy/ but b.png is grey in gt/", "same colour channels")


def test_pairs_may_differ_in_extension(cli, student_path, pairs_dir, tmp_path):
    gt_b = pairs_dir / "gt" / "b.png"
    arr = read_image(gt_b)[0]
    gt_b.unlink()
    write_image(pairs_dir / "gt" / "b.tif", arr)
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir, "--json", tmp_path / "s.json")
    assert code == 0, err
    report = json.loads((tmp_path / "s.json").read_text())
    assert [r["name"] for r in report["images"]] == ["a.png", "b.png"]
    write_image(pairs_dir / "gt" / "b.jpg", arr)  # now two candidates for one pair
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir)
    _one_line_error(code, err, "b.jpg and b.tif: two images for one pair", "keep one of them")


def test_one_image_is_one_image(cli, student_path, pairs_dir):
    for sub in ("noisy", "gt"):
        (pairs_dir / sub / "b.png").unlink()
    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir)
    assert code == 0, err
    assert "over 1 image," in " ".join(err.split()) and "over 1 images" not in err


DESCRIBED = {"aprrd", "model", "device", "precision", "precision_reason", "ensemble", "tiling", "pairs", "photos",
             "set", "data"}  # fmt: skip


def test_the_json_says_what_was_measured_in_every_mode(cli, student_path, pairs_dir, tmp_path):
    """Two score files from different models, or with and without --ensemble, could not be told
    apart: every report records the model (path, network, SHA-256), precision, ensemble, tiling,
    the pairs, photos or set, aprrd's version and the date, with the same keys in every mode."""
    import datetime
    import hashlib

    from aprrd_cli import __version__

    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir, "--ensemble", "--tile", "0",
                       "--json", tmp_path / "p.json", "--save-images", "--out", tmp_path / "pics")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "p.json").read_text())
    assert DESCRIBED <= set(report) and report["n"] == 2 and len(report["images"]) == 2
    assert report["model"] == {
        "name": str(student_path), "path": str(student_path.resolve()),
        "sha256": hashlib.sha256(student_path.read_bytes()).hexdigest(), "kind": "student",
        "network": "nbsn-1.00M", "format": "aprrd", "iteration": 0,
    }  # fmt: skip
    assert report["precision"] == "fp32" and report["ensemble"] is True
    assert report["tiling"] == {"tile": 0, "overlap": 96, "patch_windows": False}
    assert report["pairs"] == str(pairs_dir.resolve()) and report["set"] is None and report["photos"] is None
    assert report["aprrd"]["version"] == __version__
    when = datetime.datetime.fromisoformat(report["aprrd"]["date"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 600

    code, _, err = cli("evaluate", "-m", student_path, "--photos", pairs_dir / "noisy", "--reference", "none",
                       "--json", tmp_path / "ph.json")  # fmt: skip
    photos = json.loads((tmp_path / "ph.json").read_text())
    assert DESCRIBED <= set(photos) and photos["ensemble"] is False and photos["tiling"]["tile"] == "auto"
    assert photos["photos"] == str((pairs_dir / "noisy").resolve()) and photos["pairs"] is None
    assert photos["model"]["sha256"] == report["model"]["sha256"]
    assert {k: type(v) for k, v in photos["aprrd"].items()} == {k: type(v) for k, v in report["aprrd"].items()}


def test_the_pictures_name_the_model_and_give_the_noisy_psnr(cli, student_path, pairs_dir, tmp_path):
    """--save-images pictures did not say which model made them, nor how noisy the input was."""
    from aprrd_cli.evaluation.pictures import LABEL_HEIGHT, panel_labels
    from aprrd_cli.evaluation.report import Measured

    noisy, _ = read_image(pairs_dir / "noisy" / "a.png")
    gt, _ = read_image(pairs_dir / "gt" / "a.png")
    labels = panel_labels(noisy, gt, (31.5, 0.9))
    noisy_db = peak_signal_noise_ratio(gt, noisy, data_range=255)
    assert labels == [f"noisy {noisy_db:.2f} dB", "denoised 31.50 dB / 0.9000", "ground truth"]
    measured = Measured("official", Path("m.pth"), load_model(student_path), "cpu", "fp32", "", True, None, 96, False)
    assert measured.caption == "official (student nbsn-1.00M), x8 self-ensemble"

    code, _, err = cli("evaluate", "-m", student_path, "--pairs", pairs_dir, "--ensemble", "--save-images",
                       "--out", tmp_path / "pics")  # fmt: skip
    assert code == 0, err
    picture, _ = read_image(tmp_path / "pics" / "a.png")
    assert picture.shape[0] == 40 + 2 * LABEL_HEIGHT  # the panels' labels, and the caption's strip above them
