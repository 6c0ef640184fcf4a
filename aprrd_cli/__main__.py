"""Allow ``python -m aprrd_cli`` (and ``torchrun -m aprrd_cli``) with the CLI's exit code."""

from aprrd_cli.cli import main

raise SystemExit(main())
