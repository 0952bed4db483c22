"""Gradients of pure loss functions, and their data-parallel mean.

Every training step differentiates a pure function ``loss(params) -> (sum, aux)``. Two ways to
do it, same result:

* ``functional=True`` — ``torch.func.grad_and_value``: traceable, so ``torch.compile`` can fuse
  the forward *and* backward of the whole step into a few kernels;
* ``functional=False`` — ``torch.autograd.grad`` on leaf aliases of the parameters: in eager
  mode it is the cheaper one (measured ~2x less dispatch overhead per op on this 2-core CPU).

A gradient is a dense tensor or, for an embedding table, a :class:`RowGradient` — the rows a
step touched (:mod:`~invlearn_ray.core.touched_rows`). A batch of 1,024 rows touches at most
2,048 of the 10⁵–10⁸ rows of a user and an item table, so holding, exchanging and applying only
those rows is what keeps a step's cost independent of the table size.

Steps reduce *sums* and row *counts* across workers, so the global mean is exact whatever the
shard sizes. :class:`WorkerMean` does it in one collective call per step: dense gradients alone
are all-reduced; with row gradients, every worker's (row index, gradient row) pairs, dense
gradients and count travel in one all-gather — O(touched rows × workers) bytes where a dense
all-reduce of the tables moves O(table) bytes — and every worker sums them in rank order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from invlearn_ray.core.collective import Collective

LossFn = Callable[[dict[str, Tensor]], tuple[Tensor, Any]]


@dataclass(frozen=True)
class RowGradient:
    """The gradient of an embedding table, zero outside ``indices``.

    Attributes:
        indices: the table rows it holds, sorted and unique (int64).
        rows: ``[len(indices), dim]`` — ``rows[k]`` is the gradient of row ``indices[k]``.
        n_rows: rows of the whole table.
    """

    indices: Tensor
    rows: Tensor
    n_rows: int

    def dense(self) -> Tensor:
        """The ``[n_rows, dim]`` tensor (O(table): only for consumers that need every row)."""
        out = self.rows.new_zeros((self.n_rows, *self.rows.shape[1:]))
        return out.index_copy_(0, self.indices, self.rows)

    def at(self, ids: Tensor) -> Tensor:
        """The gradient's rows at any ``ids`` (zero where it holds no row): O(len(ids)·log)."""
        if not len(self.indices):
            return self.rows.new_zeros((len(ids), *self.rows.shape[1:]))
        position = torch.searchsorted(self.indices, ids).clamp_(max=len(self.indices) - 1)
        held = (self.indices.index_select(0, position) == ids).unsqueeze(-1)
        rows = self.rows.index_select(0, position)
        return torch.where(held, rows, torch.zeros_like(rows[:1]))

    def map_rows(self, fn: Callable[[Tensor], Tensor]) -> RowGradient:
        """The same rows transformed elementwise (``fn(0) = 0`` keeps the meaning)."""
        return RowGradient(self.indices, fn(self.rows), self.n_rows)


Gradient = Tensor | RowGradient


def grad_and_value(
    loss: LossFn, params: dict[str, Tensor], functional: bool
) -> tuple[dict[str, Tensor], tuple[Tensor, Any]]:
    """``(∇ loss(params)[0], (loss value, aux))`` for detached ``params``."""
    if functional:
        return torch.func.grad_and_value(loss, has_aux=True)(params)
    leaves = {name: value.detach().requires_grad_() for name, value in params.items()}
    value, aux = loss(leaves)
    grads = torch.autograd.grad(value, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True)), (value.detach(), aux)


def reduce_mean_(grads: list[Tensor], count: Tensor | int, collective: Collective) -> None:
    """Turn local gradient *sums* into the global mean, in place: one all-reduce with the count."""
    total = _count_tensor(count, grads[0])
    collective.all_reduce_sum_([*grads, total])
    torch._foreach_div_(grads, total.clamp(min=1.0)[0])


