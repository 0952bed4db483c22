"""Trainers on two processes (gloo, no Ray) take the steps one process takes on the joined
batches — with either embedding optimizer, on the touched-row exchange.

The Ray Train path (tests/distributed/test_data_parallel_ig.py) runs the same trainer with the
same collective; this test covers what it does not: lazy Adam, and a supervised method with
unlabeled rows on a backbone with four tables, in seconds rather than a Ray start.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.recdata import Interactions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.methods.objectives import TrainBatch
from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.training.batches import (
    BatchSource,
    EpochPlan,
    MetaBatch,
    TrainingRows,
    local_step_counts,
)
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer, training_rows

WORLD = 2
EPOCHS = 2
BASE = {
    "embedding_dim": 8,
    "lr": 0.01,
    "batch_size": 32,
    "test_batch_size": 8,
    "epochs": EPOCHS,
    "patience": 10,
    "seed": 1,
}
# As in the Ray equivalence test: a candidate step of 50x the learning rate makes the meta
# steps choose more than one of none / direct / inverse.
CONFIGS = {
    "ig-dense-adam": TrainConfig(
        method="ig",
        unlabeled_source="both",
        backbone="gmf",
        dual_lr_ratio=50.0,
        step_rule="sign",
        **BASE,
    ),
    "ig-lazy-adam": TrainConfig(
        method="ig",
        unlabeled_source="both",
        backbone="gmf",
        dual_lr_ratio=50.0,
        step_rule="sign",
        embedding_optimizer="lazy_adam",
        **BASE,
    ),
    "ns-neumf-lazy-adam": TrainConfig(
        method="ns", backbone="neumf", mlp_layers=2, embedding_optimizer="lazy_adam", **BASE
    ),
}


def dataset():
    return make_synthetic_recdata(SyntheticConfig.preset("tiny"))


def shard(rows: TrainingRows, rank: int) -> TrainingRows:
    """Contiguous ranges of the labeled splits (as ExactSplitConfig cuts them), every
    ``WORLD``-th observed-unlabeled row (as the Ray Train loop takes them)."""

    def cut(split: Interactions) -> Interactions:
        n = len(split)
        return split.take(torch.arange(round(rank * n / WORLD), round((rank + 1) * n / WORLD)))

    return TrainingRows(
        labeled=cut(rows.labeled),
        train_test=cut(rows.train_test),
        observed_users=rows.observed_users[rank::WORLD],
        observed_items=rows.observed_items[rank::WORLD],
        seen=rows.seen,
    )


class RecordingSource:
    """Plans like its BatchSource and keeps every plan, to be replayed joined in one process."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source
        self.plans: list[dict] = []

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        plan = self.source.plan(epoch, with_meta=with_meta)
        self.plans.append(
            {
                kind: [
                    {key: value for key, value in vars(batch).items() if value is not None}
                    for batch in batches
                ]
                for kind, batches in (("supervised", plan.supervised), ("meta", plan.meta))
            }
        )
        return plan


class JoinedSource:
    """Every step's batches of all workers, concatenated in rank order."""

    def __init__(self, plans: list[list[dict]]) -> None:
        self.plans = plans

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        local = [plans[epoch] for plans in self.plans]

        def joined(kind: str, step: int) -> dict[str, torch.Tensor]:
            parts = [plan[kind][step] for plan in local]
            return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

        return EpochPlan(
            supervised=[
                TrainBatch(**joined("supervised", k)) for k in range(len(local[0]["supervised"]))
            ],
            meta=[MetaBatch(**joined("meta", k)) for k in range(len(local[0]["meta"]))],
        )


def train_worker(rank: int, name: str, store: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        config, data = CONFIGS[name], dataset()
        rows = shard(training_rows(config, data), rank)
        counts = torch.tensor(local_step_counts(rows, config, WORLD))
        torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.MAX)
        steps, meta_steps = counts.tolist()
        source = RecordingSource(
            BatchSource(rows, config, rank, WORLD, steps, meta_steps_per_epoch=meta_steps)
        )
        trainer = Trainer(
            config, data, TorchDistributedCollective(), rows=rows, batch_source=source
        )
        for epoch in range(EPOCHS):
            trainer.run_epoch(epoch)
        torch.save(
            {
                "model": trainer.model.state_dict(),
                "choices": torch.cat(trainer.directions.log["choice"] or [torch.zeros(0)]),
                "plans": source.plans,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_processes_match_one_process_on_the_joined_batches(tmp_path, name):
    mp.spawn(train_worker, args=(name, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    workers = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]

    replay = Trainer(
        CONFIGS[name], dataset(), batch_source=JoinedSource([w["plans"] for w in workers])
    )
    for epoch in range(EPOCHS):
        replay.run_epoch(epoch)

    for name_, tensor in replay.model.state_dict().items():
        # Parameters never travel: each worker reaches the same bits from the same reductions.
        assert torch.equal(workers[0]["model"][name_], workers[1]["model"][name_]), name_
        # One process sums a row's terms in another order than worker sums added up.
        torch.testing.assert_close(workers[0]["model"][name_], tensor, rtol=1e-5, atol=1e-6)
    if CONFIGS[name].method == "ig":
        replay_choices = torch.cat(replay.directions.log["choice"])
        assert torch.equal(workers[0]["choices"], replay_choices)
        assert len({CANDIDATES[int(c)] for c in replay_choices}) >= 2, "one choice only"
