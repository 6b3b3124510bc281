"""Raw CTR formats as *descriptions*: columns, roles, delimiter, header, derived columns.

Every reader, converter and check in `prepare` is driven by a `Format`; Criteo, Avazu, KDD12
and user CSV/Parquet files differ only in the values below, never in code paths. A user
format comes from a small YAML spec (`load_spec`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from recnas.configs import read_yaml
from recnas.errors import DataError

LABEL_MODES = ("binary", "count")  # binary: must be 0/1; count: non-negative integer, label = value > 0
DENSE_TRANSFORMS = ("log1p", "none")  # log1p: log(max(x, 0) + 1), the Criteo convention


@dataclass(frozen=True)
class Derived:
    """A categorical computed from one raw column (vectorised in `recnas.data.encode`)."""

    name: str
    source: str
    kind: str  # "hour_of_day" or "weekday", from a YYMMDDHH string (Avazu `hour`)


@dataclass(frozen=True)
class Join:
    """A side table joined on a key column, adding its columns as categoricals (KDD12 profile)."""

    key: str
    table: "Format"  # how to read the side file; its first column must be the key
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Format:
    """How to read one raw file and what each column means."""

    name: str
    label: str
    dense: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None  # file column order; None: taken from the header
    derived: tuple[Derived, ...] = ()
    join: Join | None = None  # used only when a side file is given (`--profile`)
    label_mode: str = "binary"
    dense_transform: str = "log1p"
    delimiter: str = ","
    header: bool = False
    quote: bool = True  # honour "..." quoting (off for the tab-separated dumps, which never quote)
    kind: str = "text"  # text (delimited, optionally .gz) or parquet

    def cat_names(self, joined: bool = False) -> list[str]:
        names = list(self.categorical) + [d.name for d in self.derived]
        if joined and self.join is not None:
            names += list(self.join.columns)
        return names

    def used_columns(self) -> list[str]:
        """Raw columns the pipeline reads (others are only counted for the field check)."""
        cols = [*([self.label] if self.label else []), *self.dense, *self.categorical, *(d.source for d in self.derived)]
        if self.join is not None:
            cols.append(self.join.key)
        return list(dict.fromkeys(cols))

    def check_columns(self, available: list[str], where: str) -> None:
        missing = [c for c in self.used_columns() if c not in available]
        if missing:
            hint = ""
            if self.kind == "text" and len(available) == 1:  # a header of one name holding another separator
                other = next((d for d in (",", "\t", ";", "|") if d != self.delimiter and d in available[0]), None)
                if other is not None:
                    hint = f"; read as one column with delimiter {self.delimiter!r}, but it holds {other!r}: is the file delimited by {other!r}? (a --spec sets it: `delimiter:`)"
            elif missing == [self.label]:  # Avazu's Kaggle test file has no click column
                hint = f"; data to score needs its label column too: add a {self.label} column of 0s (docs/data.md, scoring new data)"
            raise DataError(f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(available)}){hint}")


CRITEO = Format(
    name="criteo",
    columns=("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))),
    label="label",
    dense=tuple(f"I{i}" for i in range(1, 14)),
    categorical=tuple(f"C{i}" for i in range(1, 27)),
    delimiter="\t",
    quote=False,
)

_AVAZU_CATS = (
    "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
    "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip
AVAZU = Format(
    name="avazu",
    columns=("id", "click", "hour", *_AVAZU_CATS),
    label="click",
    categorical=_AVAZU_CATS,
    derived=(Derived("hour_of_day", "hour", "hour_of_day"), Derived("weekday", "hour", "weekday")),
    delimiter=",",
    header=True,
)

KDD12_PROFILE = Format(
    name="kdd12_profile",
    columns=("UserID", "Gender", "Age"),
    label="",
    categorical=("UserID", "Gender", "Age"),  # a side table: read as strings, no label
    delimiter="\t",
    quote=False,
)
_KDD12_IDS = ("DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID", "KeywordID", "TitleID", "DescriptionID", "UserID")
KDD12 = Format(
    name="kdd12",
    columns=("Click", "Impression", *_KDD12_IDS),
    label="Click",
    label_mode="count",  # one row per line, label = Click > 0 (no expansion by Impression)
    categorical=_KDD12_IDS,
    join=Join(key="UserID", table=KDD12_PROFILE, columns=("Gender", "Age")),
    delimiter="\t",
    quote=False,
)

BUILTIN = {f.name: f for f in (CRITEO, AVAZU, KDD12)}


def builtin(name: str) -> Format:
    try:
        return BUILTIN[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join([*BUILTIN, 'csv'])}") from None


_SPEC_KEYS = {"name", "label", "label_mode", "dense", "categorical", "columns", "delimiter", "header", "dense_transform", "format"}
_TEXT_ONLY_KEYS = ("columns", "header", "delimiter")  # refused for Parquet, whose schema names the columns


def load_spec(path: str | os.PathLike, raw: str | os.PathLike | None = None) -> Format:
    """Read a YAML feature spec for a generic CSV/Parquet file; every mistake names the key.

    Example::

        label: click            # required
        label_mode: binary      # or count (label = value > 0)
        dense: [price, age]
        categorical: [user, item, city]
        delimiter: ","          # text files only (refused for Parquet)
        header: true            # text files only; false needs `columns:` (all file columns, in order)
        dense_transform: log1p  # or none
        format: csv             # or parquet; default from the raw file's extension
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: feature spec not found")
    doc = read_yaml(path, "feature spec", DataError)  # the YAML rules of every config: a key given twice is an error
    unknown = sorted(map(str, set(doc) - _SPEC_KEYS))  # YAML keys need not be strings: `on:` is True, `1:` is 1
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SPEC_KEYS))}")

    def names(key: str) -> tuple[str, ...]:
        value = doc.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and str(v) for v in value):
            raise DataError(f"{path}: key `{key}` must be a list of column names")
        for v in value:
            no_bool(key, v)
        return tuple(str(v) for v in value)

    def no_bool(key: str, value) -> None:  # it became the column "True" and then "missing column True"
        if isinstance(value, bool):
            raise DataError(f"{path}: key `{key}` holds {value!r}, which YAML reads from a bare yes/no/on/off/true/false: quote that column name (e.g. 'on')")

    def choice(key: str, allowed: tuple[str, ...], default: str) -> str:
        value = doc.get(key, default)
        if value not in allowed:
            raise DataError(f"{path}: key `{key}` is {value!r}; expected one of {', '.join(allowed)}")
        return value

    label = doc.get("label")
    if label is None:
        raise DataError(f"{path}: key `label` (the label column name) is required")
    if not isinstance(label, (str, int)) or not str(label):
        raise DataError(f"{path}: key `label` must be the label column's name, got {label!r}")
    no_bool("label", label)
    name = doc.get("name", "csv")
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name):  # a list used to become the name "['a', 'b']"
        raise DataError(f"{path}: key `name` must be the dataset's name (a string, kept in meta.json), got {name!r}")
    header = doc.get("header", True)
    if not isinstance(header, bool):
        raise DataError(f"{path}: key `header` must be true or false")
    delimiter = doc.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"{path}: key `delimiter` must be a single character, got {delimiter!r}")
    if delimiter in ('"', "\n", "\r"):  # the quote and line breaks have their own meaning in a text file
        raise DataError(f"{path}: key `delimiter` cannot be {delimiter!r} (the quote character or a line break); use e.g. ',', ';', '|' or '\\t'")
    kind_default = "parquet" if raw is not None and str(raw).endswith((".parquet", ".pq")) else "csv"
    kind = choice("format", ("csv", "parquet"), kind_default)
    text_only = [k for k in _TEXT_ONLY_KEYS if k in doc]
    if kind == "parquet" and text_only:  # were silently ignored: the schema names the columns
        raise DataError(
            f"{path}: key(s) {', '.join(f'`{k}`' for k in text_only)} apply to delimited text files only; "
            "a Parquet file names its columns in its schema and `label`/`dense`/`categorical` pick them by name "
            "(remove the key(s), or set `format: csv` for a text file)"
        )
    fmt = Format(
        name=str(name),
        label=str(label),
        label_mode=choice("label_mode", LABEL_MODES, "binary"),
        dense=names("dense"),
        categorical=names("categorical"),
        columns=names("columns") or None,
        dense_transform=choice("dense_transform", DENSE_TRANSFORMS, "log1p"),
        delimiter=delimiter,
        header=header,
        kind="parquet" if kind == "parquet" else "text",
    )
    if not fmt.dense and not fmt.categorical:
        raise DataError(f"{path}: the spec lists no features (`dense:` and/or `categorical:`)")
    roles = [fmt.label, *fmt.dense, *fmt.categorical]
    dupes = sorted({c for c in roles if roles.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: column(s) {', '.join(dupes)} listed more than once across label/dense/categorical")
    if fmt.columns is not None and fmt.kind == "text" and fmt.header:  # the header would silently override it
        raise DataError(f"{path}: key `columns` is only read with `header: false`; with a header line the file names its columns")
    if fmt.kind == "text" and not fmt.header and fmt.columns is None:
        raise DataError(f"{path}: `header: false` needs `columns:` (all file columns, in order)")
    if fmt.columns is not None:
        twice = sorted({c for c in fmt.columns if fmt.columns.count(c) > 1})
        if twice:  # as a file header naming a column twice: which of them is meant is unknown
            raise DataError(f"{path}: key `columns` lists {', '.join(twice)} more than once; give every file column its own name")
        fmt.check_columns(list(fmt.columns), f"{path}: key `columns`")
    return fmt


def with_columns(fmt: Format, columns: list[str]) -> Format:
    """The format with its column order taken from a file header."""
    return replace(fmt, columns=tuple(columns))


__all__ = ["Format", "Derived", "Join", "CRITEO", "AVAZU", "KDD12", "KDD12_PROFILE", "BUILTIN", "builtin", "load_spec", "with_columns"]
