"""Full-catalogue ranking against per-user references (plain Python / scikit-learn), with ties,
training-item exclusion, factorized scores on wide catalogues, shards and user samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.evaluation.full_ranking import (
    draw_user_sample,
    finalize_full_ranking,
    full_ranking_metrics,
    full_ranking_population,
    full_ranking_stats,
)
from invlearn_ray.evaluation.metrics import display_name, merge_totals, metric_key, user_shard
from invlearn_ray.models.backbones import Factors

SEEDS = [0, 1, 2]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


# ---------------------------------------------------------------------------------------------
# Full-catalogue ranking
# ---------------------------------------------------------------------------------------------


def make_catalogue(seed: int, n_users: int = 60, n_items: int = 80):
    """A tied score table and train/test item sets that overlap for a few users."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.round(torch.randn(n_users, n_items, generator=generator) * 4) / 4
    seen = torch.rand(n_users, n_items, generator=generator) < 0.3
    test = (torch.rand(n_users, n_items, generator=generator) < 0.08) & ~seen
    test[:3] = False  # users without relevant items
    test[3, :5] = True  # a user whose only relevant items were seen in training
    test[3, 5:] = False
    seen[3, :5] = True
    test[4, 0] = True  # a relevant item that was also seen in training, among others
    seen[4, 0] = True
    table[5] = 0.0  # a constant scorer for one user
    relevant = UserItemIndex.from_pairs(*test.nonzero().T, n_users, n_items)
    exclude = UserItemIndex.from_pairs(*seen.nonzero().T, n_users, n_items)
    return table, relevant, exclude, test, seen


def reference_full_ranking(table, test, seen, users, k):
    """Per user: expected hits from each relevant item's chance to land in the top k."""
    recalls, ndcgs = [], []
    for user in users:
        candidates = ~seen[user]
        scores = table[user][candidates].numpy()
        targets = test[user][candidates].numpy().astype(float)
        if targets.sum() == 0:
            continue
        hits = 0.0
        for score in scores[targets > 0]:
            ahead, tied = (scores > score).sum(), (scores == score).sum()
            hits += min(max(k - ahead, 0), tied) / tied
        recalls.append(hits / targets.sum())
        ndcgs.append(ndcg_score([targets], [scores], k=k))
    return float(np.mean(recalls)), float(np.mean(ndcgs)), len(recalls)


@pytest.mark.parametrize("seed", SEEDS)
def test_full_ranking_equals_per_user_reference(seed):
    table, relevant, exclude, test, seen = make_catalogue(seed)
    users = torch.arange(len(table))
    report = full_ranking_metrics(lambda u: table[u], users, relevant, exclude, ks=(5, 20))
    for k in (5, 20):
        recall, ndcg, n_users = reference_full_ranking(table, test, seen, range(len(table)), k)
        assert report[f"full_recall_at_{k}"] == pytest.approx(recall, abs=1e-12)
        assert report[f"full_ndcg_at_{k}"] == pytest.approx(ndcg, abs=1e-12)
    assert report["full_users"] == n_users
    assert report["full_skipped"] == len(table) - n_users
    assert report["full_relevant_seen"] == 6


def test_full_ranking_does_not_depend_on_batch_size_or_user_order():
    table, relevant, exclude, _, _ = make_catalogue(3)
    users = torch.randperm(len(table), generator=torch.Generator().manual_seed(0))[:45]
    base = full_ranking_metrics(lambda u: table[u], users, relevant, exclude, ks=(10,))
    for batch_size in (1, 7, 1000):
        permuted = users[torch.randperm(len(users))]
        other = full_ranking_metrics(
            lambda u: table[u], permuted, relevant, exclude, ks=(10,), user_batch_size=batch_size
        )
        for key, value in base.items():
            assert other[key] == pytest.approx(value, abs=1e-12), (batch_size, key)


def test_full_ranking_of_constant_scorer_is_at_random_level():
    # Every candidate is equally likely in the top k: expected recall = k / n_candidates.
    table, relevant, exclude, test, seen = make_catalogue(4)
    users = torch.arange(len(table))
    report = full_ranking_metrics(
        lambda u: torch.zeros(len(u), table.shape[1]), users, relevant, exclude, ks=(10,)
    )
    evaluated = [u for u in range(len(table)) if (test[u] & ~seen[u]).any()]
    expected = np.mean([10 / int((~seen[u]).sum()) for u in evaluated])
    assert report["full_recall_at_10"] == pytest.approx(expected, abs=1e-12)


