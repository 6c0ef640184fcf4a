"""One module per ``aprrd`` subcommand; each registers itself on ``aprrd_cli.app.app``."""
