"""Duplicate (user, item) rows: keep the last one in input order.

A repeated (user, item) pair is usually a re-rating or a re-watch; the latest observation is
the user's current opinion, so the last row (highest ``row``, i.e. latest in file order) wins.
Keeping both would put the same pair in two splits (a train/test leak) or count it twice.

Planning (:func:`duplicate_rows`) needs only the ``row``/``user``/``item`` columns of all rows;
dropping (:func:`drop_rows`) is per row, so the Ray pipeline plans on the driver and drops
inside ``map_batches`` — with the same result as the in-memory path, whatever the blocks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from invlearn_ray.data import canonical as cn


def duplicate_rows(rows: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Sorted ``row`` ids of every row superseded by a later row of the same (user, item)."""
    order = np.lexsort((rows, items, users))
    users, items = users[order], items[order]
    superseded = np.zeros(len(order), dtype=bool)
    superseded[:-1] = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
    return np.sort(rows[order][superseded])


def drop_rows(table: pa.Table, dropped: np.ndarray) -> pa.Table:
    """Remove the rows whose ``row`` id is in the sorted array ``dropped``."""
    if not len(dropped):
        return table
    rows = table.column(cn.ROW).to_numpy()
    position = np.searchsorted(dropped, rows).clip(max=len(dropped) - 1)
    return table.filter(pa.array(dropped[position] != rows))


def drop_duplicates_keep_last(table: pa.Table) -> pa.Table:
    """Keep, for each (user, item) pair, only the row with the largest ``row``.

    Args:
        table: canonical table with int64 ``user``, ``item`` and ``row`` columns.

    Returns:
        The kept rows, in their input order.
    """
    dropped = duplicate_rows(
        table.column(cn.ROW).to_numpy(),
        table.column(cn.USER).to_numpy(),
        table.column(cn.ITEM).to_numpy(),
    )
    return drop_rows(table, dropped)
