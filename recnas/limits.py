"""Bounds that configs and command-line options share, in a module that imports nothing: the
command line builds its options (and so `recnas --help`) from them without loading pydantic,
and `recnas.configs` validates with the same values (imported from here, never copied)."""

from typing import Literal

SEED_MAX = 2**32 - 1  # what every RNG in use (numpy, torch, Python) accepts

# where a model trains or is evaluated: a training config's `device`, and every `--device`
Device = Literal["auto", "cpu", "cuda"]
