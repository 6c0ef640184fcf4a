"""Allow ``python -m aprrd_cli``."""

from aprrd_cli.cli import main

main()
