"""Which (user, item) pairs a synthetic user observes: one exposure model, two samplers.

Logged feedback is biased: users see popular items, and items they tend to like. Pair (u, i)
has the exposure weight ``w(u, i) = exp(log_pop_i + β z(u, i))`` (``z`` the planted truth's
logit, ``β`` the config's ``exposure_preference``) and is observed with probability
``min(1, c·w(u, i))``, independently of every other pair; one constant ``c`` makes the
expected number of observed pairs the configured one. Two samplers of this one law:

* :func:`pairwise_exposure` — a keyed hash per pair. Time and memory grow as users × items (a
  float32 weight per pair), so it refuses more than ``PAIRWISE_MAX_PAIRS`` pairs. The small
  presets use it: it defines their rows.
* :class:`SampledExposure` — time linear in the rows produced, never touching most pairs.

How sampled exposure is drawn. A Poisson process that puts ``λ = -log(1 - min(1, c·w))`` points
on a pair hits it at least once with probability exactly ``min(1, c·w)``; it is drawn by
thinning (Lewis & Shedler, 1979) an *envelope* that sums over strata of items, not over items:

1. **strata**: items are grouped by k-means on their factors (``clusters``), each cluster cut into
   ``rings`` by distance to its centre; stratum ``s`` has centre ``μ_s`` and radius ``r_s`` (the
   largest distance of its items). By Cauchy–Schwarz ``<p_u, q_i> <= <p_u, μ_s> + |p_u| r_s``
   on ``s``, so with ``a_i = exp(log_pop_i + β b_i)`` the rate
   ``e_i = c·e^{β(b_u + z0)}·a_i·e^{β(<p_u, μ_s> + |p_u| r_s)} >= c·w(u, i)`` for each item;
2. **items decided directly**: where a user's envelope puts more than
   ``DENSE_PROPOSALS_PER_ITEM`` proposals per item on a stratum, all its items; elsewhere the
   items whose envelope rate exceeds ``τ = SPARSE_MAX_CHANCE`` (a prefix: a stratum's items are
   stored by ``a_i``, largest first). Each is seen with probability ``min(1, c·w)``, a keyed
   hash per pair. This bounds a very active user's cost by the catalogue rather than by a flood
   of proposals on items already seen, and leaves the proposals only items with ``c·w <= τ``;
3. **proposals** for the other items: ``N_u ~ Poisson(κ Σ e)`` with ``κ = -log(1 - τ) / τ``
   (``-log(1 - x) <= κ x`` for ``x <= τ``); each picks a stratum in proportion to its remaining
   envelope mass, then one of its remaining items in proportion to ``a_i``;
4. **thinning**: a proposal of item ``i`` is kept with probability ``λ_i / (κ e_i) <= 1``. Kept
   proposals form a Poisson process of rates ``λ``; the distinct items they hit are seen.

Every draw is a keyed hash of ``(seed, user, proposal number)`` or ``(seed, user, item)``, so
the rows do not depend on how users are grouped into blocks, processes or engines. ``c`` solves
``Σ_{u,i} min(1, c·w) = expected pairs``, the sum estimated from importance-weighted pilot
proposals (the pairwise sampler solves it over every pair, so the two ``c`` differ by the
pilot's ~0.2% error; the law is otherwise the same, as ``tests/data/test_synthetic.py`` checks
pair by pair).

Cost of the sampled exposure: time O(rows / acceptance + users · S + items · clusters · 5) with
``S = clusters · rings`` strata; memory O(items · (dim + 4) + S · users per step + a block's
rows) — nothing of size users × items. The acceptance (kept / proposed, before decided items
and ``κ``) is estimated by the pilot and reported in the generation statistics; with 4 latent
dimensions, 1024 clusters × 4 rings and 131,690 items it is about 0.5 at β = 0.5 and 0.3 at
β = 1 (8 dimensions: 0.2 / 0.05). :func:`default_clusters` picks the clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from invlearn_ray.data.hashing import hash_uniform, stream_seed
from invlearn_ray.data.truth import PlantedTruth

PAIRWISE_MAX_PAIRS = 100_000_000
"""Most users × items pairs :func:`pairwise_exposure` enumerates (~0.4 GB of float32 weights)."""

_SALT_EXPOSURE = 0xE7B0
_SALT_CLUSTERS = 0xC105
_SALT_COUNT = 0xC0A7
_SALT_STRATUM = 0x57A7
_SALT_ITEM = 0x17E3
_SALT_KEEP = 0x4EE9
_SALT_PILOT_STRATUM = 0x9157
_SALT_PILOT_ITEM = 0x9117
_SALT_DENSE = 0xDE45

_PAIRS_PER_CHUNK = 1 << 21
_ENVELOPE_ENTRIES = 1 << 20
"""Users × strata per sampling step (8 MiB of float64): bounds the envelope's memory."""
_PILOT_PROPOSALS = 1 << 18
"""Calibration budget: kept pilot proposals per user are ``2^18 / users``, within 4..64."""
_PILOT_MAX = 1 << 14
"""Most pilot proposals for one user (a user whose envelope is very loose)."""
_KMEANS_ITERATIONS = 4
DENSE_PROPOSALS_PER_ITEM = 0.5
"""Above this many expected proposals per item, a user's stratum is decided item by item."""
SPARSE_MAX_CHANCE = 0.2
"""``τ``: a stratum where an item may be seen with a higher chance is decided item by item."""
_SPARSE_RATE_FACTOR = -math.log1p(-SPARSE_MAX_CHANCE) / SPARSE_MAX_CHANCE
"""``κ``: bounds ``-log(1 - x) / x`` for ``x <= τ`` (1.116 at τ = 0.2)."""
_FIXED_POINT_BITS = 40
"""Cumulative shares are compared as integers of this many bits: exact, never crossing rows."""


