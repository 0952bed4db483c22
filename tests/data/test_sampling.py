"""The unlabeled sampler: exact exclusion, uniform over the rest, reproducible per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from invlearn_ray.data.errors import FullyInteractedUserError
from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.data.sampling import (
    SeenItemSampler,
    epoch_generator,
    sample_candidates,
    sample_unlabeled,
)

METHODS = {
    "bitmap": {"method": "bitmap"},
    "rank": {"method": "rank"},
    "bitmap_then_rank": {"method": "bitmap", "rejection_rounds": 0},
    "bitmap_over_budget": {"method": "bitmap", "bitmap_budget_bytes": 0},
}


def _seen(n_users: int, n_items: int, density: float, seed: int = 0) -> UserItemIndex:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_users, n_items, generator=gen) < density
    mask[0, : n_items - 3] = True  # a heavy user with only 3 unseen items
    mask[0, n_items - 3 :] = False
    mask[1] = False  # a user with no history
    users, items = torch.nonzero(mask, as_tuple=True)
    return UserItemIndex.from_pairs(users, items, n_users, n_items)


@pytest.mark.parametrize("method", METHODS)
def test_sampler_never_returns_a_seen_item(method):
    seen = _seen(50, 70, 0.4)
    users = torch.arange(50).repeat(40)
    items = SeenItemSampler(seen, **METHODS[method]).sample(users, 3, epoch_generator(0, 0))
    assert items.shape == (len(users), 3)
    assert items.dtype == torch.int64
    assert ((items >= 0) & (items < 70)).all()
    assert not seen.contains(users.repeat_interleave(3), items.flatten()).any()


@pytest.mark.parametrize("method", METHODS)
def test_sampler_is_uniform_over_unseen_items(method):
    n_items = 30
    seen_items = torch.tensor([0, 1, 2, 7, 8, 15, 22, 23, 29])
    seen = UserItemIndex.from_pairs(
        torch.zeros(len(seen_items), dtype=torch.int64), seen_items, 1, n_items
    )
    draws = (
        SeenItemSampler(seen, **METHODS[method])
        .sample(torch.zeros(100_000, dtype=torch.int64), 1, epoch_generator(3, 1))
        .flatten()
        .numpy()
    )
    counts = np.bincount(draws, minlength=n_items)
    unseen = np.setdiff1d(np.arange(n_items), seen_items.numpy())
    assert counts[seen_items.numpy()].sum() == 0
    result = stats.chisquare(counts[unseen])
    assert result.pvalue > 1e-3, result


def test_heavy_user_is_uniform_over_its_few_unseen_items():
    seen = _seen(4, 40, 0.5)
    sampler = SeenItemSampler(seen, method="bitmap", rejection_rounds=2)
    draws = sampler.sample(torch.zeros(30_000, dtype=torch.int64), 1, epoch_generator(1, 0))
    assert sorted(np.unique(draws.numpy()).tolist()) == [37, 38, 39]
    assert stats.chisquare(np.bincount(draws.flatten().numpy())[37:]).pvalue > 1e-3


def test_draw_is_fixed_by_seed_and_epoch_and_changes_across_epochs():
    seen = _seen(20, 50, 0.2)
    users = torch.arange(20).repeat(10)
    first = sample_unlabeled(users, seen, 2, epoch_generator(7, 0))
    again = sample_unlabeled(users, seen, 2, epoch_generator(7, 0))
    next_epoch = sample_unlabeled(users, seen, 2, epoch_generator(7, 1))
    other_seed = sample_unlabeled(users, seen, 2, epoch_generator(8, 0))
    assert torch.equal(first, again)
    assert not torch.equal(first, next_epoch)
    assert not torch.equal(first, other_seed)


def test_user_who_saw_every_item_is_named():
    seen = UserItemIndex.from_pairs(
        torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), n_users=2, n_items=2
    )
    with pytest.raises(
        FullyInteractedUserError, match=r"user\(s\) \[0\] have interacted with all 2"
    ):
        sample_unlabeled(torch.tensor([1, 0]), seen, 1, epoch_generator(0, 0))


def test_out_of_range_users_and_mixed_devices_are_refused():
    seen = _seen(5, 10, 0.2)
    with pytest.raises(ValueError, match=r"user ids must lie in \[0, 5\)"):
        sample_unlabeled(torch.tensor([5]), seen, 1, epoch_generator(0, 0))
    with pytest.raises(ValueError, match="cannot draw -1"):
        sample_unlabeled(torch.tensor([0]), seen, -1, epoch_generator(0, 0))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="must be on one device"):
            sample_unlabeled(torch.tensor([0]), seen, 1, epoch_generator(0, 0, "cuda"))


def test_auto_method_uses_the_bitmap_on_cpu_only_and_unknown_methods_fail():
    seen = _seen(5, 10, 0.2)
    assert SeenItemSampler(seen).bitmap is not None
    assert SeenItemSampler(seen, method="rank").bitmap is None
    with pytest.raises(ValueError, match="unknown sampling method 'magic'"):
        SeenItemSampler(seen, method="magic")


def test_empty_requests_give_empty_tensors():
    seen = _seen(5, 10, 0.2)
    assert sample_unlabeled(
        torch.zeros(0, dtype=torch.int64), seen, 2, epoch_generator(0, 0)
    ).shape == (0, 2)
    assert sample_unlabeled(torch.tensor([2, 3]), seen, 0, epoch_generator(0, 0)).shape == (2, 0)


def test_candidates_are_m_unseen_items_per_row():
    seen = _seen(30, 60, 0.3)
    users = torch.arange(30)
    pool = sample_candidates(users, seen, 8, epoch_generator(2, 5))
    assert pool.shape == (30, 8)
    assert not seen.contains(users.repeat_interleave(8), pool.flatten()).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampler_runs_on_cuda_with_a_cuda_generator():
    seen = _seen(40, 80, 0.3).to("cuda")
    users = torch.arange(40, device="cuda").repeat(50)
    for kwargs in METHODS.values():
        items = SeenItemSampler(seen, **kwargs).sample(users, 2, epoch_generator(0, 0, "cuda"))
        assert items.device.type == "cuda"
        assert not seen.contains(users.repeat_interleave(2), items.flatten()).any()
    assert SeenItemSampler(seen).bitmap is None  # "auto" takes the rank method on CUDA
    moved = SeenItemSampler(_seen(40, 80, 0.3)).to("cuda")
    assert moved.sample(users, 1, epoch_generator(0, 0, "cuda")).device.type == "cuda"
