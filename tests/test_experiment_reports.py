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
