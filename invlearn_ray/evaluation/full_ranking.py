"""Full-catalogue Recall@K / NDCG@K (the BSL protocol): every item a user did not see in training.

For each user, every item outside ``exclude`` (the training items) is a candidate and the
user's ``relevant`` items (positive test items) are the targets (method.md §6). Users are
ranked in batches, and beyond the batch's ``[B, n_items]`` scores nothing costs users × items:
training items are excluded by a ``-inf`` scatter, the top of each row comes from
:mod:`invlearn_ray.evaluation.ranking`, targets are found by binary search, and only a row whose tie
group at the cut-off runs past the top window is counted whole. Ties are resolved in
expectation over random orders, as in :mod:`invlearn_ray.evaluation.metrics`.

* :func:`full_ranking_metrics` — every given user (``full_*`` keys);
* :func:`full_ranking_stats` / :func:`finalize_full_ranking` — the same as totals that add up
  across disjoint shards of users (:func:`~invlearn_ray.evaluation.metrics.merge_totals`): a worker
  ranks its users, the totals' ``values`` are all-reduced, and every worker finalizes;
* :func:`draw_user_sample` — a seeded sample of users, ranked the same way, whose report names
  itself (``sampled_users_*`` keys with standard errors): an unbiased estimate of the ``full_``
  means where an exact ranking costs too much. Sharded, every worker draws the same sample from
  the gathered population (8 bytes a user) and ranks its share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from invlearn_ray.data.hashing import hash_keys
from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.evaluation.metrics import (
    MetricTotals,
    check_cutoff,
    discount_cumsum,
    metric_key,
)
from invlearn_ray.evaluation.ranking import TopWindow, exclude_seen_, top_window

__all__ = [
    "UserSample",
    "draw_user_sample",
    "finalize_full_ranking",
    "full_ranking_metrics",
    "full_ranking_population",
    "full_ranking_stats",
]

_FLOAT = torch.float64


def _tie_groups(sorted_scores: Tensor) -> tuple[Tensor, Tensor]:
    """First and one-past-last position of each entry's tie group along rows sorted descending."""
    width = sorted_scores.shape[1]
    position = torch.arange(width, device=sorted_scores.device).expand_as(sorted_scores)
    changes = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    edge = torch.ones_like(sorted_scores[:, :1], dtype=torch.bool)
    starts = torch.cat([edge, changes], 1)
    ends = torch.cat([changes, edge], 1)
    group_start = torch.where(starts, position, 0).cummax(1).values
    group_last = torch.where(ends, position, width).flip(1).cummin(1).values.flip(1)
    return group_start, group_last + 1


def _is_member(queries: Tensor, sorted_keys: Tensor) -> Tensor:
    """``queries`` found in ``sorted_keys`` (binary search; time ∝ queries × log keys)."""
    if not len(sorted_keys):
        return torch.zeros_like(queries, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, queries).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[position] == queries


def _targets(
    users: Tensor, relevant: UserItemIndex, exclude: UserItemIndex
) -> tuple[Tensor, Tensor, Tensor]:
    """The users' targets — relevant items not seen in training.

    Returns the targets as sorted keys ``user * n_items + item``, their number per user and how
    many relevant items were seen. ``users`` must ascend. Time ∝ their relevant and seen items.
    """
    n_items = relevant.n_items
    rows, items = relevant.batch_pairs(users)
    keys = users[rows] * n_items + items
    seen_rows, seen_items = exclude.batch_pairs(users)
    seen = _is_member(keys, users[seen_rows] * n_items + seen_items)
    counts = torch.bincount(rows[~seen], minlength=len(users))
    return keys[~seen], counts, seen.sum()


