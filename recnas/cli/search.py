"""CLI: the main `recnas search` job, `recnas search show`, `recnas study rank`."""

import typer


def register(app: typer.Typer) -> None:
    """Attach the search commands to the root app."""
