"""Every step's rows, built from tensors by index: no DataLoader, no per-epoch worker start-up.

A :class:`BatchSource` turns a worker's share of the training data into one epoch's plan:
supervised batches (with the unlabeled rows, candidates or negatives its method needs) and,
for IG, meta batches pairing unlabeled rows ``U`` with training-test rows ``T`` (for
``none_ig_steps``, which takes IG's steps without its judge, plain supervised batches of the
same ``T`` rows in their place). Everything
random comes from generators seeded by (seed, epoch, rank, stream), so an epoch's plan is a pure
function of those — which is what makes a run reproducible and a failed worker resumable.

The source sees only ``users``/``items`` of observed-unlabeled rows: their hidden labels are
never handed to it, so they cannot reach a training batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from invlearn_ray.data.hashing import stream_seed
from invlearn_ray.data.recdata import Interactions, UserItemIndex
from invlearn_ray.data.sampling import SeenItemSampler, epoch_generator
from invlearn_ray.methods.objectives import TrainBatch
from invlearn_ray.methods.registry import method_spec
from invlearn_ray.training.config import TrainConfig

# Independent random streams of one (seed, epoch, rank).
_SHUFFLE, _UNLABELED, _OBSERVED, _CANDIDATES, _NEGATIVES, _TEST, _POOLS, _ROTATE = range(8)


@dataclass(frozen=True)
class MetaBatch:
    """One IG meta step's rows: unlabeled ``U`` and training-test ``T``."""

    unlabeled_users: Tensor
    unlabeled_items: Tensor
    test_users: Tensor
    test_items: Tensor
    test_labels: Tensor


@dataclass(frozen=True)
class EpochPlan:
    """An epoch's steps. ``meta`` holds IG's meta batches — or, for a method that takes IG's
    steps without its judge (``none_ig_steps``), supervised batches of the training-test rows,
    scheduled where IG's meta steps would be."""

    supervised: list[TrainBatch]
    meta: list[MetaBatch | TrainBatch]


@dataclass(frozen=True)
class TrainingRows:
    """A worker's share of what training may read.

    Attributes:
        labeled: the rows supervised steps iterate over (all labeled training rows for the
            baselines; training-train for IG).
        train_test: IG's training-test rows (empty for other methods).
        observed_users, observed_items: observed-unlabeled interactions, without labels.
        seen: every user's training items (global, not sharded): the sampling exclusion set.
    """

    labeled: Interactions
    train_test: Interactions
    observed_users: Tensor
    observed_items: Tensor
    seen: UserItemIndex


def _chunks(index: Tensor, n_chunks: int) -> list[Tensor]:
    """``n_chunks`` consecutive slices of ``index`` of (nearly) equal size; some may be empty."""
    size = math.ceil(len(index) / n_chunks) if n_chunks else 0
    return [index[k * size : (k + 1) * size] for k in range(n_chunks)]


