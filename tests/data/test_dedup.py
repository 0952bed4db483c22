"""Duplicate (user, item) rows: the last one in input order is kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.dedup import drop_duplicates_keep_last, duplicate_rows


def test_last_row_of_each_pair_wins_and_input_order_is_kept():
    table = pa.table(
        {
            cn.ROW: [0, 1, 2, 3, 4, 5],
            cn.USER: [1, 1, 2, 1, 2, 3],
            cn.ITEM: [7, 8, 7, 7, 7, 7],
            cn.RATING: [1.0, 2.0, 3.0, 4.0, 5.0, 1.0],
        }
    )
    kept = drop_duplicates_keep_last(table)
    assert kept.column(cn.ROW).to_pylist() == [1, 3, 4, 5]
    assert kept.column(cn.RATING).to_pylist() == [2.0, 4.0, 5.0, 1.0]


def test_duplicate_rows_lists_the_superseded_rows():
    rows = np.array([10, 11, 12, 13, 14])
    users = np.array([1, 1, 1, 2, 1])
    items = np.array([5, 6, 5, 5, 5])
    assert duplicate_rows(rows, users, items).tolist() == [10, 12]


def test_result_does_not_depend_on_input_order():
    rng = np.random.default_rng(0)
    n = 5000
    table = pa.table(
        {
            cn.ROW: np.arange(n),
            cn.USER: rng.integers(0, 50, n),
            cn.ITEM: rng.integers(0, 40, n),
        }
    )
    shuffled = table.take(pa.array(rng.permutation(n)))
    kept_shuffled = drop_duplicates_keep_last(shuffled)
    assert kept_shuffled.sort_by(cn.ROW).equals(drop_duplicates_keep_last(table))
    kept = drop_duplicates_keep_last(table)
    keys = kept.column(cn.USER).to_numpy() * 40 + kept.column(cn.ITEM).to_numpy()
    assert len(np.unique(keys)) == kept.num_rows
    all_keys = table.column(cn.USER).to_numpy() * 40 + table.column(cn.ITEM).to_numpy()
    last_row = {key: row for row, key in enumerate(all_keys)}
    assert sorted(last_row.values()) == kept.column(cn.ROW).to_pylist()
