"""End-to-end `prepare` on tiny generated raw files: values, vocabularies, splits, bad input."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recnas.data.prepare import prepare
from recnas.data.schema import SPLITS
from recnas.data.store import CTRStore
from recnas.errors import ConfigError, DataError, RecnasError


# -- raw file writers ---------------------------------------------------------------------
def criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Criteo-like rows: label, 13 ints (some empty/negative), 26 hex strings (some empty)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = str(int(rng.random() < 0.3))
        ints = [("" if rng.random() < 0.2 else str(int(rng.integers(-3, 50)))) for _ in range(13)]
        cats = [("" if rng.random() < 0.1 else f"{int(rng.zipf(1.5)) % (5 + j):08x}") for j in range(26)]
        rows.append([label, *ints, *cats])
    return rows


def write_lines(path, rows, sep="\t", header=None):
    text = "".join(sep.join(r) + "\n" for r in ([header] if header else []) + rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def load(out):
    store = CTRStore(out)
    return store, {s: store.split(s) for s in SPLITS}


def concat(parts, col):
    return np.concatenate([getattr(parts[s], col) for s in SPLITS])


# -- criteo -------------------------------------------------------------------------------
def test_criteo_round_trip_values_and_ids(tmp_path):
    rows = criteo_rows(300)
    raw = write_lines(tmp_path / "train.txt", rows)
    meta = prepare("criteo", raw, tmp_path / "store", split="sequential", block_bytes=4096)  # many chunks
    store, parts = load(tmp_path / "store")
    assert meta.rows == {"train": 240, "val": 30, "test": 30}  # sequential keeps file order
    label, dense, sparse = concat(parts, "label"), concat(parts, "dense"), concat(parts, "sparse")
    np.testing.assert_array_equal(label, [float(r[0]) for r in rows])
    expect = np.array([[np.log1p(max(float(v), 0.0)) if v else 0.0 for v in r[1:14]] for r in rows], np.float32)
    np.testing.assert_allclose(dense, expect, rtol=1e-6)
    for j in range(26):  # same string <-> same id, and ids are dense 1..V
        values = [r[14 + j] for r in rows]
        pairs = set(zip(values, sparse[:, j].tolist()))
        assert len(pairs) == len(set(values)) == len(set(sparse[:, j].tolist()))
        assert meta.vocab_sizes[j] == len(set(values)) + 1
        assert sparse[:, j].min() >= 1
    assert meta.source["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert meta.source["size"] == raw.stat().st_size
    assert store.meta.cat_names == [f"C{i}" for i in range(1, 27)]


def test_min_count_maps_rare_values_to_oov_and_ranks_by_frequency(tmp_path):
    rows = criteo_rows(400, seed=1)
    raw = write_lines(tmp_path / "train.txt", rows)
    # small parser blocks: a value's count is the sum over the chunks it appears in
    meta = prepare("criteo", raw, tmp_path / "store", min_count=5, split="sequential", block_bytes=2048)
    _, parts = load(tmp_path / "store")
    sparse = concat(parts, "sparse")
    for j in (0, 13, 25):
        values = np.array([r[14 + j] for r in rows])
        uniq, counts = np.unique(values, return_counts=True)
        freq = dict(zip(uniq, counts))
        rare = np.array([freq[v] < 5 for v in values])
        assert (sparse[rare, j] == 0).all() and (sparse[~rare, j] > 0).all()
        assert meta.vocab_sizes[j] == int((counts >= 5).sum()) + 1
        top = uniq[np.argmax(counts)]
        assert (sparse[values == top, j] == 1).all()  # id 1 = most frequent value


def test_hash_buckets(tmp_path):
    rows = criteo_rows(200, seed=2)
    raw = write_lines(tmp_path / "train.txt", rows)
    meta = prepare("criteo", raw, tmp_path / "store", hash_buckets=7, split="sequential")
    _, parts = load(tmp_path / "store")
    sparse = concat(parts, "sparse")
    assert meta.vocab_sizes == [7] * 26
    assert sparse.min() >= 0 and sparse.max() < 7
    values = np.array([r[14] for r in rows])
    for v in set(values):  # a value always lands in the same bucket
        assert len(set(sparse[values == v, 0].tolist())) == 1
    with pytest.raises(ConfigError, match="alternatives"):
        prepare("criteo", raw, tmp_path / "other", hash_buckets=7, min_count=2)


def test_stratified_split_sizes_rates_and_seed(tmp_path):
    rng = np.random.default_rng(3)
    rows = [[str(int(rng.random() < 0.25)), *["1"] * 13, *[f"{int(rng.integers(0, 9)):08x}"] * 26] for _ in range(2000)]
    raw = write_lines(tmp_path / "train.txt", rows)
    meta = prepare("criteo", raw, tmp_path / "a", seed=7)
    assert meta.rows == {"train": 1600, "val": 200, "test": 200}
    overall = np.mean([float(r[0]) for r in rows])
    for s in SPLITS:
        assert abs(meta.positive_rate[s] - overall) < 0.006  # per class folds differ by at most 1 row
    again = prepare("criteo", raw, tmp_path / "b", seed=7)
    other = prepare("criteo", raw, tmp_path / "c", seed=8)
    val = lambda d: CTRStore(d).split("val").sparse[:, 0].tolist()  # noqa: E731
    assert val(tmp_path / "a") == val(tmp_path / "b")
    assert val(tmp_path / "a") != val(tmp_path / "c")
    assert again.positive_rate == meta.positive_rate and other.rows == meta.rows


def test_gzip_input_and_max_rows(tmp_path):
    rows = criteo_rows(120, seed=4)
    raw = write_lines(tmp_path / "train.txt.gz", rows)
    meta = prepare("criteo", raw, tmp_path / "store", max_rows=50, split="sequential")
    assert sum(meta.rows.values()) == 50
    assert meta.source["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()  # of the whole .gz
    _, parts = load(tmp_path / "store")
    np.testing.assert_array_equal(concat(parts, "label"), [float(r[0]) for r in rows[:50]])


# -- avazu / kdd12 / generic ----------------------------------------------------------------
AVAZU_HEADER = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]


def avazu_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    hours = ["14102100", "14102113", "14102223", "14102605"]  # Tue 00h, Tue 13h, Wed 23h, Sun 05h
    return [[str(10**18 + i), str(int(rng.random() < 0.2)), hours[i % 4], *[f"v{int(rng.integers(0, 4))}" for _ in range(21)]] for i in range(n)]


def test_avazu_header_and_derived_time_features(tmp_path):
    rows = avazu_rows(80)
    raw = write_lines(tmp_path / "train.csv", rows, sep=",", header=AVAZU_HEADER)
    meta = prepare("avazu", raw, tmp_path / "store", split="sequential")
    assert meta.dense_names == [] and meta.cat_names[-2:] == ["hour_of_day", "weekday"]
    assert len(meta.cat_names) == 23
    _, parts = load(tmp_path / "store")
    sparse = concat(parts, "sparse")
    hod, wd = sparse[:, -2], sparse[:, -1]
    assert meta.vocab_sizes[-2:] == [5, 4]  # 4 hours of day, 3 weekdays, + OOV
    assert len({(h, w) for h, w in zip(hod[0::4], wd[0::4])}) == 1
    assert hod[0] != hod[1] and wd[0] == wd[1] and wd[0] != wd[2] and wd[2] != wd[3]
    np.testing.assert_array_equal(concat(parts, "label"), [float(r[1]) for r in rows])


@pytest.mark.parametrize("hour", ["14133100", "14102124"])  # month 13; hour 24
def test_avazu_bad_hour_is_a_bad_row(tmp_path, hour):
    rows = avazu_rows(20)
    rows[6][2] = hour
    raw = write_lines(tmp_path / "train.csv", rows, sep=",", header=AVAZU_HEADER)
    with pytest.raises(DataError, match=r"train.csv:8: column hour"):
        prepare("avazu", raw, tmp_path / "store")
    meta = prepare("avazu", raw, tmp_path / "store", on_bad_row="skip")
    assert meta.bad_rows_skipped == 1 and sum(meta.rows.values()) == 19


@pytest.mark.parametrize("hour", [" 4102100", "+4102100", "1410210 "])
def test_avazu_hour_with_a_non_digit_is_a_bad_row(tmp_path, hour):
    """Eight characters were enough: ' 4102100' passed as a date and gave a made-up weekday."""
    rows = avazu_rows(20)
    rows[6][2] = hour
    raw = write_lines(tmp_path / "train.csv", rows, sep=",", header=AVAZU_HEADER)
    with pytest.raises(DataError, match=r"train.csv:8: column hour: not a YYMMDDHH timestamp"):
        prepare("avazu", raw, tmp_path / "store")


def test_avazu_missing_column_in_header(tmp_path):
    raw = write_lines(tmp_path / "train.csv", [r[:-1] for r in avazu_rows(5)], sep=",", header=AVAZU_HEADER[:-1])
    with pytest.raises(DataError, match=r"header \(line 1\): missing column\(s\) C21"):
        prepare("avazu", raw, tmp_path / "store")


def kdd_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[str(int(rng.integers(0, 3) * (rng.random() < 0.3))), str(int(rng.integers(1, 5))), *[str(int(rng.integers(0, 6))) for _ in range(9)], str(i % 7)] for i in range(n)]


def test_kdd12_label_is_click_positive_and_profile_join(tmp_path):
    rows = kdd_rows(140)
    raw = write_lines(tmp_path / "training.txt", rows)
    plain = prepare("kdd12", raw, tmp_path / "plain", split="sequential")
    assert len(plain.cat_names) == 10 and plain.dense_names == []
    _, parts = load(tmp_path / "plain")
    np.testing.assert_array_equal(concat(parts, "label"), [float(int(r[0]) > 0) for r in rows])  # no expansion

    profile = write_lines(tmp_path / "userid_profile.txt", [["0", "1", "3"], ["1", "2", "4"], ["1", "2", "3"], ["2", "1", "5"], ["3", "0", "1"], ["9", "2", "2"]])
    meta = prepare("kdd12", raw, tmp_path / "joined", profile=profile, split="sequential")
    assert meta.cat_names[-2:] == ["Gender", "Age"] and meta.source["profile"]["rows"] == 6
    _, parts = load(tmp_path / "joined")
    sparse = concat(parts, "sparse")
    users = np.array([int(r[-1]) for r in rows])
    gender, age = sparse[:, -2], sparse[:, -1]
    assert gender[users == 0][0] == gender[users == 2][0] != gender[users == 1][0]
    assert age[users == 0][0] == age[users == 1][0] != age[users == 2][0]  # user 1: its last profile row
    missing = np.isin(users, [4, 5, 6])  # not in the profile: one shared "missing" category
    assert len(set(gender[missing].tolist())) == 1 and gender[missing][0] not in set(gender[~missing].tolist())
    with pytest.raises(ConfigError, match="only for kdd12"):
        prepare("criteo", raw, tmp_path / "x", profile=profile)


def test_vocab_from_a_kdd12_store_names_the_profile_fields_it_lacks(tmp_path):
    """Both field lists were cut at 80 characters, so the message showed two identical lists
    and hid the difference (the profile's Gender and Age come last)."""
    raw = write_lines(tmp_path / "training.txt", kdd_rows(40))
    profile = write_lines(tmp_path / "userid_profile.txt", [["0", "1", "3"], ["1", "2", "4"]])
    prepare("kdd12", raw, tmp_path / "joined", profile=profile, split="sequential")
    prepare("kdd12", raw, tmp_path / "plain", split="sequential")
    with pytest.raises(DataError, match=r"categorical fields: only .*joined has Gender, Age; .*joined was prepared with --profile: give it again"):
        prepare("kdd12", raw, tmp_path / "s", vocab_from=tmp_path / "joined", split="none")
    with pytest.raises(DataError, match=r"only .*training.txt has Gender, Age; .*plain was prepared without --profile: drop it"):
        prepare("kdd12", raw, tmp_path / "s", vocab_from=tmp_path / "plain", profile=profile, split="none")
    meta = prepare("kdd12", raw, tmp_path / "s", vocab_from=tmp_path / "joined", profile=profile, split="none")
    assert meta.cat_names[-2:] == ["Gender", "Age"]


def test_kdd12_bad_profile_row_names_the_profile_line(tmp_path):
    raw = write_lines(tmp_path / "training.txt", kdd_rows(10))
    profile = write_lines(tmp_path / "userid_profile.txt", [["0", "1", "3"], ["1", "2"]])
    with pytest.raises(DataError, match=r"userid_profile.txt:2: expected 3 fields, found 2"):
        prepare("kdd12", raw, tmp_path / "s", profile=profile)
    with pytest.raises(DataError, match=r"nope.txt: profile file not found"):
        prepare("kdd12", raw, tmp_path / "s", profile=tmp_path / "nope.txt")


def test_kdd12_profile_without_valid_rows_is_refused_even_when_skipping(tmp_path):
    """Like a raw file whose rows are all bad: --on-bad-row skip used to drop every profile row
    and join nothing, a store whose Gender and Age are all "missing", with exit code 0."""
    raw = write_lines(tmp_path / "training.txt", kdd_rows(20))
    profile = write_lines(tmp_path / "userid_profile.txt", [["0", "1"], ["1", "2"]])
    with pytest.raises(DataError, match=r"userid_profile.txt: no valid rows \(2 bad rows skipped\)"):
        prepare("kdd12", raw, tmp_path / "s", profile=profile, on_bad_row="skip")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("click", ["-1", "1.5"])
def test_kdd12_click_that_is_not_a_count_is_bad(tmp_path, click):
    """Click is a count of clicks: a non-negative integer."""
    rows = kdd_rows(10)
    rows[3][0] = click
    raw = write_lines(tmp_path / "training.txt", rows)
    with pytest.raises(DataError, match=r"training.txt:4: column Click \(the label\)"):
        prepare("kdd12", raw, tmp_path / "s")


SPEC = "label: y\ndense: [price]\ncategorical: [user, city]\n"


def test_generic_csv_with_spec(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC + "dense_transform: none\n")
    raw = write_lines(tmp_path / "d.csv", [["1", "u1", "2.5", "x", "paris"], ["0", "u2", "", "y", "rome"], ["1", "u1", "-4", "z", "paris"]] * 10, sep=",", header=["y", "user", "price", "unused", "city"])
    meta = prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", split="sequential")
    assert meta.dense_names == ["price"] and meta.cat_names == ["user", "city"] and meta.vocab_sizes == [3, 3]
    _, parts = load(tmp_path / "store")
    np.testing.assert_allclose(concat(parts, "dense")[:3, 0], [2.5, 0.0, -4.0])  # no transform, missing -> 0
    np.testing.assert_array_equal(concat(parts, "sparse")[:3], [[1, 1], [2, 2], [1, 1]])
    with pytest.raises(ConfigError, match="needs --spec"):
        prepare("csv", raw, tmp_path / "x")


def test_dense_value_beyond_float32_is_a_bad_row_without_a_transform(tmp_path):
    """With `dense_transform: none` a value past float32's range (1e39) was stored as inf: the
    prepare succeeded and the store failed later, at training or evaluation. It is a bad row."""
    (tmp_path / "spec.yaml").write_text(SPEC + "dense_transform: none\n")
    rows = [["1", "2.5", "u1", "paris"], ["0", "-1e39", "u2", "rome"], ["1", "3e38", "u1", "paris"]] * 10
    raw = write_lines(tmp_path / "d.csv", rows, sep=",", header=["y", "price", "user", "city"])
    with pytest.raises(DataError, match=r"d.csv:3: column price: beyond the float32 range .*\(-1e\+39\)"):
        prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml")
    meta = prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 10 and sum(meta.rows.values()) == 20
    _, parts = load(tmp_path / "store")
    assert np.isfinite(concat(parts, "dense")).all() and concat(parts, "dense").max() == np.float32(3e38)
    (tmp_path / "spec.yaml").write_text(SPEC)  # log1p: any finite value fits
    meta = prepare("csv", raw, tmp_path / "store2", spec=tmp_path / "spec.yaml")
    assert meta.bad_rows_skipped == 0


def test_a_header_read_as_one_column_suggests_the_delimiter(tmp_path):
    """A tab-separated file read with the default ',' has a header of one name: the error listed
    every column as missing from a header that holds them, without saying why."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    raw = tmp_path / "d.tsv"
    raw.write_text("y\tprice\tuser\tcity\n" + "1\t2.5\tu1\tparis\n" * 10)
    with pytest.raises(DataError, match=r"header \(line 1\): missing column\(s\) .*read as one column with delimiter ',', but it holds '\\t': is the file delimited by '\\t'\?"):
        prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml")
    assert not (tmp_path / "store").exists()
    (tmp_path / "spec.yaml").write_text(SPEC + 'delimiter: "\\t"\n')
    assert sum(prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", split="sequential").rows.values()) == 10


def test_quoted_header_name_holding_the_delimiter_is_one_column(tmp_path):
    """The header was split at every delimiter, quotes or not: `"price, EUR"` made two names,
    one more than each row's fields, and every row was reported as a wrong field count."""
    (tmp_path / "spec.yaml").write_text('label: y\ndense: ["price, EUR"]\ncategorical: [user]\n')
    raw = tmp_path / "d.csv"
    raw.write_text('y,"price, EUR",user,"note, long"\n' + '1,2.5,u1,"a, b"\n0,1.0,u2,c\n' * 10)
    meta = prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", split="sequential")
    assert meta.dense_names == ["price, EUR"] and meta.bad_rows_skipped == 0 and sum(meta.rows.values()) == 20
    _, parts = load(tmp_path / "store")
    np.testing.assert_allclose(concat(parts, "dense")[:2, 0], np.log1p([2.5, 1.0]).astype(np.float32))


def test_generic_parquet_with_spec(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    table = pa.table({"y": [1, 0, 1, 0] * 5, "price": [1.0, None, 3.0, 0.0] * 5, "user": [7, 8, 7, None] * 5, "city": ["a", "b", None, "a"] * 5})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=7)
    meta = prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml", split="sequential")
    assert sum(meta.rows.values()) == 20 and meta.vocab_sizes == [4, 4]  # 7, 8, null (+OOV)
    _, parts = load(tmp_path / "store")
    np.testing.assert_allclose(concat(parts, "dense")[:4, 0], np.log1p([1.0, 0.0, 3.0, 0.0]), rtol=1e-6)
    sparse = concat(parts, "sparse")
    assert sparse[0, 0] == sparse[2, 0] != sparse[3, 0] and sparse[2, 1] != sparse[0, 1]
    # `columns:` (here renaming the schema's columns) was silently ignored for Parquet: refused
    (tmp_path / "cols.yaml").write_text(SPEC + "header: false\ncolumns: [y, user, price, city]\n")
    with pytest.raises(DataError, match=r"cols.yaml: key\(s\) `columns`, `header` apply to delimited text files only"):
        prepare("csv", tmp_path / "d.parquet", tmp_path / "store2", spec=tmp_path / "cols.yaml", split="sequential")
    assert not (tmp_path / "store2").exists()


def test_parquet_missing_column(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    pq.write_table(pa.table({"y": [1, 0], "price": [1.0, 2.0], "user": [1, 2]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"Parquet schema: missing column\(s\) city"):
        prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml")


@pytest.mark.parametrize(
    "column, values, message",
    [
        ("price", [[1.0]] * 20, "column price has Parquet type list<"),  # was a polars traceback
        ("y", [{"v": 1}] * 20, "column y has Parquet type struct<"),  # was a numpy ValueError
        ("city", [[1, 2]] * 20, "column city has Parquet type list<"),
        ("price", [b"1"] * 20, "column price has Parquet type binary"),
        # a point in time as a number was the days or microseconds since 1970, without a word
        ("price", [datetime.date(2024, 1, 1)] * 20, "column price has Parquet type date32.*listed as a dense feature; list it as categorical"),
        ("price", [datetime.datetime(2024, 1, 1, 8)] * 20, "column price has Parquet type timestamp.*a point in time"),
        ("y", [datetime.time(8, 30)] * 20, "column y has Parquet type time64.*listed as the label"),
    ],
)
def test_parquet_column_of_an_unreadable_type(tmp_path, column, values, message):
    """A nested (list, struct, map) column, or bytes where a number is expected, is one
    DataError naming the column and its type, not a traceback from the converter."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    data = {"y": [1, 0] * 10, "price": [1.0] * 20, "user": [7, 8] * 10, "city": ["a", "b"] * 10, column: values}
    pq.write_table(pa.table(data), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=message):
        prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml")
    assert not (tmp_path / "store").exists()


def test_parquet_bytes_that_are_not_utf8_are_bad_rows(tmp_path):
    """A binary categorical column is read as text; a value that is not UTF-8 was a polars
    traceback for the whole file, and is now a bad row like an undecodable text line."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    city = [b"a", b"b"] * 10
    city[5] = b"\xff\xfe"
    pq.write_table(pa.table({"y": [1, 0] * 10, "price": [1.0] * 20, "user": [7, 8] * 10, "city": city}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet:6: column city: not UTF-8 text"):
        prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml")
    meta = prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 1 and sum(meta.rows.values()) == 19 and meta.vocab_sizes == [3, 3]


def test_parquet_columns_polars_cannot_take_as_stored(tmp_path):
    """A dictionary-encoded label or dense column (as pandas writes a category column) was a
    polars "cannot cast categorical" traceback, a 256-bit decimal a polars panic, and a
    dictionary (or view) of bytes that are not UTF-8 a traceback instead of a bad row."""
    import decimal

    (tmp_path / "spec.yaml").write_text(SPEC)
    city = [b"a", b"b"] * 10
    city[5] = b"\xff"
    table = pa.table(
        {
            "y": pa.array(["1", "0"] * 10).dictionary_encode(),
            "price": pa.array([decimal.Decimal("1.5"), decimal.Decimal("3")] * 10, pa.decimal256(40, 2)),
            "user": pa.array([decimal.Decimal(7), decimal.Decimal(8)] * 10, pa.decimal256(40, 0)),
            "city": pa.array(city).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    meta = prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 1 and meta.bad_row_examples == ["d.parquet:6: column city: not UTF-8 text"]
    assert sum(meta.rows.values()) == 19 and meta.vocab_sizes == [3, 3]
    _, parts = load(tmp_path / "store")
    np.testing.assert_array_equal(concat(parts, "label")[:4], [1, 0, 1, 0])
    np.testing.assert_allclose(concat(parts, "dense")[:4, 0], np.log1p([1.5, 3.0, 1.5, 3.0]), rtol=1e-6)
    pq.write_table(pa.table({"y": [1, 0] * 10, "price": [1.0] * 20, "user": [7, 8] * 10, "city": pa.array(city, pa.binary_view())}), tmp_path / "v.parquet")
    meta = prepare("csv", tmp_path / "v.parquet", tmp_path / "view", spec=tmp_path / "spec.yaml", on_bad_row="skip", split="sequential")
    assert meta.bad_row_examples == ["v.parquet:6: column city: not UTF-8 text"] and meta.vocab_sizes == [3, 3]


# -- bad input ------------------------------------------------------------------------------
def _corrupt(kind):
    def apply(rows):
        if kind == "fields":
            rows[4] = rows[4][:-1]
        elif kind == "dense":
            rows[4][3] = "12abc"
        elif kind == "label":
            rows[4][0] = "2"
        elif kind == "inf":
            rows[4][1] = "inf"
        return rows

    return apply


@pytest.mark.parametrize(
    "kind, message",
    [("fields", "expected 40 fields, found 39"), ("dense", "column I3: not a finite number"), ("label", "column label \\(the label\\): not 0 or 1"), ("inf", "column I1")],
)
def test_bad_rows_error_names_line_and_skip_counts(tmp_path, kind, message):
    rows = _corrupt(kind)(criteo_rows(30, seed=5))
    raw = write_lines(tmp_path / "train.txt", rows)
    with pytest.raises(DataError, match=rf"train.txt:5: {message}"):
        prepare("criteo", raw, tmp_path / "store")
    assert not (tmp_path / "store").exists() and list(tmp_path.iterdir()) == [raw]  # staging cleaned up
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip")
    assert meta.bad_rows_skipped == 1 and sum(meta.rows.values()) == 29
    assert meta.bad_row_examples[0].startswith("train.txt:5: ")


def test_a_long_bad_value_is_shown_shortened(tmp_path):
    """The whole value went into the error and into meta.json's bad_row_examples: a binary
    line (a .tar.gz passed as --raw) or a runaway field made an error line of megabytes."""
    rows = criteo_rows(30, seed=5)
    rows[4][3] = "9x" * 50_000
    raw = write_lines(tmp_path / "train.txt", rows)
    with pytest.raises(DataError, match=r"train.txt:5: column I3: not a finite number \('9x9x.*\.\.\.\)") as err:
        prepare("criteo", raw, tmp_path / "store")
    assert len(str(err.value)) < len(str(raw)) + 200
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip")
    assert len(meta.bad_row_examples[0]) < 150


def test_bad_row_line_numbers_across_blocks(tmp_path):
    rows = criteo_rows(400, seed=6)
    for i in (50, 51, 230):
        rows[i] = rows[i][:20]
    rows[300][0] = "x"
    raw = write_lines(tmp_path / "train.txt", rows)
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", block_bytes=2048, split="sequential")
    assert meta.bad_rows_skipped == 4
    assert [e.split(":")[1] for e in meta.bad_row_examples] == ["51", "52", "231", "301"]
    _, parts = load(tmp_path / "store")
    good = [r for i, r in enumerate(rows) if i not in (50, 51, 230, 300)]
    np.testing.assert_array_equal(concat(parts, "label"), [float(r[0]) for r in good])


@pytest.mark.parametrize("split, max_rows", [("stratified", None), ("stratified", 1159), ("sequential", 1500), ("none", None)])
def test_every_kept_row_lands_in_one_split_across_blocks_and_segments(tmp_path, monkeypatch, split, max_rows):
    """Rows tagged by I1 = their line index, bad rows among them, small parser blocks and 300-row
    pass-2 segments: each good row (up to --max-rows) is in exactly one split, with its label,
    in file order; bad rows after the --max-rows cut (1159: line 1172, truncated, comes right
    after the last kept row) are not counted."""
    import recnas.data.prepare as prep

    class SmallSegments(prep._Spool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, segment_rows=300)

    monkeypatch.setattr(prep, "_Spool", SmallSegments)
    rows = criteo_rows(2000, seed=9)
    bad = set(range(7, 2000, 97))
    for i, r in enumerate(rows):
        r[1] = str(i)
        if i in bad:
            rows[i] = r[:20] if i % 2 else ["x", *r[1:]]
    raw = write_lines(tmp_path / "train.txt", rows)
    good = [i for i in range(2000) if i not in bad][:max_rows]
    meta = prepare("criteo", raw, tmp_path / "s", split=split, on_bad_row="skip", block_bytes=3000, max_rows=max_rows, seed=4 if split == "stratified" else None)
    assert meta.bad_rows_skipped == sum(i < good[-1] for i in bad)
    _, parts = load(tmp_path / "s")
    index = {s: np.rint(np.expm1(parts[s].dense[:, 0].astype(np.float64))).astype(int) for s in SPLITS}
    assert sorted(np.concatenate(list(index.values())).tolist()) == good
    for s in SPLITS:
        assert (np.diff(index[s]) > 0).all()
        np.testing.assert_array_equal(parts[s].label, [float(rows[i][0]) for i in index[s]])
    if split == "sequential":
        assert np.concatenate([index[s] for s in SPLITS]).tolist() == good
    if split == "none":
        assert meta.rows == {"train": 0, "val": 0, "test": len(good)}


def big_criteo(path, n: int, seed: int = 0):
    """A Criteo file of n rows written vectorised (big enough for multi-chunk parser blocks)."""
    rng = np.random.default_rng(seed)
    hexes = lambda v: np.char.mod("%08x", v)  # noqa: E731
    cols = [(rng.random(n) < 0.3).astype(int).astype(str)]
    cols += [np.where(rng.random(n) < 0.2, "", rng.integers(-3, 500, n).astype(str)) for _ in range(13)]
    cols += [hexes(np.arange(n) * 2654435761 % (1 << 32))]  # C1: every value distinct (all tied)
    cols += [np.where(rng.random(n) < 0.05, "", hexes(rng.zipf(1.3, n) % (50 + 1000 * j))) for j in range(25)]
    path.write_text("\n".join("\t".join(r) for r in zip(*cols)) + "\n")
    return path


def test_ids_are_deterministic_first_appearance_within_big_blocks(tmp_path):
    """Ties (equal counts) rank by first appearance even when the parser splits a block into
    parallel chunks, so two runs give byte-identical stores."""
    raw = big_criteo(tmp_path / "big.txt", 40_000)
    assert raw.stat().st_size > 5 << 20  # more than one pyarrow parse chunk (4 MiB) per block
    stores = []
    for k in range(2):
        prepare("criteo", raw, tmp_path / f"s{k}", split="sequential")
        _, parts = load(tmp_path / f"s{k}")
        stores.append(concat(parts, "sparse"))
    np.testing.assert_array_equal(stores[0][:, 0], np.arange(1, 40_001))  # C1 ids in file order
    np.testing.assert_array_equal(stores[0], stores[1])
    for split in SPLITS:
        for col in ("label", "dense", "sparse"):
            assert (tmp_path / "s0" / split / f"{col}.npy").read_bytes() == (tmp_path / "s1" / split / f"{col}.npy").read_bytes()


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "truncated_gz", "not_gzip", "header_only"])
def test_unreadable_inputs(tmp_path, case):
    raw = tmp_path / ("train.txt.gz" if "gz" in case else "train.txt")
    if case == "empty":
        raw.write_bytes(b"")
    elif case == "directory":
        raw.mkdir()
    elif case == "truncated_gz":
        write_lines(raw, criteo_rows(200))
        raw.write_bytes(raw.read_bytes()[:-40])
    elif case == "not_gzip":
        raw.write_bytes(b"plain text, not gzip\n")
    dataset = "avazu" if case == "header_only" else "criteo"
    if case == "header_only":
        raw.write_text(",".join(AVAZU_HEADER) + "\n")
    expected = {"missing": "not found", "empty": "is empty", "directory": "not a regular file", "truncated_gz": "truncated", "not_gzip": "gzip", "header_only": "no data rows"}[case]
    with pytest.raises(DataError, match=expected):
        prepare(dataset, raw, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_binary_file_read_as_text_is_named_for_what_it_is(tmp_path):
    """A Parquet file given as --dataset criteo, or gzip without its .gz name, made every line a
    bad row: "not UTF-8 text ... pass --on-bad-row skip", which then found no valid rows."""
    text = write_lines(tmp_path / "train.txt", criteo_rows(200))
    table = pa.table({"label": [1, 0] * 10, "I1": [1.0] * 20})
    pq.write_table(table, tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"train.parquet: a Parquet file, not delimited text; read it with --dataset csv and a --spec"):
        prepare("criteo", tmp_path / "train.parquet", tmp_path / "store", on_bad_row="skip")
    packed = tmp_path / "train.txt.gzip"
    packed.write_bytes(gzip.compress(text.read_bytes()))
    with pytest.raises(DataError, match=r"train.txt.gzip: gzip-compressed, but only a name ending in .gz is decompressed; rename it to train.txt.gzip.gz"):
        prepare("criteo", packed, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_file_compressed_other_than_with_gzip_is_named_for_what_it_is(tmp_path):
    """bzip2, xz and zip files were read as text like a misnamed gzip file: "not UTF-8 text ...
    pass --on-bad-row skip", which then found no valid rows. A text file starting with their
    first letters is still text."""
    import bz2
    import lzma
    import zipfile

    data = write_lines(tmp_path / "train.txt", criteo_rows(30)).read_bytes()
    (tmp_path / "train.txt.bz2").write_bytes(bz2.compress(data))
    (tmp_path / "train.txt.xz").write_bytes(lzma.compress(data))
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as z:
        z.writestr("train.txt", data)
    for name, kind in (("train.txt.bz2", "bzip2"), ("train.txt.xz", "xz"), ("train.zip", "zip")):
        with pytest.raises(DataError, match=rf"{name}: {kind}-compressed, which is not read \(only gzip"):
            prepare("criteo", tmp_path / name, tmp_path / "store", on_bad_row="skip")
    assert not (tmp_path / "store").exists()
    (tmp_path / "bzh.txt").write_bytes(b"BZh9" + data)
    with pytest.raises(DataError, match=r"bzh.txt:1: column label \(the label\): not 0 or 1"):
        prepare("criteo", tmp_path / "bzh.txt", tmp_path / "store")


def test_a_tar_archive_is_named_for_what_it_is(tmp_path):
    """Criteo's own download, dac.tar.gz, given as --raw: the tar header of train.txt was read
    glued to its first row ("not 0 or 1 ('train.txt\\x00...')"), and with --on-bad-row skip a
    store was made from the member's lines, the header rows counted as bad rows."""
    import io
    import tarfile

    data = write_lines(tmp_path / "train.txt", criteo_rows(30)).read_bytes()
    for name, mode in (("dac.tar.gz", "w:gz"), ("dac.tar", "w")):
        with tarfile.open(tmp_path / name, mode) as tar:
            info = tarfile.TarInfo("train.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        with pytest.raises(DataError, match=rf"{name}: a tar archive, not delimited text; extract the data file from it first \(tar xf {name}\)"):
            prepare("criteo", tmp_path / name, tmp_path / "store", on_bad_row="skip")
    assert not (tmp_path / "store").exists()


def test_a_file_without_its_label_column_says_so(tmp_path):
    """Kaggle's Criteo test.txt (no label: 39 fields) was "expected 40 fields, found 39 (pass
    --on-bad-row skip to drop such rows)", and skipping then found no valid rows; Avazu's test
    file (no click column) named the missing column with no word of scoring."""
    rows = [r[1:] for r in criteo_rows(30)]
    raw = write_lines(tmp_path / "test.txt", rows)
    hint = r"a file without its label column \(as Kaggle's test files\)\? data to score needs one too"
    with pytest.raises(DataError, match=r"test.txt:1: expected 40 fields, found 39; " + hint):
        prepare("criteo", raw, tmp_path / "store")
    with pytest.raises(DataError, match=r"test.txt: no valid rows \(30 bad rows skipped\); " + hint):
        prepare("criteo", raw, tmp_path / "store", on_bad_row="skip")
    header = [c for c in AVAZU_HEADER if c != "click"]
    raw = write_lines(tmp_path / "test.csv", [r[:1] + r[2:] for r in avazu_rows(20)], sep=",", header=header)
    with pytest.raises(DataError, match=r"missing column\(s\) click \(found: id, hour, .*\); data to score needs its label column too: add a click column of 0s"):
        prepare("avazu", raw, tmp_path / "store")
    rows = criteo_rows(30)
    rows[1] = rows[1][:-1]  # one field short past the first line: the usual advice
    with pytest.raises(DataError, match=r"test2.txt:2: expected 40 fields, found 39 \(pass --on-bad-row skip"):
        prepare("criteo", write_lines(tmp_path / "test2.txt", rows), tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    raw = write_lines(tmp_path / "train.txt", [r[:5] for r in criteo_rows(20)])
    with pytest.raises(DataError, match=r"no valid rows \(20 bad rows skipped\)"):
        prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", block_bytes=64)


def test_truncated_last_line_is_a_bad_row(tmp_path):
    raw = write_lines(tmp_path / "train.txt", criteo_rows(10))
    raw.write_bytes(raw.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"train.txt:10: expected 40 fields"):
        prepare("criteo", raw, tmp_path / "store")


@pytest.mark.parametrize("blank", ["\n", "\r\n"])
def test_empty_line_is_a_bad_row_named_as_such(tmp_path, blank):
    """An empty line was reported as `label label is not 0 or 1 (None)` (pyarrow reads it as a
    row of nulls); it is now an empty line, with its line number, in text and CSV input alike."""
    raw = write_lines(tmp_path / "train.txt", criteo_rows(30))
    lines = raw.read_bytes().split(b"\n")
    raw.write_bytes(b"\n".join(lines[:5] + [blank.rstrip("\n").encode()] + lines[5:]))
    with pytest.raises(DataError, match=r"train.txt:6: empty line"):
        prepare("criteo", raw, tmp_path / "store")
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 1 and sum(meta.rows.values()) == 30 and meta.bad_row_examples == ["train.txt:6: empty line"]
    (tmp_path / "spec.yaml").write_text(SPEC)
    csv = write_lines(tmp_path / "d.csv", [["1", "2.0", "u", "c"], [], ["0", "1.0", "v", "d"]] * 5, sep=",", header=["y", "price", "user", "city"])
    with pytest.raises(DataError, match=r"d.csv:3: empty line"):
        prepare("csv", csv, tmp_path / "csvstore", spec=tmp_path / "spec.yaml")


def test_an_empty_line_before_a_row_of_the_wrong_width_is_the_first_bad_row(tmp_path):
    """The reader lists empty lines after the other rows it drops, so --on-bad-row error named
    the later row of the wrong width instead of the empty line before it (the first bad row),
    and the skip examples could leave the empty line out."""
    rows = criteo_rows(30)
    for i in (9, 11, 13, 15, 17):
        rows[i] = rows[i][:-1]
    raw = write_lines(tmp_path / "train.txt", rows)
    lines = raw.read_bytes().split(b"\n")
    raw.write_bytes(b"\n".join(lines[:5] + [b""] + lines[5:]))
    with pytest.raises(DataError, match=r"train.txt:6: empty line"):
        prepare("criteo", raw, tmp_path / "store")
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 6 and meta.bad_row_examples[:2] == ["train.txt:6: empty line", "train.txt:11: expected 40 fields, found 39"]


def test_empty_line_beside_a_non_numeric_value_or_in_the_profile_is_an_empty_line(tmp_path):
    """Empty lines were found only through a null label: in a block re-parsed as strings (it
    holds a non-numeric value elsewhere) one was reported as `label ... is not 0 or 1 ('')`,
    and in the KDD12 profile (no label) it was joined silently as a user ''."""
    rows = criteo_rows(30)
    rows[9][2] = "12abc"
    raw = write_lines(tmp_path / "train.txt", rows)
    lines = raw.read_bytes().split(b"\n")
    raw.write_bytes(b"\n".join(lines[:5] + [b""] + lines[5:]))
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", split="sequential")
    assert meta.bad_row_examples == ["train.txt:6: empty line", "train.txt:11: column I2: not a finite number ('12abc')"]
    kdd = write_lines(tmp_path / "training.txt", kdd_rows(20))
    profile = tmp_path / "userid_profile.txt"
    profile.write_text("0\t1\t3\n\n1\t2\t4\n")
    with pytest.raises(DataError, match=r"userid_profile.txt:2: empty line"):
        prepare("kdd12", kdd, tmp_path / "s", profile=profile)
    meta = prepare("kdd12", kdd, tmp_path / "s", profile=profile, on_bad_row="skip")
    assert meta.source["profile"]["rows"] == 2 and meta.bad_row_examples == ["userid_profile.txt:2: empty line"]


@pytest.mark.parametrize("damage", ["carriage_return", "quoted_line_break", "open_quote"])
def test_a_line_that_is_not_one_row_is_named_by_its_line(tmp_path, damage):
    """A stray carriage return or a quote left open makes the parser's rows disagree with the
    lines; the error named only the whole block (`lines 2-71000` on a real file)."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    rows = [["1", "2.5", "u1", "paris"] if i % 2 else ["0", "1.0", '"u2"', "rome"] for i in range(80)]
    rows[56][3] = {"carriage_return": "ro\rme", "quoted_line_break": '"ro\nme"', "open_quote": '"rome'}[damage]
    raw = write_lines(tmp_path / "d.csv", rows, sep=",", header=["y", "price", "user", "city"])
    with pytest.raises(DataError, match=r"d.csv:58: not one row per line"):
        prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", block_bytes=512)
    if damage == "carriage_return":  # the tab-separated dumps alike; in a block's last line it was an IndexError
        rows = criteo_rows(60)
        rows[59][20] = "ab\rcd"
        with pytest.raises(DataError, match=r"train.txt:60: not one row per line"):
            prepare("criteo", write_lines(tmp_path / "train.txt", rows), tmp_path / "store", on_bad_row="skip")


def test_refuses_existing_store_and_keeps_it_when_a_rerun_fails(tmp_path):
    good = write_lines(tmp_path / "good.txt", criteo_rows(40))
    bad = write_lines(tmp_path / "bad.txt", _corrupt("label")(criteo_rows(40)))
    out = tmp_path / "store"
    first = prepare("criteo", good, out)
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        prepare("criteo", good, out)
    with pytest.raises(DataError, match="bad.txt:5"):
        prepare("criteo", bad, out, overwrite=True)
    assert CTRStore(out).meta.source["sha256"] == first.source["sha256"]  # old store intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "good.txt", "store"]  # no temp dirs
    replaced = prepare("criteo", bad, out, overwrite=True, on_bad_row="skip")
    assert CTRStore(out).meta.source["sha256"] == replaced.source["sha256"] != first.source["sha256"]


def _tree(root):
    """Every path under `root` with file contents: to show a refused run changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_overwrite_through_a_link_replaces_the_linked_store(tmp_path):
    """An --out that is a link to a store (data/criteo -> /big/disk/criteo) is that store, as for
    the --out lock: --overwrite replaced the link itself by a new folder beside it, left the old
    store where it was and a stray `.link.old-*` link that nothing removes."""
    raw = write_lines(tmp_path / "train.txt", criteo_rows(40))
    (tmp_path / "disk").mkdir()
    prepare("criteo", raw, tmp_path / "disk" / "store", max_rows=20)
    (tmp_path / "link").symlink_to(tmp_path / "disk" / "store", target_is_directory=True)
    prepare("criteo", raw, tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and sum(CTRStore(tmp_path / "disk" / "store").meta.rows.values()) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "link", "train.txt"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["store"]


def test_overwrite_only_replaces_a_store_or_an_empty_folder(tmp_path):
    """--overwrite deletes --out: refuse anything but a store, and a raw file inside or equal to it."""
    raw = write_lines(tmp_path / "train.txt", criteo_rows(40))
    (tmp_path / "holds_raw").mkdir()
    inner = write_lines(tmp_path / "holds_raw" / "raw.txt", criteo_rows(40))
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "sub" / "keep.txt").write_text("keep")
    before = _tree(tmp_path)
    for raw_file, out, message in [
        (inner, tmp_path / "holds_raw", "raw file .*raw.txt is inside --out"),
        (inner, inner, "raw file .*raw.txt is the same path as --out"),
        (raw, tmp_path / "other", "not a recnas store"),
        (raw, raw, "same path as --out"),
        (inner, raw, "exists and is not a directory"),
        (raw, tmp_path / "other" / "sub" / "keep.txt" / "s", r"keep.txt is not a directory"),
    ]:
        with pytest.raises(DataError, match=message):
            prepare("criteo", raw_file, out, overwrite=True)
        assert _tree(tmp_path) == before, out
    (tmp_path / "empty").mkdir()
    prepare("criteo", raw, tmp_path / "empty", overwrite=True)  # an empty folder is fine
    spec = tmp_path / "empty" / "spec.yaml"  # kept beside the store it describes
    spec.write_text("label: label\ndense: [a]\ncategorical: [b]\n")
    csv = tmp_path / "shop.csv"
    csv.write_text("label,a,b\n" + "1,2,x\n0,1,y\n" * 10)
    with pytest.raises(DataError, match="feature spec .*spec.yaml is inside --out"):
        prepare("csv", csv, tmp_path / "empty", spec=spec, overwrite=True)
    assert spec.is_file()
    assert CTRStore(tmp_path / "empty").meta.rows["train"] == 32


def test_invalid_utf8_line_is_a_bad_row(tmp_path, capsys):
    """Bytes that are not UTF-8 make that line a bad row: named by the error, or skipped and counted."""
    text = [("\t".join(r) + "\n").encode() for r in criteo_rows(30)]
    text[4] = b"\xff\xfe\x00garbage\n"  # wrong field count too: pyarrow cannot even report it
    text[7] = text[7].replace(b"\t", b"\t\xff", 1)  # right field count
    raw = tmp_path / "train.txt"
    raw.write_bytes(b"".join(text))
    with pytest.raises(DataError, match=r"train.txt:5: not UTF-8"):
        prepare("criteo", raw, tmp_path / "store")
    meta = prepare("criteo", raw, tmp_path / "store", on_bad_row="skip", split="sequential")
    assert meta.bad_rows_skipped == 2 and [e.split(":")[1] for e in meta.bad_row_examples] == ["5", "8"]
    assert sum(meta.rows.values()) == 28
    assert "Traceback" not in capsys.readouterr().err


def test_option_errors_are_recnas_errors(tmp_path):
    raw = write_lines(tmp_path / "train.txt", criteo_rows(10))
    for kwargs in ({"min_count": 0}, {"hash_buckets": 0}, {"split": "random"}, {"on_bad_row": "ignore"}, {"max_rows": 0}, {"spec": raw}):
        with pytest.raises(RecnasError):
            prepare("criteo", raw, tmp_path / "s", **kwargs)
    with pytest.raises(RecnasError, match="unknown dataset"):
        prepare("criteo2", raw, tmp_path / "s")
    with pytest.raises(ConfigError, match="--split sequential keeps file order and takes no seed"):  # not silently ignored
        prepare("criteo", raw, tmp_path / "s", split="sequential", seed=5)
    assert not (tmp_path / "s").exists()
    assert prepare("criteo", raw, tmp_path / "seq", split="sequential").source["options"]["seed"] is None
    assert prepare("criteo", raw, tmp_path / "strat").source["options"]["seed"] == 2018


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7"])
def test_a_bad_seed_is_a_config_error_before_the_file_is_read(tmp_path, monkeypatch, seed):
    """numpy refused a negative or non-integer seed only after pass 1, as a bare ValueError/TypeError."""
    import recnas.data.prepare as prep

    raw = write_lines(tmp_path / "train.txt", criteo_rows(20))
    monkeypatch.setattr(prep, "_pass1", lambda *a, **k: pytest.fail("read the file before checking --seed"))
    with pytest.raises(ConfigError, match="--seed must be a non-negative integer"):
        prepare("criteo", raw, tmp_path / "s", seed=seed)
    assert not (tmp_path / "s").exists()


def test_hash_buckets_beyond_int32_ids_are_refused(tmp_path):
    """Ids are stored as int32: more buckets than that would wrap into negative ids (a store
    that only fails later, when a split is opened), so the option is refused up front."""
    raw = write_lines(tmp_path / "train.txt", criteo_rows(30))
    with pytest.raises(ConfigError, match=r"--hash-buckets must be at most 2,147,483,648"):
        prepare("criteo", raw, tmp_path / "s", hash_buckets=2**31 + 1)
    assert not (tmp_path / "s").exists()
    meta = prepare("criteo", raw, tmp_path / "ok", hash_buckets=2**31, split="sequential")
    ids = np.concatenate([np.load(tmp_path / "ok" / s / "sparse.npy") for s in ("train", "val", "test")])
    assert meta.vocab_sizes[0] == 2**31 and ids.min() >= 0


def test_input_too_small_for_every_split_is_refused(tmp_path):
    """An empty val/test split used to give a store whose metrics were all n/a (exit 0)."""
    raw = write_lines(tmp_path / "train.txt", criteo_rows(30))
    with pytest.raises(DataError, match=r"train 3, val 0, test 0 rows; every split needs at least one row"):
        prepare("criteo", raw, tmp_path / "s", max_rows=3)
    with pytest.raises(DataError, match=r"train 8, val 1, test 0 rows"):  # 9 rows: fold 9 (test) is empty
        prepare("criteo", raw, tmp_path / "s", max_rows=9)
    assert not (tmp_path / "s").exists() and [p.name for p in tmp_path.iterdir()] == ["train.txt"]  # staging removed
    assert prepare("criteo", raw, tmp_path / "s", max_rows=10).rows == {"train": 8, "val": 1, "test": 1}


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_prepare_prints_summary(tmp_path):
    from typer.testing import CliRunner

    from recnas.cli import app

    raw = write_lines(tmp_path / "train.txt", criteo_rows(50))
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", "criteo", "--raw", str(raw), "--out", str(tmp_path / "s"), "--min-count", "2"])
    assert result.exit_code == 0, result.output
    assert "criteo: 50 rows" in result.output and "train 40" in result.output and "bad rows skipped: 0" in result.output
    (tmp_path / "dense.yaml").write_text("label: y\ndense: [price]\n")  # no categorical fields: the line said nothing after its colon
    raw = write_lines(tmp_path / "d.csv", [[str(i % 2), "1.5"] for i in range(30)], sep=",", header=["y", "price"])
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", "csv", "--raw", str(raw), "--spec", str(tmp_path / "dense.yaml"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "vocab sizes (incl. OOV id 0): none (no categorical fields)" in result.output


def test_cli_error_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from recnas.cli import main

    raw = write_lines(tmp_path / "train.txt", _corrupt("dense")(criteo_rows(10)))
    monkeypatch.setattr(sys, "argv", ["recnas", "data", "prepare", "--dataset", "criteo", "--raw", str(raw), "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.txt:5: column I3" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("flag, drawn", [([], True), (["--no-progress"], False)])
def test_cli_no_progress_draws_no_bars(tmp_path, monkeypatch, capsys, flag, drawn):
    """`--no-progress`, as the commands that train take it, was "No such option" here."""
    from recnas.cli import main

    raw = write_lines(tmp_path / "train.txt", criteo_rows(50))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # bars are drawn on a terminal only
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "argv", ["recnas", "data", "prepare", "--dataset", "criteo", "--raw", str(raw), "--out", str(tmp_path / "s"), *flag])
    main()
    out = capsys.readouterr().out
    assert "50 rows in" in out and ("pass 1: parse" in out) == drawn


def test_cli_synth_is_a_thin_wrapper(tmp_path, monkeypatch):
    import types

    from typer.testing import CliRunner

    from recnas.cli import app
    from recnas.data.schema import DatasetMeta

    calls = {}

    def generate(out, rows, seed, raw_out=None, overwrite=False):
        calls.update(out=out, rows=rows, seed=seed, raw_out=raw_out, overwrite=overwrite)
        return DatasetMeta(name="synthetic", dense_names=["I1"], cat_names=["C1"], vocab_sizes=[5], rows={"train": 8, "val": 1, "test": 1}, positive_rate={"train": 0.25, "val": 0.0, "test": 1.0})

    monkeypatch.setitem(sys.modules, "recnas.data.synthetic", types.SimpleNamespace(generate=generate))
    result = CliRunner().invoke(app, ["data", "synth", "--rows", "10", "--out", str(tmp_path / "s"), "--seed", "3", "--raw-out", str(tmp_path / "r.txt"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert calls == {"out": tmp_path / "s", "rows": 10, "seed": 3, "raw_out": tmp_path / "r.txt", "overwrite": True}
    assert "synthetic: 10 rows" in result.output and "C1=5" in result.output


def test_synthetic_raw_output_prepares_to_the_same_rows(tmp_path):
    from recnas.data.synthetic import generate

    synth = generate(tmp_path / "synth", rows=500, seed=1, raw_out=tmp_path / "train.txt")
    meta = prepare("criteo", tmp_path / "train.txt", tmp_path / "store")
    assert sum(meta.rows.values()) == sum(synth.rows.values()) == 500
    labels = np.concatenate([CTRStore(tmp_path / "synth").split(s).label for s in SPLITS])
    assert abs(np.mean(labels) - np.mean(concat(load(tmp_path / "store")[1], "label"))) < 1e-9


# -- encoding other files like a store (--vocab-from) --------------------------------------
def ids_by_value(rows, parts) -> list[dict[str, int]]:
    """Per field: raw value -> stored id of a store prepared from `rows` (file order kept)."""
    sparse = concat(parts, "sparse")
    return [{r[14 + j]: int(sparse[i, j]) for i, r in enumerate(rows)} for j in range(26)]


@pytest.mark.parametrize("min_count", [None, 3])
def test_vocab_from_reuses_the_ids_and_maps_unseen_values_to_oov(tmp_path, min_count):
    first, new = criteo_rows(300, seed=0), criteo_rows(120, seed=9)
    new[0][14] = "never-seen-before"
    base = prepare("criteo", write_lines(tmp_path / "day1.txt", first), tmp_path / "s1", min_count=min_count, split="sequential")
    meta = prepare("criteo", write_lines(tmp_path / "day2.txt", new), tmp_path / "s2", vocab_from=tmp_path / "s1", split="none")
    assert (tmp_path / "s1" / "vocab.parquet").is_file() and base.encoding["kind"] == "vocabulary"
    assert (meta.vocab_sizes, meta.cat_names, meta.dense_names, meta.name) == (base.vocab_sizes, base.cat_names, base.dense_names, base.name)
    assert meta.rows == {"train": 0, "val": 0, "test": 120}
    store, parts = load(tmp_path / "s2")  # empty splits open and pass the checks
    assert len(parts["train"]) == len(parts["val"]) == 0
    known, sparse = ids_by_value(first, load(tmp_path / "s1")[1]), concat(parts, "sparse")
    unseen = {}
    for j in range(26):
        want = [known[j].get(r[14 + j], 0) for r in new]  # rare under --min-count: 0 in both
        np.testing.assert_array_equal(sparse[:, j], want)
        unseen[f"C{j + 1}"] = sum(r[14 + j] not in known[j] or known[j][r[14 + j]] == 0 for r in new)
    assert sparse[0, 0] == 0 and unseen["C1"] >= 1
    assert meta.source["vocab_from"]["unseen_rows"] == unseen
    assert meta.source["options"]["min_count"] == (min_count or 1)
    saved = pq.read_table(tmp_path / "s1" / "vocab.parquet")  # each field's kept values in id order
    for j, name in enumerate(base.cat_names):
        ids = [i for f, i in zip(saved.column("field").to_pylist(), saved.column("id").to_pylist()) if f == name]
        assert ids == list(range(1, base.vocab_sizes[j])), name
    # the new store passes the same ids on in turn
    again = prepare("criteo", tmp_path / "day2.txt", tmp_path / "s3", vocab_from=tmp_path / "s2", split="none")
    np.testing.assert_array_equal(concat(load(tmp_path / "s3")[1], "sparse"), sparse)
    assert again.vocab_sizes == base.vocab_sizes


def test_vocab_keeps_any_string(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC + "dense_transform: none\n")
    header = ["y", "user", "price", "unused", "city"]
    odd = ["\u00e9t\u00e9", "a,b", "\U0001f600", " spaced ", "tab\there", "0", "00"]
    rows = [["1" if i % 3 else "0", odd[i % len(odd)], "1", "x", f"c{i % 4}"] for i in range(40)]
    text = "".join(",".join(f'"{v}"' if "," in v else v for v in r) + "\n" for r in [header] + rows)
    (tmp_path / "a.csv").write_text(text)
    prepare("csv", tmp_path / "a.csv", tmp_path / "s1", spec=tmp_path / "spec.yaml", split="sequential")
    prepare("csv", tmp_path / "a.csv", tmp_path / "s2", spec=tmp_path / "spec.yaml", split="none", vocab_from=tmp_path / "s1")
    one, two = concat(load(tmp_path / "s1")[1], "sparse"), concat(load(tmp_path / "s2")[1], "sparse")
    np.testing.assert_array_equal(one, two)  # every value found again, same row order
    assert sorted(pq.read_table(tmp_path / "s1" / "vocab.parquet").column("value").to_pylist()[:7]) == sorted(odd)


def test_vocab_from_a_hash_store(tmp_path):
    first, new = criteo_rows(200, seed=2), criteo_rows(60, seed=3)
    base = prepare("criteo", write_lines(tmp_path / "a.txt", first), tmp_path / "s1", hash_buckets=7, split="sequential")
    assert base.encoding == {"kind": "hash", "buckets": 7, "dense_transform": "log1p"} and not (tmp_path / "s1" / "vocab.parquet").exists()
    meta = prepare("criteo", write_lines(tmp_path / "b.txt", new), tmp_path / "s2", vocab_from=tmp_path / "s1", split="none")
    plain = prepare("criteo", tmp_path / "b.txt", tmp_path / "s3", hash_buckets=7, split="none")
    assert meta.vocab_sizes == base.vocab_sizes == [7] * 26 and meta.encoding["kind"] == "hash"
    sparse = concat(load(tmp_path / "s2")[1], "sparse")
    np.testing.assert_array_equal(sparse, concat(load(tmp_path / "s3")[1], "sparse"))
    known = ids_by_value(first, load(tmp_path / "s1")[1])
    assert all(sparse[i, j] == known[j][r[14 + j]] for i, r in enumerate(new) for j in range(26) if r[14 + j] in known[j])
    assert plain.source["options"]["hash_buckets"] == meta.source["options"]["hash_buckets"] == 7


def test_vocab_from_refusals_keep_what_is_there(tmp_path):
    import json

    raw = write_lines(tmp_path / "a.txt", criteo_rows(60))
    prepare("criteo", raw, tmp_path / "s1", split="sequential")
    out = tmp_path / "out"
    kept = prepare("criteo", raw, out, split="sequential", min_count=2)
    for kwargs, error, match in [
        ({"min_count": 2}, ConfigError, "--min-count is decided by --vocab-from"),
        ({"hash_buckets": 5}, ConfigError, "--hash-buckets is decided by --vocab-from"),
    ]:
        with pytest.raises(error, match=match):
            prepare("criteo", raw, out, vocab_from=tmp_path / "s1", overwrite=True, **kwargs)
    avazu = write_lines(tmp_path / "av.csv", avazu_rows(30), sep=",", header=AVAZU_HEADER)
    with pytest.raises(DataError, match=r"--vocab-from .*s1 and .*av.csv \(for .*out\) differ in their dataset: criteo vs avazu"):
        prepare("avazu", avazu, out, vocab_from=tmp_path / "s1", overwrite=True)
    old = tmp_path / "old"  # a store written before the vocabulary was saved
    shutil.copytree(tmp_path / "s1", old)
    (old / "vocab.parquet").unlink()
    meta = json.loads((old / "meta.json").read_text())
    del meta["encoding"]
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"--vocab-from .*old has no saved vocabulary.*so .*out cannot get its ids"):
        prepare("criteo", raw, out, vocab_from=old, overwrite=True)
    with pytest.raises(DataError, match="not a prepared recnas dataset"):
        prepare("criteo", raw, out, vocab_from=tmp_path / "nothing", overwrite=True)
    with pytest.raises(DataError, match="the same path as --out"):
        prepare("criteo", raw, tmp_path / "s1", vocab_from=tmp_path / "s1", overwrite=True)
    bad = write_lines(tmp_path / "bad.txt", _corrupt("label")(criteo_rows(40)))
    with pytest.raises(DataError, match="bad.txt:5"):  # fails in pass 1: the store in --out stays
        prepare("criteo", bad, out, vocab_from=tmp_path / "s1", overwrite=True)
    assert CTRStore(out).meta.source["options"]["min_count"] == kept.source["options"]["min_count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "av.csv", "bad.txt", "old", "out", "s1"]


@pytest.mark.parametrize("damage, match", [
    ("drop C1", r"field C1 holds 0 values, not ids 1\.\.\d+ each once"),  # every C1 value used to become OOV silently
    ("negate ids", r"field C1 holds \d+ values, not ids 1"),  # negative ids used to be written into the new store
    ("drop id", r"unreadable vocabulary file \(no column id; it has field, value\)"),
    ("kind foo", r"meta.json: its encoding .* is not one recnas writes: kind must be vocabulary or hash"),
    ("no file", r"meta.json: its encoding .* file must name the vocabulary file"),  # was a KeyError traceback
    ("file ../a.txt", r"meta.json: its encoding .* file must name the vocabulary file"),
    ("hash no buckets", r"meta.json: its encoding .* buckets must be a whole number"),  # was a KeyError traceback
    ("hash 0 buckets", r"meta.json: its encoding .* buckets must be a whole number >= 1"),
    ("one value twice", r"field C1 holds \d+ values, not ids 1\.\.\d+ each once"),  # two ids for one value
])
def test_vocab_from_a_damaged_store_is_refused(tmp_path, damage, match):
    import json

    import pyarrow.compute as pc

    raw = write_lines(tmp_path / "a.txt", criteo_rows(80))
    s1 = tmp_path / "s1"
    prepare("criteo", raw, s1, split="sequential")
    table, meta = pq.read_table(s1 / "vocab.parquet"), json.loads((s1 / "meta.json").read_text())
    if damage == "drop C1":
        pq.write_table(table.filter(pc.not_equal(table["field"], "C1")), s1 / "vocab.parquet")
    elif damage == "negate ids":
        pq.write_table(table.set_column(2, "id", pc.negate(table["id"])), s1 / "vocab.parquet")
    elif damage == "drop id":
        pq.write_table(table.drop(["id"]), s1 / "vocab.parquet")
    elif damage == "one value twice":
        values = table["value"].to_pylist()
        c1 = [i for i, f in enumerate(table["field"].to_pylist()) if f == "C1"]
        values[c1[1]] = values[c1[0]]
        pq.write_table(table.set_column(1, "value", pa.array(values, pa.large_string())), s1 / "vocab.parquet")
    else:
        meta["encoding"] = {"kind foo": {**meta["encoding"], "kind": "foo"}, "no file": {"kind": "vocabulary"}, "file ../a.txt": {"kind": "vocabulary", "file": "../a.txt"}, "hash no buckets": {"kind": "hash"}, "hash 0 buckets": {"kind": "hash", "buckets": 0}}[damage]
        (s1 / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=match):
        prepare("criteo", raw, tmp_path / "s2", vocab_from=s1, split="none")
    assert not (tmp_path / "s2").exists()


def test_split_none_needs_no_seed_and_one_row(tmp_path):
    raw = write_lines(tmp_path / "a.txt", criteo_rows(3))
    meta = prepare("criteo", raw, tmp_path / "s", split="none")  # too few rows for 8:1:1, fine for scoring
    assert meta.rows == {"train": 0, "val": 0, "test": 3}
    with pytest.raises(ConfigError, match="--split none keeps file order and takes no seed"):
        prepare("criteo", raw, tmp_path / "t", split="none", seed=3)


def test_cli_prepare_vocab_from_reports_unseen_values(tmp_path):
    from typer.testing import CliRunner

    from recnas.cli import app

    prepare("criteo", write_lines(tmp_path / "a.txt", criteo_rows(100)), tmp_path / "s1", split="sequential")
    raw = write_lines(tmp_path / "b.txt", criteo_rows(50, seed=4))
    result = CliRunner().invoke(app, ["data", "prepare", "--dataset", "criteo", "--raw", str(raw), "--out", str(tmp_path / "s2"), "--vocab-from", str(tmp_path / "s1"), "--split", "none"])
    assert result.exit_code == 0, result.output
    assert "test 50" in result.output and f"ids from {tmp_path / 's1'}: " in result.output and "unseen there (OOV id 0)" in result.output


def test_parquet_date_column_as_categorical_is_kept(tmp_path):
    """A date is a fine categorical (one code per day): only a dense or label date is refused."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    days = [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), datetime.date(2024, 1, 1)] * 5
    pq.write_table(pa.table({"y": [1, 0] * 10, "price": [1.0] * 20, "user": days, "city": ["a", "b"] * 10}), tmp_path / "d.parquet")
    meta = prepare("csv", tmp_path / "d.parquet", tmp_path / "store", spec=tmp_path / "spec.yaml", split="sequential")
    assert sum(meta.rows.values()) == 20 and meta.vocab_sizes == [4, 3]
    sparse = concat(load(tmp_path / "store")[1], "sparse")
    assert sparse[0, 0] == sparse[3, 0] and len({sparse[0, 0], sparse[1, 0], sparse[2, 0]}) == 3


def test_cli_prepare_warns_about_splits_of_one_class(tmp_path, monkeypatch, capsys):
    """All labels 0, or 1 click in 2,000 rows that the 8:1:1 split puts in test: the store was
    written with no word, and every model trained on it then reported a log loss near 0 with
    AUC n/a, as if fine. Each split of one class is now a warning (the store is still written)."""
    from recnas.cli import main

    raw = tmp_path / "clicks.csv"
    raw.write_text("y,a\n" + "".join(f"{int(i == 7)},v{i % 3}\n" for i in range(40)))
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\ncategorical: [a]\n")
    monkeypatch.setattr(sys, "argv", ["recnas", "data", "prepare", "--dataset", "csv", "--raw", str(raw), "--spec", str(spec), "--out", str(tmp_path / "s")])
    main()
    out, err = capsys.readouterr()
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    one = [s for s in ("train", "val", "test") if meta["positive_rate"][s] == 0.0]
    assert "train" in one and len(one) == 2  # the click is in val or test
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all(f"the {s} split holds no clicks (every label 0)" in err for s in one), err
    assert "a model trained on it learns to predict no click for every row" in warnings[0]
    raw.write_text("y,a\n" + "".join(f"{i % 2},v{i % 3}\n" for i in range(40)))
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--overwrite"])
    main()
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("other", ["1.5", "abc"])  # the block parsed as numbers, or as strings
def test_an_empty_label_is_named_empty(tmp_path, other):
    """A row whose label cell is empty was refused with `label y is not 0 or 1 (None)` (its wording then; or
    `('')` in a block holding a non-numeric value), which reads like a bug in recnas; the
    message (and the skip examples) now say the label is empty."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    rows = [["1", "2.0", "u", "c"], ["0", "1.0", "v", "d"]] * 6
    rows[3], rows[9] = ["", "1.0", "v", "d"], ["0", other, "v", "d"]  # the empty label comes first
    raw = write_lines(tmp_path / "d.csv", rows, sep=",", header=["y", "price", "user", "city"])
    with pytest.raises(DataError, match=r"d.csv:5: column y \(the label\): not 0 or 1 \(empty\)"):
        prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml")
    meta = prepare("csv", raw, tmp_path / "store", spec=tmp_path / "spec.yaml", on_bad_row="skip")
    assert meta.bad_row_examples[0] == "d.csv:5: column y (the label): not 0 or 1 (empty)"


@pytest.mark.parametrize("flags, warned", [
    (["--min-count", "1000"], "2 of 2 categorical field(s) kept no value (user, city): each value was seen fewer than --min-count 1000 times"),
    (["--min-count", "11"], "1 of 2 categorical field(s) kept no value (user):"),
    (["--hash-buckets", "1"], "--hash-buckets 1 gives every value of every categorical field the one id 0"),
    ([], None),
    (["--hash-buckets", "2"], None),
])
def test_cli_prepare_warns_when_a_field_maps_every_value_to_one_id(tmp_path, monkeypatch, capsys, flags, warned):
    """A --min-count above every count of a field (or one hash bucket) sent each of its values to
    the OOV id 0 with no word but `user=1` among the vocabulary sizes: the store trained, on
    fields that told the model nothing."""
    from recnas.cli import main

    (tmp_path / "spec.yaml").write_text(SPEC)
    rows = [[str(i % 2), "1.0", f"u{i}", "paris" if i % 3 else "rome"] for i in range(40)]
    raw = write_lines(tmp_path / "d.csv", rows, sep=",", header=["y", "price", "user", "city"])
    monkeypatch.setattr(sys, "argv", ["recnas", "data", "prepare", "--dataset", "csv", "--raw", str(raw), "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s"), *flags])
    main()
    err = capsys.readouterr().err
    if warned is None:
        assert "warning" not in err
    else:
        assert [line for line in err.splitlines() if line.startswith("warning: ")] == [line for line in err.splitlines() if warned in line], err
        assert warned in err


@pytest.mark.parametrize("transform, value, warned", [("none", "1e30", True), ("none", "12.5", False), ("log1p", "1e30", False)])
def test_cli_prepare_warns_about_dense_features_of_a_huge_magnitude(tmp_path, monkeypatch, capsys, transform, value, warned):
    """Raw values like 1e30 kept by `dense_transform: none`: models then diverged at any lr, or
    (lr, dlrm) finished with a train loss of 1e28 and AUC 0.5 without a word. prepare now warns."""
    from recnas.cli import main

    (tmp_path / "spec.yaml").write_text(SPEC + f"dense_transform: {transform}\n")
    rows = [[str(i % 2), value, f"u{i % 4}", "paris"] for i in range(40)]
    raw = write_lines(tmp_path / "d.csv", rows, sep=",", header=["y", "price", "user", "city"])
    monkeypatch.setattr(sys, "argv", ["recnas", "data", "prepare", "--dataset", "csv", "--raw", str(raw), "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s")])
    main()
    err = capsys.readouterr().err
    assert ("warning: the train split's dense features reach |x| = 1e+30 (prepared with dense_transform: none): models diverge or learn nothing" in err) is warned, err


@pytest.mark.parametrize("n, sizes", [(10, (8, 1, 1)), (9, (7, 1, 1)), (15, (12, 1, 2)), (1001, (800, 100, 101)), (1009, (807, 101, 101))])
def test_sequential_split_takes_the_first_80_and_next_10_percent_rounded_down(n, sizes):
    from recnas.data.splits import TEST, TRAIN, VAL, sequential

    split = sequential(n)
    assert tuple(int((split == s).sum()) for s in (TRAIN, VAL, TEST)) == sizes
    assert (np.diff(split.astype(int)) >= 0).all()  # file order: train, then val, then test


def test_encoding_of_checks_each_kind_by_hand():
    """vocab.encoding_of on meta objects made by hand: a legacy hash store's bucket count from
    source.options, None without either, and a bool or non-int bucket count refused (YAML/JSON
    `true` is an int to Python: it read as 1 bucket)."""
    from types import SimpleNamespace

    from recnas.data.vocab import encoding_of

    def meta(encoding=None, options=None):
        return SimpleNamespace(encoding=encoding, source={"options": options or {}})

    assert encoding_of(meta()) is None
    assert encoding_of(meta(options={"hash_buckets": 7})) == {"kind": "hash", "buckets": 7}
    assert encoding_of(meta({"kind": "hash", "buckets": 1})) == {"kind": "hash", "buckets": 1}
    assert encoding_of(meta({"kind": "vocabulary", "file": "vocab.parquet"}))["file"] == "vocab.parquet"
    for buckets in (True, 2.0, "3"):
        with pytest.raises(DataError, match=r"st/meta.json: its encoding .* buckets must be a whole number >= 1"):
            encoding_of(meta({"kind": "hash", "buckets": buckets}), "st")
    for file in ("", ".", "..", "a/vocab.parquet", 3):
        with pytest.raises(DataError, match="file must name the vocabulary file inside the store"):
            encoding_of(meta({"kind": "vocabulary", "file": file}))


def test_ctrl_c_inside_polars_is_one_interrupted_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C while polars runs Python code of its own (the first `to_numpy` imports numpy's array
    API: found by interrupting `recnas data prepare` at random moments) reaches Python as pyo3's
    PanicException ("Failed to access NumPy array API capsule: PyErr { type: <class
    'KeyboardInterrupt'> ..."), a BaseException: it ended in a traceback and exit code 1, not the
    one `interrupted` line and exit code 130 of any other Ctrl-C. Nothing is left of the store."""
    from polars.exceptions import PanicException

    import recnas.data.encode as encode
    from tests.test_cli_models import run

    raw, spec = tmp_path / "shop.csv", tmp_path / "spec.yaml"
    raw.write_text("click,price,user\n" + "".join(f"{i % 2},{i}.5,u{i % 7}\n" for i in range(50)))
    spec.write_text("label: click\ndense: [price]\ncategorical: [user]\n")

    def interrupted(*args, **kwargs):
        raise PanicException("Failed to access NumPy array API capsule: PyErr { type: <class 'KeyboardInterrupt'>, value: KeyboardInterrupt(), traceback: None }")

    monkeypatch.setattr(encode, "_floats", interrupted)
    code, _, err = run(monkeypatch, capsys, "data", "prepare", "--dataset", "csv", "--raw", raw, "--spec", spec, "--out", tmp_path / "store", "--no-progress")
    assert code == 130 and err.strip() == "interrupted", err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["shop.csv", "spec.yaml"]
