"""Loading validated configs from YAML: one mechanism for every config in recnas.

A typo in a YAML key would otherwise be silently ignored and a run would use the default;
here every config model forbids unknown keys, and every problem becomes one ConfigError that
names the file, the (dotted) key, and what is allowed there. The file helpers every reader and
writer of recnas shares live here too (`read_text`, `atomic_write`; whole output folders:
`recnas.staging`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from recnas.errors import ConfigError, RecnasError
from recnas.limits import SEED_MAX  # read as configs.SEED_MAX too
from recnas.staging import named_os_error, temp_sibling

M = TypeVar("M", bound=BaseModel)

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps
    the last value, so a pasted-over setting would otherwise silently win."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: SafeLoader merges it below, the keys given beside it winning (YAML's rule, not a paste)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # unhashable keys: SafeLoader's own error below says so
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def _no_yaml11_surprise(self, node, octal: bool = True) -> None:
        """YAML 1.1 reads `epochs: 010` as the octal 8 and `epochs: 1:30` as the base-60 90: a
        number the user did not write, taken silently. Refused, so the user writes what they mean."""
        text = str(node.value).replace("_", "")
        body = text.lstrip("+-")
        if ":" in body:
            raise yaml.constructor.ConstructorError(None, None, f"{text} is read by YAML as a base-60 number, not what it looks like: quote it if it is text, or write the number itself", node.start_mark)
        if octal and len(body) > 1 and body[0] == "0" and body[1] not in "xb":
            raise yaml.constructor.ConstructorError(None, None, f"{text} is read by YAML as the octal number {int(text, 8)}: write it without the leading zero, or quote it if it is text", node.start_mark)

    def construct_yaml_int(self, node):
        self._no_yaml11_surprise(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        self._no_yaml11_surprise(node, octal=False)  # 01.5 is 1.5
        return super().construct_yaml_float(node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _UniqueKeyLoader.construct_yaml_float)


def require_type(value: Any, cls: type | tuple[type, ...], what: str, hint: str = "") -> Any:
    """`value` if it is an instance of `cls`; a TypeError otherwise, naming `what` (the argument),
    the type wanted and the one given, and `hint` (how to make the right one). The Python API's
    entry points check their arguments so: a dict for a config or a path for a store used to
    fail deep inside with an AttributeError ("'dict' object has no attribute 'device'")."""
    if isinstance(value, cls):
        return value
    wanted = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
    article = "an" if wanted[0] in "AEIOU" else "a"
    raise TypeError(f"{what} must be {article} {wanted}, got {type(value).__name__}" + (f"; {hint}" if hint else ""))


def read_text(path: str | Path, what: str, error: type[RecnasError] = ConfigError) -> str:
    """A text file's contents; a missing, unreadable or binary file is one `error` naming `what`."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a readable {what} (not UTF-8 text)") from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """A file handle on a temp file beside `path`, fsynced and `os.replace`d over `path` when the
    block ends: a crash or Ctrl-C mid-write leaves the previous file whole (or none), never a
    truncated one that a resumed run would trust. On an error the temp file is removed."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # under a regular file even the unlink fails (not a directory)
            tmp.unlink(missing_ok=True)
        # name the file the user asked for, not our temp file; a failed write (a full disk, a
        # file size limit) names none: name it too, or the error said only "File too large"
        if isinstance(exc, OSError) and exc.filename == str(tmp):
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        if isinstance(exc, OSError) and exc.filename is None:
            raise named_os_error(exc, path) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`Path(path).write_text(text)` through `atomic_write`: the one way run files are written."""
    with atomic_write(path) as fh:
        fh.write(text)


def parse_json(text: str, source: str) -> Any:
    """`json.loads` for JSON a user writes (--hparams, architecture files): a key given twice in
    one object is an error, since `json` (like PyYAML) would silently keep the last one."""

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError(f"{source}: key {twice[0]!r} is given twice")
        return dict(pairs)

    try:
        return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=unique)  # a BOM (Windows editors) as YAML allows it
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON ({exc})") from None
    except RecursionError:  # `[[[[...` thousands deep was a traceback
        raise ConfigError(f"{source}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # a number of thousands of digits, past what Python converts: was a traceback
        raise ConfigError(f"{source}: invalid JSON ({_value_problem(exc)})") from None


def _value_problem(exc: ValueError) -> str:
    """A value a parser could not make, in one line: Python's refusal of an integer of more
    than 4300 digits goes on to name `sys.set_int_max_str_digits`, nothing a user sets."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    digits = re.search(r"limit \((\d+) digits\) for integer string conversion.*?value has (\d+) digits", text)
    return f"a number of {digits[2]} digits, more than the {digits[1]} that can be read" if digits else text


