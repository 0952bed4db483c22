"""Scoring a model on a dataset's splits: the reports the trainer selects on and publishes.

* :func:`evaluate_split` — AUC, GAUC, NDCG@K, MRR (and random floors) over a split's own
  labeled rows, the paper's protocol;
* :func:`evaluate_full_ranking` — Recall@K / NDCG@K over every item a user has not trained on
  (the BSL protocol, the one to use for ranking claims — method.md §6), for every test user or,
  under a budget, for a seeded sample of them (:data:`FULL_RANKING_PROTOCOLS`);
* :func:`evaluation_shard` — the validation and test users a data-parallel worker holds and
  scores; the two evaluations above then take the worker's :class:`Collective` and combine
  the shards' mergeable statistics, so every worker reports the one-process numbers;
* :func:`annotation_quality` — how well the model's implied labels of *unlabeled* rows match
  their hidden truth. IDL's weights favour label 1 exactly when ``ℓ(z, 0) > ℓ(z, 1)``, i.e. when
  the logit ``z > 0``, so the annotation of a row is ``1[z > 0]`` for every method. Thresholded
  accuracy depends on where the logits sit; the annotation *AUC* (the score ranked against the
  hidden labels) does not, and is the figure to compare methods by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from invlearn_ray.data.recdata import UNKNOWN_LABEL, Interactions, RecData, UserItemIndex
from invlearn_ray.evaluation.full_ranking import (
    UserSample,
    draw_user_sample,
    finalize_full_ranking,
    full_ranking_population,
    full_ranking_stats,
)
from invlearn_ray.evaluation.metrics import (
    MetricTotals,
    RowMetricStats,
    auc,
    finalize_row_metrics,
    mann_whitney_u,
    row_metric_stats,
    row_metrics_report,
    user_shard,
)
from invlearn_ray.methods.losses import idl_weights
from invlearn_ray.models.backbones import Backbone
from invlearn_ray.optim.collective import Collective, LocalCollective, all_gather_rows

FULL_RANKING_PROTOCOLS = ("auto", "exact", "sampled_users")
"""How the test split's full-catalogue ranking is computed:

* ``exact`` — every test user with a target is ranked against the whole catalogue
  (``full_*`` metrics);
* ``sampled_users`` — a seeded simple random sample of ``sample_users`` of them, each ranked
  against the whole catalogue (``sampled_users_*`` metrics, with standard errors). Ranking a
  sampled user exactly keeps the metric: the sample mean is an unbiased estimate of the exact
  per-user mean, and its standard error says how far to trust it. Ranking each user against a
  sample of *items* instead would change the metric itself, and can even reorder models
  (Krichene & Rendle, *On Sampled Metrics for Item Recommendation*, KDD 2020). Time ∝
  ``sample_users`` × items: bounded in users, linear in the catalogue;
* ``auto`` — ``exact`` when the backbone is factorized (one matrix product per user batch: time
  ∝ users × items × dim, memory one batch of scores) or when there are no more users than the
  sample would hold; ``sampled_users`` otherwise — a NeuMF head pays ~10k multiply-adds per
  pair, so its exact ranking took the time of 3–6 IG epochs at ML-1M size and ~50 min at
  Micro-Video size on 2 CPU cores, the sample of 1000 users ~5 s and ~33 s
  (``benchmarks/eval_speed.py``).
