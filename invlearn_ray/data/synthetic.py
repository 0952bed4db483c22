"""Synthetic data with a planted truth: every (user, item) pair has a known true label.

Public datasets only label what users happened to see, so no published code can check how well
IDL/IG annotate the *unlabeled* items they sample. Here the truth of every pair is a
deterministic function of the generator's parameters, looked up with
``PlantedTruth.labels(users, items)`` (also ``RecData.truth``), so annotation quality can be
measured exactly.

Generative model (all randomness seeded; pair-level draws are keyed hashes, see
:mod:`invlearn_ray.data.hashing`, so any pair's fate is recomputable on its own):

* latent factors ``p_u, q_i ~ N(0, s²/d · I)`` and biases ``b_u, b_i ~ N(0, σ_b²)`` give the true
  preference logit ``z(u, i) = <p_u, q_i> + b_u + b_i + z0`` and probability ``σ(z)``;
* true label ``t(u, i) = 1[h_truth(u, i) < σ(z(u, i))]``;
* exposure (which pairs are observed) is biased like real feedback — by item popularity and by
  preference: ``P(observed) = min(1, c · exp(log_pop_i + β z(u, i)))``, with ``c`` set so that
  the expected labeled density matches ``labeled_density``. Users see what they tend to like,
  so the unobserved pool is positive-poorer than the observed one but far from all-negative:
  sampled "negatives" really contain positives;
* feedback on an observed pair is *clear* with probability ``clear_rate`` (else unclear), and a
  clear label disagrees with the truth with probability ``label_noise``. Ratings: clear 1 → 4
  or 5, clear 0 → 1 or 2, unclear → 3 (rule ``rating >= 4 → 1, <= 2 → 0``). Micro-video: clear
  1 → finish rate in [0.85, 1], clear 0 → [0, 0.15), unclear → [0.25, 0.75) (the finish-rate
  rule, 0.8 / 0.2, with margins so float rounding never crosses a threshold).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.hashing import hash_uniform
from invlearn_ray.data.labels import FinishRateRule, LabelRule, RatingRule

_SALT_TRUTH = 0x7A07
_SALT_EXPOSURE = 0xE7B0
_SALT_CLEAR = 0xC1EA
_SALT_NOISE = 0x0153
_SALT_VALUE = 0x7A1E

FEEDBACKS = ("micro_video", "rating")

_PAIRS_PER_CHUNK = 1 << 21


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic generator (defaults: the ``default`` preset).

    Attributes:
        n_users, n_items: id ranges; every id exists in the dataset even without rows.
        dim: latent dimension of the true preference model.
        labeled_density: expected labeled (clear) interactions / (n_users · n_items); the
            paper's datasets have 0.08% (Micro Video likes/hates) to 4.19% (ML-1M).
        clear_rate: share of observed interactions with clear feedback; the rest are unclear
            and go to the observed-unlabeled pool.
        label_noise: share of clear feedback that contradicts the true label.
        feedback: ``"micro_video"`` (play_time + duration) or ``"rating"`` (1..5).
        preference_scale: standard deviation of ``<p_u, q_i>``; larger = more learnable.
        base_logit: ``z0``; sets the share of true positives among all pairs.
        bias_scale: standard deviation of user and item biases.
        popularity_sigma: spread of log item popularity in exposure.
        exposure_preference: ``β``, how strongly exposure follows true preference.
        seed: seeds factors, exposure, feedback and the truth hash.

    ``base_logit=-1.5`` with ``exposure_preference=1`` makes ~82% of observed pairs truly
    positive (ML-1M: 83% of ratings are >= 3) while ~27% of unobserved pairs are positive —
    so about one sampled "negative" in four is a false negative (measured on the default
    preset; ``SyntheticSource.stats`` reports both shares).
    """

    n_users: int = 1000
    n_items: int = 1500
    dim: int = 8
    labeled_density: float = 0.02
    clear_rate: float = 0.6
    label_noise: float = 0.05
    feedback: str = "micro_video"
    preference_scale: float = 2.0
    base_logit: float = -1.5
    bias_scale: float = 0.5
    popularity_sigma: float = 1.0
    exposure_preference: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2 or self.dim < 1:
            raise ValueError("synthetic: need n_users >= 1, n_items >= 2 and dim >= 1")
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"synthetic: feedback must be one of {FEEDBACKS}: {self.feedback!r}")
        if not 0 < self.clear_rate <= 1:
            raise ValueError(f"synthetic: clear_rate must be in (0, 1]: {self.clear_rate}")
        if not 0 < self.labeled_density / self.clear_rate <= 1:
            raise ValueError(
                "synthetic: labeled_density / clear_rate (the observed density) must be in "
                f"(0, 1]: {self.labeled_density} / {self.clear_rate}"
            )
        if not 0 <= self.label_noise < 0.5:
            raise ValueError(f"synthetic: label_noise must be in [0, 0.5): {self.label_noise}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SyntheticConfig:
        """A named preset (``PRESETS``), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown synthetic preset {name!r}; valid: {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def default_rule(self) -> LabelRule:
        """The labeling rule that reproduces this generator's clear/unclear feedback."""
        return FinishRateRule() if self.feedback == "micro_video" else RatingRule(4, 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS = {
    # ~1000 x 1500 at 2% labeled: ~30k labeled rows, ~18k training rows — a benchmark of many
    # methods x backbones x 3 seeds trains in minutes on 2 CPU cores.
    "default": SyntheticConfig(),
    # A few hundred rows: CLI smoke tests and Ray tests.
    "tiny": SyntheticConfig(n_users=40, n_items=60, labeled_density=0.12, dim=4),
    # ML-1M-sized id ranges; ~1.4% labeled density gives a ~200k-row training split (GPU runs).
    "ml1m_scale": SyntheticConfig(n_users=6000, n_items=4000, labeled_density=0.014),
}
"""Named generator configurations."""


@dataclass(frozen=True)
class PlantedTruth:
    """The true preference model of a synthetic dataset; callable as a label oracle.

    Computation is on CPU in float64, elementwise per pair, so a pair's label is bit-for-bit
    the same whatever batch it is asked in (and the same as when the data were generated).
    """

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    user_bias: torch.Tensor
    item_bias: torch.Tensor
    base_logit: float
    seed: int

    @classmethod
    def sample(cls, config: SyntheticConfig, generator: torch.Generator) -> PlantedTruth:
        """Draw factors and biases from ``generator`` (the first draws of a generation)."""
        scale = config.preference_scale / math.sqrt(config.dim)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        return cls(
            user_factors=normal(config.n_users, config.dim) * scale,
            item_factors=normal(config.n_items, config.dim),
            user_bias=normal(config.n_users) * config.bias_scale,
            item_bias=normal(config.n_items) * config.bias_scale,
            base_logit=config.base_logit,
            seed=config.seed,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_factors)

    @property
    def n_items(self) -> int:
        return len(self.item_factors)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True preference logits ``z(u, i)``, float64 on CPU."""
        users, items = users.cpu().to(torch.int64), items.cpu().to(torch.int64)
        user_factors, item_factors = self.user_factors[users], self.item_factors[items]
        logits = self.user_bias[users] + self.item_bias[items] + self.base_logit
        for k in range(user_factors.shape[1]):
            logits = logits + user_factors[:, k] * item_factors[:, k]
        return logits

    def probabilities(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True preference probabilities ``σ(z(u, i))``, float64 on CPU."""
        return torch.sigmoid(self.logits(users, items))

    def labels(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True labels (int8 0/1) of the pairs, on the device of ``users``."""
        draw = hash_uniform(
            self.seed, _SALT_TRUTH, users.cpu().to(torch.int64), items.cpu().to(torch.int64)
        )
        return (draw < self.probabilities(users, items)).to(torch.int8).to(users.device)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.labels(users, items)

    def save(self, path: str | Path) -> None:
        """Write ``truth.npz`` (plain arrays; loadable with ``allow_pickle=False``)."""
        np.savez(
            path,
            user_factors=self.user_factors.numpy(),
            item_factors=self.item_factors.numpy(),
            user_bias=self.user_bias.numpy(),
            item_bias=self.item_bias.numpy(),
            base_logit=np.float64(self.base_logit),
            seed=np.int64(self.seed),
        )

    @classmethod
    def load(cls, path: str | Path) -> PlantedTruth:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(
                user_factors=torch.from_numpy(arrays["user_factors"]),
                item_factors=torch.from_numpy(arrays["item_factors"]),
                user_bias=torch.from_numpy(arrays["user_bias"]),
                item_bias=torch.from_numpy(arrays["item_bias"]),
                base_logit=float(arrays["base_logit"]),
                seed=int(arrays["seed"]),
            )


@dataclass(frozen=True)
class SyntheticSource:
    """A generated source: canonical rows, the truth behind them, and generation statistics."""

    table: pa.Table
    truth: PlantedTruth
    stats: dict[str, float]


def _user_chunks(n_users: int, n_items: int):
    step = max(1, _PAIRS_PER_CHUNK // n_items)
    for start in range(0, n_users, step):
        stop = min(n_users, start + step)
        users = torch.arange(start, stop).repeat_interleave(n_items)
        items = torch.arange(n_items).repeat(stop - start)
        yield users, items


def _exposure_scale(log_weights: list[torch.Tensor], target: float) -> float:
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


def generate_interactions(config: SyntheticConfig) -> SyntheticSource:
    """Generate the observed interactions of ``config`` as a canonical table.

    Rows come in (user, item) order, as one "file" (``file`` 0, ``line`` = row number + 1), with
    raw ids ``"0".."n-1"`` and a ``true_label`` column for the hidden truth.
    """
    generator = torch.Generator().manual_seed(config.seed)
    truth = PlantedTruth.sample(config, generator)
    log_popularity = torch.randn(config.n_items, generator=generator, dtype=torch.float64)
    log_popularity *= config.popularity_sigma
    durations = torch.exp(
        3.4 + 0.7 * torch.randn(config.n_items, generator=generator, dtype=torch.float64)
    ).clamp(5.0, 600.0)

    log_weights, positives = [], 0
    for users, items in _user_chunks(config.n_users, config.n_items):
        # Exposure and the all-pairs statistics use a fast matrix product; the truth of observed
        # pairs comes from the per-pair oracle below, so it matches any later lookup exactly.
        block = users[:: config.n_items]
        logits = (
            truth.user_factors[block] @ truth.item_factors.T
            + truth.user_bias[block, None]
            + truth.item_bias[None, :]
            + truth.base_logit
        ).flatten()
        draw = hash_uniform(config.seed, _SALT_TRUTH, users, items)
        positives += int((draw < torch.sigmoid(logits)).sum())
        log_weights.append(
            (log_popularity[items] + config.exposure_preference * logits).to(torch.float32)
        )
    n_pairs = config.n_users * config.n_items
    target = config.labeled_density / config.clear_rate * n_pairs
    log_scale = _exposure_scale(log_weights, target)

    observed_users, observed_items = [], []
    for (users, items), log_weight in zip(
        _user_chunks(config.n_users, config.n_items), log_weights, strict=True
    ):
        chance = torch.exp(log_weight.to(torch.float64) + log_scale).clamp(max=1.0)
        seen = hash_uniform(config.seed, _SALT_EXPOSURE, users, items) < chance
        observed_users.append(users[seen])
        observed_items.append(items[seen])
    users, items = torch.cat(observed_users), torch.cat(observed_items)

    true_label = truth.labels(users, items)
    clear = hash_uniform(config.seed, _SALT_CLEAR, users, items) < config.clear_rate
    flipped = hash_uniform(config.seed, _SALT_NOISE, users, items) < config.label_noise
    label = (true_label.bool() ^ flipped).to(torch.int64)
    value = hash_uniform(config.seed, _SALT_VALUE, users, items)
    n_rows = len(users)
    columns: dict[str, Any] = {
        cn.FILE: pa.array(np.zeros(n_rows, dtype=np.int32)),
        cn.LINE: pa.array(np.arange(1, n_rows + 1, dtype=np.int64)),
        cn.FILE_ROW: pa.array(np.arange(n_rows, dtype=np.int64)),
        cn.USER_RAW: pa.array(users.numpy().astype(str)),
        cn.ITEM_RAW: pa.array(items.numpy().astype(str)),
    }
    if config.feedback == "rating":
        half = (value >= 0.5).to(torch.float64)
        rating = torch.where(clear, torch.where(label == 1, 4.0 + half, 1.0 + half), 3.0)
        columns[cn.RATING] = pa.array(rating.numpy())
    else:
        finish = torch.where(
            clear,
            torch.where(label == 1, 0.85 + 0.15 * value, 0.15 * value),
            0.25 + 0.5 * value,
        )
        duration = durations[items]
        columns[cn.PLAY_TIME] = pa.array((finish * duration).numpy())
        columns[cn.DURATION] = pa.array(duration.numpy())
    columns[cn.TRUE_LABEL] = pa.array(true_label.numpy(), type=pa.int8())

    observed_positives = int(true_label.sum())
    stats = {
        "observed_rows": n_rows,
        "observed_density": n_rows / n_pairs,
        "clear_rows": int(clear.sum()),
        "labeled_density": int(clear.sum()) / n_pairs,
        "true_positive_share_all_pairs": positives / n_pairs,
        "true_positive_share_observed": observed_positives / max(n_rows, 1),
        "true_positive_share_unobserved": (positives - observed_positives)
        / max(n_pairs - n_rows, 1),
        "clear_label_agreement": float((label == true_label.to(torch.int64))[clear].float().mean())
        if bool(clear.any())
        else 1.0,
    }
    return SyntheticSource(table=pa.table(columns), truth=truth, stats=stats)
