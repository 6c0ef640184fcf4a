"""Real signals to the real executable: Ctrl-C and SIGTERM during every command exit 130, leave
no ``*.part`` file, keep what was finished, and a re-run (or ``--resume``) continues; two
``prepare-data`` runs on one store; kill -9 of a store's writer; an interrupt while starting up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.store import open_train_store
from aprrd_cli.models import ATBSN, NBSN100
from aprrd_cli.models.checkpoint import read_raw, save_model
from tests.helpers import rgb

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).with_name("aprrd")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
BIG = 512  # about 45 ms per photo for the denoise test, 1 s for all 24
TRAIN = ["--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu", "--threads", "1"]


def command(*args: object) -> list[str]:
    """The installed ``aprrd`` executable, or the same entry point through this interpreter."""
    head = [str(EXE)] if EXE.exists() else [sys.executable, "-c", "import sys; from aprrd_cli.cli import run; run()"]
    return head + [str(a) for a in args]


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=ENV, capture_output=True, text=True, timeout=timeout)


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 90) -> None:
    end = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the signal (exit {proc.returncode}): {proc.communicate()[1][-800:]}")
        if time.time() > end:
            proc.kill()
            raise AssertionError("the command never reached the point to interrupt")
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen, sig: int) -> str:
    """Send ``sig``; the command must exit 130 with a clean, traceback-free message."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    return err


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def logged(run: Path) -> int:
    log = run / "log.jsonl"
    lines = [ln for ln in log.read_text().splitlines() if ln.endswith("}")] if log.exists() else []
    return json.loads(lines[-1])["iteration"] if lines else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("signals")
    torch.manual_seed(0)
    save_model(r / "student.pth", NBSN100(width=8), 1)
    save_model(r / "teacher.pth", ATBSN(width=8), 1)
    for i in range(24):
        write_image(r / "photos" / f"p{i:02d}.png", rgb(128, 128, i))
        # the width-8 student denoises a 128x128 photo in 5 ms: too fast to stop half-way for sure
        write_image(r / "large" / f"p{i:02d}.png", rgb(BIG, BIG, i))
    return r


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_denoise_folder(world, tmp_path, sig) -> None:
    out = tmp_path / "out"
    proc = start("denoise", world / "large", out, "-m", world / "student.pth", "--device", "cpu", "--threads", "1")
    wait_until(proc, lambda: len(list(out.glob("*.png"))) >= 2)
    interrupt(proc, sig)
    done = sorted(out.glob("*.png"))
    assert 2 <= len(done) < 24 and not partials(out)
    for p in done:  # every file left is a whole image
        assert read_image(p)[0].shape == (BIG, BIG, 3)
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    again = finish("denoise", world / "large", out, "-m", world / "student.pth", "--device", "cpu", "--skip-existing")
    assert again.returncode == 0 and len(list(out.glob("*.png"))) == 24
    assert f"{len(done)} already there" in again.stderr  # continued: the finished ones were not redone
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in done)


def test_prepare_data_sigterm_then_rerun(world, tmp_path) -> None:
    """SIGTERM while an array is half-written: that file goes, the finished ones stay recorded."""
    prep = tmp_path / "prep"
    proc = slow_prepare(0.1, world / "photos", prep)  # unslowed, all 24 photos take 20 ms: the signal would come late
    wait_until(proc, lambda: len(list((prep / "train").glob("*.npy"))) >= 3 and bool(partials(prep)))
    interrupt(proc, signal.SIGTERM)
    assert not partials(prep) and not (prep / ".aprrd.lock").exists()
    index = json.loads((prep / "index.json").read_text())  # written on the way out: finished images recorded
    kept = {e["name"] for e in index["train"]}
    assert 3 <= len(kept) < 24 and kept == {p.stem for p in (prep / "train").glob("*.npy")}
    again = finish("prepare-data", world / "photos", "--out", prep)
    assert again.returncode == 0, again.stderr
    row = next(ln for ln in again.stdout.splitlines() if "folder" in ln)
    assert [int(x) for x in row.split("│")[2:6]] == [24, 24 - len(kept), len(kept), 0]  # finished ones not redone
    assert len(open_train_store(prep)) == 24


# prepare-data on a slow disk: each array stays half-written (a .part file) for DELAY seconds
SLOW_PREPARE = """
import sys, time
import numpy as np
import aprrd_cli.data.prepare as prepare
from aprrd_cli.utils.atomic import atomic_path

def slow_save(path, arr):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        time.sleep(DELAY)

prepare.save_npy = slow_save
from aprrd_cli.cli import main
sys.exit(main())
"""


