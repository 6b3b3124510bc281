"""benchmarks/proxy_rank.py: correlation of short-training scores with the best score, on hand-made histories."""

import pytest

from tests.conftest import load_benchmark


def test_proxy_table_on_hand_made_histories():
    proxy = load_benchmark("proxy_rank")
    # after one interval the order is the reverse of the final one; after two it is the final one,
    # and stays so at three although a's third score (0.52) is its worst: the best so far counts;
    # "c" stopped early after one interval: its best carries over
    histories = {"a": [0.60, 0.40, 0.52], "b": [0.55, 0.45, 0.44], "c": [0.50]}
    rows = proxy.proxy_table(histories)
    assert [r["intervals"] for r in rows] == [1, 2, 3]
    assert rows[0]["kendall_tau"] == pytest.approx(-1.0) and rows[0]["n"] == 3
    assert rows[1]["kendall_tau"] == pytest.approx(1.0) and rows[2]["kendall_tau"] == pytest.approx(1.0)