def _tied_over_rows(
    scores: Tensor,
    threshold: Tensor,
    users: Tensor,
    relevant: UserItemIndex,
    exclude: UserItemIndex,
) -> tuple[Tensor, Tensor]:
    """Candidates tied at ``threshold`` and the targets among them, over whole rows.

    Dense (``len(users) × n_items``), for the rare rows whose tie group at the cut-off may
    extend past the top window.
    """
    excluded = exclude.dense_rows(users)
    tied = (scores == threshold) & ~excluded
    targets = relevant.dense_rows(users) & ~excluded
    return tied.sum(1), (tied & targets).sum(1).to(_FLOAT)


def _cutoff_metrics(
    window: TopWindow,
    hit: Tensor,
    group_discount: Tensor,
    k: int,
    n_targets: Tensor,
    discount: Tensor,
    whole_rows: tuple[Tensor, Tensor, UserItemIndex, UserItemIndex],
) -> tuple[Tensor, Tensor]:
    """Recall@k and NDCG@k of one user batch from its top window; expectations over random
    orders of tied scores.

    With ``t`` the k-th best score, every candidate scored above ``t`` is inside the top k
    with its tie group complete there; the tie group at ``t`` straddles the cut: it fills ``q``
    of the remaining slots, so each of its ``G`` members is inside with probability ``q/G`` and
    the group spreads its mean gain over those slots' discounts. ``G`` and its targets are
    counted in the window when the group ends inside it (the window's last score is below
    ``t``, or the window is the whole row), else over the user's whole row — rare for trained
    models, every row for a constant scorer. ``t = -inf`` (fewer than k candidates) is counted
    over the whole row too, where the training items can be told apart.
    """
    scores, users, relevant, exclude = whole_rows
    top = window.scores
    threshold = top[:, k - 1 : k]
    above = top[:, :k] > threshold
    n_above = above.sum(1)
    hits = (hit[:, :k] * above).sum(1)
    dcg = (hit[:, :k] * group_discount[:, :k] * above).sum(1)
    tied = top == threshold
    n_tied, tied_hits = tied.sum(1), (hit * tied).sum(1)
    crossing = threshold[:, 0] == -torch.inf
    if window.width < scores.shape[1]:
        crossing |= top[:, -1] == threshold[:, 0]
    rows = crossing.nonzero().squeeze(1)
    if len(rows):
        n_tied[rows], tied_hits[rows] = _tied_over_rows(
            scores[rows], threshold[rows], users[rows], relevant, exclude
        )
    tied_share = tied_hits / n_tied.clamp(min=1)
    slots = torch.minimum(n_above + n_tied, torch.full_like(n_above, k)) - n_above
    hits = hits + tied_share * slots
    dcg = dcg + tied_share * (discount[n_above + slots] - discount[n_above])
    ideal = discount[n_targets.clamp(min=1, max=k)]
    return hits / n_targets, dcg / ideal


def _check_users(
    users: Tensor, relevant: UserItemIndex, exclude: UserItemIndex, allow_empty: bool = False
) -> Tensor:
    caller = "full_ranking_metrics"
    if users.dim() != 1 or users.is_floating_point() or users.dtype == torch.bool:
        raise ValueError(f"{caller}: users must be a 1-D integer tensor of user ids")
    if relevant.n_items != exclude.n_items:
        raise ValueError(
            f"{caller}: relevant covers {relevant.n_items} items but exclude {exclude.n_items}; "
            "build both indexes over the same item id range"
        )
    if not len(users):
        if allow_empty:
            return users.to(torch.int64)
        raise ValueError(f"{caller}: no users to evaluate")
    ordered = torch.sort(users.to(torch.int64)).values
    n_users = min(relevant.n_users, exclude.n_users)
    if int(ordered[0]) < 0 or int(ordered[-1]) >= n_users:
        bad = int(ordered[0]) if int(ordered[0]) < 0 else int(ordered[-1])
        raise ValueError(f"{caller}: user id {bad} is outside the indexes' range 0..{n_users - 1}")
    repeated = ordered[1:] == ordered[:-1]
    if bool(repeated.any()):
        raise ValueError(
            f"{caller}: user {int(ordered[1:][repeated][0])} is listed more than once; each "
            "user must count once (deduplicate, e.g. with torch.unique)"
        )
    return ordered


