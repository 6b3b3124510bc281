"""Format descriptions, YAML specs, the raw reader, derived columns, hashing and splits."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recnas.data import splits
from recnas.data.encode import Encoder, _derive, stable_hash
from recnas.data.formats import AVAZU, CRITEO, KDD12, Format, builtin, load_spec
from recnas.data.rawio import RawReader
from recnas.errors import ConfigError, DataError


def test_builtin_formats_describe_the_published_layouts():
    assert len(CRITEO.columns) == 40 and len(CRITEO.dense) == 13 and len(CRITEO.cat_names()) == 26
    assert len(AVAZU.columns) == 24 and AVAZU.header and AVAZU.dense == () and len(AVAZU.cat_names()) == 23
    assert "id" not in AVAZU.used_columns() and "hour" in AVAZU.used_columns()
    assert KDD12.label_mode == "count" and len(KDD12.columns) == 12
    assert KDD12.cat_names() == list(KDD12.categorical) and KDD12.cat_names(joined=True)[-2:] == ["Gender", "Age"]
    with pytest.raises(DataError, match="unknown dataset 'movielens'"):
        builtin("movielens")


def test_load_spec_valid(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: shop\nlabel: y\nlabel_mode: count\ndense: [a]\ncategorical: [b, c]\ndelimiter: ';'\nheader: false\ncolumns: [y, a, b, c, d]\n")
    fmt = load_spec(path)
    assert fmt == Format(name="shop", label="y", label_mode="count", dense=("a",), categorical=("b", "c"), columns=("y", "a", "b", "c", "d"), delimiter=";", header=False)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: shop\nlabel: y\nlabel_mode: count\ndense: [a]\ncategorical: [b, c]\n")
    assert load_spec(plain, raw="x.parquet") == Format(name="shop", label="y", label_mode="count", dense=("a",), categorical=("b", "c"), header=True, kind="parquet")


@pytest.mark.parametrize(
    "extra, raw, keys",
    [
        ("header: false\ncolumns: [y, a, b, c, d]\n", "x.parquet", "`columns`, `header`"),
        ("columns: [y, a, b, c]\n", "x.pq", "`columns`"),
        ("header: true\n", "x.parquet", "`header`"),
        ("delimiter: ';'\n", "x.parquet", "`delimiter`"),
        ("format: parquet\nheader: false\ncolumns: [y, a, b, c]\n", "x.csv", "`columns`, `header`"),  # by `format:`, not the extension
    ],
)
def test_parquet_spec_refuses_the_text_only_keys(tmp_path, extra, raw, keys):
    """`columns:`, `header:` and `delimiter:` mean nothing for Parquet (its schema names the
    columns) and were silently ignored; they are refused, naming the keys."""
    path = tmp_path / "spec.yaml"
    path.write_text("label: y\ndense: [a]\ncategorical: [b, c]\n" + extra)
    with pytest.raises(DataError, match=f"spec.yaml: key\\(s\\) {keys} apply to delimited text files only; a Parquet file names its columns"):
        load_spec(path, raw=raw)


@pytest.mark.parametrize(
    "text, message",
    [
        ("label: y\ndense: [a\n", r"spec.yaml: line \d+ invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("label: y\ncategorical: [b]\nlabel: b\n", r"line 3 invalid YAML \(key 'label' is given twice\)"),  # PyYAML keeps the last
        ("", "key `label` .*is required"),  # an empty file is an empty mapping
        ("dense: [a]\n", "key `label`"),
        # a list was taken as the dataset name "['a', 'b']", and one as label said it was missing
        ("label: y\ndense: [a]\nname: [a, b]\n", r"key `name` must be the dataset's name .*got \['a', 'b'\]"),
        ("label: [y]\ndense: [a]\n", r"key `label` must be the label column's name, got \['y'\]"),
        ("label: y\ncategorical: [b]\ncolour: red\n", "unknown key.*colour"),
        # a key YAML reads as no string (`on:` is true, `1:` an int) was a TypeError traceback
        ("label: y\ncategorical: [b]\non: 1\n", r"unknown key\(s\) True; allowed"),
        ("label: y\ncategorical: [b]\n1: a\ncolour: red\n", r"unknown key\(s\) 1, colour; allowed"),
        ("label: y\ndense: a\n", "key `dense` must be a list"),
        ("label: y\ncategorical: [b]\nlabel_mode: multi\n", "key `label_mode` is 'multi'"),
        ("label: y\n", "lists no features"),
        ("label: y\ndense: [a]\ncategorical: [a]\n", "listed more than once"),
        ("label: y\ndense: [a]\nheader: false\n", "needs `columns:`"),
        ("label: y\ndense: [a]\nheader: false\ncolumns: [y, b]\n", r"key `columns`: missing column\(s\) a"),
        ("label: y\ndense: [a]\ndelimiter: '::'\n", "single character"),
        ("label: y\ndense: [a]\ndelimiter: ''\n", r"key `delimiter` must be a single character, got ''"),  # an empty one too
        ('label: y\ndense: [a]\ndelimiter: "\\r"\n', r"key `delimiter` cannot be '\\r'"),
        ("label: y\ndense: [y]\n", r"column\(s\) y listed more than once across label/dense/categorical"),  # the label as a feature
        ("label: y\ndense: [a]\nname: true\n", r"key `name` must be the dataset's name .*got True"),  # not the name "True"
        # a line break or the quote character cannot separate fields: the header came out as one
        # name and the error listed every column as missing from a header that holds them
        ('label: y\ndense: [a]\ndelimiter: "\\n"\n', r"key `delimiter` cannot be '\\n'"),
        ("label: y\ndense: [a]\ndelimiter: '\"'\n", r"key `delimiter` cannot be '\"'"),
        # a file header naming a column twice is refused; `columns:` silently used the first one
        ("label: y\ndense: [a]\nheader: false\ncolumns: [y, a, b, a]\n", r"key `columns` lists a more than once"),
        # the file header names the columns: `columns:` was silently ignored
        ("label: y\ndense: [a]\ncolumns: [y, a]\n", r"key `columns` is only read with `header: false`"),
        # YAML's bare on/yes became the column "True", then "missing column True"
        ("label: y\ncategorical: [on, b]\n", r"key `categorical` holds True, which YAML reads from a bare yes/no/on/off/true/false: quote that column name"),
        ("label: yes\ndense: [a]\n", r"key `label` holds True, which YAML reads"),
    ],
)
def test_load_spec_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as exc:
        load_spec(path)
    assert "spec.yaml" in str(exc.value)


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(DataError, match="feature spec not found"):
        load_spec(tmp_path / "nope.yaml")


def _read(path, fmt, block_bytes=1 << 20):
    with RawReader(path, fmt, block_bytes=block_bytes) as reader:
        chunks = list(reader.chunks())
        digest = reader.digest()
    return chunks, [b for c in chunks for b in c.bad], digest


def test_reader_line_numbers_blocks_crlf_and_header(tmp_path):
    fmt = Format(name="t", label="y", categorical=("a",), header=True)
    lines = ["y,a"] + [f"{i % 2},v{i}" for i in range(200)]
    lines[57] = "1,x,extra"
    path = tmp_path / "d.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    chunks, bad, _ = _read(path, fmt, block_bytes=100)
    assert len(chunks) > 10  # many blocks, numbering still exact
    assert bad == [(58, "expected 2 fields, found 3")]
    got = np.concatenate([c.lines for c in chunks])
    assert got.tolist() == [n for n in range(2, 202) if n != 58]
    values = sum((c.table.column("a").to_pylist() for c in chunks), [])
    assert values[0] == "v0" and values[-1] == "v199" and all("\r" not in v for v in values)


def test_reader_accepts_a_header_after_a_byte_order_mark(tmp_path):
    fmt = Format(name="t", label="y", categorical=("a",), header=True)
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfy,a\n1,v\n0,w\n")  # was "missing column(s) y (found: \ufeffy, a)"
    chunks, bad, _ = _read(path, fmt)
    assert bad == [] and sum((c.table.column("a").to_pylist() for c in chunks), []) == ["v", "w"]


@pytest.mark.parametrize("quote", [True, False])
def test_reader_refuses_carriage_return_line_ends_in_the_header(tmp_path, quote):
    """Line ends of a lone CR (classic Mac OS, some exports): the header was handed to
    csv.reader with CRs inside and `recnas data prepare` died with a traceback (_csv.Error:
    new-line character seen in unquoted field); now one DataError naming the file and line 1."""
    fmt = Format(name="t", label="y", categorical=("a",), header=True, quote=quote)
    path = tmp_path / "mac.csv"
    path.write_bytes(b"y,a\r1,v\r0,w\r")
    with pytest.raises(DataError, match=r"mac.csv:1: header: a carriage return inside the line .*convert them"):
        _read(path, fmt)


def test_reader_without_trailing_newline_and_quotes(tmp_path):
    fmt = Format(name="t", label="y", categorical=("a",), columns=("y", "a"))
    path = tmp_path / "d.csv"
    path.write_text('1,"x,y"\n0,z')
    chunks, bad, _ = _read(path, fmt)
    assert bad == [] and sum((c.table.column("a").to_pylist() for c in chunks), []) == ["x,y", "z"]
    assert np.concatenate([c.lines for c in chunks]).tolist() == [1, 2]


def test_reader_rejects_a_file_without_line_breaks(tmp_path, monkeypatch):
    import recnas.data.rawio as rawio

    monkeypatch.setattr(rawio, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 5000)
    with pytest.raises(DataError, match="no line break"):
        _read(path, Format(name="t", label="y", categorical=("a",), columns=("y", "a")), block_bytes=256)


def test_derived_hour_and_weekday():
    s = pl.Series(["14102100", "14102113", "14102623", "14133100", "1410", ""])
    hour, bad_h = _derive("hour_of_day", s)
    day, bad_d = _derive("weekday", s)
    assert hour.to_list()[:3] == ["0", "13", "23"]
    assert day.to_list()[:3] == ["2", "2", "7"]  # 2014-10-21 Tuesday, 2014-10-26 Sunday (ISO)
    assert bad_h.to_list() == bad_d.to_list() == [False, False, False, True, True, True]


def test_encoder_codes_are_stable_across_chunks_and_count_good_rows():
    enc = Encoder(Format(name="t", label="y", dense=("d",), categorical=("a",), columns=("y", "d", "a")))
    first = enc.encode(pl.DataFrame({"y": ["1", "0", "2"], "d": ["3", "", "x"], "a": ["p", "q", "p"]}))
    second = enc.encode(pl.DataFrame({"y": ["0"], "d": ["-5"], "a": ["q"]}))
    assert first.codes[0, 0] == first.codes[2, 0] != first.codes[1, 0] == second.codes[0, 0]
    assert first.bad.tolist() == [False, False, True] and "column y (the label): not 0 or 1" in first.explain(2)
    np.testing.assert_allclose(first.dense[:2, 0], [np.log1p(3.0), 0.0])
    np.testing.assert_allclose(second.dense[0, 0], 0.0)  # log(max(x, 0) + 1)


def test_stable_hash_is_fixed():
    h = stable_hash(pl.Series(["", "a", "68fd1e64", "68fd1e64"]))
    assert h[2] == h[3] and len(set(h.tolist())) == 3
    assert h.tolist()[:2] == [17665956581633026203, 198367012849983736]  # pinned: ids must not drift


def test_stratified_split_balances_each_class():
    labels = (np.random.default_rng(0).random(10_007) < 0.2).astype(np.uint8)
    s = splits.assign(labels, "stratified", 2018)
    sizes = np.bincount(s, minlength=3)
    assert 8 * 1000 <= sizes[0] <= 8 * 1001 and 1000 <= sizes[1] <= 1001 and 1000 <= sizes[2] <= 1001
    rates = [labels[s == k].mean() for k in range(3)]
    assert max(rates) - min(rates) < 0.002
    assert (splits.assign(labels, "stratified", 2018) == s).all() and not (splits.assign(labels, "stratified", 1) == s).all()


def test_sequential_split_keeps_file_order():
    s = splits.assign(np.zeros(10, np.uint8), "sequential", 0)
    assert s.tolist() == [0] * 8 + [1, 2]
    with pytest.raises(ConfigError, match="unknown split method"):
        splits.assign(np.zeros(3), "random", 0)


def test_a_timestamp_must_be_exactly_eight_digits():
    """_derive: a YYMMDDHH with a ninth digit (or a trailing character) is bad, though its
    first eight characters are a valid date and hour."""
    _, bad = _derive("hour_of_day", pl.Series(["14102100", "141021001", "14102100x", " 14102100"]))
    assert bad.to_list() == [False, True, True, True]


def test_vocabulary_never_keeps_a_code_seen_in_no_good_row_even_with_min_count_0():
    """Encoder.vocabulary: ids 1.. by descending count (ties by first code), 0 for counts below
    min_count, and a code counted 0 times (only in bad rows) stays OOV at min_count 0."""
    enc = Encoder(Format(name="t", label="y", categorical=("a", "b"), columns=("y", "a", "b")))
    enc.counts = [np.array([3, 0, 1, 3], np.int64), np.array([0, 2], np.int64)]
    remaps, sizes = enc.vocabulary(0)
    assert [r.tolist() for r in remaps] == [[1, 0, 3, 2], [0, 1]] and sizes == [4, 2]
    remaps, sizes = enc.vocabulary(2)
    assert [r.tolist() for r in remaps] == [[1, 0, 0, 2], [0, 1]] and sizes == [3, 2]


def test_hashed_ids_are_the_stable_hash_modulo_the_buckets():
    """Encoder.hashed: each code's id is stable_hash(its value) % buckets, every field `buckets` ids."""
    enc = Encoder(Format(name="t", label="y", categorical=("a",), columns=("y", "a")))
    values = ["p", "q", "", "68fd1e64", "zz"]
    enc.count(enc.encode(pl.DataFrame({"y": ["0"] * 5, "a": values})).codes)
    remaps, sizes = enc.hashed(7)
    strings = enc.values("a")[: len(enc.counts[0])]
    want = (stable_hash(strings) % np.uint64(7)).astype(np.int64)
    assert remaps[0].tolist() == want.tolist() and sizes == [7]
    by_value = dict(zip(strings.to_list(), remaps[0].tolist()))
    assert by_value["68fd1e64"] == int(stable_hash(pl.Series(["68fd1e64"]))[0] % 7)


