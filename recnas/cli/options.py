"""Options shared by commands that are not paths (those are in `paths`)."""

from __future__ import annotations

import typer

from recnas.limits import SEED_MAX

# the count changes the rounding of CPU training, so every command that trains takes it
THREADS = typer.Option(None, "--threads", min=1, max=1024, help="PyTorch CPU threads (per process; default: one per core); the count changes the rounding of CPU training: the command's results record it")

# drawn on a terminal only: a piped log gets the lines, not the bars
PROGRESS = typer.Option(True, "--progress/--no-progress", help="show progress bars (only on a terminal)")

# the command-line seed wins over the one of --config (every command that reads a seed from its config)
SEED = typer.Option(None, "--seed", min=0, max=SEED_MAX, help="override the config's seed")

# an --out that holds a run (or a finished study) is refused without it: nothing written is replaced silently
OVERWRITE = typer.Option(False, "--overwrite", help="start afresh even if OUT already holds a run")


DEVICES = "auto (cuda where available, else cpu), cpu or cuda"


def device_option(default: str | None, what: str, note: str = ""):
    """`--device`, typed `Device` by its commands so that a bad value is refused while parsing
    (one line, exit 2): its help is `what` it sets, the values, then `note`."""
    return typer.Option(default, "--device", help=f"{what}: {DEVICES}{note}")


# the command-line device wins over the one of --config, as --seed does (every command that trains from a config)
DEVICE = device_option(None, "override the config's device")