def read_yaml(path: str | Path, what: str = "config file", error: type[RecnasError] = ConfigError) -> dict:
    """The top-level mapping of a YAML file (an empty file is an empty mapping); every problem,
    a key given twice included, is one `error` naming the file."""
    path = Path(path)
    text = read_text(path, what, error)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, whatever the YAML error
        raise error(f"{path}:{where} invalid YAML ({problem})") from None
    except RecursionError:  # `[[[[...` thousands deep was a traceback
        raise error(f"{path}: invalid YAML (nested too deeply)") from None
    except ValueError as exc:  # a value YAML's constructors cannot make (`2024-13-45`, a number of thousands of digits): was a traceback
        raise error(f"{path}: invalid YAML ({_value_problem(exc)})") from None
    problem = _alias_problem(data)
    if problem:
        raise error(f"{path}: invalid YAML ({problem})")
    return expect_mapping(data, str(path), error)


YAML_VALUES_MAX = 1_000_000  # values a YAML file may come to through its aliases; a config holds hundreds


def _alias_problem(data: Any) -> str | None:
    """Why the aliases (`*name`) of a loaded YAML document cannot be taken, or None. The loader
    shares one object for every use of an anchor, but whatever reads it (validation, an error
    naming the value, a dump) walks each use in full: nine lines nesting ten aliases of the line
    before made a 500 MB error message (20 seconds and 1.3 GB; one line more, ten times that),
    a "billion laughs". Refused where its aliases take it past YAML_VALUES_MAX values,
    and where a value holds itself (an alias inside its own anchor), which nothing reads."""
    sizes: dict[int, int] = {}  # values each list or mapping comes to, its aliases repeated
    inside: set[int] = set()  # those being counted: met again below themselves, a value holds itself
    written = 0  # values as the file writes them, each anchor's once

    def size(value: Any) -> int:
        nonlocal written
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) in sizes:
            return sizes[id(value)]
        if id(value) in inside:
            raise ValueError("a value holds itself: an alias inside its own anchor")
        inside.add(id(value))
        items = list(value.values() if isinstance(value, dict) else value)
        sizes[id(value)] = 1 + sum(size(v) for v in items)
        inside.discard(id(value))
        written += 1 + sum(not isinstance(v, (dict, list)) for v in items)
        return sizes[id(value)]

    try:
        total = size(data)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    if total > YAML_VALUES_MAX and total > written:
        return f"its aliases repeat their anchors' values into {total:,} values, more than the {YAML_VALUES_MAX:,} any config needs"
    return None


