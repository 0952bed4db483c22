"""Embedding tables sharded by row across data-parallel workers, on PyTorch DTensor.

Replicated data parallelism (:class:`~invlearn_ray.optim.gradients.WorkerMean`) keeps every
table whole on every worker, so each worker repeats the update of every touched row — or,
with dense Adam, of every row — for the whole global batch, and a table can never outgrow one
worker. Here each of ``W`` workers holds ``1/W`` of every table's rows and their optimizer
state. The layout is DTensor's: a table is a ``DTensor`` parameter placed ``Shard(0)`` on a
1-D device mesh (``init_device_mesh(device, (W,))``; torch.chunk's rows per rank, so rank
``r`` holds the contiguous rows ``[r·⌈n/W⌉, (r+1)·⌈n/W⌉)``), installed by the
:class:`RowShardedTables` parallel style. A process never holds a whole table: the backbone is
built with only its rows (:func:`~invlearn_ray.models.backbones.holding_rows`, same values as
the one-process model), then wrapped.

A step, with the ids of its local batch (two all-gathers, one all-reduce)::

    ids      all-gather every worker's unique ids of each kind → the global union u (sorted)
    lookup   T[u]: a masked lookup (DTensor's Partial placement: each worker's own rows, zeros
             elsewhere) sent without its zeros — one all-gather of the rows of u each worker
             owns (every worker knows which: ids sorted, shards contiguous) → T[u] everywhere
    grad     each worker differentiates its batch's loss w.r.t. the compact table T[u]
    reduce   one all-reduce of [count, head gradients, ∂/∂T[u]] → the global mean, everywhere
    update   each worker applies the rows of u it owns to its shard (dense or lazy Adam, on
             its rows' moments only); head parameters are replicated and updated everywhere

An IG meta step gathers the ids of its unlabeled and training-test batches together (one
all-gather, one lookup for both: θ does not move between them), so it costs five calls: ids,
lookup, the dual gradient, the three candidates' (loss sum, count), the chosen gradient. The
direction and the candidate losses are computed as in the replicated step, from the same
global union of rows, so every worker takes the same argmin.

Exactness: a looked-up row is its owner's bits, and a compact gradient row's all-reduced sum
is the workers' local sums — with two workers ``a + b``, the sum the replicated exchange forms
— so two sharded workers reach the bits of two replicated ones; against one process both
differ by the order of a row's sum (``tests/training/test_sharded_tables.py``).

Why the step's reductions call ``torch.distributed`` (through the
:class:`~invlearn_ray.optim.collective.Collective`, which counts their bytes) on the shards'
local tensors instead of redistributing DTensors: a ``Partial → Replicate`` redistribute
costs ~4.8 ms per call on this 2-core machine against ~1.0 ms for the same all-reduce (DTensor
dispatch), and a step makes three to five of them. DTensor does the rest: the layout and
whole tables when they are wanted (:meth:`ShardedTables.full`: an all-gather of uneven shards).

Beyond the steps, per worker:

* an epoch's evaluation scores a copy holding only the rows of the ids this worker scores
  (:meth:`ShardedTables.rows_model`: one all-gather of ids, one all-to-all of owned rows),
  bit-equal to the whole model; the divergence check reduces each rank's largest weight;
* a checkpoint is each worker's rows (:meth:`ShardedTables.own_state`,
  :meth:`ShardedUpdate.own_state_dict`) in its own file, written and read without a
  collective (:mod:`invlearn_ray.distributed.reporting`);
* what stays O(table): the selected model, gathered once after training
  (:meth:`ShardedTables.full_model`) to score test — full ranking needs every item's row per
  user — and to publish; and ``Trainer.state_dict()``'s default, whole-table form.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import ParallelStyle, parallelize_module

from invlearn_ray.models.backbones import (
    Backbone,
    CatalogueScorer,
    Factors,
    Params,
    Representations,
    holding_rows,
)
from invlearn_ray.optim.collective import Collective
from invlearn_ray.optim.gradients import Gradient, RowGradient, reduce_mean_
from invlearn_ray.optim.optimizers import DenseUpdate, LazyAdam, ParameterUpdate
from invlearn_ray.optim.touched_rows import TouchedRows


def shard_range(rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of the rows rank ``rank`` holds: DTensor's ``Shard(0)`` (torch.chunk)
    split, ``⌈rows / world_size⌉`` per rank, the last ranks shorter (possibly empty)."""
    per = math.ceil(rows / world_size)
    return min(rows, rank * per), min(rows, (rank + 1) * per)