class WorkerMean:
    """The global mean of one kind of step's gradient sums, identical on every worker.

    Dense gradients only (LightGCN, compiled steps): one all-reduce with the count. With row
    gradients: one all-gather of a buffer per worker, laid out as::

        [indices of table 1 .. T (capacity_t each) | count | row counts | dense gradients |
         gradient rows of table 1 .. T (capacity_t × dim each)]

    (indices bit-cast into the float dtype — an all-gather copies bytes, nothing adds them —
    and first, so every worker's indices start at an aligned offset). Every worker then sums
    the gathered parts in rank order, so parameters stay bit-identical without a broadcast.

    The dense head gradients ride along instead of taking an all-reduce of their own: one call
    instead of two per step (each costs ~0.2–1 ms of latency on this machine, more than a
    batch-1024 step's compute), at ``W×`` their (small) size. The capacity of each table is the
    most rows any worker has sent at this call site; when a worker touches more (every worker
    reads all row counts from the gathered buffers), all of them grow it and gather again — a
    second call in the first steps only. One instance per call site (supervised step, IG's
    dual and test gradients), since their row counts differ.

    Args:
        collective: the workers' collective.
    """

    GROWTH = 1.25
    """Headroom when a capacity grows, so that small fluctuations do not force regathers."""

    def __init__(self, collective: Collective) -> None:
        self.collective = collective
        self.capacity: dict[str, int] = {}

    def __call__(self, grads: Mapping[str, Gradient], count: Tensor | int) -> dict[str, Gradient]:
        """Local gradient *sums* and row count → the global means, by parameter name."""
        names = list(grads)
        dense = [grad for grad in grads.values() if not isinstance(grad, RowGradient)]
        tables = [name for name in names if isinstance(grads[name], RowGradient)]
        if not tables:
            reduce_mean_(dense, count, self.collective)
            return dict(zip(names, dense, strict=True))
        rows = [grads[name] for name in tables]
        total = _count_tensor(count, rows[0].rows)
        if self.collective.world_size > 1:
            total, dense, rows = self._gather_sums(tables, rows, dense, total)
        divisor = total.clamp(min=1.0)[0]
        means = iter([grad / divisor for grad in dense])
        row_means = dict(
            zip(
                tables,
                [grad.map_rows(lambda values: values / divisor) for grad in rows],
                strict=True,
            )
        )
        return {name: row_means[name] if name in row_means else next(means) for name in names}

    def _gather_sums(
        self, tables: list[str], rows: list[RowGradient], dense: list[Tensor], count: Tensor
    ) -> tuple[Tensor, list[Tensor], list[RowGradient]]:
        sizes = [len(grad.indices) for grad in rows]
        like = rows[0].rows
        if not _exact_count(max([*sizes, float(count)]), like.dtype):
            raise ValueError(
                f"{max([*sizes, float(count)])} rows in one step are more than {like.dtype} "
                "counts exactly; use float32 gradients or smaller batches"
            )
        while True:
            capacity = [max(self.capacity.get(name, 0), 1) for name in tables]
            layout = _Layout(rows, dense, capacity)
            gathered = self.collective.all_gather(layout.pack(rows, dense, count, sizes))
            all_sizes = layout.sizes(gathered)
            wanted = all_sizes.max(dim=0).values.tolist()
            if all(need <= have for need, have in zip(wanted, capacity, strict=True)):
                break
            for name, need in zip(tables, wanted, strict=True):
                if need > self.capacity.get(name, 0):
                    self.capacity[name] = math.ceil(need * self.GROWTH)
        return layout.sums(gathered, all_sizes, rows)