def test_a_bad_value_is_shown_whole_up_to_80_characters_then_cut_to_80():
    """Encoded.explain: a bad value's repr of at most SHOWN_CHARS (80) characters is shown as it
    is; a longer one as its first 77 characters and '...', 80 in all; an empty one as (empty)."""
    enc = Encoder(Format(name="t", label="y", categorical=("a",), columns=("y", "a")))
    fits, cut = "x" * 78, "y" * 79  # reprs of 80 and 81 characters
    got = enc.encode(pl.DataFrame({"y": [fits, cut, ""], "a": ["p", "p", "p"]}))
    assert got.explain(0) == f"column y (the label): not 0 or 1 ({fits!r})"
    shown = got.explain(1).removeprefix("column y (the label): not 0 or 1 (").removesuffix(")")
    assert shown == repr(cut)[:77] + "..." and len(shown) == 80
    assert got.explain(2) == "column y (the label): not 0 or 1 (empty)"


def test_a_category_table_shorter_than_the_codes_is_an_internal_error():
    """Encoder.values refuses a field whose counts run past its category table (codes without
    strings would be saved or hashed as wrong values)."""
    from recnas.errors import DataError

    enc = Encoder(Format(name="t", label="y", categorical=("a",), columns=("y", "a")))
    enc.count(enc.encode(pl.DataFrame({"y": ["0", "1"], "a": ["p", "q"]})).codes)
    assert enc.values("a").to_list()[: len(enc.counts[0])] == ["", "p", "q"]  # the anchor's missing value takes code 0
    enc.counts[0] = np.zeros(len(enc.values("a")) + 1, np.int64)
    with pytest.raises(DataError, match="internal: the category table of a is shorter than its codes"):
        enc.values("a")


def test_the_other_delimiter_hint_is_given_only_for_a_header_read_as_one_column():
    """check_columns suggests another delimiter only when the header came out as a single name
    holding one; a header of several names lacking a column gets the plain error."""
    fmt = Format(name="t", label="y", categorical=("a",), header=True)
    with pytest.raises(DataError, match=r"f: missing column\(s\) y, a \(found: y;a\); read as one column with delimiter ',', but it holds ';'"):
        fmt.check_columns(["y;a"], "f")
    with pytest.raises(DataError, match=r"f: missing column\(s\) y, a \(found: y;a, z\)$"):
        fmt.check_columns(["y;a", "z"], "f")
