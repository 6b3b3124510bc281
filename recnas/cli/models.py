"""CLI: supernet / subnet / baseline training and evaluation."""

import typer

supernet_app = typer.Typer(no_args_is_help=True)
subnet_app = typer.Typer(no_args_is_help=True)
baseline_app = typer.Typer(no_args_is_help=True)


def evaluate() -> None:
    """Evaluate a checkpoint (implemented with the training engine)."""
    raise typer.Exit(1)
