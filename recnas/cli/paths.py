"""Path options of every command. Typer turns an empty value into `Path("")`, which is `.`, so
`--raw ""` used to be read as the current directory and the error named "."; these options
refuse an empty path while parsing, as one usage error naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def parse_path(value: Any) -> Path:
    """The option's value as a Path; an empty string is refused (a default Path passes as is)."""
    if isinstance(value, Path):
        return value
    if not str(value):
        raise typer.BadParameter("the path is empty")
    return Path(value)


def path_option(default: Any, *names: str, **kwargs: Any) -> Any:
    """`typer.Option` for a Path that refuses an empty value ("<path>" as before in --help)."""
    return typer.Option(default, *names, parser=parse_path, metavar="<path>", **kwargs)


def path_argument(default: Any, **kwargs: Any) -> Any:
    """`typer.Argument` for a Path that refuses an empty value."""
    return typer.Argument(default, parser=parse_path, **kwargs)
