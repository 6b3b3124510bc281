"""Streaming raw input: byte blocks -> Arrow tables of strings, each row tagged with its line.

We cut the file into newline-aligned blocks ourselves (instead of pyarrow's streaming CSV
reader) for three reasons: every row gets its exact 1-based line number (error messages
name it), the SHA-256 of the file as stored is computed from the same bytes we parse (one
read of the file), and a `.gz` file is just another byte stream. Each block is parsed by
pyarrow's multithreaded CSV parser with every column as a string; only blocks that contain
a row with the wrong field count are parsed a second time, single-threaded, to learn which
lines they were.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recnas.data.formats import Format, with_columns
from recnas.errors import DataError

MAX_LINE_BYTES = 64 << 20  # a "line" longer than this means the file is not delimited text
# the first bytes of compressed files that are not read (bzip2: its block or end-of-stream
# marker too, so that a text file starting with "BZh" is not taken for one)
_OTHER_COMPRESSIONS = ((rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", "bzip2"), (rb"\xfd7zXZ\x00", "xz"), (rb"\x28\xb5\x2f\xfd", "zstd"), (rb"PK\x03\x04", "zip"))


@dataclass
class Chunk:
    table: pa.Table  # the used columns (strings for text input)
    lines: np.ndarray  # int64 [rows]: 1-based line (text) or row (parquet) number in the raw file
    bytes_read: int  # of the file as stored, for progress
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of rows dropped while parsing


class _HashingFile:
    """A read-only byte stream that hashes what passes through it."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "rb")
        self._sha = hashlib.sha256()
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._sha.update(data)
        self.position += len(data)
        return data

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        self._sha.update(memoryview(b)[:n])  # hashlib releases the GIL on large buffers
        self.position += n
        return n

    def readable(self) -> bool:
        return True

    def finish(self) -> str:
        """Hash the unread rest (e.g. after --max-rows) so the digest is always of the whole file."""
        while self.read(8 << 20):
            pass
        return self._sha.hexdigest()

    def close(self) -> None:
        self._fh.close()


def check_readable(path: str | os.PathLike, what: str = "raw file") -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: {what} is not a regular file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: {what} is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} is empty")
    return path


