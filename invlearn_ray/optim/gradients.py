"""Gradients of pure loss functions, and their data-parallel mean.

Every training step differentiates a pure function ``loss(params) -> (sum, aux)``. Two ways to
do it, same result:

* ``functional=True`` — ``torch.func.grad_and_value``: traceable, so ``torch.compile`` can fuse
  the forward *and* backward of the whole step into a few kernels;
* ``functional=False`` — ``torch.autograd.grad`` on leaf aliases of the parameters: in eager
  mode it is the cheaper one (measured ~2x less dispatch overhead per op on this 2-core CPU).

A gradient is a dense tensor or, for an embedding table, a :class:`RowGradient` — the rows a
step touched (:mod:`~invlearn_ray.optim.touched_rows`). A batch of 1,024 rows touches at most
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

from invlearn_ray.optim.collective import Collective

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
        # One fused division of everything (the tensors are this call's own, never the caller's).
        divided = [*dense, *(grad.rows for grad in rows)]
        if self.collective.world_size == 1:
            divided = [tensor.clone() for tensor in divided]
        torch._foreach_div_(divided, total.clamp(min=1.0)[0])
        means = iter(divided[: len(dense)])
        row_means = {
            name: RowGradient(grad.indices, values, grad.n_rows)
            for name, grad, values in zip(tables, rows, divided[len(dense) :], strict=True)
        }
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
    """Where each piece sits in one worker's exchange buffer (see :class:`WorkerMean`).

    Built to keep a step's op count small: the buffer is one ``torch.cat`` and every table is
    read back for all workers at once (``[workers, capacity]`` views of the gathered buffers).
    """

    def __init__(self, rows: list[RowGradient], dense: list[Tensor], capacity: list[int]) -> None:
        self.index_width = 8 // rows[0].rows.element_size()
        self.capacity = capacity
        self.row_shapes = [grad.rows.shape[1:] for grad in rows]
        self.row_sizes = [math.prod(shape) for shape in self.row_shapes]
        self.dense_shapes = [grad.shape for grad in dense]
        self.index_starts = _starts([self.index_width * c for c in capacity])
        self.header = self.index_starts[-1]
        self.dense_start = self.header + 1 + len(rows)
        self.rows_start = self.dense_start + sum(math.prod(shape) for shape in self.dense_shapes)
        row_lengths = [c * n for c, n in zip(capacity, self.row_sizes, strict=True)]
        self.row_starts = [self.rows_start + start for start in _starts(row_lengths)]
        end = self.row_starts[-1]
        self.length = self.index_width * math.ceil(end / self.index_width)

    def pack(
        self, rows: list[RowGradient], dense: list[Tensor], count: Tensor, sizes: list[int]
    ) -> Tensor:
        """This worker's buffer; a table with more rows than its capacity sends a prefix."""
        like = rows[0].rows
        kept = [min(size, capacity) for size, capacity in zip(sizes, self.capacity, strict=True)]
        pieces: list[Tensor] = []
        for grad, n, capacity in zip(rows, kept, self.capacity, strict=True):
            pieces.append(grad.indices[:n].view(like.dtype))
            pieces.append(like.new_zeros(self.index_width * (capacity - n)))
        pieces.append(count.reshape(1))
        pieces.append(torch.tensor(sizes, dtype=like.dtype, device=like.device))
        pieces.extend(grad.reshape(-1) for grad in dense)
        for grad, n, capacity, size in zip(rows, kept, self.capacity, self.row_sizes, strict=True):
            pieces.append(grad.rows[:n].reshape(-1))
            pieces.append(like.new_zeros((capacity - n) * size))
        pieces.append(like.new_zeros(self.length - self.row_starts[-1]))
        return torch.cat(pieces)

    def sizes(self, gathered: Tensor) -> Tensor:
        """``[workers, tables]`` row counts every worker sent (whatever fit)."""
        return gathered[:, self.header + 1 : self.dense_start].to(torch.int64)

    def sums(
        self, gathered: Tensor, sizes: Tensor, rows: list[RowGradient]
    ) -> tuple[Tensor, list[Tensor], list[RowGradient]]:
        """Σ over workers, in rank order: the count, each dense gradient, each table's rows."""
        head = gathered[:, self.header : self.rows_start]
        total = head[0].clone()
        for rank in range(1, len(gathered)):
            total += head[rank]
        count, dense = total[:1], total[1 + len(rows) :]
        dense_parts = [
            part.view(shape)
            for part, shape in zip(
                dense.split([math.prod(shape) for shape in self.dense_shapes]),
                self.dense_shapes,
                strict=True,
            )
        ]
        sizes_by_table = sizes.T.tolist()
        tables = []
        for table, grad in enumerate(rows):
            capacity, shape = self.capacity[table], self.row_shapes[table]
            start, row_start = self.index_starts[table], self.row_starts[table]
            indices = gathered[:, start : start + self.index_width * capacity]
            values = gathered[:, row_start : row_start + capacity * self.row_sizes[table]]
            indices = indices.contiguous().view(torch.int64)
            values = values.reshape(len(gathered), capacity, *shape)
            parts = [
                RowGradient(indices[rank, :n], values[rank, :n], grad.n_rows)
                for rank, n in enumerate(sizes_by_table[table])
            ]
            tables.append(sum_row_gradients(parts))
        return count, dense_parts, tables


def _starts(lengths: list[int]) -> list[int]:
    """Offsets of consecutive pieces of these lengths, and the end: ``[0, l0, l0 + l1, ...]``."""
    starts = [0]
    for length in lengths:
        starts.append(starts[-1] + length)
    return starts


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
