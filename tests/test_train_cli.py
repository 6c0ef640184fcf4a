"""``aprrd train-apr`` / ``aprrd distill`` through the CLI on a tiny prepared store: outputs,
--stop-at / --resume bit for bit, resume refusals naming the option, the run lock, and
clean one-line errors (bad patch size, missing data, a student given as teacher)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aprrd_cli.data.images import write_image
from aprrd_cli.models.checkpoint import load_model, read_raw
from aprrd_cli.utils.locks import DirLock
from tests.helpers import flat

TINY = ("--iters", "3", "--batch-size", "2", "--patch-size", "32", "--width", "8", "--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """A prepared store of three small noisy photos, made with aprrd prepare-data."""
    from aprrd_cli.cli import main

    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((64, 80), (72, 64), (96, 96))):
        yy, xx = np.mgrid[0:h, 0:w]
        img = 120 + 60 * np.sin(xx / (5 + i))[..., None] + rng.normal(0, 15, (h, w, 3))
        write_image(root / "photos" / f"p{i}.png", np.clip(img, 0, 255).astype(np.uint8))
    assert main(["prepare-data", str(root / "photos"), "--out", str(root / "prep")]) == 0
    return root / "prep"


def test_train_apr_then_distill(cli, prep, tmp_path):
    apr = tmp_path / "apr"
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", apr, *TINY)
    assert code == 0, err
    assert "APR (teacher)" in err and "result ->" in err
    teacher = load_model(apr / "teacher.pth", expect="teacher")
    assert teacher.iteration == 3 and teacher.meta["training"]["patch_size"] == 32
    assert not (apr / ".aprrd.lock").exists()  # released

    rd = tmp_path / "rd"
    code, _, err = cli("distill", "--teacher", apr / "teacher.pth", "--data", prep, "--run-dir", rd, *TINY)
    assert code == 0, err
    student = load_model(rd / "student.pth", expect="student")
    assert student.arch == "nbsn-1.00M" and student.iteration == 3
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["config"]["stage"] == "rd" and cfg["config"]["teacher"] == str(apr / "teacher.pth")

    # the student denoises an image through the everyday command
    write_image(tmp_path / "in.png", np.full((40, 50, 3), 128, np.uint8))
    code, _, err = cli("denoise", tmp_path / "in.png", tmp_path / "out.png", "--model", rd / "student.pth")
    assert code == 0, err and (tmp_path / "out.png").exists()


def test_stop_at_and_resume_with_defaults_from_the_run(cli, prep, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("train-apr", "--data", prep, "--run-dir", full, *TINY)[0] == 0
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", part, *TINY, "--stop-at", "1")
    assert code == 0, err
    assert "continue with --resume" in flat(err)
    assert not (part / "teacher.pth").exists()
    # --resume alone: every option comes from the saved run
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", part, "--resume", "--device", "cpu")
    assert code == 0, err
    a, b = load_model(full / "teacher.pth").model.state_dict(), load_model(part / "teacher.pth").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refusals_name_the_option(cli, prep, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", run, "--resume", *TINY)
    assert code == 1 and "nothing to resume" in flat(err)
    assert cli("train-apr", "--data", prep, "--run-dir", run, *TINY, "--stop-at", "1")[0] == 0
    code, _, err = cli(
        "train-apr", "--data", prep, "--run-dir", run, "--resume", "--patch-size", "64", "--device", "cpu"
    )
    assert code == 1 and "--patch-size 32 -> 64" in flat(err) and "APR (teacher)" not in err and "Traceback" not in err
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", run, *TINY)
    assert code == 1 and "already holds a run" in flat(err)


@pytest.mark.parametrize("command", ["train-apr", "distill"])
def test_resume_without_a_checkpoint_says_why(cli, tmp_path, command):
    """--resume of a folder that does not exist, of a run killed before its first save, and of a run
    still working there before its first save: three different one-line reasons, never a missing
    teacher (distill looked for runs/apr/teacher.pth first)."""
    run = tmp_path / "k9"
    code, _, err = cli(command, "--run-dir", run, "--resume")
    assert code == 1 and f"{run} does not exist" in flat(err) and "teacher" not in err
    assert not run.exists()  # nothing created by the refusal

    run.mkdir()
    (run / "config.json").write_text('{"config": {}}\n')  # what a run writes before its first step
    (run / "log.jsonl").write_text("")
    code, _, err = cli(command, "--run-dir", run, "--resume")
    message = flat(err)
    assert code == 1 and "holds no checkpoint yet" in message and "without --resume" in message
    assert "config.json" in message and "teacher" not in err and len(err.strip().splitlines()) == 1

    with DirLock(run, what=f"aprrd {command}"):  # the run itself, still before its first save
        code, _, err = cli(command, "--run-dir", run, "--resume")
    assert code == 1 and "in use by" in flat(err) and f"PID {os.getpid()}" in flat(err) and "teacher" not in err


def test_second_run_on_a_locked_folder_is_refused(cli, prep, tmp_path):
    run = tmp_path / "run"
    with DirLock(run, what="aprrd train-apr"):
        code, _, err = cli("train-apr", "--data", prep, "--run-dir", run, *TINY)
    assert code == 1
    assert ".aprrd.lock" in flat(err) and f"PID {os.getpid()}" in flat(err)
    assert not (run / "checkpoints").exists()


def test_stale_lock_is_taken_over(cli, prep, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".aprrd.lock").write_text(json.dumps({"pid": 999999, "what": "aprrd train-apr"}))
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", run, *TINY)
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--patch-size", "40"), "multiple of 32"),
        (("--patch-size", "128"), "larger than every training image in"),
        (("--batch-size", "3", "--patch-size", "32"), None),  # fine on one process
    ],
)
def test_patch_size_errors(cli, prep, tmp_path, args, message):
    code, _, err = cli(
        "train-apr",
        "--data",
        prep,
        "--run-dir",
        tmp_path / "r",
        "--iters",
        "1",
        "--width",
        "8",
        "--device",
        "cpu",
        *args,
    )
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and message in flat(err) and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_data_is_one_line(cli, tmp_path):
    code, _, err = cli("train-apr", "--data", tmp_path / "nothing", "--run-dir", tmp_path / "r", *TINY)
    assert code == 1 and "prepare-data" in err and flat(err).count("error:") == 1 and "Traceback" not in err


def test_a_student_as_teacher_learns_its_self_ensemble(cli, prep, tmp_path, tiny_student):
    """A student network as --teacher: the student learns its x8 self-ensemble (the own-camera
    recipe), with the recipe's defaults for the options not given; it resumes bit for bit."""
    args = ("--teacher", tiny_student, "--init", tiny_student, "--data", prep, "--width", "8", "--patch-size", "32",
            "--device", "cpu", "--threads", "1", "--precision", "fp32")  # fmt: skip
    code, _, err = cli("distill", *args, "--run-dir", tmp_path / "defaults", "--stop-at", "1")
    assert code == 0, err
    assert (
        "self-ensemble distillation (student 1.00M)" in flat(err)
        and "learns its x8 self-ensemble" in flat(err)
        and "initial weights: 34 of 34" in flat(err)
    )
    config = json.loads((tmp_path / "defaults" / "config.json").read_text())["config"]
    assert (config["iters"], config["batch_size"], config["lr"], config["patch_size"]) == (300, 2, 1e-4, 32)

    code, _, err = cli("distill", *args, "--run-dir", tmp_path / "part", "--iters", "2", "--stop-at", "1")
    assert code == 0, err
    code, _, err = cli("distill", "--run-dir", tmp_path / "part", "--resume")
    assert code == 0, err
    student = load_model(tmp_path / "part" / "student.pth", expect="student")
    assert student.meta["targets"] == "x8 self-ensemble" and student.iteration == 2
    assert "aprrd evaluate --model" in flat(err) and "of the paper's training" not in flat(err)

    code, _, err = cli("distill", *args, "--run-dir", tmp_path / "full", "--iters", "2")
    assert code == 0, err
    a, b = (load_model(tmp_path / r / "student.pth").model.state_dict() for r in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    teacher = load_model(tiny_student).model.state_dict()
    assert any(not torch.equal(a[k], teacher[k]) for k in a)  # it learned


def test_the_recipe_fits_its_patch_to_small_photos(cli, prep, tmp_path, tiny_student):
    """The store's photos (64 to 96 px) cannot hold the recipe's 256x256 crops: the default patch
    becomes the largest that fits them all, the batch keeps the pixels an iteration; an option
    given is kept."""
    args = ("--teacher", tiny_student, "--init", tiny_student, "--data", prep, "--width", "8", "--device", "cpu",
            "--threads", "1", "--stop-at", "1")  # fmt: skip
    code, _, err = cli("distill", *args, "--run-dir", tmp_path / "a")
    assert code == 0, err
    assert "holds a 256x256 crop: patches of 64x64, batch 32" in flat(err)
    config = json.loads((tmp_path / "a" / "config.json").read_text())["config"]
    assert (config["patch_size"], config["batch_size"]) == (64, 32)
    code, _, err = cli("distill", *args, "--batch-size", "3", "--run-dir", tmp_path / "b")
    assert code == 0 and "patches of 64x64" in flat(err) and "batch 32" not in err, err
    config = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert (config["patch_size"], config["batch_size"]) == (64, 3)
    code, _, err = cli("distill", *args, "--patch-size", "96", "--run-dir", tmp_path / "c")  # given: the usual rule
    assert code == 0 and "training without 2 of 3 images smaller than --patch-size 96" in flat(err), err


def test_a_student_teacher_without_init_is_warned(cli, prep, tmp_path, tiny_student):
    code, _, err = cli("distill", "--teacher", tiny_student, "--data", prep, "--run-dir", tmp_path / "r", *TINY)
    assert code == 0, err
    assert "starts from random weights" in flat(err) and "--init official" in flat(err)


def test_a_named_teacher_offline_is_one_line(cli, prep, tmp_path):
    code, _, err = cli("distill", "--teacher", "official", "--init", "official", "--data", prep,
                       "--run-dir", tmp_path / "r", *TINY)  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert flat(err).count("error:") == 1 and "official" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_teacher_names_both_ways(cli, prep, tmp_path):
    missing = tmp_path / "none.pth"
    code, _, err = cli("distill", "--teacher", missing, "--data", prep, "--run-dir", tmp_path / "r", *TINY)
    assert code == 1 and "no teacher at" in err and "--teacher official" in flat(err)


def test_official_teacher_is_accepted(cli, prep, tmp_path, random_teacher_path):
    code, _, err = cli(
        "distill", "--teacher", random_teacher_path, "--data", prep, "--run-dir", tmp_path / "r",
        "--iters", "1", "--batch-size", "1", "--patch-size", "32", "--device", "cpu", "--student", "1.02M",
    )  # fmt: skip
    assert code == 0, err
    assert load_model(tmp_path / "r" / "student.pth").arch == "nbsn-1.02M"
    assert read_raw(tmp_path / "r" / "checkpoints" / "last.pth")["training"]["identity"]["teacher"][0]


def test_validation_on_pairs_is_logged(cli, prep, tmp_path):
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png"):
        gt = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
        write_image(tmp_path / "pairs" / "gt" / name, gt)
        noisy = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)
        write_image(tmp_path / "pairs" / "noisy" / name, noisy)
    run = tmp_path / "run"
    code, _, err = cli(
        "train-apr", "--data", prep, "--run-dir", run, *TINY, "--val", tmp_path / "pairs", "--val-every", "2"
    )
    assert code == 0, err
    vals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "val_psnr" in r]
    assert [r["iteration"] for r in vals] == [2, 3]  # every 2 and at the end
    assert all(0 < r["val_psnr"] < 100 and -1 <= r["val_ssim"] <= 1 for r in vals)
    assert "validation PSNR" in flat(err)