def _ranking_total_keys(ks: Sequence[int]) -> tuple[str, ...]:
    per_k = [
        f"{metric}_at_{k}{part}"
        for k in ks
        for metric in ("recall", "ndcg")
        for part in ("_sum", "_squares")
    ]
    return (*per_k, "users", "skipped", "relevant_seen")


def full_ranking_population(
    users: Tensor, relevant: UserItemIndex, exclude: UserItemIndex
) -> Tensor:
    """The users among ``users`` (ascending) whom full-ranking metrics average over: those with
    at least one target, a relevant item not seen in training. Time ∝ their items."""
    ordered = _check_users(users, relevant, exclude, allow_empty=True)
    device = ordered.device
    _, n_targets, _ = _targets(ordered, relevant.to(device), exclude.to(device))
    return ordered[n_targets > 0]


def full_ranking_stats(
    score_users: Callable[[Tensor], Tensor],
    users: Tensor,
    relevant: UserItemIndex,
    exclude: UserItemIndex,
    ks: Sequence[int] = (20,),
    user_batch_size: int = 1024,
) -> MetricTotals:
    """Mergeable totals of :func:`full_ranking_metrics` on one shard of users (may be empty).

    Per cut-off k: sums and sums of squares of the users' Recall@k and NDCG@k; plus users
    ranked, users skipped (no target) and relevant items seen in training. Add shards with
    :func:`merge_totals`; :func:`finalize_full_ranking` turns them into the report. Arguments
    as in :func:`full_ranking_metrics`.
    """
    caller = "full_ranking_metrics"
    ks = list(dict.fromkeys(check_cutoff(caller, k) for k in ks))
    if user_batch_size < 1:
        raise ValueError(f"{caller}: user_batch_size must be >= 1, got {user_batch_size}")
    ordered = _check_users(users, relevant, exclude, allow_empty=True)
    device = ordered.device
    relevant, exclude = relevant.to(device), exclude.to(device)
    n_items = relevant.n_items
    target_keys, n_targets, relevant_seen = _targets(ordered, relevant, exclude)
    ranked = n_targets > 0
    candidates, n_targets = ordered[ranked], n_targets[ranked]
    cutoffs = [min(k, n_items) for k in ks]
    width = min(max(cutoffs) + 1, n_items)
    discount = discount_cumsum(width, device)

    sums = torch.zeros(len(ks), 4, dtype=_FLOAT, device=device)
    with torch.no_grad():
        for start in range(0, len(candidates), user_batch_size):
            batch = candidates[start : start + user_batch_size]
            scores = score_users(batch)
            _check_scores(scores, batch, n_items)
            exclude_seen_(scores, batch, exclude)
            window = top_window(scores, width)
            _check_window(window, batch)
            hit = _is_member(batch.unsqueeze(1) * n_items + window.items, target_keys)
            hit = hit.to(_FLOAT)
            group_start, group_end = _tie_groups(window.scores)
            group_discount = (discount[group_end] - discount[group_start]) / (
                group_end - group_start
            )
            batch_targets = n_targets[start : start + user_batch_size]
            for index, cutoff in enumerate(cutoffs):
                recall, ndcg = _cutoff_metrics(
                    window,
                    hit,
                    group_discount,
                    cutoff,
                    batch_targets,
                    discount,
                    (scores, batch, relevant, exclude),
                )
                sums[index] += torch.stack(
                    [recall.sum(), recall.square().sum(), ndcg.sum(), ndcg.square().sum()]
                )
    n_ranked = len(candidates)
    values = torch.cat(
        [sums.flatten(), sums.new_tensor([n_ranked, len(ordered) - n_ranked]), relevant_seen[None]]
    )
    return MetricTotals(_ranking_total_keys(ks), values.to(_FLOAT))


