"""Epoch plans of the methods issue 13 added: IG's steps without its judge, a rotating
training-test slice, and watched-positive batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.recdata import ObservedUnlabeled
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.methods.objectives import TrainBatch
from invlearn_ray.training.batches import MetaBatch
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

SIZES = {"batch_size": 32, "test_batch_size": 8}


@pytest.fixture(scope="module")
def data():
    return make_synthetic_recdata(SyntheticConfig(n_users=60, n_items=80, labeled_density=0.1))


def plan(data, epoch: int = 0, **values):
    return Trainer(TrainConfig(**{**SIZES, **values}), data).batches.plan(epoch)


def pairs(users: torch.Tensor, items: torch.Tensor) -> list[tuple[int, int]]:
    return sorted(zip(users.tolist(), items.tolist(), strict=True))


def test_none_at_ig_steps_takes_igs_steps_per_epoch_on_the_same_labeled_rows(data):
    ig = plan(data, method="ig")
    matched = plan(data, method="none_ig_steps")
    assert len(matched.supervised) == len(ig.supervised)
    assert len(matched.meta) == len(ig.meta) > 0
    assert all(isinstance(batch, TrainBatch) for batch in matched.meta)
    judged = [(b.test_users, b.test_items) for b in ig.meta]
    for mine, theirs in zip(matched.meta, judged, strict=True):
        assert pairs(mine.users, mine.items) == pairs(*theirs)
    users = torch.cat([b.users for b in matched.supervised + matched.meta])
    items = torch.cat([b.items for b in matched.supervised + matched.meta])
    labeled = data.labeled_training()
    # Every labeled row once per epoch; the last training-test step is topped up by cycling,
    # as IG's is.
    assert set(pairs(users, items)) == set(pairs(labeled.users, labeled.items))
    assert len(users) < len(labeled) + SIZES["test_batch_size"]


def test_none_at_ig_steps_batches_carry_no_unlabeled_rows(data):
    matched = plan(data, method="none_ig_steps")
    assert all(batch.unlabeled_users is None for batch in matched.supervised + matched.meta)


def test_a_rotating_judge_splits_all_labeled_rows_afresh_each_epoch(data):
    labeled = data.labeled_training()
    every = pairs(labeled.users, labeled.items)
    judged_by_epoch = []
    for epoch in (0, 1):
        epoch_plan = plan(data, epoch, method="ig", ig_judge="rotating", test_batch_size=4096)
        fitted = (
            torch.cat([b.users for b in epoch_plan.supervised]),
            torch.cat([b.items for b in epoch_plan.supervised]),
        )
        meta: MetaBatch = epoch_plan.meta[0]  # one meta step holds the whole (cycled) slice
        judged = sorted(set(pairs(meta.test_users, meta.test_items)))
        assert len(judged) == len(data.train_test)
        assert sorted(pairs(*fitted) + judged) == every
        judged_by_epoch.append(judged)
    assert judged_by_epoch[0] != judged_by_epoch[1]


def test_a_fixed_judge_keeps_the_datasets_training_test_slice(data):
    meta = plan(data, 3, method="ig", test_batch_size=4096).meta[0]
    slice_ = data.train_test
    assert sorted(set(pairs(meta.test_users, meta.test_items))) == pairs(slice_.users, slice_.items)


def test_the_rotation_is_seeded(data):
    first = plan(data, 2, method="ig", ig_judge="rotating").meta[0]
    again = plan(data, 2, method="ig", ig_judge="rotating").meta[0]
    assert torch.equal(first.test_items, again.test_items)


@pytest.mark.parametrize("source", ["sampled", "observed", "both"])
def test_watched_positive_batches_always_carry_the_observed_rows(data, source):
    epoch_plan = plan(data, method="watched_positive", unlabeled_source=source, sampling_rate=2)
    per_row = 0 if source == "observed" else 2  # sampled rows come first, per labeled row
    heads = [per_row * len(b.users) for b in epoch_plan.supervised]
    observed_users = torch.cat(
        [b.unlabeled_users[h:] for b, h in zip(epoch_plan.supervised, heads, strict=True)]
    )
    observed_items = torch.cat(
        [b.unlabeled_items[h:] for b, h in zip(epoch_plan.supervised, heads, strict=True)]
    )
    observed = data.observed_unlabeled
    assert pairs(observed_users, observed_items) == pairs(observed.users, observed.items)
    sampled = [b.unlabeled_items[:h] for b, h in zip(epoch_plan.supervised, heads, strict=True)]
    assert sum(len(items) for items in sampled) == per_row * len(data.labeled_training())


def test_watched_positive_on_data_without_observed_rows_is_an_error(data):
    without = dataclasses.replace(data, observed_unlabeled=ObservedUnlabeled.empty())
    with pytest.raises(ValueError, match="learns from observed-unlabeled rows"):
        Trainer(TrainConfig(method="watched_positive"), without)
