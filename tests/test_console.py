"""Progress when stderr is not a terminal: plain lines with rate and ETA, no live-bar debris."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np

from aprrd_cli.console import LineProgress, duration, plural, progress, rate_text
from aprrd_cli.data.images import write_image

# what a live bar leaves in a file: spinner frames, bar glyphs, cursor movement
DEBRIS = re.compile(r"[━╸╺⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]|\x1b\[")


def test_small_helpers():
    assert plural(1, "image") == "1 image" and plural(0, "image") == "0 images"
    assert duration(4.5) == "4.5s" and duration(125) == "2m05s" and duration(3723) == "1h02m03s"
    assert rate_text(2.5, "it") == "2.50 it/s" and rate_text(0.25, "it") == "4.00 s/it"
    assert rate_text(None, "it") == "-- it/s" and rate_text(2_000_000, "B") == "2.0 MB/s"


def test_not_a_terminal_gives_line_progress(capsys):
    """Under pytest stderr is captured, as in a log file."""
    bar = progress("it")
    assert isinstance(bar, LineProgress)


def test_lines_every_interval_and_at_the_end(capsys):
    with LineProgress("it", every=0.0) as bar:
        task = bar.add_task("APR (teacher)", total=4, loss="--")
        for i in range(4):
            bar.update(task, completed=i + 1, loss=f"{1.0 / (i + 1):.4f}")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4  # one per update (every 0 s); the last state is not repeated at the end
    assert lines[0].startswith("APR (teacher): 1/4 it (25%), ") and "loss 1.0000" in lines[0]
    assert lines[-1].startswith("APR (teacher): 4/4 it (100%)") and "loss 0.2500" in lines[-1]
    assert "eta" in lines[1] and "eta" not in lines[-1]
    assert not any(DEBRIS.search(line) for line in lines)


def test_no_line_before_the_interval_but_one_at_the_end(capsys):
    with LineProgress("img", every=3600.0) as bar:
        task = bar.add_task("images", total=3)
        for _ in range(3):
            bar.advance(task)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("images: 3/3 img (100%), ")


def test_training_into_a_log_file_writes_plain_lines(tmp_path):
    """The real executable with stderr redirected to a file: progress lines with iteration, loss,
    rate and ETA, and nothing of a live bar."""
    photos = tmp_path / "ph"
    write_image(photos / "p.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    run = [sys.executable, "-m", "aprrd_cli"]
    subprocess.run([*run, "prepare-data", photos, "--out", tmp_path / "prep"], check=True, capture_output=True)
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        code = subprocess.call(
            [*run, "train-apr", "--data", tmp_path / "prep", "--run-dir", tmp_path / "run", "--iters", "3",
             "--batch-size", "1", "--patch-size", "32", "--width", "8", "--device", "cpu", "--threads", "1"],
            stdout=f, stderr=f, env={"APRRD_PROGRESS_SECONDS": "0", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    text = log.read_text()
    assert code == 0, text
    lines = [ln for ln in text.splitlines() if ln.startswith("APR (teacher): ") and " it (" in ln]
    assert [ln.split(" it (")[0] for ln in lines] == ["APR (teacher): 1/3", "APR (teacher): 2/3", "APR (teacher): 3/3"]
    assert all("it/s" in ln or "s/it" in ln for ln in lines) and "eta" in lines[0]
    assert re.search(r"loss \d+\.\d{4}, lr \d", lines[-1])
    assert not DEBRIS.search(text)


def _live_row(monkeypatch, width: int, label: str) -> str:
    """The live bar's row for a training task, drawn on a terminal ``width`` columns wide."""
    import io

    from rich.console import Console
    from rich.progress import TextColumn

    import aprrd_cli.console as shown

    monkeypatch.setattr(shown, "console", Console(file=io.StringIO(), width=width, force_terminal=True))
    bar = progress("it", TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"))
    task = bar.add_task(label, total=300, completed=2, loss="0.0029", lr="9.99e-05")
    bar.update(task, completed=2)
    page = Console(file=io.StringIO(), width=width, force_terminal=False, soft_wrap=True)
    page.print(bar.make_tasks_table(bar.tasks))
    return page.file.getvalue().rstrip("\n")


def test_the_live_bar_keeps_count_rate_and_eta_at_80_columns(monkeypatch):
    """At 80 columns the long label of the own-camera recipe pushed the count, the rate and the ETA
    out of the row; they stay, and the label is shortened (then the lr and loss go, then the label)."""
    label = "self-ensemble distillation (student 1.00M)"
    row = _live_row(monkeypatch, 80, label)
    assert "\n" not in row and len(row) <= 80
    assert "2/300" in row and "it/s" in row and "eta " in row and "loss 0.0029" in row
    assert "self-ensemble" in row and label not in row and "…" in row  # shortened, with an ellipsis
    narrow = _live_row(monkeypatch, 40, label)
    assert "\n" not in narrow and len(narrow) <= 40
    assert "2/300" in narrow and "it/s" in narrow and "eta " in narrow and "lr " not in narrow
    wide = _live_row(monkeypatch, 160, label)
    assert label in wide and "2/300" in wide and "lr 9.99e-05" in wide and "eta " in wide


def test_a_table_in_a_log_file_is_neither_cut_nor_wrapped(capsys, monkeypatch):
    """Piped to a file, rich assumed 80 columns: long names were cut (`5dmark3_iso3200_1…`) and
    values wrapped onto a second line."""
    from rich.table import Table

    from aprrd_cli.console import print_table

    monkeypatch.setenv("COLUMNS", "80")
    name = "5dmark3_iso3200_1_real_noisy_photo_of_a_long_name_from_a_camera_folder.png"
    table = Table(title="pairs: a folder with a long name too", title_justify="left")
    for col in ("image", "size", "colour shift R / G / B", "PSNR (dB)", "SSIM"):
        table.add_column(col)
    table.add_row(name, "4000x3000", "+0.12 / -0.34 / +0.56", "35.55", "0.94030")
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if name in line)  # the whole name, on one line
    assert "4000x3000" in row and "+0.12 / -0.34 / +0.56" in row and "0.94030" in row
