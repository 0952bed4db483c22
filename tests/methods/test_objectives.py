"""Objectives checked against a per-row reference (the methods issue 13 added)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from invlearn_ray.methods.objectives import TrainBatch, make_watched_positive_objective
from invlearn_ray.training.config import TrainConfig


def batch(n_labeled: int, n_unlabeled: int, seed: int = 0) -> TrainBatch:
    generator = torch.Generator().manual_seed(seed)
    return TrainBatch(
        rows=torch.arange(n_labeled),
        users=torch.randint(0, 5, (n_labeled,), generator=generator),
        items=torch.randint(0, 7, (n_labeled,), generator=generator),
        labels=torch.randint(0, 2, (n_labeled,), generator=generator).float(),
        unlabeled_users=torch.randint(0, 5, (n_unlabeled,), generator=generator),
        unlabeled_items=torch.randint(0, 7, (n_unlabeled,), generator=generator),
    )


TABLE = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)) * 3


def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return TABLE[users, items]


@pytest.mark.parametrize(
    ("source", "sampled_per_row"), [("observed", 0), ("both", 2), ("sampled", 2)]
)
def test_watched_positive_is_a_weighted_mean_with_observed_rows_as_positives(
    source, sampled_per_row
):
    config = TrainConfig(
        method="watched_positive", unlabeled_source=source, sampling_rate=2, observed_weight=0.3
    )
    n_labeled, n_observed = 4, 5
    rows = batch(n_labeled, sampled_per_row * n_labeled + n_observed)
    loss = make_watched_positive_objective(config)(score, rows, 0, 0)

    labeled = F.binary_cross_entropy_with_logits(
        score(rows.users, rows.items), rows.labels, reduction="sum"
    )
    sampled_logits = score(rows.unlabeled_users, rows.unlabeled_items)[
        : sampled_per_row * n_labeled
    ]
    observed_logits = score(rows.unlabeled_users, rows.unlabeled_items)[
        sampled_per_row * n_labeled :
    ]
    sampled = F.binary_cross_entropy_with_logits(
        sampled_logits, torch.zeros_like(sampled_logits), reduction="sum"
    )
    observed = F.binary_cross_entropy_with_logits(
        observed_logits, torch.ones_like(observed_logits), reduction="sum"
    )
    torch.testing.assert_close(loss.total, labeled + sampled + 0.3 * observed)
    expected_count = n_labeled + sampled_per_row * n_labeled + 0.3 * n_observed
    assert loss.count.item() == pytest.approx(expected_count)


def test_watched_positive_is_finite_at_extreme_logits():
    config = TrainConfig(method="watched_positive", unlabeled_source="observed")
    rows = batch(3, 4)
    loss = make_watched_positive_objective(config)(
        lambda users, items: 1e4 * torch.sign(score(users, items)), rows, 0, 0
    )
    assert torch.isfinite(loss.total)
