"""Options shared by commands that are not paths (those are in `paths`)."""

from __future__ import annotations

import typer

# the count changes the rounding of CPU training, so every command that trains takes it
THREADS = typer.Option(None, "--threads", min=1, max=1024, help="PyTorch CPU threads (per process; default: one per core); the count changes the rounding of CPU training: the command's results record it")

# drawn on a terminal only: a piped log gets the lines, not the bars
PROGRESS = typer.Option(True, "--progress/--no-progress", help="show progress bars (only on a terminal)")