class RowShardedTables(ParallelStyle):
    """A :class:`ParallelStyle` that turns a backbone's embedding tables, built holding this
    rank's rows only, into ``Shard(0)`` DTensor parameters of the whole tables' shapes.

    Args:
        rows: ``{table name: rows of the whole table}``.
    """

    def __init__(self, rows: Mapping[str, int]) -> None:
        super().__init__()
        self.rows = dict(rows)

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        for name, rows in self.rows.items():
            local = getattr(module, name).detach()
            shape = (rows, *local.shape[1:])
            table = DTensor.from_local(
                local, device_mesh, [Shard(0)], run_check=False, shape=shape, stride=_stride(shape)
            )
            module.register_parameter(name, nn.Parameter(table))
        return module


def _stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A contiguous tensor's strides."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


StatePath = tuple[str | int, ...]
"""Keys from a nested state dict's top to one of its entries, e.g. ``("model", "user")``."""


def state_entry(state: Mapping[Any, Any], path: StatePath) -> Any:
    """The entry of nested dicts ``state`` at ``path``."""
    for key in path:
        state = state[key]
    return state


def with_entries(state: dict[Any, Any], paths: list[StatePath], values: list[Any]) -> dict:
    """A copy of nested dicts ``state`` with the entry at each of ``paths`` replaced by the
    matching value. Only the dicts along the paths are copied: ``state``, its tensors and
    every other dict are left as they are (torch's state dicts share them with the live
    optimizer)."""
    out = dict(state)
    for path, value in zip(paths, values, strict=True):
        parent = out
        for key in path[:-1]:
            parent[key] = dict(parent[key])
            parent = parent[key]
        parent[path[-1]] = value
    return out


class ShardedRows(TouchedRows):
    """:class:`~invlearn_ray.optim.touched_rows.TouchedRows` over the *global* union of the
    workers' ids, with the tables' rows there already looked up (see the module docstring).

    Each worker's compact gradients are then aligned row by row, so their reduction is one
    all-reduce; ``gather`` returns the looked-up rows for a table and reads a row gradient
    (replicated) at the union, as the replicated step does.
    """

    def __init__(
        self,
        table_index: dict[str, str],
        unique: dict[str, Tensor],
        ids: dict[str, list[Tensor]],
        rows: dict[str, Tensor],
    ) -> None:
        self.table_index = table_index
        self.unique = unique
        self.renumbered = {
            kind: [torch.searchsorted(unique[kind], tensor) for tensor in tensors]
            for kind, tensors in ids.items()
        }
        self.rows = rows

    def gather(self, values: dict[str, Gradient]) -> dict[str, Tensor]:
        """A sharded table (a DTensor) reads its rows looked up at the union; anything else
        as :meth:`TouchedRows.gather` reads it."""
        sharded = {name: value for name, value in values.items() if isinstance(value, DTensor)}
        plain = {name: value for name, value in values.items() if name not in sharded}
        for name, value in plain.items():
            if name in self.table_index and not isinstance(value, RowGradient):
                raise TypeError(f"{name}: a sharded table is read as a DTensor or row gradient")
        compact = super().gather(plain)
        compact.update({name: self.rows[name] for name in sharded})
        return {name: compact[name] for name in values}


class ShardedMean:
    """The global mean of gradient sums taken on the same compact rows on every worker: one
    all-reduce of ``[head gradients, compact table gradients, count]``, in place."""

    def __init__(self, collective: Collective) -> None:
        self.collective = collective

    def __call__(self, grads: Mapping[str, Gradient], count: Tensor | int) -> dict[str, Gradient]:
        tensors = [grad.rows if isinstance(grad, RowGradient) else grad for grad in grads.values()]
        reduce_mean_(tensors, count, self.collective)
        return dict(grads)


