"""CLI commands (placeholder app; commands are added by the owning sub-package)."""

import typer

app = typer.Typer(no_args_is_help=True)