def expect_mapping(data: Any, source: str, error: type[RecnasError] = ConfigError) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _non_finite(data: Any, loc: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """(key path, value) of every NaN or infinite float nested in `data`."""
    if isinstance(data, float) and not math.isfinite(data):
        yield loc, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _non_finite(value, (*loc, key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from _non_finite(value, (*loc, i))


def _coerced(given: Any, got: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(key path, given value) wherever the input held true/false or a string and the validated
    config holds an integer there: pydantic's lax mode reads `epochs: yes` as 1 epoch and
    `"dense_dim": "16"` as 16, a typo or a wrong file taken silently. Strings that became
    floats stay allowed: YAML reads `lr: 1e-3` as a string."""
    if isinstance(given, (bool, str)):
        if (isinstance(got, int) and not isinstance(got, bool)) or (isinstance(given, bool) and isinstance(got, float)):
            yield loc, given
    elif isinstance(given, dict) and isinstance(got, dict):
        for key, value in given.items():
            if key in got:
                yield from _coerced(value, got[key], (*loc, key))
    elif isinstance(given, (list, tuple)) and isinstance(got, (list, tuple)) and len(given) == len(got):
        for i, (a, b) in enumerate(zip(given, got)):
            yield from _coerced(a, b, (*loc, i))


def key_name(loc: tuple) -> str:
    """A key path as errors name it: `evolution.generations`, `blocks.0.dense_dim`."""
    return ".".join(map(str, loc)) or "(config)"


def validate(model: type[M], data: Any, source: str = "config") -> M:
    """`model(**data)`, with every validation problem explained in one ConfigError.

    NaN and infinite numbers (YAML `.inf`, `nan`, `1e400`) are refused here, for every config
    model at once: no setting means anything with them, and pydantic's bounds let `.inf` through
    (`lr: .inf` passes `gt=0`, then training diverges). The validated values are checked, since
    pydantic also turns strings such as "inf" into floats. So are numbers given as true/false
    or as quoted integers (`_coerced`), before any other problem of a config refused anyway
    (`_coerced_fields`)."""
    data = expect_mapping(data, source)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        # a model-level check saw the coerced value (dlrm's `embed_dim: true` read as 1 failed
        # "bottom_mlp must end in embed_dim (1)"): the coercion is the mistake to report
        coerced = list(_coerced_fields(model, data))
        raise ConfigError(f"{source}: {_must_be_numbers(coerced) if coerced else explain(model, exc)}") from None
    dumped = config.model_dump()
    bad = [f"key {key_name(loc)!r}: must be a finite number (got {value})" for loc, value in _non_finite(dumped)]
    if coerced := list(_coerced(data, dumped)):
        bad.append(_must_be_numbers(coerced))
    if bad:
        raise ConfigError(f"{source}: {'; '.join(bad)}")
    return config


def _must_be_numbers(coerced: list[tuple[tuple, Any]]) -> str:
    return "; ".join(f"key {key_name(loc)!r}: must be a number, not {json.dumps(value)}" for loc, value in coerced)


def _coerced_fields(model: type[BaseModel], data: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """`_coerced` for data that `model` refused, so with no validated config to compare: each
    given field is validated on its own (nested config models field by field in turn), without
    the model-level checks that may be what refused it."""
    if not isinstance(data, dict):
        return
    for key, given in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:  # an unknown key: `explain`'s
            continue
        sub = _submodel(model, (key,))
        if sub is not None and isinstance(given, (list, tuple)):  # a list of config models (`blocks`)
            for i, item in enumerate(given):
                yield from _coerced_fields(sub, item, (*loc, key, i))
        elif sub is not None and isinstance(given, dict):
            yield from _coerced_fields(sub, given, (*loc, key))
        else:
            try:
                got = TypeAdapter(field.annotation).validate_python(given)
            except (ValidationError, TypeError, ValueError):  # refused by the type itself: `explain` says why
                continue
            yield from _coerced(given, got, (*loc, key))


def load(model: type[M], path: str | Path) -> M:
    return validate(model, read_yaml(path), str(path))


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The (nested) config model that holds the key at `loc`, for listing its valid keys.
    Integer parts index a list or tuple of models (`blocks.0.zz`): the item model stays current."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *typing.get_args(ann)]
        current = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def _allowed_values(model: type[BaseModel], loc: tuple) -> str | None:
    parent = _submodel(model, loc[:-1]) if loc else None
    field = parent.model_fields.get(str(loc[-1])) if parent is not None else None
    if field is None:
        return None
    ann = field.annotation
    options = [ann, *typing.get_args(ann)]
    values = [v for a in options if typing.get_origin(a) is Literal for v in typing.get_args(a)]
    return ", ".join(map(str, values)) or None


UNKNOWN_SHOWN = 5  # unknown keys of one mapping named in an error; the rest are counted


def _unknown_keys(model: type[BaseModel] | None, parent: tuple, keys: list[str]) -> str:
    """One clause for all the unknown keys of one mapping, with its valid keys listed once: a
    file of another kind (a training config given where a search config goes) used to repeat
    the list for each of its keys, an error of several kilobytes."""
    shown = ", ".join(map(repr, keys[:UNKNOWN_SHOWN])) + (f" and {len(keys) - UNKNOWN_SHOWN} more" if len(keys) > UNKNOWN_SHOWN else "")
    sub = _submodel(model, parent) if model is not None else None
    return f"unknown key{'s' if len(keys) > 1 else ''} {shown}" + (f"; valid keys: {', '.join(sub.model_fields) or 'none'}" if sub is not None else "")


def explain(model: type[BaseModel] | None, exc: ValidationError) -> str:
    """One clause per problem: unknown keys (one clause per mapping) list the valid keys, choice
    keys their values (`model=None` when the caller cannot tell which model raised: then
    without those lists)."""
    lines: list = []  # clauses, and the key path of a mapping with unknown keys where its clause goes
    unknown: dict[tuple, list[str]] = {}
    errors = exc.errors()
    for err in errors:
        loc = tuple(err["loc"])
        key = key_name(loc)
        if err["type"] == "too_short" and any(len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors):
            continue  # "at least 1 item after validation, not 0": its items' own errors say why
        if err["type"] == "extra_forbidden":
            if loc[:-1] not in unknown:
                lines.append(loc[:-1])
            unknown.setdefault(loc[:-1], []).append(key)
            continue
        value = err.get("input")
        allowed = _allowed_values(model, loc) if model is not None else None
        if allowed and err["type"] == "literal_error":
            lines.append(f"key {key!r}: invalid value {value!r}; allowed: {allowed}")
        elif err["type"] == "invalid_key":  # its loc ends in the key itself, as pydantic mangles it: `off:` was "supernet.0"
            where = f"in {key_name(loc[:-1])!r} " if loc[:-1] else ""
            shown = json.dumps(value) if isinstance(value, (bool, int, float, type(None))) else str(value)  # a date key, as written
            lines.append(f"key {shown} {where}is no key name (YAML reads a bare yes/no/on/off as true/false, ~ as null, digits as a number or date): quote it, or remove it")
        elif err["type"] == "missing":  # its input is the whole mapping that lacks it: a meta.json of kilobytes
            lines.append(f"key {key!r}: missing (it is required)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            # a whole section's check (a model validator) says what is wrong in it: its raw input
            # repeated the section, YAML's strings and all ("got {'flops': '-1.0e6'}")
            lines.append(msg if not loc else f"key {key!r}: {msg}" if isinstance(value, dict) else f"key {key!r}: {msg} (got {value!r})")
    return "; ".join(_unknown_keys(model, line, unknown[line]) if isinstance(line, tuple) else line for line in lines)
