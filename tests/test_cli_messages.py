"""What the commands say: help pages, --debug anywhere, refusals of useless options, summary
lines and the hint after an interruption (the issue-13 probe of a new user's first hour)."""

from __future__ import annotations

import numpy as np
import pytest

from aprrd_cli.data.images import write_image
from tests.helpers import flat


@pytest.mark.parametrize("command", ["denoise", "evaluate", "prepare-data", "train-apr", "distill"])
def test_help_shows_no_type_for_flags(cli, command, monkeypatch):
    """`<bool>` beside a flag read as if `--skip-existing true` were the way to write it."""
    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = cli(command, "-h")
    assert code == 0 and "<bool>" not in out
    assert "--help" in out


@pytest.mark.parametrize("command", ["", "denoise", "evaluate", "prepare-data", "train-apr", "distill"])
def test_help_fits_80_columns_whole(cli, command, monkeypatch):
    """At 80 columns (and in a pipe, where the width is not known) rich's panels squeezed every
    description into ~18 columns and cut the defaults (`runs/apr/teacher…`, `--no-determinis…`);
    the usage line's `{INPUT} {OUTPUT}` read like a choice; no page named the environment."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(*([command] if command else []), "-h")
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80 and "…" not in out
    assert "Environment:" in out and all(
        v in out for v in ("APRRD_CACHE", "APRRD_WEIGHTS_URL", "APRRD_PROGRESS_SECONDS")
    )
    text = flat(out)
    if command == "distill":
        assert "(default: runs/apr/teacher.pth)" in text and "--deterministic / --no-deterministic" in text
        assert "(docs/results.md)" in text
    if command in ("train-apr", "distill"):
        assert "--log-every <int> Write a log.jsonl record (the mean loss) every N iterations (default:" in text
        assert "<int range>" not in out
    if command == "denoise":
        assert "Usage: aprrd denoise [OPTIONS] INPUT OUTPUT" in out and "{" not in lines[0]
    if command == "":
        assert (
            "Distil the student (NBSN) from a frozen teacher with Recharged Distillation; writes RUN/student.pth."
            in text
        )


def test_aprrd_alone_prints_its_help(cli, monkeypatch):
    """`aprrd` with no command printed the help and then `error: ; see 'aprrd -h'`."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli()
    assert code == 2 and out.startswith("Usage: aprrd [OPTIONS] COMMAND") and "Environment:" in out
    assert err == ""


def test_the_environment_section_names_every_variable_the_code_reads():
    import re

    from aprrd_cli.app import ENVIRONMENT
    from tests.helpers import REPO

    read = set()
    for path in (REPO / "aprrd_cli").rglob("*.py"):
        read |= set(re.findall(r"APRRD_[A-Z0-9_]+", path.read_text()))
    listed = set(re.findall(r"APRRD_[A-Z0-9_]+", ENVIRONMENT))
    assert read and read <= listed, read - listed