def local_step_counts(rows: TrainingRows, config: TrainConfig, world_size: int) -> tuple[int, int]:
    """``(supervised, meta)`` steps one worker needs to pass over its rows once per epoch.

    Supervised steps cover ``rows.labeled`` in local batches of ``batch_size / world_size``;
    meta steps (``meta_steps="train_test"``) cover ``rows.train_test`` in local batches of
    ``test_batch_size / world_size``. Data-parallel workers holding shards of different sizes
    all-reduce the maximum of each and pass it to :class:`BatchSource`, so that they run the
    same number of collective steps (a worker that runs out of rows takes empty batches).
    """
    local_batch = max(1, config.batch_size // world_size)
    local_test_batch = max(1, config.test_batch_size // world_size)
    return (
        max(1, math.ceil(len(rows.labeled) / local_batch)),
        max(1, math.ceil(len(rows.train_test) / local_test_batch)),
    )


class BatchSource:
    """Plans epochs for one worker (``rank`` of ``world_size``) from its :class:`TrainingRows`.

    Args:
        rows: this worker's rows.
        config: batch sizes, method, sampling options, seed.
        rank, world_size: the worker's place in data-parallel training. Each worker's batch is
            ``batch_size / world_size`` rows, so the *global* batch matches one process.
        steps_per_epoch: supervised steps each epoch; data-parallel workers must agree on it
            (the Ray Train loop all-reduces the maximum). Default: enough to cover ``labeled``.
        meta_steps_per_epoch: IG meta steps each epoch when ``config.meta_steps`` is
            ``train_test`` (with ``train_train`` they are ``steps_per_epoch``). Every meta step
            holds collectives, so data-parallel workers must agree on it too. Default: enough
            to cover ``train_test``.
    """

    def __init__(
        self,
        rows: TrainingRows,
        config: TrainConfig,
        rank: int = 0,
        world_size: int = 1,
        steps_per_epoch: int | None = None,
        meta_steps_per_epoch: int | None = None,
    ) -> None:
        self.rows = rows
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.device = rows.labeled.users.device
        self.local_batch = max(1, config.batch_size // world_size)
        self.local_test_batch = max(1, config.test_batch_size // world_size)
        local_steps, local_meta_steps = local_step_counts(rows, config, world_size)
        self.steps_per_epoch = steps_per_epoch or local_steps
        if config.meta_steps == "train_train":
            self.meta_steps_per_epoch = self.steps_per_epoch
        else:
            self.meta_steps_per_epoch = meta_steps_per_epoch or local_meta_steps
        self._pools: Tensor | None = None
        # Built once (its index costs O(nnz + users·items/8)); every draw of the run reuses it.
        self.sampler = SeenItemSampler(rows.seen)

    def _generator(self, epoch: int, stream: int) -> torch.Generator:
        salt = (self.rank + 1) * 64 + stream
        return epoch_generator(stream_seed(self.config.seed, salt), epoch, device=self.device)

    def candidate_pools(self) -> Tensor:
        """SRNS's fixed ``[n_rows, M]`` candidates per labeled row, drawn once per run."""
        if self._pools is None:
            labeled = self.rows.labeled
            self._pools = self.sampler.sample(
                labeled.users, self.config.n_candidates, self._generator(0, _POOLS)
            )
        return self._pools

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        """The batches of ``epoch``; IG (and ``none_ig_steps``) also gets its training-test
        steps unless ``with_meta`` is off (IG's warm-up epochs)."""
        config = self.config
        labeled, judged = self._fitted_and_judged(epoch)
        order = torch.randperm(
            len(labeled), generator=self._generator(epoch, _SHUFFLE), device=self.device
        )
        batches = _chunks(order, self.steps_per_epoch)
        extras = self._per_row_draws(epoch, labeled)
        observed = self._observed_chunks(epoch, self.steps_per_epoch)
        supervised = [
            self._train_batch(labeled, rows, extras, observed[k], epoch, k)
            for k, rows in enumerate(batches)
        ]
        meta: list[MetaBatch | TrainBatch] = []
        if method_spec(config.method).ig_batches and with_meta:
            if config.method == "ig":
                meta = list(self._meta_batches(epoch, labeled, judged))
            else:
                meta = self._judge_batches(epoch, judged)
        return EpochPlan(supervised=supervised, meta=meta)

    def _fitted_and_judged(self, epoch: int) -> tuple[Interactions, Interactions]:
        """The rows supervised steps fit and the training-test rows judged this epoch.

        ``ig_judge="fixed"``: the dataset's split. ``rotating``: this worker's labeled rows
        split afresh every epoch (seeded by seed, epoch and rank) into the same two sizes, so
        every labeled row is fitted in some epochs and judges in others.
        """
        rows = self.rows
        if self.config.ig_judge != "rotating" or not len(rows.train_test):
            return rows.labeled, rows.train_test
        both = Interactions(
            torch.cat([rows.labeled.users, rows.train_test.users]),
            torch.cat([rows.labeled.items, rows.train_test.items]),
            torch.cat([rows.labeled.labels, rows.train_test.labels]),
        )
        order = torch.randperm(
            len(both), generator=self._generator(epoch, _ROTATE), device=self.device
        )
        n_judged = len(rows.train_test)
        return both.take(order[n_judged:]), both.take(order[:n_judged])

    def _per_row_draws(self, epoch: int, labeled: Interactions) -> dict[str, Tensor]:
        """Per labeled row, drawn once per epoch: sampled unlabeled items, softmax negatives."""
        config = self.config
        draws: dict[str, Tensor] = {}
        wants_sampled = config.unlabeled_source in ("sampled", "both")
        method = method_spec(config.supervised_method)
        if method.needs_unlabeled and wants_sampled:
            draws["unlabeled"] = self.sampler.sample(
                labeled.users, config.sampling_rate, self._generator(epoch, _UNLABELED)
            )
        if method.sampled_negatives:
            draws["negatives"] = self.sampler.sample(
                labeled.users, config.n_negatives, self._generator(epoch, _NEGATIVES)
            )
        return draws

    def _observed_chunks(self, epoch: int, n_chunks: int) -> list[Tensor]:
        """This epoch's observed-unlabeled rows, shuffled and spread over ``n_chunks`` steps."""
        uses_observed = self.config.unlabeled_source in ("observed", "both")
        uses_observed |= method_spec(self.config.supervised_method).observed_rows
        if not uses_observed or not len(self.rows.observed_users):
            return [self.rows.observed_users[:0]] * n_chunks
        order = torch.randperm(
            len(self.rows.observed_users),
            generator=self._generator(epoch, _OBSERVED),
            device=self.device,
        )
        return _chunks(order, n_chunks)

    def _train_batch(
        self,
        labeled: Interactions,
        rows: Tensor,
        draws: dict[str, Tensor],
        observed: Tensor,
        epoch: int,
        step: int,
    ) -> TrainBatch:
        config = self.config
        users = labeled.users[rows]
        batch = {"rows": rows, "users": users, "items": labeled.items[rows]}
        batch["labels"] = labeled.labels[rows]
        method = method_spec(config.supervised_method)
        if method.needs_unlabeled:
            unlabeled_users = [self.rows.observed_users[observed]]
            unlabeled_items = [self.rows.observed_items[observed]]
            if "unlabeled" in draws:
                sampled = draws["unlabeled"][rows]
                unlabeled_users.insert(0, users.repeat_interleave(sampled.shape[1]))
                unlabeled_items.insert(0, sampled.reshape(-1))
            batch["unlabeled_users"] = torch.cat(unlabeled_users)
            batch["unlabeled_items"] = torch.cat(unlabeled_items)
        if method.candidates == "per_step":
            generator = self._generator(epoch * 100_003 + step, _CANDIDATES)
            batch["candidates"] = self.sampler.sample(users, config.n_candidates, generator)
        if method.candidates == "fixed_pool":
            batch["candidates"] = self.candidate_pools()[rows]
        if "negatives" in draws:
            batch["negatives"] = draws["negatives"][rows]
        return TrainBatch(**batch)

    def _judge_rows(self, epoch: int, n_judged: int) -> list[Tensor]:
        """Each meta step's training-test rows: ``local_test_batch`` per step, cycling."""
        n_steps, size = self.meta_steps_per_epoch, self.local_test_batch
        test_rows = self._cycled(n_judged, n_steps * size, epoch)
        return [test_rows[step * size : (step + 1) * size] for step in range(n_steps)]

    def _judge_batches(self, epoch: int, judged: Interactions) -> list[TrainBatch]:
        """IG's training-test rows as plain supervised batches (``none_ig_steps``)."""
        return [
            TrainBatch(
                rows=t_rows,
                users=judged.users[t_rows],
                items=judged.items[t_rows],
                labels=judged.labels[t_rows],
            )
            for t_rows in self._judge_rows(epoch, len(judged))
        ]

    def _meta_batches(
        self, epoch: int, labeled: Interactions, test: Interactions
    ) -> list[MetaBatch]:
        """IG's (U, T) pairs: U from this epoch's unlabeled pool, T cycling over training-test."""
        pool_users, pool_items = self._unlabeled_pool(epoch, labeled)
        n_steps = self.meta_steps_per_epoch
        unlabeled = _chunks(
            torch.randperm(
                len(pool_users), generator=self._generator(epoch, _SHUFFLE + 32), device=self.device
            ),
            n_steps,
        )
        meta = []
        for rows, t_rows in zip(unlabeled, self._judge_rows(epoch, len(test)), strict=True):
            meta.append(
                MetaBatch(
                    unlabeled_users=pool_users[rows],
                    unlabeled_items=pool_items[rows],
                    test_users=test.users[t_rows],
                    test_items=test.items[t_rows],
                    test_labels=test.labels[t_rows],
                )
            )
        return meta

    def _unlabeled_pool(self, epoch: int, labeled: Interactions) -> tuple[Tensor, Tensor]:
        """IG's unlabeled rows this epoch: sampled per training-train row and/or observed."""
        config = self.config
        users, items = [], []
        if config.unlabeled_source in ("sampled", "both"):
            sampled = self.sampler.sample(
                labeled.users, config.sampling_rate, self._generator(epoch, _UNLABELED)
            )
            users.append(labeled.users.repeat_interleave(sampled.shape[1]))
            items.append(sampled.reshape(-1))
        if config.unlabeled_source in ("observed", "both"):
            users.append(self.rows.observed_users)
            items.append(self.rows.observed_items)
        return torch.cat(users), torch.cat(items)

    def _cycled(self, n_rows: int, length: int, epoch: int) -> Tensor:
        """``length`` row indices passing over ``n_rows`` rows in fresh shuffles."""
        if n_rows == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        generator = self._generator(epoch, _TEST)
        passes = [
            torch.randperm(n_rows, generator=generator, device=self.device)
            for _ in range(math.ceil(length / n_rows))
        ]
        return torch.cat(passes)[:length]


def iterate(plan: EpochPlan, schedule: str) -> Iterator[TrainBatch | MetaBatch]:
    """An epoch's steps in order: ``sequential`` (Algorithm 1: all supervised steps, then the
    meta steps) or ``interleaved`` (one supervised step, one meta step, ...)."""
    if schedule == "sequential":
        yield from plan.supervised
        yield from plan.meta
        return
    for k in range(max(len(plan.supervised), len(plan.meta))):
        if k < len(plan.supervised):
            yield plan.supervised[k]
        if k < len(plan.meta):
            yield plan.meta[k]
