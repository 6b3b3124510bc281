"""Path options of every command. Typer turns an empty value into `Path("")`, which is `.`, so
`--raw ""` used to be read as the current directory and the error named "."; these options
refuse an empty path while parsing, as one usage error naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def parse_path(value: Any) -> Path:
    """The option's value as a Path; an empty string is refused (a default Path passes as is).
    A leading `~` or `~user` is expanded as the shell would: the shell leaves it alone in
    `--out=~/runs` or quoted, and the command then made a folder named `~` in the working
    directory (a search config's `data:` was expanded already). A `~user` of no known user,
    or `~` with no home directory to be found, stays as it is, as in the shell."""
    if isinstance(value, Path):
        return value
    if not str(value):
        raise typer.BadParameter("the path is empty")
    path = Path(value)
    try:
        return path.expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return path


def path_option(default: Any, *names: str, **kwargs: Any) -> Any:
    """`typer.Option` for a Path that refuses an empty value ("<path>" as before in --help)."""
    return typer.Option(default, *names, parser=parse_path, metavar="<path>", **kwargs)


def path_argument(default: Any, **kwargs: Any) -> Any:
    """`typer.Argument` for a Path that refuses an empty value."""
    return typer.Argument(default, parser=parse_path, **kwargs)
