"""bf16 where the CPU computes it natively (issue 15): the detection, what auto chooses and says,
inference in bf16 (whole and tiled), and the layers that stay fp32 under autocast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aprrd_cli import device as dev
from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.inference import Denoiser
from aprrd_cli.models import ATBSN, NBSN100, NBSN102
from tests.helpers import flat, rgb

CPU = torch.device("cpu")
AMD = "flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni\n"
INTEL_AMX = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
OLD = "flags\t\t: fpu vme avx2 avx512f avx512bw\n"
ARM = "Features\t: fp asimd sve bf16 i8mm\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the detection at a fake /proc/cpuinfo."""
    monkeypatch.delenv("APRRD_CPU_BF16", raising=False)
    path = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(file, *a, **k):
        return real_open(path if file == "/proc/cpuinfo" else file, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    return path


@pytest.mark.parametrize(("text", "native", "flags"), [
    (AMD, True, "avx512_bf16"), (INTEL_AMX, True, "amx_bf16"), (ARM, True, "bf16"), (OLD, False, None),
])  # fmt: skip
def test_detection_reads_the_processors_flags(cpuinfo, text, native, flags) -> None:
    cpuinfo.write_text("processor\t: 0\n" + text)
    got, why = dev.cpu_bf16_native()
    assert got is native
    assert (flags in why) if flags else "no native bf16" in why
    precision, reason = dev.auto_precision(CPU)
    assert precision == ("bf16" if native else "fp32") and reason.startswith("auto: ")


def test_unreadable_flags_are_not_a_guess(cpuinfo) -> None:
    assert dev.cpu_bf16_native() == (
        False,
        "this CPU's flags could not be read (/proc/cpuinfo), so bf16 is not assumed",
    )


def test_the_environment_overrides_both_ways(cpuinfo, monkeypatch) -> None:
    cpuinfo.write_text(AMD)
    monkeypatch.setenv("APRRD_CPU_BF16", "0")
    assert dev.cpu_bf16_native() == (False, "APRRD_CPU_BF16=0") and dev.default_precision(CPU) == "fp32"
    cpuinfo.write_text(OLD)
    monkeypatch.setenv("APRRD_CPU_BF16", "1")
    assert dev.cpu_bf16_native() == (True, "APRRD_CPU_BF16=1") and dev.default_precision(CPU) == "bf16"


def test_training_records_the_precision_and_why(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("APRRD_CPU_BF16", "1")
    write_image(tmp_path / "ph" / "p.png", rgb(64, 64))
    assert cli("prepare-data", tmp_path / "ph", "--out", tmp_path / "prep")[0] == 0
    args = ("--iters", "2", "--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu")
    code, _, err = cli("train-apr", "--data", tmp_path / "prep", "--run-dir", tmp_path / "r", *args)
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["precision"] == "bf16" and cfg["precision_reason"] == "auto: APRRD_CPU_BF16=1"
    assert "bf16 (auto: APRRD_CPU_BF16=1)" in flat(err)
    monkeypatch.setenv("APRRD_CPU_BF16", "0")
    code, _, err = cli("train-apr", "--data", tmp_path / "prep", "--run-dir", tmp_path / "r2", *args)
    assert code == 0, err
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["precision"] == "fp32"


def test_denoise_says_it_runs_bf16_and_evaluate_stays_fp32(cli, tiny_student, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("APRRD_CPU_BF16", "1")
    write_image(tmp_path / "in.png", rgb(48, 64))
    code, _, err = cli("denoise", "-m", tiny_student, "--device", "cpu", tmp_path / "in.png", tmp_path / "o.png")
    assert code == 0 and "on cpu (" in err and ", bf16 (auto: APRRD_CPU_BF16=1)" in flat(err)
    code, _, err = cli("denoise", "-m", tiny_student, "--precision", "fp32", tmp_path / "in.png", tmp_path / "f.png")
    assert code == 0 and ", fp32 (asked for)" in flat(err)
    assert read_image(tmp_path / "o.png")[0].shape == read_image(tmp_path / "f.png")[0].shape == (48, 64, 3)
    for sub in ("noisy", "gt"):
        write_image(tmp_path / "p" / sub / "a.png", rgb(32, 32))
    code, _, err = cli("evaluate", "-m", tiny_student, "--pairs", tmp_path / "p")
    assert code == 0 and "(official format) on" not in err and flat(err).count(", fp32") == 1
    code, _, err = cli("denoise", "-m", tiny_student, "--precision", "fp16", tmp_path / "in.png", tmp_path / "x.png")
    assert code == 2 and "--precision must be auto, fp32 or bf16 for inference" in err


@pytest.mark.parametrize("net", [NBSN100, NBSN102])
def test_tiled_and_whole_agree_in_bf16(net) -> None:
    torch.manual_seed(0)
    model = net(width=8).eval()
    x = torch.rand(1, 3, 200, 264)
    whole = Denoiser(model, CPU, tile=0, precision="bf16")(x)
    tiled = Denoiser(model, CPU, tile=64, overlap=96, precision="bf16")(x)
    assert whole.dtype == torch.float32 and (whole - tiled).abs().max().item() < 1 / 255


def test_tiled_and_whole_agree_in_bf16_for_the_official_student(official_student_path, sidd7) -> None:
    from aprrd_cli.models.checkpoint import load_model

    noisy = read_image(sidd7 / "noisy" / "NOISY_0.png")[0]
    x = torch.from_numpy(noisy.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    m = load_model(official_student_path).model
    whole = Denoiser(m, CPU, tile=0, precision="bf16")(x)
    tiled = Denoiser(m, CPU, tile=128, precision="bf16")(x)
    assert (whole - tiled).abs().max().item() * 255 <= 1.0


def test_the_image_layers_stay_fp32_under_autocast(monkeypatch) -> None:
    """The first layer, the last decoder's image skip and the last layer see or make the image in
    float32 under bf16 autocast; the rest runs in bf16."""
    seen: dict[str, torch.dtype] = {}
    torch.manual_seed(0)
    net = NBSN100(width=8).eval()
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.dtype) and None)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(torch.rand(1, 3, 64, 64))
    assert y.dtype == torch.float32
    assert seen["unet.intro.conv"] == torch.float32 and seen["unet.dec1.conv2.conv"] == torch.float32
    assert seen["unet.enc3.conv1.conv"] == torch.bfloat16
    teacher = ATBSN(width=8).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert teacher(torch.rand(1, 3, 64, 64)).dtype == torch.float32


def test_fp32_results_are_unchanged_by_the_fp32_layers(golden, official_student_path) -> None:
    """Outside autocast nothing changes: the official outputs still match the release's (2e-5)."""
    from aprrd_cli.models.checkpoint import load_model

    m = load_model(official_student_path).model
    with torch.no_grad():
        y = m(torch.from_numpy(golden["sidd_256"]))
    assert (y - torch.from_numpy(golden["nbsn_1p00M__sidd_256"])).abs().max().item() < 2e-5


def test_bf16_inference_of_the_official_student_is_within_0_02_db(official_student_path, sidd7) -> None:
    """Measured on all of sidd7 and cc15 (docs/results.md): within 0.005 dB; on two sidd7 crops alone,
    within 0.02."""
    from aprrd_cli.data.pairs import load_pairs
    from aprrd_cli.evaluation.protocols import score_model
    from aprrd_cli.models.checkpoint import load_model

    pairs = [p for p in load_pairs(sidd7) if p[0] in ("NOISY_6.png", "NOISY_7.png")]
    m = load_model(official_student_path).model
    fp32 = score_model(Denoiser(m, CPU, precision="fp32"), pairs)["psnr"]
    bf16 = score_model(Denoiser(m, CPU, precision="bf16"), pairs)["psnr"]
    assert abs(bf16 - fp32) < 0.02, (fp32, bf16)
