"""The in-memory form of a built dataset: what the learning core consumes.

Everything the pure-PyTorch core needs is here as tensors, so training and evaluation never touch
files, Ray or pandas. Hidden labels of unlabeled rows (known only for synthetic data and for rows
hidden by the label-density option) live in their own field, which training code never reads:
they exist to *measure* how well IDL/IG annotate unlabeled rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from invlearn_ray.data.manifest import Manifest

UNKNOWN_LABEL = -1
"""Value of ``hidden_labels`` where the true label of an unlabeled row is not known."""


def _check_same_length(name: str, **columns: torch.Tensor) -> int:
    lengths = {key: len(value) for key, value in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{name}: columns differ in length: {lengths}")
    return next(iter(lengths.values()))


@dataclass(frozen=True)
class Interactions:
    """Labeled ``(user, item, label)`` rows; float 0/1 labels so losses can use them directly."""

    users: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        _check_same_length("Interactions", users=self.users, items=self.items, labels=self.labels)
        if self.users.dtype != torch.int64 or self.items.dtype != torch.int64:
            raise TypeError("Interactions: users and items must be int64 tensors")
        if not self.labels.is_floating_point():
            raise TypeError("Interactions: labels must be a floating tensor of 0/1")

    def __len__(self) -> int:
        return len(self.users)

    def to(self, device: torch.device | str) -> Interactions:
        return Interactions(self.users.to(device), self.items.to(device), self.labels.to(device))

    def take(self, index: torch.Tensor) -> Interactions:
        return Interactions(self.users[index], self.items[index], self.labels[index])

    @classmethod
    def empty(cls) -> Interactions:
        none = torch.zeros(0, dtype=torch.int64)
        return cls(none, none.clone(), torch.zeros(0))


@dataclass(frozen=True)
class ObservedUnlabeled:
    """Interactions whose feedback was unclear: observed, but without a reliable label.

    ``hidden_labels`` (int8, ``UNKNOWN_LABEL`` where unknown) is the ground truth used only to
    score annotation quality. Training code must read ``users`` and ``items`` only.
    """

    users: torch.Tensor
    items: torch.Tensor
    hidden_labels: torch.Tensor

    def __post_init__(self) -> None:
        _check_same_length(
            "ObservedUnlabeled", users=self.users, items=self.items, hidden=self.hidden_labels
        )

    def __len__(self) -> int:
        return len(self.users)

    def to(self, device: torch.device | str) -> ObservedUnlabeled:
        return ObservedUnlabeled(
            self.users.to(device), self.items.to(device), self.hidden_labels.to(device)
        )

    @classmethod
    def empty(cls) -> ObservedUnlabeled:
        none = torch.zeros(0, dtype=torch.int64)
        return cls(none, none.clone(), torch.zeros(0, dtype=torch.int8))


@dataclass(frozen=True)
class UserItemIndex:
    """Per-user sorted item lists in CSR form: ``items[indptr[u]:indptr[u + 1]]``.

    Used for exact exclusion when sampling unlabeled items and for removing training items from
    full-catalogue rankings.
    """

    indptr: torch.Tensor
    items: torch.Tensor
    n_items: int

    @classmethod
    def from_pairs(
        cls, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
    ) -> UserItemIndex:
        """Build from (possibly repeated, unsorted) pairs; duplicates are removed."""
        if len(users) and (int(users.max()) >= n_users or int(items.max()) >= n_items):
            raise ValueError("UserItemIndex: a user or item id is out of range")
        keys = torch.unique(users.to(torch.int64) * n_items + items.to(torch.int64))
        unique_users = torch.div(keys, n_items, rounding_mode="floor")
        counts = torch.bincount(unique_users, minlength=n_users)
        indptr = torch.zeros(n_users + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr=indptr, items=keys - unique_users * n_items, n_items=n_items)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> torch.Tensor:
        """Number of items per user."""
        return self.indptr[1:] - self.indptr[:-1]

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Vectorized membership test of each ``(users[k], items[k])`` pair."""
        keys = self.indptr.new_empty(0)
        if len(self.items):
            owners = torch.repeat_interleave(
                torch.arange(self.n_users, device=self.indptr.device), self.counts()
            )
            keys = owners * self.n_items + self.items
        query = users.to(torch.int64) * self.n_items + items.to(torch.int64)
        position = torch.searchsorted(keys, query).clamp(max=max(len(keys) - 1, 0))
        if not len(keys):
            return torch.zeros_like(query, dtype=torch.bool)
        return keys[position] == query

    def batch_pairs(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``(row, item)`` for every item of each given user, ``row`` its position in ``users``.

        Rows ascend, and items ascend within a row, so ``row * n_items + item`` is sorted.
        Vectorized; time and memory ∝ the listed items, never ``len(users) × n_items``.
        """
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
        return rows, self.items[first + torch.arange(len(rows), device=users.device)]

    def dense_rows(self, users: Tensor) -> Tensor:
        """``[len(users), n_items]`` bool mask of each given user's items, vectorized.

        For the few rows where a ranking must look at every item (see
        :mod:`invlearn_ray.evaluation.ranking`); memory ∝ ``len(users) × n_items``.
        """
        mask = torch.zeros(len(users), self.n_items, dtype=torch.bool, device=users.device)
        rows, items = self.batch_pairs(users)
        mask[rows, items] = True
        return mask

    def to(self, device: torch.device | str) -> UserItemIndex:
        return replace(self, indptr=self.indptr.to(device), items=self.items.to(device))


LabelOracle = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(users, items) -> int8 labels``: the planted truth of a synthetic dataset, for any pair."""


@dataclass
class RecData:
    """A built dataset held as tensors, ready for the core trainer.

    Attributes:
        n_users, n_items: id ranges (ids are contiguous ``0..n-1``).
        train_train: labeled rows the model is fitted on.
        train_test: the labeled slice of *training* data IG judges candidate steps on.
        valid: model-selection rows. test: scored once, for the selected model.
        observed_unlabeled: unclear interactions (and, with a label fraction < 1, hidden ones).
        seen_in_training: every item each user interacted with in the training split (labeled
            and unlabeled) — the exclusion set of unlabeled sampling and full-ranking metrics.
        truth: planted-truth oracle for synthetic data (None for real data).
        cold_valid / cold_test: True where the row's user or item never occurs in training.
        manifest: the dataset's manifest (provenance), as loaded or built; None for data
            assembled by hand.
    """

    n_users: int
    n_items: int
    train_train: Interactions
    train_test: Interactions
    valid: Interactions
    test: Interactions
    observed_unlabeled: ObservedUnlabeled
    seen_in_training: UserItemIndex
    truth: LabelOracle | None = None
    cold_valid: torch.Tensor | None = None
    cold_test: torch.Tensor | None = None
    name: str = "dataset"
    manifest: Manifest | None = None

    def to(self, device: torch.device | str) -> RecData:
        """Copy every tensor to ``device`` (the truth oracle stays where it is)."""
        return replace(
            self,
            train_train=self.train_train.to(device),
            train_test=self.train_test.to(device),
            valid=self.valid.to(device),
            test=self.test.to(device),
            observed_unlabeled=self.observed_unlabeled.to(device),
            seen_in_training=self.seen_in_training.to(device),
            cold_valid=None if self.cold_valid is None else self.cold_valid.to(device),
            cold_test=None if self.cold_test is None else self.cold_test.to(device),
        )

    def labeled_training(self) -> Interactions:
        """All labeled training rows (train_train ∪ train_test).

        Methods without a meta step (None, NS, ...) train on all of it, so that IG, which spends
        train_test on judging candidate steps, gets no more labeled data than its baselines.
        """
        return Interactions(
            torch.cat([self.train_train.users, self.train_test.users]),
            torch.cat([self.train_train.items, self.train_test.items]),
            torch.cat([self.train_train.labels, self.train_test.labels]),
        )

    def training_positives(self) -> Interactions:
        """Positive labeled training rows — e.g. the edges of LightGCN's graph."""
        labeled = self.labeled_training()
        return labeled.take(labeled.labels > 0.5)
