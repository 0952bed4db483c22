"""What each training method minimises on one batch (every method except IG's meta step).

An objective maps a scoring function ``score(users, items) -> logits`` and a
:class:`TrainBatch` to a :class:`BatchLoss` — a *sum* of loss terms and how many terms it holds —
so that a data-parallel step can all-reduce both and divide once (exact whatever the shard
sizes). Objectives are pure: the trainer differentiates them with ``torch.func`` (and may
``torch.compile`` them), which forbids side effects, so the one stateful method (SRNS) returns
what it wants recorded in ``BatchLoss.record`` and the trainer hands it back through the
objective's ``record`` method after the step. The losses themselves live in
:mod:`invlearn_ray.methods.losses`; this module only decides which rows each method feeds them,
and :mod:`invlearn_ray.methods.registry` says which objective each method uses.

Conventions shared by all methods:

* the NS family (NS, T-CE, R-CE, IDL, watched = positive) trains on one batch of labeled rows
  plus their unlabeled rows, pooled into a single mean — as the released code concatenates them;
* DNS/SRNS pair each labeled row with one hard negative chosen from its M candidates;
* the softmax family trains on positive rows against ``n_negatives`` sampled items; labeled
  negatives (explicit dislikes) are used only by the ``sl_*`` explicit-negative methods, which
  score each dislike against the same kind of candidate set (the dislike + sampled items).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from invlearn_ray.methods import losses
from invlearn_ray.methods.hard_negatives import (
    ScoreHistory,
    dns_select,
    select_candidates,
    srns_alpha_schedule,
    srns_likelihood,
    srns_select,
)

if TYPE_CHECKING:  # only an annotation: config -> methods -> this module at run time
    from invlearn_ray.training.config import TrainConfig


@dataclass(frozen=True)
class TrainBatch:
    """One step's rows. Optional fields are filled only for the methods that need them.

    Attributes:
        rows: positions of the labeled rows in the method's training set (SRNS history slots).
        users, items, labels: the labeled rows.
        unlabeled_users, unlabeled_items: unlabeled rows (NS family, IDL).
        candidates: ``[B, M]`` candidate items per labeled row (DNS, SRNS).
        negatives: ``[B, N]`` sampled items per labeled row (softmax family).
    """

    rows: Tensor
    users: Tensor
    items: Tensor
    labels: Tensor
    unlabeled_users: Tensor | None = None
    unlabeled_items: Tensor | None = None
    candidates: Tensor | None = None
    negatives: Tensor | None = None


@dataclass(frozen=True)
class BatchLoss:
    """A loss as (sum of terms, number of terms): the mean is ``total / count``.

    ``record`` is state a stateful objective wants stored after the step (SRNS: candidate
    scores), returned instead of written so the objective stays pure.
    """

    total: Tensor
    count: Tensor
    record: Tensor | None = None


Scorer = Callable[[Tensor, Tensor], Tensor]
"""``(users, items) -> logits`` of the model at the parameters being differentiated."""

Objective = Callable[[Scorer, TrainBatch, int, int], BatchLoss]
"""``(score, batch, global_step, epoch) -> BatchLoss``."""


def _count(value: int, like: Tensor) -> Tensor:
    # torch.full, not torch.as_tensor: no host-to-device copy, so a CUDA graph can capture it.
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _ns_rows(score: Scorer, batch: TrainBatch) -> tuple[Tensor, Tensor, int]:
    """Logits and labels of the labeled rows followed by the unlabeled rows (as 0)."""
    users = torch.cat([batch.users, batch.unlabeled_users])
    items = torch.cat([batch.items, batch.unlabeled_items])
    labels = torch.cat(
        [batch.labels, torch.zeros_like(batch.unlabeled_users, dtype=batch.labels.dtype)]
    )
    return score(users, items), labels, len(batch.users)


def none_objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
    """*None*: BCE on labeled rows only."""
    logits = score(batch.users, batch.items)
    total = losses.bce_with_logits(logits, batch.labels, reduction="sum")
    return BatchLoss(total, _count(len(logits), total))


def ns_objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
    """*NS*: BCE on labeled rows and on sampled unlabeled rows labeled 0."""
    logits, labels, _ = _ns_rows(score, batch)
    total = losses.bce_with_logits(logits, labels, reduction="sum")
    return BatchLoss(total, _count(len(logits), total))


def make_watched_positive_objective(config: TrainConfig) -> Objective:
    """*Watched = positive*: labeled BCE plus every observed-unlabeled row as a positive.

    An observed row's BCE toward label 1 is weighted by ``observed_weight`` (a watched but
    unrated or unclear item is a *likely* positive, not a sure one). The method always reads
    the observed rows (``MethodSpec.observed_rows``); ``unlabeled_source`` only says whether
    sampled non-interacted rows join as negatives — ``sampled`` or ``both``: yes, the classic
    implicit-feedback set-up with the labels on top; ``observed``: no. One weighted mean over
    every row, pooled as NS pools. The batch source puts a batch's sampled rows first
    (``sampling_rate`` per labeled row), then its observed rows; that is how they are told
    apart here.
    """
    with_sampled = config.unlabeled_source in ("sampled", "both")
    sampled_per_row = config.sampling_rate if with_sampled else 0
    observed_weight = config.observed_weight

    def objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        logits, _, n_labeled = _ns_rows(score, batch)
        n_sampled = n_labeled * sampled_per_row
        n_observed = len(logits) - n_labeled - n_sampled
        labels = torch.cat(
            [
                batch.labels,
                torch.zeros(n_sampled, dtype=logits.dtype, device=logits.device),
                torch.ones(n_observed, dtype=logits.dtype, device=logits.device),
            ]
        )
        weights = torch.cat(
            [
                torch.ones(n_labeled + n_sampled, dtype=logits.dtype, device=logits.device),
                torch.full(
                    (n_observed,), observed_weight, dtype=logits.dtype, device=logits.device
                ),
            ]
        )
        total = losses.bce_with_logits(logits, labels, weights=weights, reduction="sum")
        return BatchLoss(total, weights.sum())

    return objective


def make_tce_objective(config: TrainConfig) -> Objective:
    """*T-CE* on the NS rows: the largest-loss positives are dropped, at a growing rate."""

    def objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        logits, labels, _ = _ns_rows(score, batch)
        rate = losses.drop_rate_schedule(step, config.max_drop, config.num_gradual)
        keep = losses.truncation_keep_mask(logits, labels, rate)
        total = losses.bce_with_logits(
            logits, labels, weights=keep.to(logits.dtype), reduction="sum"
        )
        return BatchLoss(total, keep.sum().to(total.dtype))

    return objective


def make_rce_objective(config: TrainConfig) -> Objective:
    """*R-CE* on the NS rows: each row's BCE weighted by its (stop-grad) confidence^β."""

    def objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        logits, labels, _ = _ns_rows(score, batch)
        total = losses.reweighted_bce(logits, labels, config.beta, reduction="sum")
        return BatchLoss(total, _count(len(logits), total))

    return objective


