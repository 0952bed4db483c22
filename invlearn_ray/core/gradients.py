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
shard sizes. :func:`reduce_mean` all-reduces dense gradients and exchanges the touched rows of
row gradients (:func:`exchange_rows`): two collective calls per reduction, O(touched rows ×
workers) bytes, where a dense all-reduce of the tables moves O(table) bytes.
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


def reduce_mean(
    grads: Mapping[str, Gradient], count: Tensor | int, collective: Collective
) -> dict[str, Gradient]:
    """Local gradient *sums* → the global mean, for dense and row gradients alike.

    Dense gradients are all-reduced (with the count, and with every worker's number of touched
    rows); row gradients are then exchanged as (row index, gradient row) pairs and summed on
    every worker in rank order (:func:`exchange_rows`), so every worker holds bit-identical
    results and parameters stay identical without a broadcast. Cost per call: O(dense
    parameters + touched rows × workers), never O(table).
    """
    names = list(grads)
    dense = [grad for grad in grads.values() if not isinstance(grad, RowGradient)]
    rows = [grad for grad in grads.values() if isinstance(grad, RowGradient)]
    if not rows:
        reduce_mean_(dense, count, collective)
        return dict(zip(names, dense, strict=True))
    like = rows[0].rows
    total = _count_tensor(count, like)
    if collective.world_size > 1:
        sizes = like.new_zeros((collective.world_size, len(rows)))
        sizes[collective.rank] = torch.tensor(
            [len(grad.indices) for grad in rows], dtype=like.dtype, device=like.device
        )
        collective.all_reduce_sum_([*dense, total, sizes])
        rows = exchange_rows(rows, sizes, collective)
    divisor = total.clamp(min=1.0)[0]
    if dense:
        torch._foreach_div_(dense, divisor)
    dense_means = iter(dense)
    row_means = iter([grad.map_rows(lambda values: values / divisor) for grad in rows])
    return {
        name: next(row_means) if isinstance(grad, RowGradient) else next(dense_means)
        for name, grad in grads.items()
    }


def exchange_rows(
    grads: list[RowGradient], sizes: Tensor, collective: Collective
) -> list[RowGradient]:
    """The sum over workers of each table's row gradient, identical on every worker.

    One all-gather of a buffer per worker holding its (index, row) pairs, padded to the
    longest worker's; ``sizes[k, t]`` is worker ``k``'s row count of table ``t`` (agreed by the
    caller's all-reduce). Indices travel bit-cast into the gradient's dtype (an all-gather
    copies bytes; nothing adds them), so one call carries both.
    """
    if not _exact_count(sizes):
        raise ValueError(
            f"a worker touched {int(sizes.max())} rows of one table in one step, more than "
            f"{sizes.dtype} counts exactly; use float32 gradients or smaller batches"
        )
    counts = sizes.to(torch.int64).tolist()
    dims = [math.prod(grad.rows.shape[1:]) for grad in grads]
    per_index = _index_width(grads[0].rows.dtype)
    lengths = [sum(n * (per_index + d) for n, d in zip(row, dims, strict=True)) for row in counts]
    # A multiple of the index width: every worker's indices then start at an aligned offset.
    capacity = per_index * math.ceil(max(lengths) / per_index)
    buffer = torch.cat(
        [grad.indices.contiguous().view(grads[0].rows.dtype) for grad in grads]
        + [grad.rows.reshape(-1) for grad in grads]
    )
    buffer = torch.nn.functional.pad(buffer, (0, capacity - len(buffer)))
    gathered = collective.all_gather(buffer)
    parts: list[list[RowGradient]] = [[] for _ in grads]
    for rank, row_counts in enumerate(counts):
        offset, indices = 0, []
        for n in row_counts:
            indices.append(gathered[rank, offset : offset + n * per_index].view(torch.int64))
            offset += n * per_index
        for table, (grad, n, dim) in enumerate(zip(grads, row_counts, dims, strict=True)):
            values = gathered[rank, offset : offset + n * dim].view(n, *grad.rows.shape[1:])
            parts[table].append(RowGradient(indices[table], values, grad.n_rows))
            offset += n * dim
    return [sum_row_gradients(table_parts) for table_parts in parts]


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


def _index_width(dtype: torch.dtype) -> int:
    """Elements of ``dtype`` one int64 index occupies when bit-cast."""
    return 8 // torch.empty((), dtype=dtype).element_size()


def _exact_count(sizes: Tensor) -> bool:
    """Row counts travel in the gradients' float dtype: they must be exactly representable."""
    return float(sizes.max()) <= 2.0 / torch.finfo(sizes.dtype).eps