class LocalTables:
    """The model's parameters with each sharded table replaced by this rank's rows (plain
    tensors sharing the DTensors' storage): what the optimizers update in place."""

    def __init__(self, model: Backbone, local: Mapping[str, Tensor]) -> None:
        self.table_names = model.table_names
        self._params = [
            (name, local[name] if name in local else param)
            for name, param in model.named_parameters()
        ]

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return list(self._params)

    def parameters(self) -> list[Tensor]:
        return [param for _, param in self._params]


class ShardedTables:
    """One backbone's tables sharded by row over the default process group.

    Build with :func:`shard_model`. Holds each table's local rows (``local``, plain tensors
    sharing the DTensor parameters' storage) and where they start.

    Args:
        model: the backbone, its tables already ``Shard(0)`` DTensor parameters.
        collective: the workers' collective (counts every step's bytes).
        mesh: the 1-D device mesh of the tables.
    """

    def __init__(self, model: Backbone, collective: Collective, mesh: DeviceMesh) -> None:
        self.collective = collective
        self.mesh = mesh
        self.table_index = dict(model.table_index or {})
        tables = {name: getattr(model, name) for name in self.table_index}
        self.local = {name: table.detach().to_local() for name, table in tables.items()}
        self.shape = {name: tuple(table.shape) for name, table in tables.items()}
        self.start = {
            name: shard_range(len(table), collective.world_size, collective.rank)[0]
            for name, table in tables.items()
        }
        # Padded id capacities by (stream, part): a step's and an evaluation's differ.
        self._capacity: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------------- a step's rows

    def rows_of(self, *id_sets: dict[str, list[Tensor]]) -> list[ShardedRows]:
        """The rows each of ``id_sets`` (this worker's ids, by kind) reads, over every worker's
        ids: one all-gather of the ids and one all-reduce of the looked-up rows for all sets."""
        uniques = [
            {kind: torch.unique(torch.cat([t.reshape(-1) for t in ts])) for kind, ts in ids.items()}
            for ids in id_sets
        ]
        keys = [(index, kind) for index, unique in enumerate(uniques) for kind in unique]
        gathered = self._gather_ids([uniques[index][kind] for index, kind in keys])
        union = [dict[str, Tensor]() for _ in id_sets]
        for (index, kind), parts in zip(keys, gathered, strict=True):
            union[index][kind] = torch.unique(torch.cat(parts))
        requests = [
            (name, unique[kind]) for unique in union for name, kind in self.table_index.items()
        ]
        looked_up = iter(self._lookup(requests))
        compact = [{name: next(looked_up) for name in self.table_index} for _ in union]
        return [
            ShardedRows(self.table_index, unique, ids, rows)
            for unique, ids, rows in zip(union, id_sets, compact, strict=True)
        ]

    def _lookup(self, requests: list[tuple[str, Tensor]]) -> list[Tensor]:
        """``T[ids]`` for each ``(table name, sorted ids)``, the ids the same on every rank.

        The masked lookup of a ``Partial`` placement — each rank's rows where it owns them,
        zeros elsewhere, summed — sent without its zeros: ids are sorted and shards are
        contiguous, so every rank knows which slice of each request every rank owns, and one
        all-gather of the owned slices (padded to the longest rank's) fills every request.
        Bytes sent per rank: its owned rows, about ``1/W`` of the requests' rows (an all-reduce
        of the zero-filled rows sends all of them).
        """
        world, rank = self.collective.world_size, self.collective.rank
        cuts, sizes = [], []
        for name, ids in requests:
            cut = self._owner_cuts(name, ids)
            width = math.prod(self.shape[name][1:])
            cuts.append(cut)
            sizes.append([(cut[q + 1] - cut[q]) * width for q in range(world)])
        totals = [sum(size[q] for size in sizes) for q in range(world)]
        like = next(iter(self.local.values()))
        buffer = like.new_zeros(max(1, *totals))
        offset = 0
        for (name, ids), cut in zip(requests, cuts, strict=True):
            first, last = cut[rank], cut[rank + 1]
            owned = self.local[name].index_select(0, ids[first:last] - self.start[name])
            buffer[offset : offset + owned.numel()] = owned.reshape(-1)
            offset += owned.numel()
        gathered = self.collective.all_gather(buffer)
        out = [like.new_empty((len(ids), *self.shape[name][1:])) for name, ids in requests]
        for q in range(world):
            offset = 0
            for table, cut, size in zip(out, cuts, sizes, strict=True):
                table[cut[q] : cut[q + 1]] = gathered[q, offset : offset + size[q]].view(
                    -1, *table.shape[1:]
                )
                offset += size[q]
        return out

    def _owner_cuts(self, name: str, ids: Tensor) -> list[int]:
        """Where sorted ``ids`` of table ``name`` cross from one rank's rows to the next's:
        rank ``q`` owns ``ids[cut[q]:cut[q + 1]]``."""
        rows, world = self.shape[name][0], self.collective.world_size
        starts = [shard_range(rows, world, q)[0] for q in range(world)] + [rows]
        return torch.searchsorted(ids, ids.new_tensor(starts)).tolist()

    def lookup_own(self, requests: list[tuple[str, Tensor]]) -> list[Tensor]:
        """``T[ids]`` for each ``(table name, sorted unique ids)`` of this rank's own — the
        ids may differ between ranks (every rank calls it, with as many requests).

        Every rank learns every rank's ids (one all-gather of ids), then each owner sends
        each rank the rows it asked for (one all-to-all): a rank receives its rows only, not
        the union of every rank's (compare :meth:`_lookup`, whose rows every rank needs).
        Memory: the ids of every rank, and this rank's requested rows.
        """
        world = self.collective.world_size
        everyone = self._gather_ids([ids for _, ids in requests], stream="rows")
        widths = [math.prod(self.shape[name][1:]) for name, _ in requests]
        cuts = [self._owner_cuts(name, ids) for name, ids in requests]
        parts, send, receive = [], [0] * world, [0] * world
        for q in range(world):
            for (name, _), asked, width, cut in zip(requests, everyone, widths, cuts, strict=True):
                rows = self._owned_rows(name, asked[q])
                parts.append(rows.reshape(-1))
                send[q] += rows.numel()
                receive[q] += (cut[q + 1] - cut[q]) * width
        like = next(iter(self.local.values()))
        received = self.collective.all_to_all(torch.cat([like.new_empty(0), *parts]), send, receive)
        out = [like.new_empty((len(ids), *self.shape[name][1:])) for name, ids in requests]
        offset = 0
        for q in range(world):  # ids are sorted and shards ascend: rank order is id order
            for table, cut, width in zip(out, cuts, widths, strict=True):
                size = (cut[q + 1] - cut[q]) * width
                table[cut[q] : cut[q + 1]] = received[offset : offset + size].view(
                    -1, *table.shape[1:]
                )
                offset += size
        return out

    def _owned_rows(self, name: str, ids: Tensor) -> Tensor:
        """This rank's rows of table ``name`` at the sorted ``ids`` it holds."""
        local, start = self.local[name], self.start[name]
        bounds = ids.new_tensor([start, start + len(local)])
        first, last = torch.searchsorted(ids, bounds).tolist()
        return local.index_select(0, ids[first:last] - start)

    def _gather_ids(self, parts: list[Tensor], stream: str = "step") -> list[list[Tensor]]:
        """Every worker's ``parts`` (int64 id vectors of any lengths), in rank order: one
        all-gather of ``[lengths | each part padded to a capacity]``; a capacity (kept per
        ``stream``) grows (and the call repeats) only when some worker's part outgrew it."""
        lengths = [len(part) for part in parts]
        while True:
            # The same capacities on every rank (never the local lengths): equal buffers.
            capacity = [max(self._capacity.get((stream, k), 0), 1) for k in range(len(parts))]
            buffer = parts[0].new_zeros(len(parts) + sum(capacity))
            buffer[: len(parts)] = torch.tensor(lengths)
            offset = len(parts)
            for part, room in zip(parts, capacity, strict=True):
                kept = part[:room]  # a part past its capacity sends a prefix, then grows it
                buffer[offset : offset + len(kept)] = kept
                offset += room
            gathered = self.collective.all_gather(buffer)
            everyone = gathered[:, : len(parts)].tolist()
            wanted = [max(column) for column in zip(*everyone, strict=True)]
            if all(need <= room for need, room in zip(wanted, capacity, strict=True)):
                break
            for k, need in enumerate(wanted):
                if need > capacity[k]:
                    self._capacity[stream, k] = math.ceil(need * 1.25)
        out: list[list[Tensor]] = []
        offset = len(parts)
        for k, room in enumerate(capacity):
            out.append([gathered[rank, offset : offset + n[k]] for rank, n in enumerate(everyone)])
            offset += room
        return out

    def mean(self) -> ShardedMean:
        """The reduction of one call site's gradient sums (see :class:`ShardedMean`)."""
        return ShardedMean(self.collective)

    # ------------------------------------------------------------------------- local rows

    def owned(self, name: str, grad: RowGradient) -> RowGradient:
        """The rows of a (replicated) row gradient of table ``name`` this rank holds, indexed
        into its shard."""
        local, start = self.local[name], self.start[name]
        bounds = grad.indices.new_tensor([start, start + len(local)])
        first, last = torch.searchsorted(grad.indices, bounds).tolist()
        return RowGradient(grad.indices[first:last] - start, grad.rows[first:last], len(local))

    def localize(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Table entries as this rank's share — a DTensor as its local rows, a row gradient as
        its owned rows — other entries as they are."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name not in self.local:
                out[name] = value
            elif isinstance(value, RowGradient):
                out[name] = self.owned(name, value)
            elif isinstance(value, DTensor):
                out[name] = self.local[name]
            else:
                raise TypeError(f"{name}: a sharded table takes row gradients, not dense ones")
        return out

    def update(self, inner: ParameterUpdate) -> ShardedUpdate:
        """``inner`` (built over :meth:`local_view`) fed this rank's rows of each gradient."""
        return ShardedUpdate(self, inner)

    def local_view(self, model: Backbone) -> LocalTables:
        return LocalTables(model, self.local)

    # ------------------------------------------------------------------------- whole tables

    def full(self, name: str, local: Tensor) -> Tensor:
        """The whole ``[rows, ...]`` tensor from every rank's rows ``local`` of table ``name``
        (a table or its optimizer moments): DTensor's all-gather of uneven shards."""
        shape = (self.shape[name][0], *local.shape[1:])
        sharded = DTensor.from_local(
            local, self.mesh, [Shard(0)], run_check=False, shape=shape, stride=_stride(shape)
        )
        return sharded.full_tensor()

    def shard(self, name: str, full: Tensor) -> Tensor:
        """This rank's rows of a whole tensor of table ``name``."""
        start = self.start[name]
        return full[start : start + len(self.local[name])].clone()

    def full_model(self, model: Backbone) -> Backbone:
        """A plain copy of ``model`` with its whole tables (every rank calls it: an all-gather
        per table). What test scoring, full ranking and the published model take, once per
        run. Memory: the whole model."""
        whole = copy.deepcopy(model)
        for name in self.local:
            table = getattr(model, name).detach().full_tensor()
            whole.register_parameter(name, nn.Parameter(table))
        return whole

    def rows_model(self, model: Backbone, ids: dict[str, list[Tensor]]) -> RowSubset:
        """A plain copy of ``model`` holding only the rows of ``ids`` (this worker's, by kind),
        which scores pairs of them as the whole model does, bit for bit (a looked-up row is
        its owner's bits). Every rank calls it (:meth:`lookup_own`). Memory: the heads and
        the rows of ``ids``, not the tables."""
        unique = {
            kind: torch.unique(torch.cat([t.reshape(-1) for t in ts])) for kind, ts in ids.items()
        }
        names = list(self.table_index)
        rows = self.lookup_own([(name, unique[self.table_index[name]]) for name in names])
        # The memo stands in for the tables, so the copy never duplicates this rank's rows.
        memo: dict[int, Any] = {id(getattr(model, name)): None for name in names}
        compact = copy.deepcopy(model, memo)
        for name, table in zip(names, rows, strict=True):
            compact.register_parameter(name, nn.Parameter(table, requires_grad=False))
        return RowSubset(compact, unique)

    def largest_weight(self, model: Backbone) -> float:
        """The largest absolute weight of the sharded ``model`` (NaN if any is NaN), from each
        rank's rows and the heads: one all-gather of a float, no whole table."""
        tensors = [
            self.local[name] if name in self.local else param.detach()
            for name, param in model.named_parameters()
        ]
        peaks = [tensor.abs().amax() for tensor in tensors if tensor.numel()]
        peak = torch.stack(peaks).max() if peaks else torch.zeros(())
        return self.collective.all_gather(peak.reshape(1)).max().item()

    def gather_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A model state dict with whole tables (DTensor entries gathered; every rank calls)."""
        return {
            name: value.full_tensor() if isinstance(value, DTensor) else value
            for name, value in state.items()
        }

    def shard_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of :meth:`gather_state`: whole tables back to this rank's DTensor rows."""
        return {
            name: self._distribute(name, self.shard(name, value)) if name in self.local else value
            for name, value in state.items()
        }

    def own_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A model state dict with each table as this rank's rows (plain tensors sharing the
        DTensors' storage: no copy, no collective) — a sharded checkpoint's share."""
        return {
            name: value.to_local() if isinstance(value, DTensor) else value
            for name, value in state.items()
        }

    def distribute_own(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of :meth:`own_state`: this rank's rows back to DTensor tables."""
        return {
            name: self._distribute(name, value) if name in self.local else value
            for name, value in state.items()
        }

    def _distribute(self, name: str, local: Tensor) -> DTensor:
        shape = self.shape[name]
        return DTensor.from_local(
            local, self.mesh, [Shard(0)], run_check=False, shape=shape, stride=_stride(shape)
        )

    @torch.no_grad()
    def load_model_state(
        self, model: Backbone, state: Mapping[str, Tensor], own_rows: bool = False
    ) -> None:
        """Load a state dict into the sharded ``model``: whole tables (a gathered state's,
        cut here) or, with ``own_rows``, this rank's rows (an :meth:`own_state`)."""
        expected = set(model.state_dict())
        if set(state) != expected:
            raise KeyError(f"model state keys {sorted(state)} are not {sorted(expected)}")
        for name, local in self.local.items():
            local.copy_(state[name] if own_rows else self.shard(name, state[name]))
        model.load_state_dict(
            {name: value for name, value in state.items() if name not in self.local},
            strict=False,
        )


class RowSubset(Backbone):
    """A backbone holding some rows of its tables — ``inner``'s tables are the rows at the
    sorted ids ``unique[kind]`` — that scores pairs of those ids as the whole model does: ids
    are renumbered into the held rows, then ``inner`` scores them (through its factors when it
    has them, as :func:`~invlearn_ray.evaluation.evaluate.score_pairs` would)."""

    def __init__(self, inner: Backbone, unique: dict[str, Tensor]) -> None:
        super().__init__(inner.n_users, inner.n_items)
        self.inner = inner
        self.unique = unique
        self.name = inner.name

    def renumber(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        return (
            torch.searchsorted(self.unique["user"], users),
            torch.searchsorted(self.unique["item"], items),
        )

    def forward(self, users: Tensor, items: Tensor, params: Params | None = None) -> Tensor:
        return self.inner(*self.renumber(users, items), params)

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        return self.inner.representations(*self.renumber(users, items), params)

    def head(self, reps: Representations, params: Params) -> Tensor:
        return self.inner.head(reps, params)

    def config(self) -> dict[str, Any]:
        return self.inner.config()

    def factors(self) -> RowFactors | None:
        factors = self.inner.factors()
        return None if factors is None else RowFactors(factors, self)

    def catalogue_scorer(self) -> CatalogueScorer:
        raise TypeError("a RowSubset holds some rows only: rank the catalogue on a whole model")


class RowFactors:
    """A :class:`RowSubset`'s factors, for pair scores only."""

    def __init__(self, factors: Factors, model: RowSubset) -> None:
        self.factors = factors
        self.model = model

    def pair_scores(self, users: Tensor, items: Tensor) -> Tensor:
        return self.factors.pair_scores(*self.model.renumber(users, items))


class ShardedUpdate:
    """A :class:`~invlearn_ray.optim.optimizers.ParameterUpdate` over this rank's rows: the
    inner update (dense ``torch.optim.Adam`` or :class:`LazyAdam` over
    :meth:`ShardedTables.local_view`) takes each table gradient's owned rows, so a worker
    moves and keeps moments for ``1/W`` of every table. Its state dict holds whole tables'
    moments (gathered: every rank calls it), the replicated update's format; its
    :meth:`own_state_dict` holds this rank's rows of them (no collective)."""

    def __init__(self, tables: ShardedTables, inner: ParameterUpdate) -> None:
        self.tables = tables
        self.inner = inner

    def step(self, grads: Mapping[str, Gradient]) -> None:
        self.inner.step(self.tables.localize(grads))

    def state_dict(self) -> dict[str, Any]:
        return self._convert(self.inner.state_dict(), self.tables.full)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(self._convert(state, self.tables.shard))

    def own_state_dict(self) -> dict[str, Any]:
        """The inner update's state: table moments as this rank's rows."""
        return self.inner.state_dict()

    def load_own_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def table_paths(self, state: Mapping[str, Any]) -> list[tuple[StatePath, str]]:
        """``(path, table name)`` of every table moment in a state dict of this update."""
        tables = self.tables.local
        if isinstance(self.inner, LazyAdam):
            return [
                ((key, name), name)
                for key in ("first", "second")
                for name in state[key]
                if name in tables
            ]
        if isinstance(self.inner, DenseUpdate):
            names = list(self.inner.params)
            return [
                (("state", index, key), names[index])
                for index, entry in state["state"].items()
                if names[index] in tables
                for key in entry
                if key in ("exp_avg", "exp_avg_sq")
            ]
        raise TypeError(f"no sharded state for {type(self.inner).__name__}")

    def _convert(self, state: dict[str, Any], convert) -> dict[str, Any]:
        """``state`` with every table moment passed through ``convert(name, tensor)``; the
        inner state's own dicts are never modified (torch's ``state_dict`` shares them)."""
        found = self.table_paths(state)
        paths = [path for path, _ in found]
        values = [convert(name, state_entry(state, path)) for path, name in found]
        return with_entries(state, paths, values)


def shard_model(build, collective: Collective) -> tuple[Backbone, ShardedTables]:
    """Build a backbone holding this rank's rows of each table and shard it.

    Args:
        build: ``() -> Backbone`` (e.g. the trainer's seeded ``build_model``); called inside
            :func:`~invlearn_ray.models.backbones.holding_rows`, so random tables hold this
            rank's rows from the start. Tables initialised otherwise (biased MF's zero biases,
            one column) are cut to this rank's rows after the build.
        collective: a :class:`~invlearn_ray.optim.collective.TorchDistributedCollective`.
    """
    world_size, rank = collective.world_size, collective.rank
    with holding_rows(lambda rows: shard_range(rows, world_size, rank)):
        model = build()
    if model.table_index is None:
        raise ValueError(f"backbone {model.name!r} has no row-gather tables to shard")
    rows = {"user": model.n_users, "item": model.n_items}
    table_rows = {name: rows[kind] for name, kind in model.table_index.items()}
    for name, n_rows in table_rows.items():
        start, stop = shard_range(n_rows, world_size, rank)
        table = getattr(model, name)
        if len(table) == n_rows and stop - start != n_rows:
            model.register_parameter(name, nn.Parameter(table.detach()[start:stop].clone()))
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (world_size,))
    parallelize_module(model, mesh, RowShardedTables(table_rows))
    return model, ShardedTables(model, collective, mesh)
