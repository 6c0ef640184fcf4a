"""The public API (aprrd_cli/api.py) and torch.hub (hubconf.py): the same outputs as the commands,
the same kinds of images back, options checked, and the caller's process left as it was."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import aprrd_cli as aprrd
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.models import zoo
from tests.helpers import REPO, rgb


def test_import_and_version_stay_free_of_torch() -> None:
    code = "import sys, aprrd_cli; assert 'torch' not in sys.modules; aprrd_cli.load; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert {"load", "Model", "psnr", "ssim", "AprrdError"} <= set(dir(aprrd))


def test_arrays_tensors_and_files_equal_the_command(cli, tiny_student, tmp_path) -> None:
    img = rgb(40, 52, seed=3)
    write_image(tmp_path / "in.png", img)
    assert cli("denoise", "-m", tiny_student, "--precision", "fp32", tmp_path / "in.png", tmp_path / "cli.png")[0] == 0
    model = aprrd.load(tiny_student, device="cpu", precision="fp32")
    assert model.kind == "student" and model.arch == "nbsn-1.00M" and model.precision == "fp32"
    assert model.denoise_file(tmp_path / "in.png", tmp_path / "api.png") == tmp_path / "api.png"
    by_cli = read_image(tmp_path / "cli.png")[0]
    assert np.array_equal(read_image(tmp_path / "api.png")[0], by_cli)
    out = model.denoise(img)
    assert out.dtype == np.uint8 and np.array_equal(out, by_cli)
    # the same kind back: grey, 16-bit, float; tensors keep their dtype
    assert model.denoise(img[:, :, 0]).shape == (40, 52)
    assert model.denoise(img.astype(np.uint16) * 257).dtype == np.uint16
    f64 = model.denoise(img / 255.0)
    assert f64.dtype == np.float64 and np.abs(f64 * 255 - by_cli).max() <= 0.5 + 1e-4
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    y = model.denoise(t)
    assert y.dtype == torch.float32 and y.shape == t.shape and not y.is_inference()
    assert np.array_equal(np.rint(y[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), by_cli)
    assert model.denoise(t.double()).dtype == torch.float64
    ens = model.denoise(img, ensemble=True)
    assert ens.shape == img.shape and not np.array_equal(ens, out)


def test_tiling_and_scores_match_the_commands(tiny_student, tmp_path, cli) -> None:
    img = rgb(150, 170, seed=5)
    whole = aprrd.load(tiny_student, device="cpu", precision="fp32", tile=0).denoise(img)
    tiled = aprrd.load(tiny_student, device="cpu", precision="fp32", tile=64, overlap=32).denoise(img)
    write_image(tmp_path / "in.png", img)
    args = ("-m", tiny_student, "--precision", "fp32", "--tile", "64", "--overlap", "32", tmp_path / "in.png")
    assert cli("denoise", *args, tmp_path / "t.png")[0] == 0
    assert np.array_equal(read_image(tmp_path / "t.png")[0], tiled) and not np.array_equal(whole, tiled)
    clean = rgb(150, 170, seed=6)
    for sub, arr in (("noisy", img), ("gt", clean)):
        write_image(tmp_path / "p" / sub / "a.png", arr)
    code, _, _ = cli("evaluate", "-m", tiny_student, "--pairs", tmp_path / "p", "--json", tmp_path / "s.json")
    import json

    report = json.loads((tmp_path / "s.json").read_text())
    assert aprrd.psnr(whole, clean) == pytest.approx(report["psnr"], abs=1e-9)
    assert aprrd.ssim(whole, clean) == pytest.approx(report["ssim"], abs=1e-9)
    assert aprrd.psnr(whole / 255.0, clean) == aprrd.psnr(whole, clean)  # float in [0, 1]: the same 8-bit rounding


def test_options_and_inputs_are_checked(tiny_student) -> None:
    with pytest.raises(aprrd.AprrdError, match="tile=10 is below the 64-pixel minimum"):
        aprrd.load(tiny_student, tile=10)
    with pytest.raises(aprrd.AprrdError, match="give patch_windows=True or tile, not both"):
        aprrd.load(tiny_student, tile=128, patch_windows=True)
    with pytest.raises(aprrd.AprrdError, match="precision= must be auto, fp32 or bf16"):
        aprrd.load(tiny_student, precision="fp16")
    with pytest.raises(aprrd.AprrdError, match="no model at"):
        aprrd.load("no/such.pth")
    model = aprrd.load(tiny_student, device="cpu")
    with pytest.raises(aprrd.AprrdError, match="expected an H x W or H x W x C image"):
        model.denoise(np.zeros((3, 20, 20, 3), np.uint8))
    with pytest.raises(aprrd.AprrdError, match="looks like a 0..255 export"):
        model.denoise(rgb(20, 20).astype(np.float32))
    with pytest.raises(aprrd.AprrdError, match="expected a float B x 3 x H x W tensor"):
        model.denoise(torch.zeros(3, 20, 20))
    # warnings go through Python's warnings too, so a caller can filter them or make them errors
    with pytest.warns(aprrd.AprrdWarning, match=r"image: 2 values outside \[0, 1\] were clipped"):
        model.denoise(np.array([[-0.1, 0.5], [0.5, 1.2]], dtype=np.float32))


def test_a_call_leaves_the_process_as_it_was(tiny_student) -> None:
    torch.set_num_threads(1)
    before = (torch.get_num_threads(), torch.backends.cudnn.conv.fp32_precision, torch.is_grad_enabled())
    model = aprrd.load(tiny_student, device="cpu")
    model.denoise(rgb(40, 40))
    model.denoise(torch.rand(1, 3, 40, 40))
    assert (torch.get_num_threads(), torch.backends.cudnn.conv.fp32_precision, torch.is_grad_enabled()) == before


def test_torch_hub_loads_the_official_students_from_the_checkout(mirror, official_student_path) -> None:
    mirror.put(zoo.NAMED["official"], official_student_path.read_bytes())
    net = torch.hub.load(str(REPO), "official", source="local")
    assert isinstance(net, torch.nn.Module) and not net.training
    x = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x)
    want = aprrd.load("official", device="cpu", precision="fp32", tile=0).denoise(x)
    assert y.shape == x.shape and (y.clamp(0, 1) - want).abs().max() < 1e-5
    assert mirror.requests == ["/" + zoo.NAMED["official"].path]  # fetched once, then from the cache
    random = torch.hub.load(str(REPO), "official_102", source="local", pretrained=False)
    assert sum(p.numel() for p in random.parameters()) == 1_021_107
    ours = torch.hub.load(str(REPO), "checkpoint", source="local", path=str(official_student_path))
    with torch.no_grad():
        assert torch.equal(ours(x), y)
