"""Speed of the vectorized row metrics against a per-user scikit-learn loop, side by side.

The reference is how the paper's released code (and most research code) evaluates: group the
test rows by user, then call ``roc_auc_score`` / ``ndcg_score`` once per user. Both sides
compute the same report — AUC, GAUC, NDCG@10, NDCG@20, MRR — on the same rows, in the same run;
the script prints both timings, their ratio and the largest difference between the two results
(the figures must agree, or the timing means nothing).

Shape (defaults): 100,000 labeled test rows of ~6,000 users with MovieLens-like skewed row
counts, ~83% positives (ML rating >= 3) and scores rounded to 2 decimals, so ties are common.
It also times :func:`full_ranking_metrics` on an ML-1M-sized catalogue (6,040 users × 3,706
items, MF scores), where no per-user reference is run.

Usage::

    python benchmarks/metrics_speed.py                  # CPU, full size
    python benchmarks/metrics_speed.py --device cuda    # the vectorized side on a GPU
    python benchmarks/metrics_speed.py --smoke-test     # seconds, for CI
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import ndcg_score, roc_auc_score

from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.evaluation.full_ranking import full_ranking_metrics
from invlearn_ray.evaluation.metrics import evaluate_rows, gauc

REPORTED = ["auc", "gauc", "ndcg_at_10", "ndcg_at_20", "mrr"]


def make_test_rows(
    n_rows: int, n_users: int, positive_rate: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shuffled test rows: skewed rows per user (log-normal, >= 1), tied scores with signal."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.exp(torch.randn(n_users, generator=generator, dtype=torch.float64))
    rows_per_user = (weights / weights.sum() * (n_rows - n_users)).floor().long() + 1
    rows_per_user[: n_rows - int(rows_per_user.sum())] += 1
    users = torch.repeat_interleave(torch.arange(n_users), rows_per_user)
    labels = (torch.rand(n_rows, generator=generator) < positive_rate).float()
    scores = torch.round((labels * 0.8 + torch.randn(n_rows, generator=generator)) * 100) / 100
    order = torch.randperm(n_rows, generator=generator)
    return scores[order], labels[order], users[order]


def _expected_reciprocal_rank(scores: np.ndarray, labels: np.ndarray) -> float:
    """Plain-Python MRR of one user, ties in expectation (the definition core.metrics uses)."""
    ahead = 0
    for value in np.unique(scores)[::-1]:
        group = labels[scores == value]
        size, positives = len(group), int(group.sum())
        if positives:
            placements = math.comb(size, positives)
            return sum(
                math.comb(size - 1 - offset, positives - 1) / placements / (ahead + 1 + offset)
                for offset in range(size - positives + 1)
            )
        ahead += size
    raise ValueError("user without a positive row")


def user_row_groups(users: np.ndarray) -> list[np.ndarray]:
    """Row indices of each user (the reference's group-by)."""
    order = np.argsort(users, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(users[order])) + 1)