class RawReader:
    """Reads one raw file described by a `Format`. Use as a context manager; `digest()` at the end."""

    def __init__(self, path: str | os.PathLike, fmt: Format, block_bytes: int = 16 << 20, what: str = "raw file"):
        self.path = check_readable(path, what)
        self.size = self.path.stat().st_size
        self.fmt = fmt
        self.block_bytes = block_bytes
        self._src: _HashingFile | None = None

    def __enter__(self) -> "RawReader":
        return self

    def __exit__(self, *exc) -> None:
        if self._src is not None:
            self._src.close()

    def digest(self) -> str:
        """SHA-256 of the whole file as stored (hashes whatever was not read yet)."""
        if self._src is None:
            self._src = _HashingFile(self.path)
        return self._src.finish()

    def chunks(self) -> Iterator[Chunk]:
        if self.fmt.kind == "parquet":
            yield from self._parquet_chunks()
        else:
            yield from self._text_chunks()

    # -- delimited text --------------------------------------------------------------------
    def _check_not_binary(self) -> None:
        """A Parquet file, gzip without the .gz name, or another compression (bzip2, xz, zstd,
        zip) read as text: every line was a bad row ("not UTF-8 text ... pass --on-bad-row
        skip"), then "no valid rows"."""
        with self.path.open("rb") as fh:
            head = fh.read(10)
        other = next((name for magic, name in _OTHER_COMPRESSIONS if re.match(magic, head)), None)
        if other is not None:  # likewise: "not UTF-8 text" on every line
            raise DataError(f"{self.path}: {other}-compressed, which is not read (only gzip, as a name ending in .gz); decompress it, or recompress it with gzip")
        if head[:4] == b"PAR1":
            raise DataError(f"{self.path}: a Parquet file, not delimited text; read it with --dataset csv and a --spec naming its columns (format: parquet)")
        if head[:2] == b"\x1f\x8b" and self.path.suffix != ".gz":
            raise DataError(f"{self.path}: gzip-compressed, but only a name ending in .gz is decompressed; rename it to {self.path.name}.gz (or decompress it)")
        # a tar archive (Criteo's own download is dac.tar.gz, train.txt inside): its member
        # headers were read as rows, the first one glued to the first data line, and with
        # --on-bad-row skip the store was made from whatever lines of the members parsed
        with self.path.open("rb") as fh, self._read_errors():
            stream = gzip.GzipFile(fileobj=fh, mode="rb") if self.path.suffix == ".gz" else fh
            block = stream.read(512)
        if len(block) == 512 and block[257:262] == b"ustar":
            raise DataError(f"{self.path}: a tar archive, not delimited text; extract the data file from it first (tar xf {self.path.name}) and pass that file")

    def _text_chunks(self) -> Iterator[Chunk]:
        self._check_not_binary()
        src = self._src = _HashingFile(self.path)
        stream = gzip.GzipFile(fileobj=src, mode="rb") if self.path.suffix == ".gz" else src
        fmt, line, rest = self.fmt, 0, b""
        if fmt.header:
            header, rest = self._read_header(stream)
            line = 1
            fmt = with_columns(fmt, header) if fmt.columns is None or list(fmt.columns) != header else fmt
            fmt.check_columns(header, f"{self.path}: header (line 1)")
        elif fmt.columns is None:
            raise DataError(f"{self.path}: format {fmt.name!r} has no header and no column list")
        # One buffer, reused for every block: the file is read straight into it after the
        # partial line carried over from the previous block, and pyarrow parses the complete
        # lines in place (its arrays never point into the input), so no block is copied.
        buf = bytearray(self.block_bytes + len(rest) + (1 << 16))
        buf[: len(rest)] = rest
        filled, seen_data = len(rest), False
        while True:
            if len(buf) < filled + self.block_bytes:  # a line longer than the free room
                buf = buf + bytes(filled + self.block_bytes - len(buf))
            view = memoryview(buf)
            got = self._readinto(stream, view[filled : filled + self.block_bytes])
            end = filled + got
            if got:
                cut = buf.rfind(b"\n", 0, end) + 1
                if cut == 0:
                    if end > MAX_LINE_BYTES:
                        raise DataError(f"{self.path}:{line + 1}: no line break in {MAX_LINE_BYTES >> 20} MiB; is this a delimited text file?")
                    filled = end
                    continue
            else:
                cut = end
            if cut:
                seen_data = True
                n_lines = buf.count(b"\n", 0, cut) + (0 if buf[cut - 1] == 0x0A else 1)
                table, lines, bad = self._parse_block(view[:cut], fmt, line, n_lines)
                yield Chunk(table, lines, src.position, bad)
                line += n_lines
            view.release()
            buf[: end - cut] = buf[cut:end]
            filled = end - cut
            if not got:
                break
        if not seen_data:
            raise DataError(f"{self.path}: no data rows" + (" after the header" if fmt.header else ""))

    @contextlib.contextmanager
    def _read_errors(self):
        """A failed read of the raw file becomes one DataError naming it."""
        try:
            yield
        except EOFError:
            raise DataError(f"{self.path}: truncated compressed file (ended before the end-of-stream marker)") from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{self.path}: corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise DataError(f"{self.path}: read error ({exc})") from None

    def _readinto(self, stream, view: memoryview) -> int:
        with self._read_errors():
            return stream.readinto(view)

    def _read(self, stream, n: int) -> bytes:
        with self._read_errors():
            return stream.read(n)

    def _read_header(self, stream) -> tuple[list[str], bytes]:
        data = b""
        while b"\n" not in data:
            buf = self._read(stream, min(self.block_bytes, 1 << 16))
            if not buf:
                break
            data += buf
            if len(data) > MAX_LINE_BYTES:
                raise DataError(f"{self.path}:1: no line break in the header; is this a delimited text file?")
        head, _, rest = data.partition(b"\n")
        try:
            text = head.decode("utf-8-sig").rstrip("\r")  # -sig: a spreadsheet export starts with a byte order mark
        except UnicodeDecodeError:
            raise DataError(f"{self.path}:1: header is not UTF-8 text") from None
        if "\r" in text:  # csv.reader would fail with a traceback; split() would keep it in a name
            raise DataError(
                f"{self.path}:1: header: a carriage return inside the line (line ends of a carriage return "
                "alone, as classic Mac OS wrote them, are not read: convert them to \\n or \\r\\n)"
            )
        # quoted as the rows are: a name holding the delimiter ("price, EUR") is one column
        fields = next(csv.reader([text], delimiter=self.fmt.delimiter, quotechar='"')) if self.fmt.quote and text else text.split(self.fmt.delimiter)
        names = [n.strip().strip('"') for n in fields]
        if not text or len(set(names)) != len(names):
            raise DataError(f"{self.path}:1: header must list distinct column names, got {text[:200]!r}")
        return names, rest

    def _parse_block(self, block: bytes, fmt: Format, line: int, n_lines: int):
        # pyarrow cannot report a row that is not UTF-8 (its invalid-row callback fails to
        # decode it and the whole block errors), so such lines are masked first, as bad rows
        undecodable: set[int] = set()
        if not _is_ascii(block):
            try:
                str(block, "utf-8")
            except UnicodeDecodeError:
                block, undecodable = _mask_undecodable(block, fmt)
        invalid: list[int] = []

        def handler(row) -> str:
            invalid.append(row.number or 0)
            return "skip"

        try:  # fast path: label and dense parsed as numbers by pyarrow ("" -> null = missing)
            typed = True
            table = self._csv(block, fmt, line, n_lines, handler, threads=True, typed=True)
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc):
                raise self._error(exc, line, n_lines) from None
            typed, invalid = False, []  # a non-numeric value somewhere: strings, checked per row later
            table = self._csv(block, fmt, line, n_lines, handler, threads=True, typed=False)
        lines = np.arange(line + 1, line + 1 + n_lines, dtype=np.int64)
        bad: list[tuple[int, str]] = []
        if invalid:  # rare: parse again single-threaded, where pyarrow knows each row's number
            found: list[tuple[int, int, int]] = []

            def numbered(row) -> str:
                found.append((row.number, row.expected_columns, row.actual_columns))
                return "skip"

            table = self._csv(block, fmt, line, n_lines, numbered, threads=False, typed=typed)
            if max(number for number, _, _ in found) > n_lines:  # more rows than lines (its numbers count rows)
                raise self._not_one_row(block, fmt, line, n_lines)
            bad = [(line + number, "not UTF-8 text (invalid bytes)" if number in undecodable else f"expected {expected} fields, found {actual}") for number, expected, actual in found]
            lines = np.delete(lines, [n - 1 for n, _, _ in found])
        table = table.combine_chunks()  # one chunk per column: polars then codes it in file order
        if len(lines) != table.num_rows:
            raise self._not_one_row(block, fmt, line, n_lines)
        if _may_hold_empty_lines(table.column(fmt.used_columns()[0])):
            table, lines, bad = _drop_empty_lines(block, line, table, lines, bad)
        return table, lines, bad

    def _not_one_row(self, block, fmt: Format, line: int, n_lines: int) -> DataError:
        """The error for a block whose rows are not its lines, naming the first line that the
        parser does not read as exactly one row (valid or invalid): one with a carriage return
        inside it or a quote that opens a field and is not closed on that line (it swallows the
        row of empty fields parsed after it). Only such lines are parsed, one at a time."""
        found = self._first_line_not_one_row(block, fmt)
        where = f"{self.path}:{line + found}" if found else f"{self.path}: lines {line + 1}-{line + n_lines}"
        return DataError(f"{where}: not one row per line: a carriage return inside the line or a quoted field left open (quoted line breaks are not supported)")

    @staticmethod
    def _first_line_not_one_row(block, fmt: Format) -> int | None:
        read = pacsv.ReadOptions(column_names=list(fmt.columns), use_threads=False)
        convert = pacsv.ConvertOptions(column_types=dict.fromkeys(fmt.columns, pa.string()), check_utf8=False)
        probe = fmt.delimiter.encode() * (len(fmt.columns) - 1)
        for i, text in enumerate(bytes(block).split(b"\n")):
            body = text[:-1] if text.endswith(b"\r") else text
            if b"\r" not in body and not (fmt.quote and b'"' in body):
                continue
            invalid: list = []
            options = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char='"' if fmt.quote else False, ignore_empty_lines=False, invalid_row_handler=lambda row: invalid.append(row) or "skip")
            try:
                rows = pacsv.read_csv(pa.BufferReader(text + b"\n" + probe), read_options=read, parse_options=options, convert_options=convert).num_rows
            except pa.ArrowInvalid:
                return i + 1
            if rows + len(invalid) != 2:
                return i + 1
        return None

    def _error(self, exc: Exception, line: int, n_lines: int) -> DataError:
        msg = str(exc).splitlines()[0]
        return DataError(f"{self.path}: lines {line + 1}-{line + n_lines}: cannot parse ({msg})")

    def _csv(self, block: bytes, fmt: Format, line: int, n_lines: int, handler, threads: bool, typed: bool) -> pa.Table:
        used = fmt.used_columns()
        numeric = {fmt.label, *fmt.dense} if typed else set()
        try:
            return pacsv.read_csv(
                pa.BufferReader(block),
                read_options=pacsv.ReadOptions(column_names=list(fmt.columns), use_threads=threads, block_size=4 << 20),
                parse_options=pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char='"' if fmt.quote else False, ignore_empty_lines=False, invalid_row_handler=handler),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.float64() if c in numeric else pa.string() for c in used},
                    include_columns=used,
                    check_utf8=not _is_ascii(block),  # skip UTF-8 validation when it cannot fail
                    null_values=[""],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            if typed and "conversion error" in str(exc):
                raise
            raise self._error(exc, line, n_lines) from None
        except pa.ArrowTypeError as exc:
            raise self._error(exc, line, n_lines) from None

    # -- parquet -----------------------------------------------------------------------------
    def _parquet_chunks(self) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from None
        names = pf.schema_arrow.names
        self.fmt.check_columns(names, f"{self.path}: Parquet schema")
        self._check_parquet_types(pf.schema_arrow)
        if pf.metadata.num_rows == 0:
            raise DataError(f"{self.path}: no data rows")
        row = 0
        casts = self._polars_casts(pf.schema_arrow)
        binary = [c for c in self.fmt.categorical if _is_binary(casts.get(c, pf.schema_arrow.field(c).type))]
        try:
            for i in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=1 << 16, row_groups=[i], columns=self.fmt.used_columns()):
                    n = batch.num_rows
                    chunk = Chunk(_cast_columns(pa.Table.from_batches([batch]), casts), np.arange(row + 1, row + 1 + n, dtype=np.int64), int(self.size * (i + 1) / pf.num_row_groups))
                    yield _binary_as_text(chunk, binary) if binary else chunk
                    row += n
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: corrupt Parquet data near row {row + 1} ({exc})") from None

    def _polars_casts(self, schema: pa.Schema) -> dict[str, pa.DataType]:
        """Used columns to cast before polars sees them, as Parquet stores them and polars fails
        on them with a traceback: a dictionary-encoded label or dense column (a pandas category
        column; polars makes it a categorical, which it cannot cast to a number) is decoded, a
        dictionary of bytes too (so `_binary_as_text` finds values that are not UTF-8), a binary
        view becomes plain bytes, and a 256-bit decimal (polars panics) becomes a float64 number
        or, for a categorical, a string."""
        numeric = {self.fmt.label, *self.fmt.dense} if self.fmt.label else set(self.fmt.dense)
        casts = {}
        for name in self.fmt.used_columns():
            kind = schema.field(name).type
            value = kind.value_type if pa.types.is_dictionary(kind) else kind
            if pa.types.is_decimal256(value):
                casts[name] = pa.float64() if name in numeric else pa.string()
            elif pa.types.is_binary_view(value):  # pyarrow cannot filter its rows (`_binary_as_text`)
                casts[name] = pa.large_binary()
            elif pa.types.is_dictionary(kind) and (name in numeric or _is_binary(value)):
                casts[name] = value
        return casts

    def _check_parquet_types(self, schema: pa.Schema) -> None:
        """Every used column holds one scalar per row, and label/dense columns no raw bytes: the
        converter would otherwise fail with a polars or numpy traceback."""
        numeric = {self.fmt.label, *self.fmt.dense} if self.fmt.label else set(self.fmt.dense)
        for name in self.fmt.used_columns():
            kind = schema.field(name).type
            value = kind.value_type if pa.types.is_dictionary(kind) else kind
            if pa.types.is_nested(value) or (name in numeric and _is_binary(value)):
                expected = "a number (or a string holding one)" if name in numeric else "a number or a string"
                raise DataError(f"{self.path}: column {name} has Parquet type {kind}; expected {expected} per row")
            if name in numeric and (pa.types.is_date(value) or pa.types.is_time(value) or pa.types.is_timestamp(value)):
                # it became the raw count of days or microseconds since 1970 (or midnight): a number of no use as a feature
                role = "the label" if name == self.fmt.label else "a dense feature"
                raise DataError(f"{self.path}: column {name} has Parquet type {kind}, a point in time, listed as {role}; list it as categorical, or convert it to a number that means something first (e.g. the hour of day)")