def test_images_smaller_than_the_patch_are_left_out_with_a_warning(cli, prep, tmp_path):
    run = tmp_path / "r96"
    code, out, err = cli(
        "train-apr", "--data", prep, "--run-dir", run, "--iters", "1", "--width", "8", "--device", "cpu",
        "--batch-size", "1", "--patch-size", "96",
    )  # fmt: skip
    assert code == 0, err
    said = flat(out + err)
    assert "warning: training without 2 of 3 images smaller than --patch-size 96: p0, p1" in said
    assert (run / "teacher.pth").is_file()
    code, _, err = cli(
        "train-apr", "--data", prep, "--run-dir", tmp_path / "r128", "--iters", "1", "--width", "8",
        "--device", "cpu", "--patch-size", "128",
    )  # fmt: skip
    assert code == 2
    assert "largest has a shortest side of 96 px); use --patch-size 96 or less" in flat(err)


def test_resume_takes_the_data_and_run_options_from_the_run(cli, prep, tmp_path, monkeypatch):
    """`train-apr --run-dir R --resume` without --data, from another folder: the store's absolute
    path and the other run options come from the run (issue 13)."""
    run = tmp_path / "run"
    val = tmp_path / "val"
    for sub in ("noisy", "gt"):
        write_image(val / sub / "v.png", np.full((32, 32, 3), 120, np.uint8))
    code, _, err = cli(
        "train-apr", "--data", prep, "--run-dir", run, *TINY, "--stop-at", "1", "--val", val, "--save-every", "2"
    )
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("train-apr", "--run-dir", run, "--resume")
    assert code == 0, err
    assert (run / "teacher.pth").exists()
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["data"] == str(prep.resolve()) and options["val"] == str(val.resolve())
    assert options["device"] == "cpu" and options["threads"] == 1 and options["save_every"] == 2
    assert "validation PSNR" in flat(err)  # --val came from the run too


