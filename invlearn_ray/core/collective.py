"""The few collective operations data-parallel training needs, behind one small interface.

The training steps in the core are written once against :class:`Collective`. In one process
it is :class:`LocalCollective` (every call is the identity); under Ray Train (or any
``torch.distributed`` launcher) it is :class:`TorchDistributedCollective`. Steps reduce *sums*
and *counts* rather than means, so a result is exact whatever the shard sizes: a global mean is
``all_reduce(sum) / all_reduce(count)``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Collective(Protocol):
    world_size: int
    rank: int

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        """Sum each tensor over all workers, in place."""


class LocalCollective:
    """One process: nothing to reduce."""

    world_size = 1
    rank = 0

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        return None


class TorchDistributedCollective:
    """``torch.distributed`` all-reduce (gloo on CPU, nccl on GPU) over the default group.

    The tensors are flattened into one buffer so a step costs one collective call, not one per
    parameter.
    """

    def __init__(self) -> None:
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError(
                "TorchDistributedCollective needs an initialized torch.distributed process group "
                "(Ray Train's TorchTrainer creates one; call it inside the training function)"
            )
        self.world_size = torch.distributed.get_world_size()
        self.rank = torch.distributed.get_rank()

    def all_reduce_sum_(self, tensors: list[Tensor]) -> None:
        if not tensors:
            return
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for tensor in tensors:
            size = tensor.numel()
            tensor.copy_(flat[offset : offset + size].view_as(tensor))
            offset += size