class _Layout:
    """Where each piece sits in one worker's exchange buffer (see :class:`WorkerMean`)."""

    def __init__(self, rows: list[RowGradient], dense: list[Tensor], capacity: list[int]) -> None:
        self.dtype = rows[0].rows.dtype
        self.index_width = 8 // rows[0].rows.element_size()
        self.capacity = capacity
        self.row_shapes = [grad.rows.shape[1:] for grad in rows]
        self.row_sizes = [math.prod(shape) for shape in self.row_shapes]
        self.dense_shapes = [grad.shape for grad in dense]
        self.header = self.index_width * sum(capacity)
        self.dense_start = self.header + 1 + len(rows)
        self.rows_start = self.dense_start + sum(grad.numel() for grad in dense)
        end = self.rows_start + sum(c * n for c, n in zip(capacity, self.row_sizes, strict=True))
        self.length = self.index_width * math.ceil(end / self.index_width)

    def pack(
        self, rows: list[RowGradient], dense: list[Tensor], count: Tensor, sizes: list[int]
    ) -> Tensor:
        buffer = torch.zeros(self.length, dtype=self.dtype, device=count.device)
        offset = 0
        for grad, capacity in zip(rows, self.capacity, strict=True):
            n = min(len(grad.indices), capacity)  # a worker over capacity sends a prefix
            buffer[offset : offset + n * self.index_width] = grad.indices[:n].view(self.dtype)
            offset += capacity * self.index_width
        buffer[offset] = count[0]
        buffer[offset + 1 : self.dense_start] = torch.tensor(sizes, dtype=self.dtype)
        if dense:
            buffer[self.dense_start : self.rows_start] = torch.cat([g.reshape(-1) for g in dense])
        offset = self.rows_start
        for grad, capacity, size in zip(rows, self.capacity, self.row_sizes, strict=True):
            n = min(len(grad.indices), capacity)
            buffer[offset : offset + n * size] = grad.rows[:n].reshape(-1)
            offset += capacity * size
        return buffer

    def sizes(self, gathered: Tensor) -> Tensor:
        """``[workers, tables]`` row counts every worker sent (whatever fit)."""
        return gathered[:, self.header + 1 : self.dense_start].to(torch.int64)

    def sums(
        self, gathered: Tensor, sizes: Tensor, rows: list[RowGradient]
    ) -> tuple[Tensor, list[Tensor], list[RowGradient]]:
        """Σ over workers, in rank order: the count, each dense gradient, each table's rows."""
        count = gathered[0, self.header : self.header + 1].clone()
        dense = gathered[0, self.dense_start : self.rows_start].clone()
        for rank in range(1, len(gathered)):
            count += gathered[rank, self.header : self.header + 1]
            dense += gathered[rank, self.dense_start : self.rows_start]
        sizes_of_dense = [math.prod(shape) for shape in self.dense_shapes]
        dense_parts = [
            part.view(shape)
            for part, shape in zip(dense.split(sizes_of_dense), self.dense_shapes, strict=True)
        ]
        tables = []
        for table, grad in enumerate(rows):
            index_start = self.index_width * sum(self.capacity[:table])
            row_start = self.rows_start + sum(
                c * n for c, n in zip(self.capacity[:table], self.row_sizes[:table], strict=True)
            )
            parts = []
            for rank, worker in enumerate(gathered):
                n = int(sizes[rank, table])
                indices = worker[index_start : index_start + n * self.index_width]
                values = worker[row_start : row_start + n * self.row_sizes[table]]
                parts.append(
                    RowGradient(
                        indices.view(torch.int64),
                        values.view(n, *self.row_shapes[table]),
                        grad.n_rows,
                    )
                )
            tables.append(sum_row_gradients(parts))
        return count, dense_parts, tables


def sum_row_gradients(parts: list[RowGradient]) -> RowGradient:
    """Σ of row gradients of one table, each part added whole in list order.

    Every part's indices are unique, so each output element receives one addition per part:
    the result is deterministic (also on CUDA, whose ``index_add_`` uses atomics) and equal on
    every worker that sums the same parts in the same order. One sort of Σ rows.
    """
    indices, positions = torch.unique(
        torch.cat([part.indices for part in parts]), return_inverse=True
    )
    first = parts[0]
    total = first.rows.new_zeros((len(indices), *first.rows.shape[1:]))
    for part, part_positions in zip(
        parts, positions.split([len(part.indices) for part in parts]), strict=True
    ):
        total.index_add_(0, part_positions, part.rows)
    return RowGradient(indices, total, first.n_rows)


def _count_tensor(count: Tensor | int, like: Tensor) -> Tensor:
    if isinstance(count, Tensor):
        return count.detach().reshape(1).to(like.dtype, copy=True)
    # torch.full, not torch.tensor: no host-to-device copy inside a CUDA-graph capture
    return torch.full((1,), float(count), device=like.device, dtype=like.dtype)


def _exact_count(value: float, dtype: torch.dtype) -> bool:
    """Counts travel in the gradients' float dtype: they must be exactly representable."""
    return value <= 2.0 / torch.finfo(dtype).eps
