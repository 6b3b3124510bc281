"""`python -m recnas` = the `recnas` command (used by torchrun for multi-process training)."""

from recnas.cli import main

main()
