"""The ``aprrd`` executable: the Typer app (``app``) with the commands of ``aprrd_cli.commands``.

``main`` owns error handling so that every command behaves the same: a user error is
one line on stderr and a non-zero exit, Ctrl-C and SIGTERM exit with 130 after the
commands' own clean-up, and a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
import warnings


def _quit_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C / SIGTERM while the heavy modules import: nothing has started, so leave at once
    with the interrupt's exit code instead of a KeyboardInterrupt traceback from deep in torch."""
    os._exit(130)


_STARTUP_HANDLERS: dict[int, object] = {}
if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGINT, signal.SIGTERM):
        _STARTUP_HANDLERS[_sig] = signal.signal(_sig, _quit_while_starting)

import typer  # noqa: E402
from rich.markup import escape  # noqa: E402

from aprrd_cli.app import app, finish_help  # noqa: E402
from aprrd_cli.console import console  # noqa: E402
from aprrd_cli.device import out_of_memory_message  # noqa: E402
from aprrd_cli.errors import AprrdError, short_reason  # noqa: E402
from aprrd_cli.utils.allocator import keep_freed_memory  # noqa: E402

# isort: off
# each command registers with ``app`` as it is imported; the help lists them in this order of use
import aprrd_cli.commands.prepare  # noqa: E402, F401
import aprrd_cli.commands.train  # noqa: E402, F401
import aprrd_cli.commands.evaluate  # noqa: E402, F401
import aprrd_cli.commands.denoise  # noqa: E402, F401
import aprrd_cli.commands.export  # noqa: E402, F401
# isort: on

for _sig, _handler in _STARTUP_HANDLERS.items():  # imports done: the commands' own clean-up takes over
    signal.signal(_sig, _handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that every clean-up path runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one line, like ours (the source line and path only with --debug)."""
    console.print(f"[yellow]warning:[/yellow] {escape(short_reason(str(message), 200) or category.__name__)}")


def _usage_line(e: typer.TyperException) -> str:
    """Typer's usage message in one line, pointing at the command's own help."""
    message = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "aprrd"
    return f"{message[:1].lower()}{message[1:].rstrip('.')}; see '{where} -h'"


# What to do after Ctrl-C, for the commands whose way to continue is not obvious (training
# commands print their own --resume line).
INTERRUPT_HINTS = {
    "denoise": "run the same command with --skip-existing to continue where it stopped",
    "prepare-data": "run the same command again to continue: finished images are not redone",
}


# What to lower when a command runs out of GPU memory
MEMORY_ADVICE = {
    "train-apr": "lower --batch-size or --patch-size (or train on more GPUs with torchrun)",
    "distill": "lower --batch-size or --patch-size (or train on more GPUs with torchrun)",
    "denoise": "lower --tile (e.g. --tile 512), or use --device cpu",
    "evaluate": "lower --batch-size or --tile (e.g. --tile 512), or use --device cpu",
}


def _is_out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, getattr(torch, "OutOfMemoryError", ())) or "CUDA out of memory" in str(e)


def _memory_advice(args: list[str]) -> str:
    return next((MEMORY_ADVICE[a] for a in args if a in MEMORY_ADVICE), "lower the batch or tile size")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line, not only before the command
        args = ["--debug", *(a for a in args if a != "--debug")]
    keep_freed_memory()
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_warning
            # torch's note about a foreign pickle comes right before our own one-line refusal of that file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return _main(args, debug)


def _main(args: list[str], debug: bool) -> int:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    command = finish_help(typer.main.get_command(app))
    try:
        rv = command.main(args=args, prog_name="aprrd", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except typer.TyperException as e:  # usage errors: one line with Typer's message, exit code 2
        if type(e).__name__ == "NoArgsIsHelpError":  # `aprrd` alone: its help, as `aprrd -h` shows it
            print(e.format_message())
        else:
            console.print(f"[red]error:[/red] {escape(_usage_line(e))}")
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130  # Typer turns Ctrl-C into exit code 130 itself; both end here
    except AprrdError as e:
        if debug:
            traceback.print_exc()
        console.print(f"[red]error:[/red] {e}")
        code = e.exit_code
    except Exception as e:  # a bug of ours: still one line, unless --debug
        if debug:
            traceback.print_exc()
        if _is_out_of_memory(e):  # not a bug: the work does not fit the GPU
            console.print(f"[red]error:[/red] {escape(out_of_memory_message(e, _memory_advice(args)))}")
            code = 1
        else:
            console.print(
                f"[red]internal error:[/red] {type(e).__name__}: {escape(short_reason(e, 200))} "
                "(run with --debug for details)"
            )
            code = 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        hint = next((INTERRUPT_HINTS[a] for a in args if a in INTERRUPT_HINTS), None)
        console.print(
            "[red]interrupted[/red]: stopped; finished outputs are kept and no partial file is left"
            + (f"; {hint}" if hint else "")
        )
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