def test_a_bad_val_folder_is_named_as_val(cli, prep, tmp_path):
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", tmp_path / "r", *TINY, "--val", tmp_path / "nope")
    assert code == 1
    assert "--val expects a folder with noisy/ and gt/" in flat(err) and "--pairs" not in err


def test_distill_help_shows_its_own_defaults(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("distill", "-h")
    text = flat(out)
    assert code == 0 and "(default: 200000)" in text and "(default: 128)" in text
    row = text.split(" --patch-size <int>")[1][:80]  # the option's own row (--teacher's help names it too)
    assert "400000" not in text and "256" not in row
    assert "x>=1" not in row


def test_init_starts_a_run_from_given_weights_and_resumes(cli, prep, tmp_path):
    """--init: the student starts from a checkpoint's weights (all of them), a teacher from a student's
    (its UNet but the last layer); an initialised run resumes bit for bit; bad sources are one line."""
    from aprrd_cli.models import NBSN100
    from aprrd_cli.models.checkpoint import save_model

    torch.manual_seed(5)
    source = NBSN100(width=8)
    save_model(tmp_path / "s.pth", source, iteration=0)
    args = (*TINY[:6], "--width", "8", "--device", "cpu", "--threads", "1", "--precision", "fp32")
    code, _, err = cli("train-apr", "--data", prep, "--run-dir", tmp_path / "apr", *args, "--init", tmp_path / "s.pth",
                       "--iters", "1", "--lr", "1e-12")  # fmt: skip
    assert code == 0, err
    assert "initial weights: 32 of 40 tensors from" in flat(err) and "the rest seeded" in flat(err)
    teacher = load_model(tmp_path / "apr" / "teacher.pth").model.state_dict()
    assert torch.allclose(teacher["unet.enc3.conv1.conv.weight"], source.state_dict()["unet.enc3.conv1.conv.weight"])

    rd = ("--teacher", tmp_path / "apr" / "teacher.pth", "--data", prep, *args, "--init", tmp_path / "s.pth")
    code, _, err = cli("distill", *rd, "--run-dir", tmp_path / "full")
    assert code == 0 and "initial weights: 34 of 34 tensors" in flat(err) and "the rest" not in err, err
    code, _, err = cli("distill", *rd, "--run-dir", tmp_path / "part", "--stop-at", "1")
    assert code == 0, err
    code, _, err = cli("distill", "--run-dir", tmp_path / "part", "--resume")
    assert code == 0 and "initial weights" not in err, err  # the checkpoint holds the weights now
    a, b = (load_model(tmp_path / r / "student.pth").model.state_dict() for r in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["config"]["init"] == str(tmp_path / "s.pth")

    code, _, err = cli("distill", *rd[:-2], "--init", tmp_path / "nope.pth", "--run-dir", tmp_path / "x")
    assert code == 1 and "--init" in err and "no such file" in err
    code, _, err = cli("distill", *rd[:-2], "--init", tmp_path / "apr" / "teacher.pth", "--student", "1.02M",
                       "--run-dir", tmp_path / "y")  # fmt: skip
    assert code == 1 and "none of its tensors fit this nbsn-1.02M" in flat(err)
