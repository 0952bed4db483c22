"""Top-k over the unseen catalogue against full sorts in plain torch, with ties and exclusions."""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.evaluation.ranking import BLOCK, exclude_seen_, top_k_unseen, top_window

# Wide enough for the block path at the widths below (it needs >= 4 * width blocks).
WIDE = 40 * BLOCK + 37


def tied_scores(n_users: int, n_items: int, seed: int, levels: int = 8) -> torch.Tensor:
    """Scores on a coarse grid: ties within every row, and across block boundaries."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n_users, n_items), generator=generator).float() / levels


def random_seen(n_users: int, n_items: int, seed: int, rate: float = 0.3) -> UserItemIndex:
    generator = torch.Generator().manual_seed(seed)
    pairs = (torch.rand(n_users, n_items, generator=generator) < rate).nonzero().T
    return UserItemIndex.from_pairs(pairs[0], pairs[1], n_users, n_items)


@pytest.mark.parametrize("n_items", [50, WIDE])
@pytest.mark.parametrize("width", [1, 6])
def test_top_window_holds_the_best_scores_of_every_row(n_items, width):
    scores = torch.randn(9, n_items, generator=torch.Generator().manual_seed(n_items))
    scores[2] = 0.0  # one constant row
    scores[3, 5:] = -torch.inf  # a row with fewer finite scores than the window
    window = top_window(scores, width)
    expected = scores.sort(1, descending=True).values[:, :width]
    assert torch.equal(window.scores, expected)
    assert torch.equal(scores.gather(1, window.items), window.scores)
    assert all(len(set(row.tolist())) == width for row in window.items)


def test_top_window_of_tied_rows_gives_exact_values_on_the_block_path():
    scores = tied_scores(20, WIDE, seed=1, levels=50)
    window = top_window(scores, 6)
    assert torch.equal(window.scores, scores.sort(1, descending=True).values[:, :6])


def test_a_nan_score_reaches_the_window():
    scores = torch.randn(3, WIDE, generator=torch.Generator().manual_seed(0))
    scores[1, 4000] = float("nan")
    assert torch.isnan(top_window(scores, 3).scores[1]).any()


def test_exclude_seen_sets_exactly_the_seen_items_to_minus_infinity():
    seen = random_seen(6, 30, seed=2)
    users = torch.tensor([4, 0, 4, 5])
    scores = exclude_seen_(torch.zeros(4, 30), users, seen)
    assert torch.equal(torch.isinf(scores), seen.dense_rows(users))


@pytest.mark.parametrize("n_items", [12, 200, WIDE])
def test_top_k_unseen_equals_a_stable_sort_with_ties_broken_by_item(n_items):
    n_users, k = 30, 7
    scores = tied_scores(n_users, n_items, seed=n_items, levels=6)
    seen = random_seen(n_users, n_items, seed=3, rate=0.5)
    users = torch.arange(n_users)
    expected_scores = scores.clone().masked_fill_(seen.dense_rows(users), -torch.inf)
    expected = expected_scores.sort(dim=1, descending=True, stable=True)
    items, values = top_k_unseen(scores.clone(), users, seen, k)
    assert torch.equal(items, expected.indices[:, :k])
    assert torch.equal(values, expected.values[:, :k])


def test_top_k_unseen_of_distinct_scores_needs_no_whole_row_sort():
    scores = torch.randn(5, WIDE, generator=torch.Generator().manual_seed(4))
    seen = random_seen(5, WIDE, seed=5)
    items, values = top_k_unseen(scores.clone(), torch.arange(5), seen, 20)
    masked = scores.masked_fill(seen.dense_rows(torch.arange(5)), -torch.inf)
    assert torch.equal(items, masked.sort(1, descending=True).indices[:, :20])
    assert torch.equal(values, masked.gather(1, items))


def test_top_k_unseen_rejects_a_non_positive_k():
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_unseen(torch.zeros(1, 3), torch.tensor([0]), random_seen(1, 3, seed=0), 0)
