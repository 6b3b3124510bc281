"""How the job writes its stages to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def stage(console: Console, name: str, detail: str = "") -> None:
    """One line a stage of the job starts with, so a log reads as the job's outline."""
    console.print(f"[bold cyan]==>[/] [bold]{name}[/] {detail}")


def progress_bar(enabled: bool, console: Console) -> Progress:
    """The job's bar for a long stage (generations), erased when done."""
    # only where it can be drawn and erased: piped (or TERM=dumb) the transient bar left a blank line in the log
    return Progress(TextColumn("    {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console, disable=not (enabled and console.is_interactive), transient=True)