def make_idl_objective(config: TrainConfig) -> Objective:
    """*IDL*: BCE on labeled rows plus the inverse dual loss on unlabeled rows, one mean."""

    def objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        logits, labels, n_labeled = _ns_rows(score, batch)
        labeled = losses.bce_with_logits(logits[:n_labeled], labels[:n_labeled], reduction="sum")
        dual = losses.inverse_dual_loss(
            logits[n_labeled:], temperature=config.idl_temperature, reduction="sum"
        ).loss
        return BatchLoss(labeled + dual, _count(len(logits), labeled))

    return objective


def _candidate_logits(score: Scorer, users: Tensor, candidates: Tensor) -> Tensor:
    n_rows, n_candidates = candidates.shape
    flat = score(users.repeat_interleave(n_candidates), candidates.reshape(-1))
    return flat.view(n_rows, n_candidates)


def _hard_negative_loss(
    score: Scorer, batch: TrainBatch, logits: Tensor, choice: Tensor, record: Tensor | None = None
) -> BatchLoss:
    negatives = select_candidates(batch.candidates, choice)
    negative_logits = score(batch.users, negatives)
    total = losses.bce_with_logits(logits, batch.labels, reduction="sum")
    total = total + losses.bce_with_logits(
        negative_logits, torch.zeros_like(negative_logits), reduction="sum"
    )
    return BatchLoss(total, _count(2 * len(logits), total), record)


