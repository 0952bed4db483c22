"""Metrics against independent per-user computations (scikit-learn / plain Python), with ties."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from invlearn_ray.evaluation.metrics import (
    GAUC_WEIGHTINGS,
    _order_by_score,
    auc,
    display_name,
    evaluate_rows,
    finalize_row_metrics,
    gauc,
    mann_whitney_u,
    merge_row_metric_stats,
    metric_key,
    mrr,
    ndcg_at_k,
    random_mrr_floor,
    random_ndcg_floor,
    row_metric_stats,
    user_shard,
)

SEEDS = [0, 1, 2]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


# ---------------------------------------------------------------------------------------------
# Data: realistic test rows with ties, single-row users and single-class users
# ---------------------------------------------------------------------------------------------


def make_rows(seed: int, n_users: int = 150, positive_rate: float = 0.8):
    """Test rows shaped like a MovieLens split: skewed row counts per user, ~80% positives.

    Scores are rounded to one decimal so ties are everywhere; user ids are sparse and shuffled
    so nothing relies on contiguous ids or sorted input. Some users get one row only, some only
    positives or only negatives.
    """
    generator = torch.Generator().manual_seed(seed)
    rows_per_user = (torch.rand(n_users, generator=generator) ** 3 * 25).long() + 1
    rows_per_user[:10] = 1
    user_ids = torch.randperm(10 * n_users, generator=generator)[:n_users]
    users = torch.repeat_interleave(user_ids, rows_per_user)
    labels = (torch.rand(len(users), generator=generator) < positive_rate).float()
    first = torch.cumsum(rows_per_user, 0) - rows_per_user
    for start, count in zip(first[10:15].tolist(), rows_per_user[10:15].tolist(), strict=True):
        labels[start : start + count] = 0.0  # a few users whose rows are all negative ...
    for start, count in zip(first[15:20].tolist(), rows_per_user[15:20].tolist(), strict=True):
        labels[start : start + count] = 1.0  # ... and a few whose rows are all positive
    signal = labels * 0.3 + torch.randn(len(users), generator=generator)
    scores = torch.round(signal * 10) / 10
    order = torch.randperm(len(users), generator=generator)
    return scores[order], labels[order], users[order]


def per_user(scores: torch.Tensor, labels: torch.Tensor, users: torch.Tensor):
    """Plain-Python split of the rows by user: {user: (scores array, labels array)}."""
    grouped: dict[int, tuple[list[float], list[float]]] = {}
    for score, label, user in zip(scores.tolist(), labels.tolist(), users.tolist(), strict=True):
        grouped.setdefault(user, ([], []))
        grouped[user][0].append(score)
        grouped[user][1].append(label)
    return {user: (np.array(s), np.array(y)) for user, (s, y) in grouped.items()}


def reference_gauc(scores, labels, users, weighting: str):
    values, weights = [], []
    for s, y in per_user(scores, labels, users).values():
        if 0 < y.sum() < len(y):
            values.append(roc_auc_score(y, s))
            weights.append(1.0 if weighting == "uniform" else y.sum())
    return float(np.average(values, weights=weights)), len(values)


def reference_ndcg(scores, labels, users, k: int):
    values = []
    for s, y in per_user(scores, labels, users).values():
        if y.sum() == 0:
            continue
        # sklearn refuses single-document rankings; their NDCG is 1 (the one row is positive).
        values.append(1.0 if len(y) == 1 else ndcg_score([y], [s], k=k))
    return float(np.mean(values)), len(values)


def reference_reciprocal_rank(s: np.ndarray, y: np.ndarray, k: int | None) -> float:
    """Expected 1/rank of the first positive, enumerating every placement of tied positives."""
    ahead = 0
    for value in sorted(set(s.tolist()), reverse=True):
        group = y[s == value]
        size, positives = len(group), int(group.sum())
        if positives:
            placements = list(itertools.combinations(range(size), positives))
            total = 0.0
            for placement in placements:
                rank = ahead + 1 + min(placement)
                total += 1.0 / rank if k is None or rank <= k else 0.0
            return total / len(placements)
        ahead += size
    raise AssertionError("user has no positive")


def reference_mrr(scores, labels, users, k: int | None = None):
    values = [
        reference_reciprocal_rank(s, y, k)
        for s, y in per_user(scores, labels, users).values()
        if y.sum() > 0
    ]
    return float(np.mean(values)), len(values)


# ---------------------------------------------------------------------------------------------
# AUC
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_equals_sklearn_on_tied_scores(seed):
    scores, labels, _ = make_rows(seed)
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_accepts_bool_and_int_labels_and_float32_ties():
    scores, labels, _ = make_rows(3)
    expected = roc_auc_score(labels, scores)
    assert auc(scores.float(), labels.bool()) == pytest.approx(expected, abs=1e-12)
    assert auc(scores.double(), labels.long()) == pytest.approx(expected, abs=1e-12)


def test_auc_of_constant_scorer_is_one_half():
    _, labels, _ = make_rows(4)
    assert auc(torch.zeros(len(labels)), labels) == 0.5


def test_auc_is_finite_and_exact_for_extreme_logits():
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    scores = torch.tensor([-1e4, 1e4, float("-inf"), float("inf"), -1e4])
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores.clamp(-1e30, 1e30)))


def test_auc_with_one_class_raises():
    with pytest.raises(ValueError, match="only one class is present"):
        auc(torch.randn(5), torch.ones(5))


def test_nan_score_raises_naming_the_row():
    scores = torch.tensor([0.1, 0.2, float("nan"), 0.3])
    with pytest.raises(ValueError, match=r"scores\[2\] is NaN"):
        auc(scores, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_non_binary_label_raises_naming_the_row():
    with pytest.raises(ValueError, match=r"labels\[1\] = 0.5"):
        gauc(torch.randn(3), torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0, 0, 1]))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="differ in length"):
        mrr(torch.randn(3), torch.ones(3), torch.zeros(4, dtype=torch.int64))


def test_float_user_ids_raise():
    with pytest.raises(TypeError, match="users must be an integer tensor"):
        gauc(torch.randn(3), torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# GAUC
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighting", sorted(GAUC_WEIGHTINGS))
def test_gauc_equals_per_user_sklearn(seed, weighting):
    scores, labels, users = make_rows(seed)
    expected, n_users = reference_gauc(scores, labels, users, weighting)
    result = gauc(scores, labels, users, weighting=weighting)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.n_groups == n_users
    assert result.n_skipped == len(torch.unique(users)) - n_users


def test_gauc_weightings_differ_and_default_is_uniform():
    scores, labels, users = make_rows(5)
    uniform = gauc(scores, labels, users, weighting="uniform")
    assert gauc(scores, labels, users) == uniform
    assert gauc(scores, labels, users, weighting="positives").value != uniform.value


def test_gauc_of_constant_scorer_is_one_half():
    _, labels, users = make_rows(6)
    assert gauc(torch.ones(len(labels)), labels, users).value == 0.5


def test_gauc_unknown_weighting_lists_valid_names():
    scores, labels, users = make_rows(0)
    with pytest.raises(ValueError, match=r"unknown weighting 'recbole'.*positives.*uniform"):
        gauc(scores, labels, users, weighting="recbole")


def test_gauc_without_any_mixed_user_raises():
    users = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="no user qualifies"):
        gauc(torch.randn(4), torch.tensor([1.0, 1.0, 0.0, 0.0]), users)


# ---------------------------------------------------------------------------------------------
# NDCG@K and its random floor
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 10, 20])
def test_ndcg_equals_per_user_sklearn_with_tie_averaging(seed, k):
    scores, labels, users = make_rows(seed)
    expected, n_users = reference_ndcg(scores, labels, users, k)
    result = ndcg_at_k(scores, labels, users, k)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.n_groups == n_users


def test_ndcg_skips_users_without_positives():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.4])
    labels = torch.tensor([0.0, 1.0, 0.0, 0.0])
    users = torch.tensor([7, 7, 3, 3])
    result = ndcg_at_k(scores, labels, users, 10)
    assert (result.n_groups, result.n_skipped) == (1, 1)
    assert result.value == pytest.approx(1 / math.log2(3))


def test_ndcg_of_constant_scorer_equals_random_floor():
    _, labels, users = make_rows(7)
    for k in (5, 10, 20):
        constant = ndcg_at_k(torch.zeros(len(labels)), labels, users, k)
        assert constant.value == pytest.approx(random_ndcg_floor(labels, users, k).value)


def test_random_ndcg_floor_matches_monte_carlo_draws():
    # 400 seeded draws of continuous (tie-free) random scores; the standard error of the mean
    # is ~4e-4, so 3e-3 is a > 7-sigma bound.
    _, labels, users = make_rows(8)
    generator = torch.Generator().manual_seed(0)
    draws = [
        ndcg_at_k(torch.rand(len(labels), generator=generator), labels, users, 10).value
        for _ in range(400)
    ]
    floor = random_ndcg_floor(labels, users, 10)
    assert floor.value == pytest.approx(float(np.mean(draws)), abs=3e-3)
    assert floor.n_groups == ndcg_at_k(torch.rand(len(labels)), labels, users, 10).n_groups


def test_random_ndcg_floor_is_high_with_mostly_positive_rows():
    # The pitfall method.md warns about: ~83% positives give random scores a high NDCG@20.
    _, labels, users = make_rows(9, positive_rate=0.83)
    assert random_ndcg_floor(labels, users, 20).value > 0.8


# ---------------------------------------------------------------------------------------------
# MRR
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [None, 3])
def test_mrr_equals_expected_reciprocal_rank_over_tie_orders(seed, k):
    scores, labels, users = make_rows(seed)
    expected, n_users = reference_mrr(scores, labels, users, k)
    result = mrr(scores, labels, users, k=k)
    assert result.value == pytest.approx(expected, abs=1e-10)
    assert result.n_groups == n_users


def test_mrr_ranks_by_scores_not_by_labels():
    # The released code's bug ranks labels by themselves and always reports 1 here.
    scores = torch.tensor([0.9, 0.8, 0.1])
    labels = torch.tensor([0.0, 0.0, 1.0])
    assert mrr(scores, labels, torch.zeros(3, dtype=torch.int64)).value == pytest.approx(1 / 3)


def test_mrr_floor_equals_constant_scorer_and_closed_form():
    _, labels, users = make_rows(10)
    floor = random_mrr_floor(labels, users)
    assert floor == mrr(torch.zeros(len(labels)), labels, users)
    values = []
    for _, y in per_user(torch.zeros(len(labels)), labels, users).values():
        n, m = len(y), int(y.sum())
        if m:
            # P(first positive at rank r) = C(n-r, m-1) / C(n, m)
            values.append(
                sum(math.comb(n - r, m - 1) / r for r in range(1, n + 1)) / math.comb(n, m)
            )
    assert floor.value == pytest.approx(float(np.mean(values)), abs=1e-12)


def test_mrr_stays_exact_for_a_large_tie_group():
    n, m = 3000, 2500
    labels = torch.zeros(n)
    labels[:m] = 1.0
    result = mrr(torch.zeros(n), labels, torch.zeros(n, dtype=torch.int64))
    # Exact rational arithmetic: the binomials here overflow floats.
    expected = sum(Fraction(math.comb(n - r, m - 1), r) for r in range(1, n - m + 2))
    assert result.value == pytest.approx(float(expected / math.comb(n, m)), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Invariance and the standard report
# ---------------------------------------------------------------------------------------------


def test_row_metrics_do_not_depend_on_row_order_or_user_ids():
    scores, labels, users = make_rows(11)
    generator = torch.Generator().manual_seed(1)
    order = torch.randperm(len(scores), generator=generator)
    renamed = torch.randperm(int(users.max()) + 1, generator=generator)[users]
    base = evaluate_rows(scores, labels, users)
    shuffled = evaluate_rows(scores[order], labels[order], renamed[order])
    assert shuffled.keys() == base.keys()
    for key, value in base.items():
        assert shuffled[key] == pytest.approx(value, abs=1e-12), key


def test_evaluate_rows_reports_every_metric_under_safe_keys():
    scores, labels, users = make_rows(12)
    report = evaluate_rows(scores, labels, users, ks=(10, 20))
    assert report["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert report["gauc"] == pytest.approx(reference_gauc(scores, labels, users, "uniform")[0])
    assert report["gauc_users"] + report["gauc_skipped"] == len(torch.unique(users))
    for k in (10, 20):
        assert report[f"ndcg_at_{k}"] == pytest.approx(reference_ndcg(scores, labels, users, k)[0])
        assert report[f"random_ndcg_at_{k}"] == random_ndcg_floor(labels, users, k).value
    assert report["mrr"] == pytest.approx(reference_mrr(scores, labels, users)[0])
    assert report["random_mrr"] == pytest.approx(random_mrr_floor(labels, users).value)
    assert report["ndcg_users"] == reference_ndcg(scores, labels, users, 10)[1]
    assert all("@" not in key for key in report)


def test_invalid_cutoff_raises():
    scores, labels, users = make_rows(0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k(scores, labels, users, 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        evaluate_rows(scores, labels, users, ks=(10, 2.5))


def test_numpy_integer_cutoffs_are_accepted():
    scores, labels, users = make_rows(0)
    report = evaluate_rows(scores, labels, users, ks=(np.int64(10),))
    assert report["ndcg_at_10"] == ndcg_at_k(scores, labels, users, 10).value


@pytest.mark.parametrize("device", DEVICES)
def test_row_metrics_on_device_match_cpu(device):
    scores, labels, users = make_rows(13)
    on_cpu = evaluate_rows(scores, labels, users)
    on_device = evaluate_rows(scores.to(device), labels.to(device), users.to(device))
    for key, value in on_cpu.items():
        assert on_device[key] == pytest.approx(value, abs=1e-12), key


# ---------------------------------------------------------------------------------------------
# Metric names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shown", "key"),
    [
        ("NDCG@10", "ndcg_at_10"),
        ("AUC", "auc"),
        ("GAUC users", "gauc_users"),
        ("random NDCG@20", "random_ndcg_at_20"),
        ("full Recall@20", "full_recall_at_20"),
        ("valid/MRR", "valid/mrr"),
    ],
)
def test_metric_key_and_display_name_are_inverse(shown, key):
    assert metric_key(shown) == key
    assert metric_key(key) == key
    assert display_name(key) == shown


def test_metric_key_rejects_characters_mlflow_cannot_store():
    with pytest.raises(ValueError, match="MLflow keys cannot contain"):
        metric_key("NDCG#10")


def test_every_report_key_round_trips_through_display_name():
    scores, labels, users = make_rows(0)
    for key in evaluate_rows(scores, labels, users):
        assert metric_key(display_name(key)) == key


# ---------------------------------------------------------------------------------------------
# Sharded evaluation: statistics of disjoint user shards merge to the all-at-once report
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_row_metrics_of_user_shards_merged_equal_all_at_once(world_size):
    scores, labels, users = make_rows(7)
    whole = evaluate_rows(scores, labels, users)
    parts = []
    for rank in range(world_size):
        mask = user_shard(users, rank, world_size)
        parts.append(row_metric_stats(scores[mask], labels[mask], users[mask]))
    merged = finalize_row_metrics(merge_row_metric_stats(parts))
    assert merged.keys() == whole.keys()
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_mann_whitney_counts_of_each_shards_positives_against_every_shards_negatives_give_the_auc(
    world_size,
):
    scores, labels, users = make_rows(9)  # tied scores
    total = 0.0
    for rank in range(world_size):
        mine = user_shard(users, rank, world_size)
        positives = scores[mine & (labels > 0.5)]
        for other in range(world_size):
            theirs = user_shard(users, other, world_size) & (labels < 0.5)
            total += float(mann_whitney_u(positives, torch.sort(scores[theirs]).values))
    n_positives, n_negatives = int((labels > 0.5).sum()), int((labels < 0.5).sum())
    # Counts of half-integers are exact, so the AUC is the one-process AUC bit for bit.
    assert total / (n_positives * n_negatives) == auc(scores, labels)
    assert total / (n_positives * n_negatives) == pytest.approx(
        roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12
    )


def test_an_empty_row_shard_merges_as_nothing():
    scores, labels, users = make_rows(8)
    empty = row_metric_stats(scores[:0], labels[:0], users[:0])
    merged = finalize_row_metrics(
        merge_row_metric_stats([empty, row_metric_stats(scores, labels, users)])
    )
    for key, value in evaluate_rows(scores, labels, users).items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_the_score_order_is_a_stable_descending_sort(dtype):
    # The integer-key sort must order every float as the float sort does, ties by position.
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-30, -1e-30, 1e4, -1e4])
    values = torch.cat([special, torch.round(torch.randn(500) * 4) / 4]).to(dtype)
    values = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))]
    expected = torch.sort(values, descending=True, stable=True).indices
    assert torch.equal(_order_by_score(values), expected)
