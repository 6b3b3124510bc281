"""Options shared by commands that are not paths (those are in `paths`)."""

from __future__ import annotations

import typer

# the count changes the rounding of CPU training, so every command that trains takes it
THREADS = typer.Option(None, "--threads", min=1, max=1024, help="PyTorch CPU threads (per process; default: one per core); the count changes the rounding of CPU training: the command's results record it")
