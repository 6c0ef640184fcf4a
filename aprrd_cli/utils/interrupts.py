"""Moments that Ctrl-C and SIGTERM must not split: the signal waits for the end of the block."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def hold_signals() -> Iterator[None]:
    """Delay Ctrl-C / SIGTERM to the end of the block, where the signal is raised again.

    Why: some steps are only safe whole. A parameter update half applied would be saved in
    the checkpoint the interruption writes; a temporary file created but not yet known to
    its clean-up would be left behind. Outside the main thread Python delivers no signals,
    so there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda n, f: caught.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if caught:
            signal.raise_signal(caught[0])