def reference_gauc(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """The per-user ``roc_auc_score`` loop alone, for a like-for-like GAUC timing."""
    aucs = [
        roc_auc_score(labels[rows], scores[rows])
        for rows in user_row_groups(users)
        if 0 < labels[rows].sum() < len(rows)
    ]
    return float(np.mean(aucs))


def reference_row_metrics(
    scores: np.ndarray, labels: np.ndarray, users: np.ndarray
) -> dict[str, float]:
    """The per-user loop: group rows by user, then scikit-learn per user."""
    aucs, ndcg10, ndcg20, reciprocal_ranks = [], [], [], []
    for rows in user_row_groups(users):
        user_scores, user_labels = scores[rows], labels[rows]
        positives = user_labels.sum()
        if 0 < positives < len(rows):
            aucs.append(roc_auc_score(user_labels, user_scores))
        if positives == 0:
            continue
        if len(rows) == 1:
            ndcg10.append(1.0)
            ndcg20.append(1.0)
        else:
            ndcg10.append(ndcg_score([user_labels], [user_scores], k=10))
            ndcg20.append(ndcg_score([user_labels], [user_scores], k=20))
        reciprocal_ranks.append(_expected_reciprocal_rank(user_scores, user_labels))
    return {
        "auc": roc_auc_score(labels, scores),
        "gauc": float(np.mean(aucs)),
        "ndcg_at_10": float(np.mean(ndcg10)),
        "ndcg_at_20": float(np.mean(ndcg20)),
        "mrr": float(np.mean(reciprocal_ranks)),
    }


def timed(call: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median wall-clock seconds of ``repeats`` calls after one warm-up call, and its result."""
    result = call()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def random_index(
    n_users: int, n_items: int, rate: float, generator: torch.Generator
) -> tuple[UserItemIndex, torch.Tensor]:
    pairs = (torch.rand(n_users, n_items, generator=generator) < rate).nonzero().T
    return UserItemIndex.from_pairs(pairs[0], pairs[1], n_users, n_items), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--positive-rate", type=float, default=0.83)
    parser.add_argument("--catalogue-users", type=int, default=6_040)
    parser.add_argument("--items", type=int, default=3_706)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls, vectorized side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.smoke_test:
        args.rows, args.users, args.catalogue_users, args.items, args.repeats = (
            5_000,
            300,
            300,
            500,
            3,
        )
    device = torch.device(args.device)
    print(
        f"rows={args.rows} users={args.users} positive_rate={args.positive_rate} "
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}"
    )

    scores, labels, users = make_test_rows(args.rows, args.users, args.positive_rate, args.seed)
    print(
        f"distinct scores={len(torch.unique(scores))} positives={labels.mean().item():.3f} "
        f"rows/user: max={int(torch.bincount(users).max())} "
        f"single-row users={int((torch.bincount(users) == 1).sum())}"
    )
    start = time.perf_counter()
    reference = reference_row_metrics(scores.numpy(), labels.numpy(), users.numpy())
    reference_seconds = time.perf_counter() - start

    on_device = scores.to(device), labels.to(device), users.to(device)
    vectorized_seconds, report = timed(lambda: evaluate_rows(*on_device), args.repeats, device)
    largest_difference = max(abs(report[key] - reference[key]) for key in REPORTED)

    print("\nrow metrics (AUC, GAUC, NDCG@10, NDCG@20, MRR + random floors)")
    for key in REPORTED:
        print(f"  {key:<11} vectorized={report[key]:.6f} per-user sklearn={reference[key]:.6f}")
    print(
        f"  random floors: ndcg_at_20={report['random_ndcg_at_20']:.4f} "
        f"mrr={report['random_mrr']:.4f}; gauc over {report['gauc_users']} users, "
        f"{report['gauc_skipped']} skipped"
    )
    print(f"  largest |difference| = {largest_difference:.2e}")
    print(f"  per-user sklearn loop: {reference_seconds:.3f} s (one run)")
    print(f"  evaluate_rows:         {vectorized_seconds * 1e3:.2f} ms (median of {args.repeats})")
    print(f"  speed-up:              {reference_seconds / vectorized_seconds:.0f}x")

    start = time.perf_counter()
    reference_value = reference_gauc(scores.numpy(), labels.numpy(), users.numpy())
    reference_seconds = time.perf_counter() - start
    vectorized_seconds, grouped = timed(lambda: gauc(*on_device), args.repeats, device)
    print("\nGAUC alone (per-user roc_auc_score loop vs gauc)")
    print(f"  |difference| = {abs(grouped.value - reference_value):.2e}")
    print(f"  per-user sklearn loop: {reference_seconds:.3f} s (one run)")
    print(f"  gauc:                  {vectorized_seconds * 1e3:.2f} ms (median of {args.repeats})")
    print(f"  speed-up:              {reference_seconds / vectorized_seconds:.0f}x")

    generator = torch.Generator().manual_seed(args.seed + 1)
    n_users, n_items = args.catalogue_users, args.items
    exclude, _ = random_index(n_users, n_items, 0.05, generator)
    relevant, _ = random_index(n_users, n_items, 0.02, generator)
    user_factors = torch.randn(n_users, 32, generator=generator).to(device)
    item_factors = torch.randn(n_items, 32, generator=generator).to(device)
    all_users = torch.arange(n_users, device=device)
    relevant_on_device, exclude_on_device = relevant.to(device), exclude.to(device)

    def full_ranking() -> dict[str, float]:
        return full_ranking_metrics(
            lambda batch: user_factors[batch] @ item_factors.T,
            all_users,
            relevant_on_device,
            exclude_on_device,
            ks=(20,),
        )

    full_seconds, full_report = timed(full_ranking, max(args.repeats // 4, 1), device)
    print(f"\nfull-catalogue ranking: {n_users} users x {n_items} items, K=20, MF scores")
    print(
        f"  recall@20={full_report['full_recall_at_20']:.4f} "
        f"ndcg@20={full_report['full_ndcg_at_20']:.4f} users={full_report['full_users']}"
    )
    print(f"  full_ranking_metrics:  {full_seconds * 1e3:.2f} ms (median)")


if __name__ == "__main__":
    main()