"""


@torch.no_grad()
def score_pairs(model: Backbone, users: Tensor, items: Tensor, batch_size: int = 1 << 16) -> Tensor:
    """Logits of ``(users[k], items[k])`` pairs, in batches (results do not depend on the size).

    Factorized backbones score from their :class:`~invlearn_ray.models.backbones.Factors`, built
    once per call: LightGCN then propagates once, not once per batch. Time ∝ rows.
    """
    factors = model.factors()
    score = model if factors is None else factors.pair_scores
    if len(users) <= batch_size:
        return score(users, items)
    return torch.cat(
        [
            score(users[start : start + batch_size], items[start : start + batch_size])
            for start in range(0, len(users), batch_size)
        ]
    )


def evaluation_shard(data: RecData, rank: int, world_size: int) -> RecData:
    """``data`` with only the validation and test rows of worker ``rank``'s users
    (:func:`~invlearn_ray.evaluation.metrics.user_shard`:
    ``user % world_size == rank``), so a worker
    holds and scores ~1/``world_size`` of them. Idempotent: a shard's shard is itself.
    Training rows, the seen-item index and observed-unlabeled rows are kept whole (any worker's
    batch may sample any user's unseen items). Time ∝ validation + test rows."""
    if world_size == 1:
        return data
    valid = user_shard(data.valid.users, rank, world_size)
    test = user_shard(data.test.users, rank, world_size)
    return replace(
        data,
        valid=data.valid.take(valid),
        test=data.test.take(test),
        cold_valid=None if data.cold_valid is None else data.cold_valid[valid],
        cold_test=None if data.cold_test is None else data.cold_test[test],
    )


def combine_row_metrics(stats: RowMetricStats, collective: Collective) -> dict[str, float]:
    """The :func:`~invlearn_ray.evaluation.metrics.evaluate_rows` report of every worker's shard, on
    every worker. One worker: :func:`finalize_row_metrics` itself, bit for bit. Several: the
    global AUC as a Mann–Whitney count of each worker's positives against every worker's sorted
    negatives (an all-gather of negative scores, 4 bytes a row plus padding to the largest
    shard), then one all-reduce of that count, the class counts and the per-user totals.
    Every worker reads the same numbers, so all take the same early-stopping decision.
    Time ∝ the shard's rows × log(rows)."""
    if collective.world_size == 1:
        return finalize_row_metrics(stats)
    labels = stats.labels
    negatives = stats.scores[~labels]
    ascending = negatives.flip(0) if stats.presorted else torch.sort(negatives).values
    positives = stats.scores[labels]
    shards = all_gather_rows(collective, ascending)
    u_statistic = sum(float(mann_whitney_u(positives, shard)) for shard in shards)
    totals = stats.totals.values
    counts = totals.new_tensor([u_statistic, len(positives), len(negatives)])
    summed = torch.cat([counts, totals])
    collective.all_reduce_sum_([summed])
    u_total, n_positives, n_negatives = summed[:3].tolist()
    if n_positives == 0 or n_negatives == 0:
        raise ValueError(
            f"evaluate_rows: only one class is present ({int(n_positives)} positives among "
            f"{int(n_positives + n_negatives)} rows); AUC needs positives and negatives — "
            "evaluate on rows that carry both labels"
        )
    auc_value = u_total / (n_positives * n_negatives)
    return row_metrics_report(auc_value, MetricTotals(stats.totals.keys, summed[3:]))


def evaluate_split(
    model: Backbone,
    split: Interactions,
    ks: Sequence[int] = (10, 20),
    collective: Collective | None = None,
) -> dict:
    """The paper's row metrics on one labeled split.

    With a ``collective`` over several workers, ``split`` is this worker's
    :func:`evaluation_shard` of it and the report covers every worker's shard: identical on
    every worker and equal to the one-process report up to float64 rounding of the per-user
    sums (~1e-16 relative; the AUC exactly). Time ∝ the shard's rows × log(rows).
    """
    was_training = model.training
    model.eval()
    scores = score_pairs(model, split.users, split.items)
    model.train(was_training)
    stats = row_metric_stats(scores, split.labels, split.users, ks=ks)
    return combine_row_metrics(stats, collective or LocalCollective())


def resolve_full_ranking(protocol: str, factorized: bool, users: int, sample_users: int) -> str:
    """``exact`` or ``sampled_users`` for a requested protocol (see :data:`FULL_RANKING_PROTOCOLS`).

    Args:
        protocol: the requested protocol. factorized: whether the backbone has
            :meth:`~invlearn_ray.models.backbones.Backbone.factors`. users: users an exact ranking
            would rank. sample_users: the sample's size.
    """
    if protocol not in FULL_RANKING_PROTOCOLS:
        raise ValueError(
            f"unknown full-ranking protocol {protocol!r}; valid: {list(FULL_RANKING_PROTOCOLS)}"
        )
    if protocol != "auto":
        return protocol
    return "exact" if factorized or users <= sample_users else "sampled_users"


@dataclass(frozen=True)
class FullRanking:
    """A full-ranking evaluation: its metrics, and the user sample it ranked, if any.

    Attributes:
        metrics: ``full_*`` or ``sampled_users_*`` keys
            (:func:`~invlearn_ray.evaluation.full_ranking.finalize_full_ranking`).
        sample: the sampled users (None for the exact ranking).
    """

    metrics: dict[str, float]
    sample: UserSample | None

    def record(self) -> dict[str, Any]:
        """The sample as plain JSON (empty for the exact ranking), for the run's record."""
        if self.sample is None:
            return {}
        return {
            "protocol": "sampled_users",
            "seed": self.sample.seed,
            "population": self.sample.population,
            "users": self.sample.users.tolist(),
        }


def evaluate_full_ranking(
    model: Backbone,
    split: Interactions,
    seen: UserItemIndex,
    ks: Sequence[int] = (20,),
    user_batch_size: int = 1024,
    protocol: str = "exact",
    sample_users: int = 1000,
    seed: int = 0,
    collective: Collective | None = None,
) -> FullRanking:
    """Full-catalogue Recall@K / NDCG@K for the split's positive items, training items excluded.

    Args:
        model: the backbone; ranked through its
            :meth:`~invlearn_ray.models.backbones.Backbone.catalogue_scorer`.
        split: labeled rows; its positives are the targets.
        seen: each user's training items (never candidates).
        ks: cut-offs. user_batch_size: users scored at once (memory: that many × n_items).
        protocol: one of :data:`FULL_RANKING_PROTOCOLS`.
        sample_users: the size of the ``sampled_users`` protocol's sample.
        seed: seeds the user sample (drawn once, from these arguments alone).
        collective: with several workers, ``split`` is this worker's :func:`evaluation_shard`;
            the users to rank are agreed from every shard's (one all-gather of user ids), each
            worker ranks its own, and the totals are summed (one all-reduce): the report is
            identical on every worker and equals the one-process one up to float64 rounding.

    Returns:
        The metrics — ``full_*`` keys for the exact ranking, ``sampled_users_*`` keys for a
        sample — and the sample, if one was drawn.
    """
    positives = split.take(split.labels > 0.5)
    relevant = UserItemIndex.from_pairs(
        positives.users.cpu(), positives.items.cpu(), seen.n_users, seen.n_items
    ).to(split.users.device)
    users = torch.unique(positives.users)
    collective = collective or LocalCollective()
    local_population = full_ranking_population(users, relevant, seen.to(users.device))
    population = torch.cat(all_gather_rows(collective, local_population))
    chosen = resolve_full_ranking(
        protocol, model.factors() is not None, len(population), sample_users
    )
    sample = None
    if chosen == "sampled_users":
        sample = draw_user_sample(population, sample_users, seed)
        users = sample.users[torch.isin(sample.users, local_population)]
    was_training = model.training
    model.eval()
    totals = full_ranking_stats(
        model.catalogue_scorer(), users, relevant, seen, ks=ks, user_batch_size=user_batch_size
    )
    model.train(was_training)
    collective.all_reduce_sum_([totals.values])
    return FullRanking(finalize_full_ranking(totals, sample), sample)


@torch.no_grad()
def annotation_quality(
    logits: Tensor, hidden_labels: Tensor, prefix: str, idl_temperature: float | None = None
) -> dict[str, float]:
    """How well the model annotates unlabeled rows, against their hidden labels.

    * ``{prefix}_auc`` — the AUC of the logits against the hidden labels: the annotation as a
      ranking, free of any threshold (ties averaged, as
      :func:`~invlearn_ray.evaluation.metrics.auc`);
    * ``{prefix}_accuracy``, ``_precision``, ``_recall`` — of the thresholded annotation
      ``1[z > 0]``;
    * ``{prefix}_weight_auc`` (when ``idl_temperature`` is given: IDL and IG) — the AUC of the
      IDL weight w¹. It is **not** new information: w¹ = σ((2/T)·(log ℓ(z,0) − log ℓ(z,1))) is
      strictly increasing in z for every temperature T, so it ranks the rows as the logits do
      and its AUC equals ``{prefix}_auc`` except where float rounding saturates w¹ at 0 or 1
      and turns distinct logits into ties (tested). It is reported because the paper reads
      its annotation through the weights.

    ``logits`` are the model's on the rows (:func:`score_pairs`; the trainer scores its
    diagnostic rows once for this and the IDL weight histogram). Rows whose hidden label is
    unknown are ignored. ``{prefix}_rows`` says how many rows were judged,
    ``{prefix}_true_positive_rate`` how many of them are truly positive (the base rate, to
    read the others against). AUCs are NaN when the rows hold one class only. Time ∝ rows ·
    log rows.
    """
    known = hidden_labels != UNKNOWN_LABEL
    if not bool(known.any()):
        return {}
    logits = logits[known]
    predicted = logits > 0
    truth = hidden_labels[known] == 1
    true_positive = (predicted & truth).sum().item()
    n_predicted, n_true, n_rows = predicted.sum().item(), truth.sum().item(), int(known.sum())
    both_classes = 0 < n_true < n_rows
    report = {
        f"{prefix}_rows": n_rows,
        f"{prefix}_true_positive_rate": n_true / n_rows,
        f"{prefix}_auc": auc(logits, truth) if both_classes else float("nan"),
        f"{prefix}_accuracy": (predicted == truth).float().mean().item(),
        f"{prefix}_precision": true_positive / n_predicted if n_predicted else float("nan"),
        f"{prefix}_recall": true_positive / n_true if n_true else float("nan"),
    }
    if idl_temperature is not None:
        pos_weights, _ = idl_weights(logits, idl_temperature)
        report[f"{prefix}_weight_auc"] = auc(pos_weights, truth) if both_classes else float("nan")
    return report