def test_full_ranking_cutoff_beyond_catalogue_ranks_every_candidate():
    table, relevant, exclude, _, _ = make_catalogue(5, n_items=12)
    report = full_ranking_metrics(
        lambda u: table[u], torch.arange(len(table)), relevant, exclude, ks=(50,)
    )
    assert report["full_recall_at_50"] == pytest.approx(1.0)


def test_full_ranking_rejects_duplicate_users():
    table, relevant, exclude, _, _ = make_catalogue(0)
    with pytest.raises(ValueError, match="user 4 is listed more than once"):
        full_ranking_metrics(lambda u: table[u], torch.tensor([4, 5, 4]), relevant, exclude)


def test_full_ranking_rejects_wrong_score_shape_and_nan():
    table, relevant, exclude, _, _ = make_catalogue(0)
    users = torch.arange(10, 20)
    with pytest.raises(ValueError, match=r"expected \(10, 80\)"):
        full_ranking_metrics(lambda u: table[u, :40], users, relevant, exclude)
    broken = table.clone()
    broken[12, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN for user 12"):
        full_ranking_metrics(lambda u: broken[u], users, relevant, exclude)


def test_full_ranking_rejects_out_of_range_users():
    table, relevant, exclude, _, _ = make_catalogue(0)
    with pytest.raises(ValueError, match="user id 60 is outside"):
        full_ranking_metrics(lambda u: table[u], torch.tensor([1, 60]), relevant, exclude)


@pytest.mark.parametrize("device", DEVICES)
def test_full_ranking_on_device_matches_cpu(device):
    table, relevant, exclude, _, _ = make_catalogue(6)
    users = torch.arange(len(table))
    on_cpu = full_ranking_metrics(lambda u: table[u], users, relevant, exclude, ks=(5, 20))
    on_device_table = table.to(device)
    on_device = full_ranking_metrics(
        lambda u: on_device_table[u], users.to(device), relevant, exclude, ks=(5, 20)
    )
    for key, value in on_cpu.items():
        assert on_device[key] == pytest.approx(value, abs=1e-12), key


# ---------------------------------------------------------------------------------------------
# Full-catalogue ranking on wide catalogues (the block path) and factorized scores
# ---------------------------------------------------------------------------------------------

WIDE_ITEMS = 3100  # >= 4 * (k + 1) blocks of 128 for k = 5: the block path of top_window


def make_wide_catalogue(seed: int, levels: int, n_users: int = 40):
    """Integer factor tables: their products are exact, tied at ``levels`` granularity."""
    generator = torch.Generator().manual_seed(seed)
    user_factors = torch.randint(-levels, levels + 1, (n_users, 3), generator=generator).float()
    item_factors = torch.randint(-levels, levels + 1, (WIDE_ITEMS, 3), generator=generator).float()
    seen = torch.rand(n_users, WIDE_ITEMS, generator=generator) < 0.2
    test = (torch.rand(n_users, WIDE_ITEMS, generator=generator) < 0.01) & ~seen
    test[0] = False  # a user without relevant items
    test[1, :3] = True  # relevant items that were seen in training
    seen[1, :3] = True
    relevant = UserItemIndex.from_pairs(*test.nonzero().T, n_users, WIDE_ITEMS)
    exclude = UserItemIndex.from_pairs(*seen.nonzero().T, n_users, WIDE_ITEMS)
    return Factors(user_factors, item_factors), relevant, exclude, test, seen


@pytest.mark.parametrize(("seed", "levels"), [(0, 1), (1, 2), (2, 40)])
def test_factorized_ranking_of_a_wide_catalogue_equals_the_per_user_reference(seed, levels):
    # levels 1-2: ties cross the top window in most rows; 40: ties are rare at the top.
    factors, relevant, exclude, test, seen = make_wide_catalogue(seed, levels)
    table = factors.scores(torch.arange(len(test)))
    users = torch.arange(len(test))
    report = full_ranking_metrics(factors.scorer(), users, relevant, exclude, ks=(5,))
    recall, ndcg, n_users = reference_full_ranking(table, test, seen, range(len(test)), 5)
    assert report["full_recall_at_5"] == pytest.approx(recall, abs=1e-12)
    assert report["full_ndcg_at_5"] == pytest.approx(ndcg, abs=1e-12)
    assert report["full_users"] == n_users
    assert report["full_relevant_seen"] == 3


def test_factorized_ranking_does_not_depend_on_the_user_batch_size():
    factors, relevant, exclude, _, _ = make_wide_catalogue(3, levels=3)
    users = torch.arange(40)
    base = full_ranking_metrics(factors.scorer(), users, relevant, exclude, ks=(5, 20))
    for batch_size in (1, 7, 64):
        other = full_ranking_metrics(
            factors.scorer(), users, relevant, exclude, ks=(5, 20), user_batch_size=batch_size
        )
        for key, value in base.items():
            assert other[key] == pytest.approx(value, abs=1e-12), (batch_size, key)


# ---------------------------------------------------------------------------------------------
# Sharded evaluation: totals of disjoint user shards merge to the all-at-once report
# ---------------------------------------------------------------------------------------------


def test_full_ranking_of_user_shards_merged_equals_all_at_once():
    table, relevant, exclude, _, _ = make_catalogue(9)
    users = torch.arange(len(table))
    whole = full_ranking_metrics(lambda u: table[u], users, relevant, exclude, ks=(5, 20))
    parts = [
        full_ranking_stats(
            lambda u: table[u], users[user_shard(users, rank, 2)], relevant, exclude, ks=(5, 20)
        )
        for rank in range(2)
    ]
    parts.append(full_ranking_stats(lambda u: table[u], users[:0], relevant, exclude, ks=(5, 20)))
    merged = finalize_full_ranking(merge_totals(parts))
    assert merged.keys() == whole.keys()
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key


def test_totals_of_different_cutoffs_do_not_merge():
    table, relevant, exclude, _, _ = make_catalogue(0)
    users = torch.arange(10)
    at_5 = full_ranking_stats(lambda u: table[u], users, relevant, exclude, ks=(5,))
    at_10 = full_ranking_stats(lambda u: table[u], users, relevant, exclude, ks=(10,))
    with pytest.raises(ValueError, match="same cut-offs"):
        merge_totals([at_5, at_10])


# ---------------------------------------------------------------------------------------------
# The sampled-users protocol
# ---------------------------------------------------------------------------------------------


def test_user_sample_is_seeded_sorted_and_drawn_from_the_population():
    population = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:300] * 3
    first = draw_user_sample(population, 40, seed=5)
    assert torch.equal(first.users, draw_user_sample(population.flip(0), 40, seed=5).users)
    assert not torch.equal(first.users, draw_user_sample(population, 40, seed=6).users)
    assert len(first.users) == 40 and first.population == 300 and first.seed == 5
    assert torch.equal(first.users, first.users.sort().values)
    assert set(first.users.tolist()) <= set(population.tolist())
    assert len(draw_user_sample(population, 1000, seed=5).users) == 300