def _cast_columns(table: pa.Table, casts: dict[str, pa.DataType]) -> pa.Table:
    """The table with each column named in `casts` cast to its type (`RawReader._polars_casts`)."""
    for name, kind in casts.items():
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(kind))
    return table


def _may_hold_empty_lines(column: pa.ChunkedArray) -> bool:
    """pyarrow reads an empty line as a row of nulls (numbers) or of empty strings (text: a
    block re-parsed as strings, a side table without a label), so a block whose first used
    column has neither holds no empty line."""
    if column.null_count:
        return True
    return pa.types.is_string(column.type) and len(column) > 0 and pc.min(pc.binary_length(column)).as_py() == 0


def _drop_empty_lines(block, line: int, table: pa.Table, lines: np.ndarray, bad: list[tuple[int, str]]):
    """Empty lines as bad rows named as such (not as a missing label). Only called for a block
    whose first used column has an empty value (`_may_hold_empty_lines`), so the scan costs
    nothing on clean input."""
    data = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(data == 0x0A)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    length = ends - starts
    empty = (length == 0) | ((length == 1) & (data[np.minimum(starts, len(data) - 1)] == 0x0D))
    numbers = line + 1 + np.flatnonzero(empty)
    keep = ~np.isin(lines, numbers)
    if keep.all():
        return table, lines, bad
    return table.filter(pa.array(keep)), lines[keep], bad + [(int(n), "empty line") for n in lines[~keep]]


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind)


