"""DDP on the CPU: ``torchrun`` with 2 gloo processes equals one process with the combined batch.

Each rank takes its half of every global batch (the sampler) and the matching rows of the
global APR draw (the stage), and DDP averages the two halves' gradients: the same gradient
as one process, up to the order of floating-point sums. Adam's first steps move each weight
by about ``lr * sign(gradient)``, so a gradient within rounding of zero may flip sign: the
bound on any single weight is ``2 * lr * iterations``; in practice almost all weights agree
to ~1e-7.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aprrd_cli.models.checkpoint import load_model
from tests.helpers import random_store

ITERS, LR = 2, 1e-3
ARGS = ("--iters", str(ITERS), "--batch-size", "4", "--patch-size", "32", "--width", "8", "--lr", str(LR))
ARGS += ("--device", "cpu", "--threads", "1", "--log-every", "1", "--precision", "fp32")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    return random_store(tmp_path_factory.mktemp("ddp"), seed=1)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(prep, tmp_path, cli):
    """With a validation at every iteration: rank 0 validates while rank 1 waits at the barrier."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    val = ("--val", str(prep / "val"), "--val-every", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    cmd += ["-m", "aprrd_cli", "train-apr", "--data", str(prep), "--run-dir", str(tmp_path / "ddp"), *ARGS, *val]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert (tmp_path / "ddp" / "teacher.pth").exists(), proc.stdout[-2000:] + proc.stderr[-3000:]
    said = " ".join(proc.stderr.split())  # rich may wrap the line anywhere between words
    assert "2 processes (DDP)" in said, proc.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2

    code, _, err = cli("train-apr", "--data", prep, "--run-dir", tmp_path / "one", *ARGS, *val)
    assert code == 0, err

    def losses(run: Path) -> list[float]:
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if "loss" in r]

    vals = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in vals if "val_psnr" in r] == list(range(1, ITERS + 1))

    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "one"), rel=1e-5), proc.stderr[-3000:]
    a = load_model(tmp_path / "ddp" / "teacher.pth").model.state_dict()
    b = load_model(tmp_path / "one" / "teacher.pth").model.state_dict()
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert diff.max() <= 2 * LR * ITERS
    assert torch.quantile(diff, 0.999) < 1e-5
