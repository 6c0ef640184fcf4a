"""The issue-15 and issue-17 report tools read run folders' logs as the engine writes them."""

from __future__ import annotations

import json
from pathlib import Path

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