@dataclass(frozen=True)
class UserSample:
    """A seeded simple random sample, without replacement, of the users a full-ranking metric
    averages over (those with a target); see :func:`draw_user_sample`.

    Attributes:
        users: the sampled user ids, ascending.
        population: how many users it was drawn from.
        seed: the draw's seed.
    """

    users: Tensor
    population: int
    seed: int


_USER_SAMPLE_SALT = 0x7573_6572
"""Salt of the user-sample hash ("user"): independent of every other keyed draw."""


def draw_user_sample(population: Tensor, size: int, seed: int) -> UserSample:
    """The ``size`` users of ``population`` with the smallest keyed hash under ``seed``.

    Ordering users by a keyed hash is a uniformly random permutation, so the first ``size``
    are a simple random sample; a user's hash depends only on ``(seed, user id)``, so every
    process holding the same population (e.g. each data-parallel worker) draws the same sample
    without communicating. Time ∝ population.
    """
    if size < 1:
        raise ValueError(f"draw_user_sample: size must be >= 1, got {size}")
    population = torch.sort(population.to(torch.int64)).values
    order = torch.sort(hash_keys(seed, _USER_SAMPLE_SALT, population), stable=True).indices
    chosen = torch.sort(population[order[:size]]).values
    return UserSample(users=chosen, population=len(population), seed=seed)


def finalize_full_ranking(
    totals: MetricTotals, sample: UserSample | None = None
) -> dict[str, float]:
    """The full-ranking report from (merged) totals; the keys name the protocol.

    * ``sample=None`` — every user was ranked: ``full_recall_at_{k}``, ``full_ndcg_at_{k}``
      (means over ranked users), ``full_users``, ``full_skipped``, ``full_relevant_seen``.
    * a :class:`UserSample` — only its users were ranked, each against the full catalogue:
      ``sampled_users_recall_at_{k}`` and ``sampled_users_ndcg_at_{k}``, unbiased estimates of
      the ``full_`` means, each with its ``_stderr`` (sampling without replacement:
      ``sqrt((1 - n/N) · s²/n)``, ``s²`` the sample variance over the n sampled users, N the
      population), and ``sampled_users_count``, ``sampled_users_population``,
      ``sampled_users_seed``.

    Raises:
        ValueError: when no user was ranked, or a sample's users were not each ranked once.
    """
    caller = "full_ranking_metrics"
    values = totals.as_dict()
    users = int(values["users"])
    if users == 0:
        raise ValueError(
            f"{caller}: none of the {int(values['skipped'])} users has a relevant item; pass "
            "the users of the test split and its positive items"
        )
    ks = list(dict.fromkeys(int(key.split("_")[2]) for key in values if key.startswith("recall_")))
    report: dict[str, float] = {}
    if sample is None:
        for k in ks:
            report[metric_key(f"full Recall@{k}")] = values[f"recall_at_{k}_sum"] / users
            report[metric_key(f"full NDCG@{k}")] = values[f"ndcg_at_{k}_sum"] / users
        report[metric_key("full users")] = users
        report[metric_key("full skipped")] = int(values["skipped"])
        report[metric_key("full relevant seen")] = int(values["relevant_seen"])
        return report
    if users != len(sample.users) or int(values["skipped"]):
        raise ValueError(
            f"{caller}: the sample holds {len(sample.users)} users with targets, but the "
            f"totals ranked {users} and skipped {int(values['skipped'])}; rank each sampled "
            "user exactly once (shards must partition the sample)"
        )
    for k in ks:
        for metric in ("recall", "ndcg"):
            mean, stderr = _sample_mean(
                values[f"{metric}_at_{k}_sum"],
                values[f"{metric}_at_{k}_squares"],
                users,
                sample.population,
            )
            name = metric_key(f"sampled users {metric}@{k}")
            report[name] = mean
            report[f"{name}_stderr"] = stderr
    report[metric_key("sampled users count")] = users
    report[metric_key("sampled users population")] = sample.population
    report[metric_key("sampled users seed")] = sample.seed
    return report