@dataclass(frozen=True)
class ExposureModel:
    """The exposure weights ``w(u, i) = exp(log_pop_i + β z(u, i))`` of a synthetic dataset.

    Attributes:
        truth: the planted truth (``z``).
        log_popularity: ``log_pop_i`` per item.
        preference: ``β``, how strongly exposure follows true preference.
        seed: seeds every exposure draw.
    """

    truth: PlantedTruth
    log_popularity: Tensor
    preference: float
    seed: int

    def user_log_weight(self, users: Tensor) -> Tensor:
        """``β (b_u + z0)``: the part of ``log w`` that depends on the user alone."""
        return self.preference * (self.truth.user_bias[users] + self.truth.base_logit)

    @cached_property
    def item_log_weights(self) -> Tensor:
        """``log a_i = log_pop_i + β b_i``: the part of ``log w`` that depends on the item alone."""
        return self.log_popularity + self.preference * self.truth.item_bias

    def log_weights(self, users: Tensor, items: Tensor) -> Tensor:
        """``log w(u, i)`` of each pair, float64, elementwise."""
        return (
            self.user_log_weight(users)
            + self.item_log_weights[items]
            + self.preference * _dot(self.truth.user_factors[users], self.truth.item_factors[items])
        )


def _dot(left: Tensor, right: Tensor) -> Tensor:
    """Row-wise dot products summed in a fixed order (no BLAS: equal in any batch)."""
    total = left[..., 0] * right[..., 0]
    for k in range(1, left.shape[-1]):
        total = total + left[..., k] * right[..., k]
    return total