def _binary_as_text(chunk: Chunk, columns: list[str]) -> Chunk:
    """Parquet bytes columns as strings (the encoder reads text). A value that is not UTF-8
    makes its row bad, as an undecodable text line does, instead of failing the whole cast."""
    table, lines = chunk.table, chunk.lines
    for name in columns:
        values = table.column(name)
        try:
            text = values.cast(pa.string())
        except pa.ArrowInvalid:
            ok = np.array([_utf8(v) for v in values.to_pylist()], dtype=bool)
            chunk.bad += [(int(line), f"column {name}: not UTF-8 text") for line in lines[~ok]]
            table, lines = table.filter(pa.array(ok)), lines[ok]
            text = table.column(name).cast(pa.string())
        table = table.set_column(table.schema.get_field_index(name), name, text)
    chunk.table, chunk.lines = table, lines
    return chunk


def _utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _mask_undecodable(block, fmt: Format) -> tuple[bytes, set[int]]:
    """Replace each line that is not UTF-8 by one with a field too many, which the parser then
    drops as an invalid row; returns the new block and the masked (1-based) line numbers."""
    lines = bytes(block).split(b"\n")
    filler = (fmt.delimiter * len(fmt.columns)).encode()
    masked = set()
    for i, text in enumerate(lines):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            lines[i] = filler
            masked.add(i + 1)
    return b"\n".join(lines), masked


def _is_ascii(block) -> bool:
    data = np.frombuffer(block, np.uint8)
    return not len(data) or int(data.max()) < 0x80


T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run `items` in a background thread, `depth` ahead: parsing (pyarrow, GIL released)
    overlaps with the consumer's encoding. Exceptions surface in the consumer; closing the
    returned generator stops the thread before it returns."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put((False, exc))

    thread = threading.Thread(target=work, name="recnas-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()
