"""Real signals on a real process: SIGTERM saves a checkpoint and exits 130; kill -9 keeps
the previous checkpoint intact and the run resumes from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import write_image
from aprrd_cli.models.checkpoint import read_raw

RUNNER = "import sys; from aprrd_cli.cli import main; sys.exit(main())"
ARGS = ("--iters", "5000", "--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu")
ARGS += ("--threads", "1", "--log-every", "1", "--save-every", "3")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    from aprrd_cli.cli import main

    root = tmp_path_factory.mktemp("sig")
    write_image(root / "photos" / "p.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert main(["prepare-data", str(root / "photos"), "--out", str(root / "prep")]) == 0
    return root / "prep"


def start(prep: Path, run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", RUNNER, "train-apr", "--data", str(prep), "--run-dir", str(run), *ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_iteration(proc: subprocess.Popen, run: Path, n: int, timeout: float = 120) -> int:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        log = run / "log.jsonl"
        lines = [ln for ln in log.read_text().splitlines() if ln.endswith("}")] if log.exists() else []
        if lines and json.loads(lines[-1])["iteration"] >= n:
            return json.loads(lines[-1])["iteration"]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no iteration {n} within {timeout} s")


@pytest.mark.slow
def test_sigterm_saves_and_kill9_keeps_the_previous_checkpoint(prep, tmp_path):
    run = tmp_path / "run"
    proc = start(prep, run)
    wait_for_iteration(proc, run, 4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted after iteration" in " ".join(err.split())
    stopped = read_raw(run / "checkpoints" / "last.pth")["iteration"]
    logged = [json.loads(ln)["iteration"] for ln in (run / "log.jsonl").read_text().splitlines()]
    assert stopped == logged[-1] >= 4  # the checkpoint holds the last completed iteration

    proc = start(prep, run, "--resume")
    wait_for_iteration(proc, run, stopped + 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    raw = read_raw(run / "checkpoints" / "last.pth")  # intact, loadable
    assert raw["iteration"] >= stopped and raw["iteration"] % 3 == 0 or raw["iteration"] == stopped

    again = raw["iteration"] + 2
    proc = start(prep, run, "--resume", "--stop-at", str(again))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert read_raw(run / "checkpoints" / "last.pth")["iteration"] == again
    assert not list(run.rglob("*.part"))
    logged = [json.loads(ln)["iteration"] for ln in (run / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, again + 1))  # steps lost to the kill were cut from the log and redone


@pytest.mark.slow
def test_a_timed_save_survives_kill9_and_resumes_bit_for_bit(prep, tmp_path):
    """--save-minutes: a run whose --save-every never comes still saves by the clock, so a kill -9
    loses at most that much; the run resumes from that save and ends exactly where an
    uninterrupted run ends."""
    run = tmp_path / "run"
    proc = start(prep, run, "--save-every", "100000", "--save-minutes", "0.001")  # every 60 ms
    wait_for_iteration(proc, run, 3)
    ckpt = run / "checkpoints" / "last.pth"
    end = time.time() + 60
    while not ckpt.exists() and time.time() < end:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = read_raw(ckpt)["iteration"]
    assert 1 <= saved < 100000  # written by the clock: iteration 100000 never came

    again = saved + 3
    proc = start(prep, run, "--resume", "--stop-at", str(again))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    reference = start(prep, tmp_path / "ref", "--save-minutes", "0", "--stop-at", str(again))
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err[-2000:]
    resumed, uninterrupted = (read_raw(r / "checkpoints" / "last.pth") for r in (run, tmp_path / "ref"))
    assert resumed["iteration"] == uninterrupted["iteration"] == again
    for k, v in uninterrupted["model_state_dict"].items():
        assert torch.equal(resumed["model_state_dict"][k], v), k
