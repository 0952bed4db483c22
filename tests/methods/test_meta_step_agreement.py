"""Data-parallel workers with unequal shards must run the same number of IG meta steps."""

from __future__ import annotations

import math

import pytest
import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.training.batches import BatchSource, TrainingRows, local_step_counts
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import training_rows


@pytest.fixture(scope="module")
def rows() -> TrainingRows:
    data = make_synthetic_recdata(SyntheticConfig.preset("tiny"))
    return training_rows(TrainConfig(method="ig"), data)


def shard(rows: TrainingRows, test_rows: int) -> TrainingRows:
    """A worker holding all labeled rows but only the first ``test_rows`` training-test rows."""
    return TrainingRows(
        labeled=rows.labeled,
        train_test=rows.train_test.take(torch.arange(test_rows)),
        observed_users=rows.observed_users,
        observed_items=rows.observed_items,
        seen=rows.seen,
    )


def test_local_step_counts_cover_each_worker_share(rows):
    config = TrainConfig(method="ig", batch_size=32, test_batch_size=8)
    supervised, meta = local_step_counts(rows, config, world_size=2)
    assert supervised == math.ceil(len(rows.labeled) / 16)
    assert meta == math.ceil(len(rows.train_test) / 4)


def test_train_test_meta_steps_follow_the_agreed_count_not_the_local_shard(rows):
    config = TrainConfig(method="ig", meta_steps="train_test", batch_size=32, test_batch_size=8)
    small, large = shard(rows, 4), shard(rows, 12)
    assert local_step_counts(small, config, 2)[1] != local_step_counts(large, config, 2)[1]
    agreed = max(local_step_counts(s, config, 2)[1] for s in (small, large))
    plans = [
        BatchSource(s, config, rank=rank, world_size=2, meta_steps_per_epoch=agreed).plan(0)
        for rank, s in enumerate((small, large))
    ]
    assert [len(plan.meta) for plan in plans] == [agreed, agreed]
    # The larger shard's rows are all judged within the agreed steps.
    judged = torch.cat([batch.test_items for batch in plans[1].meta])
    assert len(judged) == agreed * 4


def test_train_test_meta_steps_default_to_the_local_shard(rows):
    config = TrainConfig(method="ig", meta_steps="train_test", batch_size=32, test_batch_size=8)
    plan = BatchSource(shard(rows, 12), config, world_size=2).plan(0)
    assert len(plan.meta) == 3


def test_train_train_meta_steps_equal_the_agreed_supervised_steps(rows):
    config = TrainConfig(method="ig", meta_steps="train_train", batch_size=32, test_batch_size=8)
    source = BatchSource(rows, config, world_size=2, steps_per_epoch=11, meta_steps_per_epoch=2)
    plan = source.plan(0)
    assert len(plan.supervised) == len(plan.meta) == 11