def _sample_mean(total: float, squares: float, n: int, population: int) -> tuple[float, float]:
    """Mean and its standard error for a simple random sample without replacement."""
    mean = total / n
    if n < 2:
        return mean, math.nan
    variance = max(squares - n * mean * mean, 0.0) / (n - 1)
    return mean, math.sqrt((1.0 - n / population) * variance / n)


def full_ranking_metrics(
    score_users: Callable[[Tensor], Tensor],
    users: Tensor,
    relevant: UserItemIndex,
    exclude: UserItemIndex,
    ks: Sequence[int] = (20,),
    user_batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k over the whole catalogue minus each user's training items.

    The BSL paper's protocol (method.md §6): for each user, every item not in ``exclude`` is a
    candidate; the user's ``relevant`` items (positive test items) are the targets.
    ``Recall@k = hits@k / |relevant|`` (RecBole's definition) and ``NDCG@k`` has binary gains.
    Tied scores are resolved in expectation over random orders, so a constant scorer scores at
    the random level. Users are evaluated in ascending id order in batches of
    ``user_batch_size``; results do not depend on either.

    Cost per batch: the ``user_batch_size × n_items`` scores (the only object of that size; it
    bounds the memory), one ``-inf`` scatter at the batch's training items, one read of the
    scores for block maxima and a top-(k+1) over the best blocks
    (:func:`~invlearn_ray.evaluation.ranking.top_window`); relevance of the top items by binary
    search in the targets. Only a row whose tie group at the cut-off runs past the window is
    counted whole. Time ∝ users × items (the scoring's) + training and test rows.

    Relevant items that are also excluded (seen in training) cannot be recommended: they are
    dropped from the targets and counted in ``full_relevant_seen``. Users left without targets
    are skipped and counted in ``full_skipped``.

    Args:
        score_users: ``users [B] -> logits [B, n_items]``; called under ``torch.no_grad``. The
            ranking writes into the returned tensor (training items become ``-inf``), so return
            a fresh or scratch tensor, never a view of one that must stay intact.
        users: distinct user ids to evaluate, on the device ``score_users`` returns scores on.
        relevant: positive test items per user. exclude: training items per user.
        ks: cut-offs. user_batch_size: users scored per call of ``score_users``.

    Returns:
        ``full_recall_at_{k}``, ``full_ndcg_at_{k}`` (means over evaluated users),
        ``full_users``, ``full_skipped``, ``full_relevant_seen``.
    """
    _check_users(users, relevant, exclude)
    totals = full_ranking_stats(score_users, users, relevant, exclude, ks, user_batch_size)
    return finalize_full_ranking(totals)


def _check_scores(scores: Tensor, batch: Tensor, n_items: int) -> None:
    caller = "full_ranking_metrics"
    if tuple(scores.shape) != (len(batch), n_items):
        raise ValueError(
            f"{caller}: score_users returned shape {tuple(scores.shape)} for {len(batch)} users; "
            f"expected ({len(batch)}, {n_items}) — one logit per catalogue item"
        )
    if scores.device != batch.device:
        raise ValueError(
            f"{caller}: score_users returned scores on {scores.device} but users are on "
            f"{batch.device}; pass users on the model's device"
        )


def _check_window(window: TopWindow, batch: Tensor) -> None:
    # NaN ranks above every number, so a NaN logit at a candidate item reaches the window.
    nan_rows = torch.isnan(window.scores).any(1)
    if bool(nan_rows.any()):
        user = int(batch[nan_rows.nonzero()[0, 0]])
        raise ValueError(
            "full_ranking_metrics: score_users returned NaN for user "
            f"{user}; the model produced non-finite logits — check training for divergence "
            "before evaluating"
        )
