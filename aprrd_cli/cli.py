"""The ``aprrd`` executable: a Typer app whose commands live in ``aprrd_cli.commands``.

``main`` owns error handling so that every command behaves the same: a user error is
one line on stderr and a non-zero exit, Ctrl-C and SIGTERM exit with 130 after the
commands' own clean-up, and a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import signal
import sys
import traceback

import typer

from aprrd_cli import __version__
from aprrd_cli.console import console
from aprrd_cli.errors import AprrdError

app = typer.Typer(
    name="aprrd",
    help="APR-RD: self-supervised denoising of real camera noise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"aprrd {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """APR-RD: self-supervised denoising of real camera noise."""


def _register() -> None:
    """Import every module of ``aprrd_cli.commands``; each adds its command to ``app``."""
    import importlib
    import pkgutil

    from aprrd_cli import commands

    pipeline = ["prepare", "train", "evaluate", "denoise"]  # help lists commands in the order of use
    names = [i.name for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_")]
    for name in sorted(set(names) - {"options"}, key=lambda n: (pipeline.index(n) if n in pipeline else 99, n)):
        importlib.import_module(f"aprrd_cli.commands.{name}")


_register()


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that every clean-up path runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="aprrd", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except typer.TyperException as e:  # usage errors: Typer's own message, exit code 2
        show = getattr(e, "show", None)
        if show:
            show()
        else:
            console.print(f"[red]error:[/red] {e.format_message()}")
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
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        console.print(f"[red]internal error:[/red] {type(e).__name__}: {first[:200]} (run with --debug for details)")
        code = 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        console.print("[red]interrupted[/red]: stopped; finished outputs are kept and no partial file is left")
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
