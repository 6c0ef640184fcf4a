"""The issue-15 and issue-17 report tools read run folders' logs as the engine writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.crops import main as crops
from experiments.own_camera import curve, last_iteration
from experiments.own_camera import main as own_camera
from experiments.precision import runs_of


def fake_run(folder: Path, points: list[tuple[int, float]], last: int) -> Path:
    folder.mkdir(parents=True)
    recs = [{"iteration": i, "loss": 0.5, "lr": 1e-3, "seconds": i * 9.0} for i in range(10, last + 1, 10)]
    recs += [{"iteration": i, "val_psnr": v, "val_ssim": 0.9} for i, v in points]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sorted(recs, key=lambda r: r["iteration"])))
    return folder


def test_minutes_come_from_iterations_and_the_stated_step_time(tmp_path: Path) -> None:
    apr = fake_run(tmp_path / "apr", [(100, 27.0), (200, 30.5)], 200)
    rd = fake_run(tmp_path / "rd", [(60, 31.0)], 60)
    assert curve(apr, 3.0) == [(5.0, 27.0), (10.0, 30.5)]  # the logs' own seconds (9 s/it) are not used
    assert last_iteration(apr) == 200
    assert curve(rd, 0.5, start_min=10.0) == [(10.5, 31.0)]
    out = tmp_path / "fig" / "own.png"
    args = ["--apr", str(apr), "--apr-seconds", "3", "--rd", f"from random={rd}", "--rd-seconds", "0.5",
            "--noisy", "33.4", "--official", "35.5", "--out", str(out)]  # fmt: skip
    assert own_camera(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaptation_curves_start_at_the_official_score(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "adapt", [(50, 35.9), (100, 35.8)], 100)
    out = tmp_path / "adapt.png"
    args = ["--adapt", f"all photos={run}", "--adapt-seconds", "1.2", "--noisy", "33.4", "--official", "35.5",
            "--line", "x8 ensemble=35.8", "--out", str(out)]  # fmt: skip
    assert own_camera(args) == 0
    assert "all photos: 0.0 min 35.50 dB, 1.0 min 35.90 dB, 2.0 min 35.80 dB" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):  # --adapt without its step time
        own_camera(["--adapt", f"x={run}", "--noisy", "33.4", "--official", "35.5", "--out", str(out)])


def test_crops_put_each_model_between_noisy_and_clean(tmp_path: Path, tiny_student: Path, capsys) -> None:
    from aprrd_cli.data.images import read_image, write_image

    rng = np.random.default_rng(0)
    clean = np.full((96, 80, 3), 120, np.uint8)
    write_image(tmp_path / "pairs" / "gt" / "a.png", clean)
    write_image(
        tmp_path / "pairs" / "noisy" / "a.png", np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
    )
    out = tmp_path / "crops.png"
    args = ["--pairs", str(tmp_path / "pairs"), "--image", "a.png", "--model", f"one={tiny_student}",
            "--model", f"two={tiny_student}", "--size", "64", "--out", str(out)]  # fmt: skip
    assert crops(args) == 0
    img, _ = read_image(out)
    assert img.shape[0] > 64 and img.shape[1] >= 4 * 64  # four panels: noisy, one, two, ground truth
    printed = capsys.readouterr().out
    assert printed.count(" dB / ") == 2 and "one:" in printed and "two:" in printed
    with pytest.raises(SystemExit):
        crops([*args[:2], "--image", "b.png", *args[4:]])


def test_precision_pairs_are_found_by_seed_and_precision(tmp_path: Path) -> None:
    for name in ("s0-fp32", "s0-bf16", "s1-bf16"):
        (tmp_path / "cc15" / name).mkdir(parents=True)
    (tmp_path / "cc15" / "notes.txt").write_text("")
    runs = runs_of(tmp_path, "cc15")
    assert sorted(runs) == [(0, "bf16"), (0, "fp32"), (1, "bf16")]
    assert runs[(1, "bf16")] == tmp_path / "cc15" / "s1-bf16"


def test_transplant_variants_copy_freeze_and_slow_what_they_say(official_student_path: Path) -> None:
    import torch

    from aprrd_cli.models.checkpoint import load_model
    from experiments.teacher_transplant import make_teacher

    student = load_model(official_student_path).model.state_dict()
    key = "unet.enc3.conv1.conv.weight"
    copied, groups = make_teacher("copied", official_student_path, 0)
    assert torch.equal(copied.state_dict()[key], student[key]) and [g["factor"] for g in groups] == [1.0]
    random, _ = make_teacher("random", official_student_path, 0)
    assert not torch.equal(random.state_dict()[key], student[key])
    slow, groups = make_teacher("copied-slow", official_student_path, 0)
    slow_names = {id(p) for p in groups[0]["params"]}
    named = dict(slow.named_parameters())
    assert [g["factor"] for g in groups] == [0.1, 1.0]
    assert id(named[key]) in slow_names and id(named["nin_C.weight"]) not in slow_names
    assert id(named["unet.dec1.conv2.conv.weight"]) not in slow_names  # 96 outputs: the student's has 3
    frozen, groups = make_teacher("copied-frozen", official_student_path, 0)
    trained = {k for k, p in frozen.named_parameters() if p.requires_grad}
    assert trained == {"unet.dec1.conv2.conv.weight", "unet.dec1.conv2.conv.bias"} | {
        f"nin_{c}.{t}" for c in "ABC" for t in ("weight", "bias")
    }
    assert sum(len(g["params"]) for g in groups) == len(trained)
