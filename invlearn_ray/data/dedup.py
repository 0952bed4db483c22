"""Duplicate (user, item) rows: keep the last one in input order.

A repeated (user, item) pair is usually a re-rating or a re-watch; the latest observation is
the user's current opinion, so the last row (highest ``row``, i.e. latest in file order) wins.
Keeping both would put the same pair in two splits (a train/test leak) or count it twice.
The function is exact on any subset that holds all rows of its users, so the Ray pipeline
applies it per user group (``groupby("user").map_groups``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from invlearn_ray.data import canonical as cn


def drop_duplicates_keep_last(table: pa.Table) -> pa.Table:
    """Keep, for each (user, item) pair, only the row with the largest ``row``.

    Args:
        table: canonical table with int64 ``user``, ``item`` and ``row`` columns.

    Returns:
        The kept rows, sorted by ``row``.
    """
    users = table.column(cn.USER).to_numpy()
    items = table.column(cn.ITEM).to_numpy()
    rows = table.column(cn.ROW).to_numpy()
    order = np.lexsort((rows, items, users))
    users, items = users[order], items[order]
    last_of_pair = np.ones(len(order), dtype=bool)
    last_of_pair[:-1] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    kept = order[last_of_pair]
    kept = kept[np.argsort(rows[kept], kind="stable")]
    return table.take(pa.array(kept, type=pa.int64()))
