"""``--tensorboard`` on train-apr and distill: event files in RUN/tensorboard, read back with
TensorBoard's own reader; log.jsonl as without it; a one-line refusal without the package."""

from __future__ import annotations

import builtins
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import flat, one_line, random_store

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'aprrd[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ITERS = 4
TINY = ("--iters", str(ITERS), "--batch-size", "2", "--patch-size", "32", "--width", "8", "--device", "cpu")
TINY += ("--threads", "1", "--precision", "fp32", "--log-every", "1", "--val-every", "2")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """A tiny store with a 48 x 40 validation pair in prep/val."""
    return random_store(tmp_path_factory.mktemp("tb"), seed=0, val_side=(48, 40))


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_train_apr_and_distill_write_events_that_read_back(cli, prep, tmp_path) -> None:
    apr, rd = tmp_path / "apr", tmp_path / "rd"
    val = ("--val", prep / "val", "--tensorboard")
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", apr, *TINY, *val)
    assert code == 0, err
    code, _, err = cli("distill", "--teacher", apr / "teacher.pth", "--data", prep, "--run-dir", rd, *TINY, *val)
    assert code == 0, err
    for run in (apr, rd):
        acc = events(run)
        tags = acc.Tags()
        assert {"train/loss", "train/lr", "val/psnr", "val/ssim"} <= set(tags["scalars"])
        records = log(run)
        losses = [(r["iteration"], r["loss"], r["lr"]) for r in records if "loss" in r]
        vals = [(r["iteration"], r["val_psnr"], r["val_ssim"]) for r in records if "val_psnr" in r]
        assert [r["iteration"] for r in records if "loss" in r] == list(range(1, ITERS + 1))
        # the same numbers as log.jsonl (TensorBoard stores float32)
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("train/loss")] == [
            (i, v) for i, v, _ in losses
        ]
        assert [e.step for e in acc.Scalars("train/lr")] == [i for i, _, _ in losses]
        assert np.allclose([e.value for e in acc.Scalars("train/lr")], [lr for _, _, lr in losses], rtol=1e-6)
        assert [e.step for e in acc.Scalars("val/psnr")] == [i for i, _, _ in vals] == [2, 4]
        assert np.allclose([e.value for e in acc.Scalars("val/psnr")], [p for _, p, _ in vals], rtol=1e-6)
        assert np.allclose([e.value for e in acc.Scalars("val/ssim")], [s for _, _, s in vals], rtol=1e-6)
        pictures = acc.Images("val/noisy_output")
        assert [p.step for p in pictures] == [2, 4]
        # noisy | output of the 40-pixel-wide validation image, side by side with a gap, labels above
        assert pictures[-1].width > 2 * 40 and pictures[-1].height > 48
        assert (run / "loss.png").is_file()


def test_without_tensorboard_there_are_no_events_and_the_log_is_the_same(cli, prep, tmp_path) -> None:
    with_tb, without = tmp_path / "a", tmp_path / "b"
    args = ("--data", prep, *TINY, "--val", prep / "val")
    assert cli("train-apr", *args, "--run-dir", with_tb, "--tensorboard")[0] == 0
    assert cli("train-apr", *args, "--run-dir", without)[0] == 0
    assert not (without / "tensorboard").exists()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in log(with_tb)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in log(without)]


def test_a_resumed_run_continues_its_curves_without_repeats(cli, prep, tmp_path) -> None:
    run = tmp_path / "r"
    args = ("train-apr", "--data", prep, "--run-dir", run, *TINY, "--val", prep / "val", "--tensorboard")
    assert cli(*args, "--stop-at", "2")[0] == 0
    code, _, err = cli("train-apr", "--run-dir", run, "--resume")  # --tensorboard taken from the run
    assert code == 0, err
    acc = events(run)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, ITERS + 1))
    assert [e.step for e in acc.Scalars("val/psnr")] == [2, 4]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("train/loss")] == [
        (r["iteration"], r["loss"]) for r in log(run) if "loss" in r
    ]


def test_missing_package_is_a_one_line_error_naming_the_extra(cli, prep, tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "tensorboard" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: object, **kw: object) -> object:
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", tmp_path / "x", *TINY, "--tensorboard")
    assert code == 2
    assert flat(one_line(err)) == "error: --tensorboard needs the tensorboard package: pip install 'aprrd[tensorboard]'"
    assert not (tmp_path / "x").exists()  # refused before the run folder is made