def test_prepare_help_paragraphs_rewrap(cli, monkeypatch):
    """The help text was hard-wrapped at 90 columns: ragged on narrow terminals, narrow on wide ones."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("prepare-data", "-h")
    assert code == 0
    assert any(
        "Training images are stored as arrays under PREP/train and read through memory maps; evaluation sets under"
        in line
        for line in out.splitlines()
    )


def test_debug_is_accepted_after_the_command(cli, tmp_path):
    code, _, err = cli("denoise", tmp_path / "nope.png", tmp_path / "o.png", "--debug")
    assert code == 1 and "Traceback" in err and "no such file" in err


@pytest.mark.parametrize("command", ["denoise", "evaluate"])
def test_a_tile_far_below_the_context_is_refused(cli, tiny_student, tmp_path, command):
    """--tile 1 made tens of thousands of windows and ran for hours."""
    write_image(tmp_path / "in.png", np.zeros((40, 40, 3), np.uint8))
    where = [tmp_path / "in.png", tmp_path / "o.png"] if command == "denoise" else ["--pairs", tmp_path]
    code, _, err = cli(command, "-m", tiny_student, "--tile", "1", *where)
    assert code == 2
    assert flat(err).startswith("error: --tile 1 is below the 64-pixel minimum") and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()
    code, _, err = cli("denoise", "-m", tiny_student, "--tile", "64", tmp_path / "in.png", tmp_path / "o.png")
    assert code == 0, err


def test_no_seconds_per_megapixel_for_a_tiny_image(cli, tiny_student, tmp_path):
    write_image(tmp_path / "one.png", np.zeros((1, 1, 3), np.uint8))
    code, _, err = cli("denoise", "-m", tiny_student, tmp_path / "one.png", tmp_path / "o.png")
    assert code == 0 and "denoised 1 image (0.00 MP)" in flat(err) and "s/MP" not in err
    write_image(tmp_path / "big.png", np.zeros((256, 256, 3), np.uint8))
    code, _, err = cli("denoise", "-m", tiny_student, tmp_path / "big.png", tmp_path / "o2.png")
    assert code == 0 and "s/MP" in err


def test_an_interrupted_folder_says_how_to_continue(cli, tiny_student, tmp_path, monkeypatch):
    from aprrd_cli.commands import denoise as command

    for i in range(2):
        write_image(tmp_path / "in" / f"{i}.png", np.zeros((16, 16, 3), np.uint8))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "denoise_file", interrupted)
    code, _, err = cli("denoise", "-m", tiny_student, tmp_path / "in", tmp_path / "out")
    assert code == 130
    assert "interrupted" in err and "run the same command with --skip-existing to continue" in flat(err)


def test_small_training_image_warning_says_it_is_left_out(cli, tmp_path):
    write_image(tmp_path / "ph" / "big.png", np.zeros((64, 64, 3), np.uint8))
    write_image(tmp_path / "ph" / "tiny.png", np.zeros((20, 20, 3), np.uint8))
    code, _, err = cli("prepare-data", tmp_path / "ph", "--out", tmp_path / "prep")
    assert code == 0
    assert "train-apr and distill will leave it out" in flat(err) and "refuse" not in err


def test_a_float_image_on_another_scale_is_refused_before_the_model(cli, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", np.full((20, 20, 3), 200.0, np.float32), photometric="rgb")
    code, _, err = cli("denoise", "-m", tmp_path / "no-model.pth", tmp_path / "f.tif", tmp_path / "o.tif")
    assert code == 1 and "looks like a 0..255 export" in flat(err) and "no model" not in err


def test_denoise_into_a_new_folder_makes_it(cli, tiny_student, tmp_path, monkeypatch):
    """`aprrd denoise in.png newdir/` failed with `unknown output type ''`."""
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in.png", np.zeros((20, 24, 3), np.uint8))
    code, _, err = cli("denoise", "-m", tiny_student, "in.png", "newdir/")
    assert code == 0, err
    assert (tmp_path / "newdir" / "in.png").is_file()
    code, _, err = cli("denoise", "-m", tiny_student, "in.png", "deeper/still", "--format", "tif")
    assert code == 0, err and (tmp_path / "deeper" / "still" / "in.tif").is_file()


def test_alpha_into_a_jpeg_says_how_to_keep_it(cli, tiny_student, tmp_path):
    """The warning said `use --format png/tif`, which a single OUTPUT's suffix overrules."""
    write_image(tmp_path / "rgba.png", np.full((16, 16, 4), 200, np.uint8))
    code, _, err = cli("denoise", "-m", tiny_student, tmp_path / "rgba.png", tmp_path / "o.jpg")
    assert code == 0 and "alpha left out" in flat(err) and "name the output .png or .tif" in flat(err)


def test_a_truncated_checkpoint_is_not_cut_mid_word(cli, tiny_student, tmp_path):
    data = tiny_student.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-100])
    write_image(tmp_path / "in.png", np.zeros((16, 16, 3), np.uint8))
    code, _, err = cli("denoise", "-m", tmp_path / "cut.pth", tmp_path / "in.png", tmp_path / "o.png")
    message = flat(err)
    assert code == 1 and "truncated or corrupt" in message and "interna)" not in message
    reason = message.split("corrupt (", 1)[1].split(");", 1)[0]
    assert reason.endswith((".", "…")) or len(reason) < 100


def test_short_reason_cuts_at_a_sentence_or_a_word():
    from aprrd_cli.errors import short_reason

    text = (
        "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal "
        "error, please report it"
    )
    assert short_reason(text) == "PytorchStreamReader failed reading zip archive: failed finding central directory."
    assert short_reason("word " * 40, 32) == "word word word word word word…"
    assert short_reason("short\nsecond line") == "short" and short_reason(ValueError()) == "ValueError"
