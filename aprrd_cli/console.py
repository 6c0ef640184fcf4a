"""The shared rich console and progress display, so every command reports the same way.

On a terminal progress is a live bar with rate and ETA. When stderr is a file or a pipe (a
job's log, ``nohup``, CI) a live bar shows nothing until the end and then leaves one
garbled frame, so there :class:`LineProgress` writes one plain line per task every
``APRRD_PROGRESS_SECONDS`` seconds (30 by default) and when the task ends.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

# soft_wrap: a message stays one line (terminals wrap it visually), so logs and greps see one line
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

PROGRESS_SECONDS = 30.0  # a plain progress line this often when not on a terminal


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(rate_text(task.finished_speed or task.speed, self.unit), style="progress.data.speed")


def rate_text(speed: float | None, unit: str) -> str:
    """``12.30 it/s``, ``2.50 s/it`` below one a second, ``4.2 MB/s`` for bytes."""
    if not speed:
        return f"-- {unit}/s"
    if unit == "B":
        return f"{decimal(int(speed))}/s"
    if speed >= 1:
        return f"{speed:.2f} {unit}/s"
    return f"{1 / speed:.2f} s/{unit}"


def plural(n: int, word: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """``1h02m03s``, ``2m03s`` or ``4.5s``."""
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def progress_seconds() -> float:
    """How often a plain progress line is written (``APRRD_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("APRRD_PROGRESS_SECONDS", PROGRESS_SECONDS)))
    except ValueError:
        return PROGRESS_SECONDS


