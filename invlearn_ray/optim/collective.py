"""The few collective operations data-parallel training needs, behind one small interface.

The training steps in the core are written once against :class:`Collective`. In one process
it is :class:`LocalCollective` (every call is the identity); under Ray Train (or any
``torch.distributed`` launcher) it is :class:`TorchDistributedCollective`. Steps reduce *sums*
and *counts* rather than means, so a result is exact whatever the shard sizes: a global mean is
``all_reduce(sum) / all_reduce(count)``.

Two operations: an all-reduce (dense parameters, counts, losses) and an all-gather of
equal-sized buffers (the touched rows of embedding tables, see
:class:`~invlearn_ray.optim.gradients.WorkerMean`); :func:`all_gather_rows` builds the
all-gather of buffers whose row counts differ (evaluation shards' scores) on top of it. Each
call's payload is counted in :attr:`ExchangeStats`, so benchmarks can print the bytes a worker
puts on the wire per step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass
class ExchangeStats:
    """What one worker contributed to collectives: calls, payload bytes sent in, and seconds
    spent inside them (the transfer plus waiting for the slowest worker).

    ``payload_bytes`` counts each call's local input (an all-reduce of ``S`` bytes counts
    ``S``; an all-gather of a ``P``-byte buffer counts ``P``); what crosses the network per
    worker follows from the algorithm (ring all-reduce ≈ ``2·(W−1)/W·S``, all-gather
    ``(W−1)·P`` received).
    """

    calls: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0

    @contextmanager
    def call(self, payload: Tensor) -> Iterator[None]:
        """Count one collective call with this local payload, and time it."""
        started = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.payload_bytes += payload.numel() * payload.element_size()


class Collective(Protocol):
    world_size: int
    rank: int
    stats: ExchangeStats

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        """Sum each tensor over all workers, in place."""

    def all_gather(self, tensor: Tensor) -> Tensor:
        """``[world_size, *tensor.shape]``: every worker's ``tensor`` (same shape on each), in
        rank order."""

    def all_to_all(self, flat: Tensor, send: list[int], receive: list[int]) -> Tensor:
        """Worker ``q`` gets the ``send[q]`` numbers of ``flat`` at its place (``flat`` holds
        the parts for workers 0, 1, ... in order); returns the ``receive[q]`` numbers each
        worker ``q`` sent here, in rank order."""


class LocalCollective:
    """One process: nothing to reduce."""

    world_size = 1
    rank = 0

    def __init__(self) -> None:
        self.stats = ExchangeStats()

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        return None

    def all_gather(self, tensor: Tensor) -> Tensor:
        return tensor.unsqueeze(0)

    def all_to_all(self, flat: Tensor, send: list[int], receive: list[int]) -> Tensor:
        return flat


class TorchDistributedCollective:
    """``torch.distributed`` collectives (gloo on CPU, nccl on GPU) over the default group.

    The tensors of an all-reduce are flattened into one buffer so a step costs one collective
    call, not one per parameter.
    """

    def __init__(self) -> None:
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError(
                "TorchDistributedCollective needs an initialized torch.distributed process group "
                "(Ray Train's TorchTrainer creates one; call it inside the training function)"
            )
        self.world_size = torch.distributed.get_world_size()
        self.rank = torch.distributed.get_rank()
        self.stats = ExchangeStats()

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        if not tensors:
            return
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        with self.stats.call(flat):
            torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for tensor in tensors:
            size = tensor.numel()
            tensor.copy_(flat[offset : offset + size].view_as(tensor))
            offset += size

    def all_gather(self, tensor: Tensor) -> Tensor:
        flat = tensor.contiguous().reshape(-1)
        out = flat.new_empty(self.world_size * len(flat))  # gloo accepts the flat form only
        with self.stats.call(flat):
            torch.distributed.all_gather_single(out, flat)
        return out.view(self.world_size, *tensor.shape)

    def all_to_all(self, flat: Tensor, send: list[int], receive: list[int]) -> Tensor:
        out = flat.new_empty(sum(receive))
        with self.stats.call(flat):
            torch.distributed.all_to_all_single(out, flat.contiguous(), receive, send)
        return out


def all_gather_rows(collective: Collective, tensor: Tensor) -> list[Tensor]:
    """Every worker's ``tensor``, in rank order, when workers hold different numbers of rows
    (the trailing shape must agree): one all-gather of the lengths, one of the rows padded to
    the longest. Each worker receives the same list, so what it computes from it agrees."""
    if collective.world_size == 1:
        return [tensor]
    length = torch.tensor([len(tensor)], dtype=torch.int64, device=tensor.device)
    lengths = collective.all_gather(length).reshape(-1).tolist()
    if max(lengths) == 0:
        return [tensor] * collective.world_size
    padded = tensor.new_zeros((max(lengths), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    gathered = collective.all_gather(padded)
    return [gathered[rank, :n] for rank, n in enumerate(lengths)]