def test_user_sample_is_uniform_over_the_population():
    # Every user is drawn with probability size / N: over 400 seeds, 400 * 10/50 = 80 times.
    population = torch.arange(50)
    counts = torch.zeros(50)
    for seed in range(400):
        counts[draw_user_sample(population, 10, seed).users] += 1
    assert counts.sum() == 4000
    assert (counts - 80).abs().max() < 30  # binomial sd 8: a bias of 30 is > 3.5 sd


def test_sampled_users_report_is_named_and_has_the_finite_population_standard_error():
    table, relevant, exclude, test, seen = make_catalogue(10)
    population = full_ranking_population(torch.arange(len(table)), relevant, exclude)
    sample = draw_user_sample(population, 20, seed=3)
    totals = full_ranking_stats(lambda u: table[u], sample.users, relevant, exclude, ks=(10,))
    report = finalize_full_ranking(totals, sample)
    assert not any(key.startswith("full_") for key in report)
    per_user = []
    for user in sample.users.tolist():
        per_user.append(reference_full_ranking(table, test, seen, [user], 10)[0])
    values = np.array(per_user)
    n, big_n = len(values), len(population)
    stderr = np.sqrt((1 - n / big_n) * values.var(ddof=1) / n)
    assert report["sampled_users_recall_at_10"] == pytest.approx(values.mean(), abs=1e-12)
    assert report["sampled_users_recall_at_10_stderr"] == pytest.approx(stderr, abs=1e-12)
    assert report["sampled_users_count"] == 20
    assert report["sampled_users_population"] == big_n
    assert report["sampled_users_seed"] == 3
    for key in report:
        assert metric_key(display_name(key)) == key


def test_sampled_report_rejects_totals_that_miss_a_sampled_user():
    table, relevant, exclude, _, _ = make_catalogue(11)
    population = full_ranking_population(torch.arange(len(table)), relevant, exclude)
    sample = draw_user_sample(population, 20, seed=0)
    totals = full_ranking_stats(lambda u: table[u], sample.users[1:], relevant, exclude)
    with pytest.raises(ValueError, match="rank each sampled user exactly once"):
        finalize_full_ranking(totals, sample)