class LineProgress(Progress):
    """The progress display for a log file or a pipe: plain lines, never a live bar.

    Each visible task gets a line every ``every`` seconds while it moves, and one when the
    display ends: ``APR (teacher): 120/1000 it (12%), 1.38 it/s, loss 0.5123, lr 2.9e-04,
    elapsed 1m27s, eta 10m38s``. The bookkeeping (rates, ETA) is rich's own.
    """

    def __init__(self, unit: str, *columns: ProgressColumn, every: float, transient: bool = False) -> None:
        super().__init__(*columns, console=console, auto_refresh=False, transient=True)
        self.unit = unit
        self.every = every
        self.final_lines = not transient
        self._printed: dict[TaskID, float] = {}
        self._shown: dict[TaskID, tuple] = {}

    def start(self) -> None:  # no live display
        pass

    def stop(self) -> None:
        if self.final_lines:
            for task in self.tasks:
                if task.visible and task.completed and self._shown.get(task.id) != self._state(task):
                    self._line(task)

    def update(self, task_id: TaskID, **kw: Any) -> None:
        super().update(task_id, **kw)
        self._tick(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._tick(task_id)

    def _tick(self, task_id: TaskID) -> None:
        now = time.monotonic()
        last = self._printed.setdefault(task_id, now)
        task = self._tasks[task_id]
        if task.visible and task.completed and now - last >= self.every:
            self._printed[task_id] = now
            self._line(task)

    @staticmethod
    def _state(task: Task) -> tuple:
        return (task.completed, task.total, task.description)

    def _count(self, n: float) -> str:
        return decimal(int(n)) if self.unit == "B" else f"{int(n)}"

    def _line(self, task: Task) -> None:
        self._shown[task.id] = self._state(task)
        count = self._count(task.completed) + (f"/{self._count(task.total)}" if task.total else "")
        parts = [count + ("" if self.unit == "B" else f" {self.unit}")]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed:  # one step so far: rich needs two to estimate a speed
            speed = task.completed / task.elapsed
        parts.append(rate_text(speed, self.unit))
        parts += [f"{k} {v}" for k, v in task.fields.items()]
        parts.append(f"elapsed {duration(task.elapsed or 0.0)}")
        if task.total and task.completed < task.total and speed:
            remaining = (task.total - task.completed) / speed
            if math.isfinite(remaining):
                parts.append(f"eta {duration(remaining)}")
        self.console.print(escape(f"{task.description}: {', '.join(parts)}"))


class LabelColumn(ProgressColumn):
    """The task's description, cut with an ellipsis to the width :class:`FitProgress` gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.width: int | None = None  # None: whole

    def render(self, task: Task) -> Text:
        text = Text(task.description, style="progress.description", no_wrap=True, overflow="ellipsis")
        if self.width is not None and text.cell_len > self.width:
            text.truncate(self.width, overflow="ellipsis")
        return text


class EtaColumn(TimeRemainingColumn):
    """``eta 0:04:59``: the word and the time in one column, so they stay or go together."""

    def render(self, task: Task) -> Text:
        return Text.assemble("eta ", super().render(task))


MIN_LABEL = 12  # a label is shortened to no fewer columns than this before it goes
MIN_BAR = 10  # a bar narrower than this says nothing the count does not


class FitProgress(Progress):
    """The live bar, fitted to the terminal's width on every refresh.

    rich squeezes every column of a row that does not fit, so at 80 columns a long label (``self-
    ensemble distillation (student 1.00M)``) pushed out the count, the rate and the ETA. Here the
    columns give way in a fixed order until the row fits: the spinner, the bar, the elapsed time,
    then the label is shortened (to ``MIN_LABEL`` columns, with an ellipsis), then the extra fields
    from the last (lr, then loss), then the label. The count, the rate and the ETA always stay.
    """

    def __init__(self, *columns: ProgressColumn, give_way: list[ProgressColumn], label: LabelColumn, **kw: Any):
        self.give_way = give_way  # dropped in this order; the label is shortened before its turn
        self.label = label
        self.target: Console = kw.get("console") or console  # rich renders a first frame before self.console exists
        super().__init__(*columns, **kw)

    def make_tasks_table(self, tasks: Any) -> Table:
        visible = [t for t in tasks if t.visible]
        self.label.width = None
        shown = self.fitted(visible, self.target.width)
        table = Table.grid(*(c.get_table_column().copy() for c in shown), padding=(0, 1), expand=self.expand)
        for task in visible:
            table.add_row(*(c(task) for c in shown))
        return table

    def fitted(self, tasks: list[Task], width: int) -> list[ProgressColumn]:
        """The columns that fit ``width``, the label's and the bar's widths set to what is left."""
        need = {c: max((self._width_of(c, t) for t in tasks), default=0) for c in self.columns}
        shown = [c for c in self.columns if isinstance(c, ProgressColumn)]
        bars = [c for c in shown if isinstance(c, BarColumn)]
        for bar in bars:
            need[bar] = MIN_BAR

        def used(cols: list[ProgressColumn]) -> int:
            return sum(need[c] for c in cols) + max(0, len(cols) - 1)

        shortened = False
        for col in self.give_way:
            if used(shown) <= width:
                break
            if col is self.label and not shortened:  # its first turn: shortened, not dropped
                shortened = True
                room = width - (used(shown) - need[col])
                need[col] = self.label.width = min(need[col], max(MIN_LABEL, room))
                continue
            if col in shown:
                shown.remove(col)
        for bar in bars:
            bar.bar_width = max(MIN_BAR, min(40, width - used(shown) + MIN_BAR))
        return shown

    def _width_of(self, column: ProgressColumn | str, task: Task) -> int:
        if isinstance(column, BarColumn):
            return MIN_BAR
        rendered = column(task) if isinstance(column, ProgressColumn) else Text(column)
        if isinstance(rendered, Text):
            return rendered.cell_len
        return Measurement.get(self.target, self.target.options, rendered).maximum


def progress(unit: str = "it", *extra: ProgressColumn, transient: bool = False) -> Progress:
    """A progress display with count, rate and ETA; extra columns go before the timers.

    A live bar on a terminal, fitted to its width (:class:`FitProgress`); plain lines
    (:class:`LineProgress`) when stderr is not one.
    """
    if not console.is_terminal:
        return LineProgress(unit, *extra, every=progress_seconds(), transient=transient)
    counts = (DownloadColumn(), TransferSpeedColumn()) if unit == "B" else (MofNCompleteColumn(), RateColumn(unit))
    spinner, label, bar, elapsed = SpinnerColumn(), LabelColumn(), BarColumn(), TimeElapsedColumn()
    return FitProgress(
        spinner,
        label,
        bar,
        *counts,
        *extra,
        elapsed,
        EtaColumn(),
        give_way=[spinner, bar, elapsed, label, *reversed(extra), label],
        label=label,
        console=console,
        transient=transient,
    )


LOG_WIDTH = 400  # the most a table takes in a log file or a pipe


def print_table(table: Table) -> None:
    """A table on stdout, never cut: in a log file or a pipe (where rich assumes 80 columns) at its
    whole natural width, so names are not cut and values not wrapped over two lines; on a terminal
    at its width, where the tables fold a long name and keep the numbers on one line."""
    if out.is_terminal:
        out.print(table)
        return
    natural = Measurement.get(out, out.options.update(width=LOG_WIDTH), table).maximum
    wide = Console(file=out.file, width=max(out.width, natural), highlight=False, color_system=None)
    wide.print(table)  # (rich's print(width=) is capped at the console's own width)


class AprrdWarning(UserWarning):
    """A warning of aprrd's, raised through Python's ``warnings`` during library calls (the API),
    so that a caller can filter it or turn it into an error."""


_AS_PYTHON_WARNINGS: ContextVar[bool] = ContextVar("aprrd_python_warnings", default=False)


@contextlib.contextmanager
def python_warnings() -> Iterator[None]:
    """Within the block, ``warn`` also raises an ``AprrdWarning`` (the library's calls)."""
    token = _AS_PYTHON_WARNINGS.set(True)
    try:
        yield
    finally:
        _AS_PYTHON_WARNINGS.reset(token)


def warn(message: str) -> None:
    """One warning line on the console (``message`` is rich markup); inside ``python_warnings``
    also a Python warning, in plain text."""
    console.print(f"[yellow]warning:[/yellow] {message}")
    if _AS_PYTHON_WARNINGS.get():
        from rich.text import Text

        warnings.warn(Text.from_markup(message).plain, AprrdWarning, stacklevel=3)