def dns_objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
    """*DNS*: labeled BCE + the highest-scored of each row's M candidates as a negative."""
    logits = score(batch.users, batch.items)
    with torch.no_grad():
        choice = dns_select(_candidate_logits(score, batch.users, batch.candidates))
    return _hard_negative_loss(score, batch, logits, choice)


class SRNSObjective:
    """*SRNS*: like DNS, preferring candidates whose score varied over recent epochs.

    Each labeled training row keeps a fixed candidate pool (the batch source draws it once), so
    a candidate's score history is meaningful; scores are recorded once per epoch, when the row
    is trained. The likelihood is pointwise ``σ(f(u, j))`` because training is pointwise BCE.
    """

    def __init__(self, config: TrainConfig, n_rows: int, device: torch.device) -> None:
        self.config = config
        self.history = ScoreHistory(n_rows, config.n_candidates, config.srns_window, device=device)

    def __call__(self, score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        logits = score(batch.users, batch.items)
        with torch.no_grad():
            candidate_logits = _candidate_logits(score, batch.users, batch.candidates)
            config = self.config
            alpha = srns_alpha_schedule(epoch, config.srns_alpha, config.srns_warmup_epochs)
            choice = srns_select(candidate_logits, self.history.std(batch.rows), alpha)
            likelihood = srns_likelihood(candidate_logits)
        return _hard_negative_loss(score, batch, logits, choice, record=likelihood)

    def record(self, batch: TrainBatch, likelihood: Tensor) -> None:
        """After the step: store this epoch's candidate scores of the batch's rows."""
        self.history.update(batch.rows, likelihood)


def _softmax_candidates(score: Scorer, batch: TrainBatch, mask: Tensor) -> Tensor:
    """``[P, 1 + N]`` logits: each selected row's own item first, then its sampled items."""
    users = batch.users[mask]
    items = torch.cat([batch.items[mask].unsqueeze(1), batch.negatives[mask]], dim=1)
    return _candidate_logits(score, users, items)


def make_softmax_objective(config: TrainConfig) -> Objective:
    """*SL*, *BSL* and the explicit-negative ``sl_*`` methods.

    Positives: SL (τ) or BSL (τ1, τ2; focal softmax for ``sl_focal``) against the sampled items.
    Dislikes (``sl_*`` only): the disliked item among the same kind of candidate set, with the
    ε-smoothed negative-weight CE (``sl_epsce``) or the complement likelihood
    ``−log(1 − p)`` weighted by ``|neg_weight|`` (``sl_complement``, ``sl_focal``).
    """
    method = config.supervised_method

    def objective(score: Scorer, batch: TrainBatch, step: int, epoch: int) -> BatchLoss:
        positive = batch.labels > 0.5
        pos = _softmax_candidates(score, batch, positive)
        if method == "bsl":
            total = losses.bilateral_softmax_loss(
                pos[:, 0],
                pos[:, 1:],
                batch.users[positive],
                config.tau_pos,
                config.tau_neg,
                reduction="sum",
            )
            count = torch.unique(batch.users[positive]).numel()
        elif method == "sl_focal":
            target = torch.zeros(len(pos), dtype=torch.int64, device=pos.device)
            total = losses.focal_softmax_loss(
                pos / config.tau, target, config.focal_gamma, reduction="sum"
            )
            count = len(pos)
        else:
            total = losses.softmax_loss(pos[:, 0], pos[:, 1:], config.tau, reduction="sum")
            count = len(pos)
        if method.startswith("sl_"):
            disliked = ~positive
            neg = _softmax_candidates(score, batch, disliked) / config.tau
            target = torch.zeros(len(neg), dtype=torch.int64, device=neg.device)
            if len(neg) and method == "sl_epsce":
                total = total + losses.eps_negative_ce(
                    neg, target, weight=config.neg_weight, eps=config.eps, reduction="sum"
                )
            elif len(neg):
                total = total + abs(config.neg_weight) * losses.complement_nll(
                    neg, target, reduction="sum"
                )
            count += len(neg)
        return BatchLoss(total, _count(count, total))

    return objective
