"""User-facing errors: one line that says what is wrong and what to do."""

from __future__ import annotations


def short_reason(error: BaseException | str, limit: int = 100) -> str:
    """The first line of a library's message, for inside one of ours: whole when short, else cut at
    its first sentence or a word boundary with an ellipsis, never mid-word (``... This is an interna``)."""
    text = error if isinstance(error, str) else str(error)
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    if not line:
        return "" if isinstance(error, str) else type(error).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit]
    sentence = cut.rfind(". ")
    if sentence >= limit // 3:
        return cut[: sentence + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space >= limit // 3 else cut).rstrip(" ,;:(") + "…"


class AprrdError(Exception):
    """An error the user can fix; the CLI prints it on one line, without a traceback."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(AprrdError):
    """A bad input file (image, checkpoint, dataset file)."""


class CheckpointError(InputError):
    """A file that is not the checkpoint that was expected."""


class DeviceError(AprrdError):
    """A requested device that is not present."""


class OutputError(AprrdError):
    """An output that cannot be written (full disk, read-only or missing folder): every later
    write would fail the same way, so a batch stops instead of skipping file after file."""
