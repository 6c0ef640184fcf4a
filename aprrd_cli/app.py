"""The Typer application and its root options; each module of ``aprrd_cli.commands`` adds its
command to ``app``, and ``aprrd_cli.cli`` imports them all and runs it."""

from __future__ import annotations

import typer

from aprrd_cli import __version__

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


def _flags_without_type() -> None:
    """Typer's help shows ``<bool>`` beside flags, as if ``--resume true`` were the way to write
    them: flags (and --help) take no value, so their type column stays empty."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:  # another Typer: leave its help as it is
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_flags_without_type()
