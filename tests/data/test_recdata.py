"""The in-memory dataset contract: the per-user item index and the split containers."""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.data.recdata import Interactions, UserItemIndex

USERS = torch.tensor([2, 0, 2, 0, 2, 2])
ITEMS = torch.tensor([4, 3, 0, 1, 4, 2])  # (2, 4) appears twice


def test_index_keeps_each_pair_once_sorted_per_user():
    index = UserItemIndex.from_pairs(USERS, ITEMS, n_users=3, n_items=5)
    assert index.indptr.tolist() == [0, 2, 2, 5]
    assert index.items.tolist() == [1, 3, 0, 2, 4]
    assert index.counts().tolist() == [2, 0, 3]


def test_contains_answers_every_pair_like_a_python_set():
    index = UserItemIndex.from_pairs(USERS, ITEMS, n_users=3, n_items=5)
    pairs = {(int(u), int(i)) for u, i in zip(USERS, ITEMS, strict=True)}
    users = torch.arange(3).repeat_interleave(5)
    items = torch.arange(5).repeat(3)
    expected = [(int(u), int(i)) in pairs for u, i in zip(users, items, strict=True)]
    assert index.contains(users, items).tolist() == expected


def test_dense_rows_marks_exactly_each_users_items():
    index = UserItemIndex.from_pairs(USERS, ITEMS, n_users=3, n_items=5)
    mask = index.dense_rows(torch.tensor([2, 1, 0, 2]))
    assert mask.tolist() == [
        [True, False, True, False, True],
        [False] * 5,
        [False, True, False, True, False],
        [True, False, True, False, True],
    ]


def test_out_of_range_ids_are_rejected():
    with pytest.raises(ValueError, match="out of range"):
        UserItemIndex.from_pairs(torch.tensor([3]), torch.tensor([0]), n_users=3, n_items=5)


def test_interactions_reject_mismatched_columns_and_integer_labels():
    with pytest.raises(ValueError, match="differ in length"):
        Interactions(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="floating"):
        Interactions(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