def slow_prepare(delay: float, photos: Path, out: Path) -> subprocess.Popen:
    """``aprrd prepare-data`` through its own entry point, every array write taking ``delay`` s."""
    script = SLOW_PREPARE.replace("DELAY", repr(delay))
    cmd = [sys.executable, "-c", script, "prepare-data", str(photos), "--out", str(out)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_prepare_runs_and_a_kill_9(world, tmp_path) -> None:
    """The second run is refused naming the lock and the first run's PID; after a kill -9 of the
    first, its lock is taken over, its temporary file removed and the store completed."""
    prep = tmp_path / "prep"
    first = slow_prepare(0.5, world / "photos", prep)
    wait_until(first, lambda: (prep / ".aprrd.lock").exists())
    second = finish("prepare-data", world / "photos", "--out", prep)
    message = " ".join(second.stderr.split())
    assert second.returncode == 1 and f"PID {first.pid}" in message and str(prep / ".aprrd.lock") in message
    wait_until(first, lambda: bool(partials(prep)), timeout=60)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert partials(prep)  # what a kill -9 leaves ...
    third = finish("prepare-data", world / "photos", "--out", prep)
    assert third.returncode == 0, third.stderr
    assert not partials(prep) and len(open_train_store(prep)) == 24  # ... is cleaned up and the store complete


def test_evaluate_ctrl_c_keeps_pictures_and_writes_no_report(world, tmp_path) -> None:
    from aprrd_cli.data.store import save_npy

    prep = tmp_path / "prep"
    blocks = np.stack([np.stack([rgb(96, 96, 10 * i + j) for j in range(6)]) for i in range(6)])
    for name in ("noisy", "gt"):
        save_npy(prep / "sidd-val" / f"{name}.npy", blocks)
    (prep / "sidd-val" / "meta.json").write_text(json.dumps({"name": "sidd-val", "shape": list(blocks.shape)}))
    out = tmp_path / "res"
    args = ["--set", "sidd-val", "--data", prep, "-m", world / "teacher.pth", "--device", "cpu", "--threads", "1"]
    proc = start("evaluate", *args, "--batch-size", "1", "--save-images", "--out", out, "--json", out / "s.json")
    wait_until(proc, lambda: len(list((out / "pictures").glob("*.png"))) >= 1)
    interrupt(proc, signal.SIGINT)
    assert not partials(out) and not (out / "s.json").exists()  # no report of a half-scored set
    assert all(read_image(p)[0].ndim == 3 for p in (out / "pictures").glob("*.png"))


def test_train_apr_ctrl_c_resume_and_ctrl_c_again(world, tmp_path) -> None:
    prep = tmp_path / "prep"
    assert finish("prepare-data", world / "photos", "--out", prep).returncode == 0
    run = tmp_path / "run"
    base = ["train-apr", "--data", prep, "--run-dir", run, "--iters", "5000", "--save-every", "50", "--log-every", "1"]
    proc = start(*base, *TRAIN)
    wait_until(proc, lambda: logged(run) >= 3)
    interrupt(proc, signal.SIGINT)
    stopped = read_raw(run / "checkpoints" / "last.pth")["iteration"]
    assert stopped >= 3 and not partials(run) and not (run / ".aprrd.lock").exists()

    proc = start(*base, *TRAIN, "--resume")
    wait_until(proc, lambda: logged(run) >= stopped + 3)
    err = interrupt(proc, signal.SIGINT)  # Ctrl-C during a resumed run
    again = read_raw(run / "checkpoints" / "last.pth")["iteration"]
    assert again >= stopped + 3 and f"interrupted after iteration {again}" in " ".join(err.split())
    assert not partials(run)


def test_distill_sigterm_then_resume_finishes(world, tmp_path) -> None:
    prep = tmp_path / "prep"
    assert finish("prepare-data", world / "photos", "--out", prep).returncode == 0
    run = tmp_path / "rd"
    base = ["distill", "--teacher", world / "teacher.pth", "--data", prep, "--run-dir", run, "--log-every", "1"]
    proc = start(*base, "--iters", "5000", *TRAIN)
    wait_until(proc, lambda: logged(run) >= 2)
    interrupt(proc, signal.SIGTERM)
    stopped = read_raw(run / "checkpoints" / "last.pth")["iteration"]
    done = finish(*base, *TRAIN, "--resume", "--stop-at", str(stopped + 2))
    assert done.returncode == 0, done.stderr
    assert read_raw(run / "checkpoints" / "last.pth")["iteration"] == stopped + 2 and not partials(run)


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_interrupt_while_starting_up(world, tmp_path, delay) -> None:
    """Ctrl-C before any command code runs (torch still importing): exit 130, no traceback."""
    proc = start("denoise", world / "photos", tmp_path / "o", "-m", world / "student.pth")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-1500:]