def _user_chunks(n_users: int, n_items: int):
    step = max(1, _PAIRS_PER_CHUNK // n_items)
    for start in range(0, n_users, step):
        stop = min(n_users, start + step)
        users = torch.arange(start, stop).repeat_interleave(n_items)
        items = torch.arange(n_items).repeat(stop - start)
        yield users, items


def _exposure_scale(log_weights: list[Tensor], target: float) -> float:
    """``c`` with ``Σ min(1, c·w) ≈ target``: fixed-point steps from ``target / Σ w``.

    Each step raises ``c`` (clipped pairs add less than ``c·w``); 30 steps or 0.1% suffice for
    the presets.
    """
    shift = max(float(w.max()) for w in log_weights)
    total = sum(float(torch.exp(w - shift).sum()) for w in log_weights)
    log_scale = math.log(target / total) - shift
    for _ in range(30):
        expected = sum(float(torch.exp(w + log_scale).clamp(max=1.0).sum()) for w in log_weights)
        if abs(expected - target) <= 1e-3 * target:
            break
        log_scale += math.log(target / expected)
    return log_scale


def pairwise_exposure(model: ExposureModel, expected_pairs: float) -> tuple[Tensor, Tensor]:
    """Observed pairs, one Bernoulli(``min(1, c·w)``) per pair, in (user, item) order.

    Time and memory O(users × items).

    Raises:
        ValueError: more than ``PAIRWISE_MAX_PAIRS`` pairs (use :class:`SampledExposure`).
    """
    truth = model.truth
    n_users, n_items = truth.n_users, truth.n_items
    check_pairwise_size(n_users, n_items)
    log_weights = []
    for users, items in _user_chunks(n_users, n_items):
        block = users[::n_items]
        logits = (
            truth.user_factors[block] @ truth.item_factors.T
            + truth.user_bias[block, None]
            + truth.item_bias[None, :]
            + truth.base_logit
        ).flatten()
        log_weights.append(
            (model.log_popularity[items] + model.preference * logits).to(torch.float32)
        )
    log_scale = _exposure_scale(log_weights, expected_pairs)
    observed_users, observed_items = [], []
    for (users, items), log_weight in zip(_user_chunks(n_users, n_items), log_weights, strict=True):
        chance = torch.exp(log_weight.to(torch.float64) + log_scale).clamp(max=1.0)
        seen = hash_uniform(model.seed, _SALT_EXPOSURE, users, items) < chance
        observed_users.append(users[seen])
        observed_items.append(items[seen])
    return torch.cat(observed_users), torch.cat(observed_items)


def check_pairwise_size(n_users: int, n_items: int) -> None:
    """Refuse a pairwise exposure whose users × items would not fit comfortably.

    Raises:
        ValueError: naming the size and the sampled alternative.
    """
    if n_users * n_items > PAIRWISE_MAX_PAIRS:
        raise ValueError(
            f"synthetic: pairwise exposure enumerates all {n_users} x {n_items} = "
            f"{n_users * n_items:,} pairs (more than {PAIRWISE_MAX_PAIRS:,}); use "
            "exposure='sampled', whose cost grows with the rows produced"
        )


@dataclass(frozen=True)
class ItemStrata:
    """Items grouped into strata of nearby factors, for the envelope of :class:`SampledExposure`.

    Within a stratum, items are ordered by ``a_i``, largest first, so the items a user may see
    with a high chance are always a prefix of their stratum.

    Attributes:
        order: item ids by stratum, then by ``a_i`` descending.
        bounds: stratum ``s`` holds ``order[bounds[s]:bounds[s + 1]]``.
        keys: per position of ``order``: ``s · 2^41 +`` the cumulative share of the stratum's
            ``a`` mass up to that item, in ``2^40`` units — every stratum's inverse CDF in one
            sorted array.
        descending: ``[S, largest stratum]``: ``-log a_i`` of each stratum's items in order,
            padded with ``inf`` — to count a stratum's items above a threshold.
        centres: ``μ`` per cluster (stratum ``s`` belongs to cluster ``s // rings``).
        radius: ``r_s``, the largest factor distance of an item of ``s`` from its centre.
        log_mass: ``log Σ_{i in s} a_i`` (``-inf`` for an empty stratum).
        rings: strata per cluster.
    """

    order: Tensor
    bounds: Tensor
    keys: Tensor
    descending: Tensor
    centres: Tensor
    radius: Tensor
    log_mass: Tensor
    rings: int

    @property
    def size(self) -> int:
        return len(self.radius)

    @property
    def sizes(self) -> Tensor:
        return self.bounds[1:] - self.bounds[:-1]

    @classmethod
    def build(
        cls,
        factors: Tensor,
        log_item_weight: Tensor,
        clusters: int,
        rings: int,
        generator: torch.Generator,
    ) -> ItemStrata:
        """Cluster ``factors`` (k-means, seeded start) and cut each cluster into rings.

        Time O(items · clusters · dim · 5); memory ~100 bytes per item at its peak, plus the
        ``descending`` table (strata × largest stratum).
        """
        clusters = min(clusters, len(factors))
        n_strata = clusters * rings
        centres, cluster = _kmeans(factors, clusters, generator)
        distance = (factors - centres[cluster]).norm(dim=1)
        by_distance = torch.from_numpy(np.lexsort((distance.numpy(), cluster.numpy())))
        sizes = torch.bincount(cluster, minlength=clusters)
        sorted_cluster = cluster[by_distance]
        rank = torch.arange(len(factors)) - (torch.cumsum(sizes, 0) - sizes)[sorted_cluster]
        ring = torch.div(rank * rings, sizes[sorted_cluster], rounding_mode="floor")
        stratum = torch.empty_like(cluster)
        stratum[by_distance] = sorted_cluster * rings + ring
        del by_distance, sorted_cluster, rank, ring, cluster
        radius = torch.zeros(n_strata, dtype=torch.float64)
        radius = radius.scatter_reduce(0, stratum, distance, "amax")
        del distance

        order = torch.from_numpy(np.lexsort((-log_item_weight.numpy(), stratum.numpy())))
        stratum = stratum[order]
        counts = torch.bincount(stratum, minlength=n_strata)
        bounds = torch.zeros(n_strata + 1, dtype=torch.int64)
        bounds[1:] = torch.cumsum(counts, 0)
        log_a = log_item_weight[order]
        slot = torch.arange(len(order)) - bounds[stratum]
        descending = torch.full((n_strata, int(counts.max())), math.inf, dtype=torch.float64)
        descending[stratum, slot] = -log_a
        del slot
        peak = torch.full((n_strata,), -math.inf, dtype=torch.float64)
        peak = peak.scatter_reduce(0, stratum, log_a, "amax")
        weight = torch.exp(log_a.sub_(peak[stratum]))
        total = torch.zeros(n_strata, dtype=torch.float64).index_add_(0, stratum, weight)
        log_mass = torch.where(counts > 0, peak + torch.log(total), -math.inf)
        running = weight.cumsum_(0)
        before = torch.cat([running.new_zeros(1), running])[bounds[:-1]]
        share = running.sub_(before[stratum]).div_(total[stratum]).clamp_(max=1.0)
        keys = share.mul_(2.0**_FIXED_POINT_BITS).floor_().to(torch.int64)
        keys += stratum << (_FIXED_POINT_BITS + 1)
        return cls(order, bounds, keys, descending, centres, radius, log_mass, rings)


def _nearest(points: Tensor, centres: Tensor) -> Tensor:
    """Index of each point's nearest centre, in chunks of preallocated scratch.

    Reusing one distance buffer matters: a fresh multi-MB temporary per chunk, freed between
    kept outputs, fragments the heap into hundreds of MB at a million items.
    """
    step = max(1, (1 << 21) // len(centres))
    squared = (centres * centres).sum(1)
    nearest = torch.empty(len(points), dtype=torch.int64)
    distance = torch.empty(min(step, len(points)), len(centres), dtype=points.dtype)
    for start in range(0, len(points), step):
        chunk = points[start : start + step]
        scratch = distance[: len(chunk)]
        torch.addmm(squared, chunk, centres.T, alpha=-2, out=scratch)
        torch.argmin(scratch, 1, out=nearest[start : start + len(chunk)])
    return nearest


def _kmeans(points: Tensor, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``k`` centres and each point's nearest one.

    Lloyd steps in float32 on a seeded sample of ``64 k`` points (its first ``k`` start the
    centres), then one assignment of every point: the strata only need to be compact, not
    optimal, and any partition keeps the envelope a bound.
    """
    points = points.to(torch.float32)
    sample = points[torch.randperm(len(points), generator=generator)[: 64 * k]]
    centres = sample[:k].clone()
    for _ in range(_KMEANS_ITERATIONS):
        nearest = _nearest(sample, centres)
        sums = torch.zeros_like(centres).index_add_(0, nearest, sample)
        counts = torch.bincount(nearest, minlength=k)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None].to(torch.float32)
    return centres.to(torch.float64), _nearest(points, centres)


def default_clusters(pairs_per_user: float) -> int:
    """Clusters for the envelope: ``4 ×`` the expected observed pairs per user, as a power of
    two within 256..1024.

    More clusters fit tighter (acceptance 0.28 at 256, 0.48 at 1024 on the ``micro_video``
    shape) but cost every user ``4 ×`` clusters envelope entries; measured on that shape, 256 is
    fastest up to ~1 M clear rows (38 pairs per user) and 1024 from ~10 M (360 per user).
    """
    return int(min(1024, max(256, 2 ** round(math.log2(max(4 * pairs_per_user, 1.0))))))


def poisson_quantile(uniform: Tensor, mean: Tensor) -> Tensor:
    """Smallest ``k`` with ``P(Poisson(mean) <= k) >= uniform``, elementwise (int64).

    Inverse-CDF sampling from one uniform per draw (bisection on the regularized incomplete
    gamma function), so a draw is a function of its key, not of a random stream.
    """
    low = torch.zeros_like(mean, dtype=torch.int64)
    high = torch.ceil(mean + 12 * torch.sqrt(mean) + 12).to(torch.int64)
    while bool((low < high).any()):
        middle = torch.div(low + high, 2, rounding_mode="floor")
        enough = torch.special.gammaincc((middle + 1).to(torch.float64), mean) >= uniform
        high = torch.where(enough, middle, high)
        low = torch.where(enough, low, middle + 1)
    return low


@dataclass(frozen=True)
class SampledExposure:
    """Exposure drawn by thinning a Poisson process (module docstring); cost linear in rows.

    Attributes:
        model: the exposure weights.
        strata: the items' strata (the envelope).
        log_scale: ``log c``.
        acceptance: estimated share of envelope proposals kept (true mass / envelope mass).
        expected_rows: estimated observed pairs per user (for cutting users into blocks).
    """

    model: ExposureModel
    strata: ItemStrata
    log_scale: float
    acceptance: float
    expected_rows: Tensor

    @classmethod
    def fit(
        cls, model: ExposureModel, expected_pairs: float, *, clusters: int, rings: int
    ) -> SampledExposure:
        """Build the strata and find ``c`` for ``expected_pairs`` observed pairs.

        The pilot proposes from each user's envelope until the keep probabilities add up to
        ``_PILOT_PROPOSALS / users`` (4 to 64; at most ``_PILOT_MAX`` proposals), so users whose
        envelope is loose get about as precise an estimate as the others.

        Time O(items · clusters · dim · 5 + users · S + pilot), memory O(pilot + step · S).

        Raises:
            ValueError: more expected pairs than the exposure can place.
        """
        truth, seed = model.truth, model.seed
        generator = torch.Generator().manual_seed(stream_seed(seed, _SALT_CLUSTERS))
        strata = ItemStrata.build(
            truth.item_factors, model.item_log_weights, clusters, rings, generator
        )
        draft = cls(model, strata, 0.0, 1.0, torch.zeros(0))
        hits = min(64.0, max(4.0, _PILOT_PROPOSALS / truth.n_users))
        log_masses, owners, ratios, log_weights = [], [], [], []
        for users in draft._steps(torch.arange(truth.n_users)):
            log_mass, cdf = _cdf(draft._log_rates(users))
            log_masses.append(log_mass)
            drawn = torch.zeros(len(users), dtype=torch.int64)
            kept = torch.zeros(len(users), dtype=torch.float64)
            batch = 8
            active = torch.arange(len(users))
            while len(active):
                owner = active.repeat_interleave(batch)
                number = drawn[owner] + torch.arange(batch).repeat(len(active))
                user = users[owner]
                stratum = _pick(
                    cdf, strata.size, owner, hash_uniform(seed, _SALT_PILOT_STRATUM, user, number)
                )
                _, ratio, log_weight = draft._propose(
                    user, stratum, hash_uniform(seed, _SALT_PILOT_ITEM, user, number)
                )
                owners.append(user)
                ratios.append(ratio)
                log_weights.append(log_weight)
                drawn[active] += batch
                kept.index_add_(0, owner, ratio)
                active = active[(kept[active] < hits) & (drawn[active] < _PILOT_MAX)]
                batch *= 2
        pilot = _Pilot.of(
            torch.cat(log_masses), torch.cat(owners), torch.cat(ratios), torch.cat(log_weights)
        )
        log_scale = pilot.solve_scale(expected_pairs)
        return cls(model, strata, log_scale, pilot.acceptance(), pilot.seen_per_user(log_scale))

    def sample(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """Observed pairs of ``users`` (sorted, distinct ids), in (user, item) order.

        Time O(len(users) · S + Σ_{u,s} min(proposals, items)); memory O(step · S + a step's
        proposals and decided items).
        """
        seed, n_items, strata = self.model.seed, self.model.truth.n_items, self.strata
        offsets = torch.arange(strata.size) << (_FIXED_POINT_BITS + 1)
        totals = (strata.keys[(strata.bounds[1:] - 1).clamp(min=0)] - offsets).clamp(min=1)
        keys = []
        for step in self._steps(users):
            log_rate = self._log_rates(step) + self.log_scale
            row, stratum, count = self._decided(log_rate)
            keys.append(self._decided_pairs(step, row, stratum, count))
            # Proposals skip the decided prefix: its units of the stratum's mass, and its mass.
            cut = torch.zeros(log_rate.shape, dtype=torch.int64)
            cut[row, stratum] = strata.keys[strata.bounds[stratum] + count - 1] - offsets[stratum]
            log_rate[row, stratum] += torch.log1p(-cut[row, stratum] / totals[stratum])
            log_mass, cdf = _cdf(log_rate)
            mean = _SPARSE_RATE_FACTOR * torch.exp(log_mass)
            counts = poisson_quantile(hash_uniform(seed, _SALT_COUNT, step), mean)
            owner = torch.arange(len(step)).repeat_interleave(counts)
            number = torch.arange(len(owner)) - (torch.cumsum(counts, 0) - counts)[owner]
            user = step[owner]
            stratum = _pick(
                cdf, strata.size, owner, hash_uniform(seed, _SALT_STRATUM, user, number)
            )
            item, ratio, log_weight = self._propose(
                user, stratum, hash_uniform(seed, _SALT_ITEM, user, number), cut[owner, stratum]
            )
            chance = torch.exp(log_weight + self.log_scale)
            rate = torch.where(chance > 0, -torch.log1p(-chance) / chance, 1.0)
            kept = hash_uniform(seed, _SALT_KEEP, user, number) < ratio * rate / _SPARSE_RATE_FACTOR
            keys.append(user[kept] * n_items + item[kept])
        key = torch.unique(torch.cat(keys)) if keys else torch.zeros(0, dtype=torch.int64)
        return torch.div(key, n_items, rounding_mode="floor"), key % n_items

    def decided_items(self, users: Tensor) -> Tensor:
        """``[len(users), S]``: how many leading items of each stratum :meth:`sample` decides
        one by one (step 2 of the module docstring) instead of by proposals."""
        row, stratum, count = self._decided(self._log_rates(users) + self.log_scale)
        decided = torch.zeros(len(users), self.strata.size, dtype=torch.int64)
        decided[row, stratum] = count
        return decided

    def _decided(self, log_rate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The (row, stratum) pairs with items to decide directly, and how many (a prefix)."""
        strata = self.strata
        sizes = strata.sizes
        crowded = log_rate > torch.log(DENSE_PROPOSALS_PER_ITEM * sizes)
        # Item i of s has envelope rate exp(log_rate - log_mass_s + log a_i): hot above τ.
        threshold = log_rate - strata.log_mass - math.log(SPARSE_MAX_CHANCE)
        row, stratum = (crowded | (threshold > strata.descending[:, 0])).nonzero(as_tuple=True)
        hot = torch.searchsorted(strata.descending[stratum], threshold[row, stratum, None])
        count = torch.where(
            crowded[row, stratum], sizes[stratum], torch.minimum(hot.squeeze(1), sizes[stratum])
        )
        return row, stratum, count

    def _decided_pairs(self, users: Tensor, row: Tensor, stratum: Tensor, count: Tensor) -> Tensor:
        """Keys ``user · n_items + item`` of the seen items among the decided ones."""
        strata, model = self.strata, self.model
        owner = torch.arange(len(row)).repeat_interleave(count)
        first = torch.cumsum(count, 0) - count
        position = strata.bounds[stratum][owner] + torch.arange(len(owner)) - first[owner]
        user, item = users[row][owner], strata.order[position]
        chance = torch.exp(model.log_weights(user, item) + self.log_scale)
        seen = hash_uniform(model.seed, _SALT_DENSE, user, item) < chance
        return user[seen] * model.truth.n_items + item[seen]

    def _steps(self, users: Tensor):
        return users.split(max(1, _ENVELOPE_ENTRIES // self.strata.size))

    def _log_rates(self, users: Tensor) -> Tensor:
        """``[len(users), S]`` log envelope mass of each stratum, without ``log c``."""
        truth, strata, beta = self.model.truth, self.strata, self.model.preference
        factors = truth.user_factors[users]
        shape = (len(users), len(strata.centres), strata.rings)
        log_rate = (beta * factors.norm(dim=1))[:, None, None] * strata.radius.view(shape[1:])
        log_rate += (beta * _dot(factors[:, None, :], strata.centres[None, :, :]))[:, :, None]
        log_rate += strata.log_mass.view(shape[1:])
        log_rate += self.model.user_log_weight(users)[:, None, None]
        return log_rate.view(len(users), -1)

    def _propose(
        self, users: Tensor, stratum: Tensor, uniform: Tensor, cut: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """An item of each stratum in proportion to ``a_i`` (past the first ``cut`` units of
        its mass), with ``c·w / e`` and ``log w``."""
        strata, truth, beta = self.strata, self.model.truth, self.model.preference
        last = strata.bounds[stratum + 1] - 1
        offset = stratum << (_FIXED_POINT_BITS + 1)
        start = offset if cut is None else offset + cut
        target = start + (uniform * (strata.keys[last] - start)).to(torch.int64)
        position = torch.searchsorted(strata.keys, target, right=True).clamp(max=last)
        item = strata.order[position]
        factors = truth.user_factors[users]
        cluster = torch.div(stratum, strata.rings, rounding_mode="floor")
        bound = (
            _dot(factors, strata.centres[cluster]) + factors.norm(dim=1) * strata.radius[stratum]
        )
        score = _dot(factors, truth.item_factors[item])
        log_weight = (
            self.model.user_log_weight(users) + self.model.item_log_weights[item] + beta * score
        )
        return item, torch.exp(beta * (score - bound)), log_weight


@dataclass(frozen=True)
class _Pilot:
    """Envelope proposals of every user, as importance weights of the exact sums over items.

    For proposals ``i_j`` of user ``u``'s envelope (mass ``M_u`` without ``c``), each with
    ``ρ_j = c·w / e`` (independent of ``c``), ``Σ_i f(i) w(u, i) = M_u E[ρ f(i)]``; so with
    ``weight_j = M_u / (u's proposals)``, ``Σ_j weight_j ρ_j f(i_j)`` estimates ``Σ_{u,i} f``.
    Masses and pair weights are stored divided by ``e^shift`` (the largest mass), so nothing
    overflows; scales ``s`` below are ``c · e^shift``.
    """

    owner: Tensor
    weight: Tensor
    ratio: Tensor
    pair_weight: Tensor
    shift: float
    n_users: int

    @classmethod
    def of(cls, log_mass: Tensor, owner: Tensor, ratio: Tensor, log_weight: Tensor) -> _Pilot:
        shift = float(log_mass.max())
        drawn = torch.bincount(owner, minlength=len(log_mass)).clamp(min=1)
        weight = torch.exp(log_mass - shift)[owner] / drawn[owner]
        return cls(owner, weight, ratio, torch.exp(log_weight - shift), shift, len(log_mass))

    def _seen(self, scale: float) -> Tensor:
        """Per proposal: its term of ``Σ min(1, c·w)``, i.e. ``weight ρ min(1, c·w) / w``."""
        return self.weight * self.ratio * torch.clamp(1 / self.pair_weight, max=scale)

    def seen_per_user(self, log_scale: float) -> Tensor:
        """Estimated ``Σ_i min(1, c·w(u, i))`` per user."""
        seen = self._seen(math.exp(log_scale + self.shift))
        return torch.bincount(self.owner, weights=seen, minlength=self.n_users)

    def acceptance(self) -> float:
        return float((self.weight * self.ratio).sum() / self.weight.sum())

    def solve_scale(self, target: float) -> float:
        """``log c`` with estimated ``Σ_{u,i} min(1, c·w) = target``.

        The sum ``F(c)`` is increasing, concave and piecewise linear in ``c``, so Newton steps
        from ``c_0 = target / Σ M_u E[ρ]`` (where ``F(c_0) <= target``) rise to the root without
        overshooting it, in a few steps.

        Raises:
            ValueError: ``target`` is not below ``F(∞)``, the pairs the exposure reaches.
        """
        if target >= float((self.weight * self.ratio / self.pair_weight).sum()):
            raise ValueError(
                f"synthetic: {target:,.0f} expected observed pairs are more than the pairs the "
                "sampled exposure reaches; lower labeled_density or raise clear_rate"
            )
        scale = target / float((self.weight * self.ratio).sum())
        for _ in range(100):
            expected = float(self._seen(scale).sum())
            if target - expected <= 1e-9 * target:
                break
            below = scale * self.pair_weight < 1
            scale += (target - expected) / float((self.weight * self.ratio * below).sum())
        return math.log(scale) - self.shift


def _cdf(log_rate: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's log total mass and its CDF over strata, consuming ``log_rate``.

    The CDF is one sorted int64 array over all rows: ``row · 2^41 +`` the cumulative share of
    strata ``0..s`` in ``2^40`` units, for :func:`_pick` (exact integer search, never crossing
    into another row; a stratum of no mass is never picked).
    """
    peak = log_rate.amax(1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, 0.0)
    cdf = log_rate.sub_(peak).exp_().cumsum_(1)
    total = cdf[:, -1:].clone()
    units = cdf.mul_(2.0**_FIXED_POINT_BITS / total.clamp(min=1e-300)).floor_().to(torch.int64)
    units += torch.arange(len(units))[:, None] << (_FIXED_POINT_BITS + 1)
    return (peak + torch.log(total)).squeeze(1), units.flatten()


def _pick(cdf: Tensor, n_strata: int, owner: Tensor, uniform: Tensor) -> Tensor:
    """A stratum per proposal, in proportion to its owner's envelope masses (inverse CDF)."""
    rows = owner << (_FIXED_POINT_BITS + 1)
    ends = cdf.view(-1, n_strata)[:, -1]
    target = rows + (uniform * (ends[owner] - rows)).to(torch.int64)
    return torch.searchsorted(cdf, target, right=True) - owner * n_strata
