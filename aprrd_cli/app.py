"""The Typer application and its root options; each module of ``aprrd_cli.commands`` adds its
command to ``app``, and ``aprrd_cli.cli`` imports them all and runs it."""

from __future__ import annotations

import inspect

import typer

from aprrd_cli import __version__

# Help is plain text laid out for the terminal's width (at most HELP_WIDTH): click's two columns,
# names and descriptions, wrap well at 80 columns, in a terminal of unknown size and in a log
# file, where rich's panels squeezed every description into ~18 columns and cut the defaults.
HELP_WIDTH = 120

# Every help page ends with the environment variables the tool reads ("\b": kept as written).
ENVIRONMENT = """\b
Environment:
  APRRD_CACHE                folder of the downloaded models (default:
                             $XDG_CACHE_HOME/aprrd, else ~/.cache/aprrd)
  APRRD_WEIGHTS_URL          the named models' download address instead of
                             the release's: a mirror, or file:///... (a copy)
  APRRD_DOWNLOAD_TIMEOUT     seconds a download waits for the server (30)
  APRRD_PROGRESS_SECONDS     seconds between progress lines when the output
                             is not a terminal (30)
  APRRD_CPU_BF16             1 or 0: whether this CPU computes bf16 natively
                             (default: read from the CPU's flags)
  APRRD_MEMORY_GB            memory the default tiling may plan with, in GB
                             (default: what the machine has available)
  APRRD_DDP_TIMEOUT_MINUTES  minutes DDP processes wait for each other (60)
  APRRD_MALLOC               'default' leaves glibc's malloc as it is"""

app = typer.Typer(
    name="aprrd",
    help="APR-RD: self-supervised denoising of real camera noise.",
    epilog=ENVIRONMENT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
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


def _help_types_and_usage() -> None:
    """Typer's help shows ``<bool>`` beside flags, as if ``--resume true`` were the way to write
    them: flags (and --help) take no value, so they show no type. A number with a range shows
    ``<int>``, the range itself following in brackets, not ``<int range>``. The usage line names
    required arguments plainly (``INPUT OUTPUT``): Typer's braces (``{INPUT} {OUTPUT}``) read
    like a choice between them."""
    from typer.core import TyperArgument, TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is not None:  # another Typer: leave its help as it is

        def display_type_rich(self: TyperOption, ctx: object) -> str | None:
            if getattr(self, "is_flag", False):
                return None
            label = shown(self, ctx)
            return label.replace(" range>", ">") if isinstance(label, str) else label

        TyperOption.display_type_rich = display_type_rich

    usage = getattr(TyperArgument, "_usage_display_name", None)
    if usage is not None:

        def _usage_display_name(self: TyperArgument) -> str:
            name = usage(self)
            return name[1:-1] if name.startswith("{") and name.endswith("}") else name

        TyperArgument._usage_display_name = _usage_display_name


def finish_help(command: object) -> object:
    """Every command of the click tree gets the root's environment epilog, and its whole first
    paragraph as the line in the root's command list (click cut it at about 45 characters)."""
    for sub in getattr(command, "commands", {}).values():
        sub.epilog = sub.epilog or ENVIRONMENT
        if not sub.short_help and sub.help:
            sub.short_help = " ".join(inspect.cleandoc(sub.help).split("\n\n")[0].split())
    return command


_help_types_and_usage()
