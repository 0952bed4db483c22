"""The embedding-table rows one step reads, so its gradient is computed on those rows only.

For a backbone whose representations are plain row gathers (``Backbone.table_index``: MF,
GMF, NeuMF), a step's loss depends on a table only through the rows its ids select. So the step
differentiates a *compact* copy of those rows instead of the table::

    unique ids u (sorted)          compact table  T[u]          renumbered ids  searchsorted(u, id)
    model(ids, T)  ==  model(renumbered ids, T[u])   and   ∇_T = scatter of ∇_{T[u]} onto rows u

The gradient is then a :class:`~invlearn_ray.optim.gradients.RowGradient` — O(touched rows)
to compute, exchange between workers and apply — where autograd through a gather of the whole
table materialises a dense ``[rows, dim]`` gradient (zero-filled, O(table)) every step.

LightGCN's representations propagate the whole table over the graph (not a gather): it has no
``table_index`` and keeps dense gradients (:class:`AllRows`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from invlearn_ray.models.backbones import Backbone, Params
from invlearn_ray.optim.gradients import Gradient, RowGradient

if TYPE_CHECKING:  # a type only: the import would run against the layers' order
    from invlearn_ray.methods.objectives import TrainBatch

BATCH_ID_KINDS = {
    "users": "user",
    "unlabeled_users": "user",
    "items": "item",
    "unlabeled_items": "item",
    "candidates": "item",
    "negatives": "item",
}
"""Which id each :class:`TrainBatch` field holds: every row an objective scores is among them."""


class TouchedRows:
    """The unique ids of each kind a step reads, the step's ids renumbered into them, and the
    tables' rows at them.

    Args:
        table_index: the backbone's ``{table name: id kind}``.
        ids: ``{id kind: [id tensors]}`` — every id the step's loss will look up.

    Attributes:
        unique: ``{id kind: sorted unique ids}`` — row ``k`` of a compact table is row
            ``unique[kind][k]`` of the table.
        renumbered: ``ids`` with each id replaced by its position in ``unique`` (same shapes).

    Cost: one sort of the step's ids per kind; nothing grows with the tables.
    """

    def __init__(self, table_index: dict[str, str], ids: dict[str, list[Tensor]]) -> None:
        self.table_index = table_index
        self.unique: dict[str, Tensor] = {}
        self.renumbered: dict[str, list[Tensor]] = {}
        for kind, tensors in ids.items():
            flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
            self.unique[kind], positions = torch.unique(flat, return_inverse=True)
            parts = positions.split([tensor.numel() for tensor in tensors])
            self.renumbered[kind] = [
                part.view_as(tensor) for part, tensor in zip(parts, tensors, strict=True)
            ]

    def renumber_batch(self, batch: TrainBatch) -> TrainBatch:
        """The batch with every id field renumbered (the ids must be those of
        :func:`batch_ids`); other fields (labels, rows) as they are."""
        renumbered = {kind: iter(tensors) for kind, tensors in self.renumbered.items()}
        changes = {
            name: next(renumbered[kind])
            for name, kind in BATCH_ID_KINDS.items()
            if getattr(batch, name) is not None
        }
        return dataclasses.replace(batch, **changes)

    def gather(self, values: dict[str, Gradient]) -> dict[str, Tensor]:
        """Compact tables: each table's rows at this step's ids (from a dense tensor or a row
        gradient); other entries (head parameters) unchanged."""
        compact: dict[str, Tensor] = {}
        for name, value in values.items():
            kind = self.table_index.get(name)
            if kind is None:
                compact[name] = value
            elif isinstance(value, RowGradient):
                compact[name] = value.at(self.unique[kind])
            else:
                compact[name] = value.index_select(0, self.unique[kind])
        return compact

    def row_gradients(self, grads: dict[str, Tensor], tables: Params) -> dict[str, Gradient]:
        """Gradients w.r.t. compact tables as :class:`RowGradient` of the full ``tables``."""
        return {
            name: RowGradient(self.unique[kind], grad, len(tables[name]))
            if (kind := self.table_index.get(name)) is not None
            else grad
            for name, grad in grads.items()
        }


class AllRows:
    """The dense counterpart of :class:`TouchedRows`: ids as they are, whole tables, dense
    gradients (for backbones without ``table_index`` and for compiled / CUDA-graphed steps,
    whose shapes must not depend on the batch's ids)."""

    def __init__(self, ids: dict[str, list[Tensor]]) -> None:
        self.renumbered = ids

    def renumber_batch(self, batch: TrainBatch) -> TrainBatch:
        return batch

    def gather(self, values: dict[str, Gradient]) -> dict[str, Gradient]:
        return dict(values)

    def row_gradients(self, grads: dict[str, Tensor], tables: Params) -> dict[str, Gradient]:
        return dict(grads)


def rows_of(model: Backbone, ids: dict[str, list[Tensor]], sparse: bool) -> TouchedRows | AllRows:
    """The rows a step reads: :class:`TouchedRows` when ``sparse`` (and the backbone's tables
    are gathers), else :class:`AllRows`."""
    if sparse and model.table_index is not None:
        return TouchedRows(model.table_index, ids)
    return AllRows(ids)


def batch_ids(batch: TrainBatch) -> dict[str, list[Tensor]]:
    """``{id kind: [tensors]}`` of every id field a batch fills."""
    ids: dict[str, list[Tensor]] = {}
    for name, kind in BATCH_ID_KINDS.items():
        value = getattr(batch, name)
        if value is not None:
            ids.setdefault(kind, []).append(value)
    return ids
