"""Synthetic data with a planted truth: every (user, item) pair has a known true label.

Three parts, each in its own module, all randomness seeded (pair-level draws are keyed hashes,
see :mod:`invlearn_ray.data.hashing`, so any pair's fate is recomputable on its own):

* **truth** (:mod:`invlearn_ray.data.truth`): latent factors ``p_u, q_i ~ N(0, s²/d · I)`` and
  biases ``b_u, b_i ~ N(0, σ_b²)`` give the true logit ``z(u, i) = <p_u, q_i> + b_u + b_i + z0``;
  the true label of a pair is ``1[h(u, i) < σ(z(u, i))]``;
* **exposure** (:mod:`invlearn_ray.data.exposure`): which pairs are observed is biased like real
  feedback — by item popularity and by preference, ``P(observed) ∝ pop_i · exp(β z(u, i))``,
  scaled so that the expected labeled density matches ``labeled_density``. Users see what they
  tend to like, so the unobserved pool is positive-poorer than the observed one but far from
  all-negative: sampled "negatives" really contain positives. ``exposure="pairwise"`` draws it
  exactly over all users × items pairs (the small presets, whose rows it defines);
  ``"sampled"`` draws the same model in time linear in the rows produced (the large presets);
* **feedback** (here): an observed pair's feedback is *clear* with probability ``clear_rate``
  (else unclear), and a clear label disagrees with the truth with probability ``label_noise``.
  Ratings: clear 1 → 4 or 5, clear 0 → 1 or 2, unclear → 3 (rule ``rating >= 4 → 1, <= 2 → 0``).
  Micro-video: clear 1 → finish rate in [0.85, 1], clear 0 → [0, 0.15), unclear → [0.25, 0.75)
  (the finish-rate rule, 0.8 / 0.2, with margins so float rounding never crosses a threshold).

Rows are generated in **blocks** of users (:class:`SyntheticGenerator`): a block's rows are a
function of the config and its user range alone, so the in-memory builder and Ray Data tasks
produce the same rows; block ``b``'s rows carry ``file = b``. Rows come in (user, item) order,
each pair at most once, with raw ids ``"0".."n-1"`` and a ``true_label`` column for the hidden
truth.

Size: :meth:`SyntheticConfig.with_clear_rows` keeps a preset's shape (id ranges, truth, feedback)
and scales its density to an expected number of clear rows — the same shape at 1 M or 20 M rows.

Cost: the truth and item tables are (users + items) × (dim + 3) numbers; pairwise exposure
costs users × items (refused beyond ``PAIRWISE_MAX_PAIRS``), sampled exposure grows with the rows
(:mod:`exposure`), feedback is per row. Statistics over *all* pairs are estimated from a seeded
sample of ``ALL_PAIRS_SAMPLE`` pairs and named ``..._estimate``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.exposure import (
    ExposureModel,
    SampledExposure,
    check_pairwise_size,
    default_clusters,
    pairwise_exposure,
)
from invlearn_ray.data.hashing import hash_uniform
from invlearn_ray.data.labels import UNCLEAR, FinishRateRule, LabelRule, RatingRule
from invlearn_ray.data.truth import PlantedTruth

_SALT_CLEAR = 0xC1EA
_SALT_NOISE = 0x0153
_SALT_VALUE = 0x7A1E
_SALT_PAIR_SAMPLE = 0x5A3B

FEEDBACKS = ("micro_video", "rating")
EXPOSURES = ("pairwise", "sampled")

ALL_PAIRS_SAMPLE = 1 << 16
"""Uniformly drawn pairs behind every all-pairs statistic (standard error ≤ 0.2 points)."""

BLOCK_ROWS = 1 << 20
"""Expected rows per generation block of a sampled-exposure config (~60 MB of canonical rows)."""


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
        exposure: ``"pairwise"`` (exact, cost users × items) or ``"sampled"`` (the same model,
            cost linear in rows; see :mod:`invlearn_ray.data.exposure`).
        exposure_clusters, exposure_rings: strata of the sampled exposure's envelope; they set
            its speed (and which rows a seed gives), not the distribution. ``None`` clusters:
            :func:`~invlearn_ray.data.exposure.default_clusters` of the expected rows per user.
        seed: seeds factors, exposure, feedback and the truth hash.

    ``base_logit=-1.5`` with ``exposure_preference=1`` makes ~82% of observed pairs truly
    positive (ML-1M: 83% of ratings are >= 3) while ~27% of unobserved pairs are positive —
    so about one sampled "negative" in four is a false negative (measured on the default
    preset; ``SyntheticSource.stats`` estimates both shares).
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
    exposure: str = "pairwise"
    exposure_clusters: int | None = None
    exposure_rings: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2 or self.dim < 1:
            raise ValueError("synthetic: need n_users >= 1, n_items >= 2 and dim >= 1")
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"synthetic: feedback must be one of {FEEDBACKS}: {self.feedback!r}")
        if self.exposure not in EXPOSURES:
            raise ValueError(f"synthetic: exposure must be one of {EXPOSURES}: {self.exposure!r}")
        if (self.exposure_clusters is not None and self.exposure_clusters < 1) or (
            self.exposure_rings < 1
        ):
            raise ValueError(
                "synthetic: exposure_clusters and exposure_rings must be at least 1: "
                f"{self.exposure_clusters}, {self.exposure_rings}"
            )
        if not 0 < self.clear_rate <= 1:
            raise ValueError(f"synthetic: clear_rate must be in (0, 1]: {self.clear_rate}")
        if not 0 < self.labeled_density / self.clear_rate <= 1:
            raise ValueError(
                "synthetic: labeled_density / clear_rate (the observed density) must be in "
                f"(0, 1]: {self.labeled_density} / {self.clear_rate}"
            )
        if not 0 <= self.label_noise < 0.5:
            raise ValueError(f"synthetic: label_noise must be in [0, 0.5): {self.label_noise}")
        if self.exposure == "pairwise":
            check_pairwise_size(self.n_users, self.n_items)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SyntheticConfig:
        """A named preset (``PRESETS``), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown synthetic preset {name!r}; valid: {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    @property
    def n_pairs(self) -> int:
        return self.n_users * self.n_items

    @property
    def expected_clear_rows(self) -> float:
        return self.labeled_density * self.n_pairs

    @property
    def expected_observed_rows(self) -> float:
        return self.labeled_density / self.clear_rate * self.n_pairs

    def with_clear_rows(self, rows: int) -> SyntheticConfig:
        """The same shape (ids, truth, feedback, exposure) at ``rows`` expected clear rows.

        Raises:
            ValueError: ``rows`` not positive, or more observed rows than pairs.
        """
        if rows < 1:
            raise ValueError(f"synthetic: clear rows must be at least 1: {rows}")
        return replace(self, labeled_density=rows / self.n_pairs)

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
    # The paper's Micro Video (Table 3): 37,692 users x 131,690 items, 9,462,492 clear rows
    # (0.19%), 52% of them positive (base_logit -2.25: 52.1% of observed pairs truly positive,
    # 19.6% of unobserved ones). Unclear plays (finish rate 20-80%): 30% of all plays.
    # Feed exposure is pushed by a recommender, not chosen by the user, so it follows
    # preference less than self-selected ratings do (beta 0.5 vs 1) and popularity more.
    # 4 latent dimensions keep the sampled exposure's acceptance near 0.5 (8: ~0.2).
    "micro_video": SyntheticConfig(
        n_users=37_692,
        n_items=131_690,
        labeled_density=9_462_492 / (37_692 * 131_690),
        clear_rate=0.7,
        dim=4,
        base_logit=-2.25,
        popularity_sigma=1.5,
        exposure_preference=0.5,
        exposure="sampled",
    ),
    # MovieLens-20M's id ranges and 20,000,263 ratings; 62% of its ratings are clear under
    # ">= 4 -> 1, <= 2 -> 0" (2.5-3.5 unclear), 79% of those positive (base_logit -2.45: 82% of
    # observed pairs truly positive, 5% label noise).
    "ml20m_scale": SyntheticConfig(
        n_users=138_493,
        n_items=26_744,
        labeled_density=0.62 * 20_000_263 / (138_493 * 26_744),
        clear_rate=0.62,
        dim=4,
        base_logit=-2.45,
        feedback="rating",
        exposure="sampled",
    ),
}
"""Named generator configurations."""


def sample_truth(config: SyntheticConfig, generator: torch.Generator) -> PlantedTruth:
    """Draw factors and biases from ``generator`` (the first draws of a generation)."""
    scale = config.preference_scale / math.sqrt(config.dim)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return PlantedTruth(
        user_factors=normal(config.n_users, config.dim) * scale,
        item_factors=normal(config.n_items, config.dim),
        user_bias=normal(config.n_users) * config.bias_scale,
        item_bias=normal(config.n_items) * config.bias_scale,
        base_logit=config.base_logit,
        seed=config.seed,
    )


@dataclass(frozen=True)
class SyntheticSource:
    """A generated source: canonical rows, the truth behind them, and generation statistics.

    ``rows_per_block[b]`` counts the rows with ``file == b`` (blocks may be empty).
    """

    table: pa.Table
    truth: PlantedTruth
    stats: dict[str, Any]
    rows_per_block: tuple[int, ...]


ROW_COUNTS = ("observed_rows", "clear_rows", "observed_positives", "clear_agreeing")
"""What :func:`count_rows` counts per block; sums over blocks give the statistics."""


@dataclass(frozen=True)
class SyntheticGenerator:
    """What generating any block of a config's rows needs: truth, item tables, exposure.

    Build with :meth:`prepare` (once, on one machine), then :meth:`block` for each user range in
    ``blocks`` — in any order, in any process.
    """

    config: SyntheticConfig
    truth: PlantedTruth
    durations: torch.Tensor
    exposure: ExposureModel | SampledExposure
    blocks: tuple[tuple[int, int], ...]

    @classmethod
    def prepare(cls, config: SyntheticConfig, block_rows: int | None = None) -> SyntheticGenerator:
        """Draw the truth and item tables, and fit the sampled exposure (if sampled).

        Args:
            config: what to generate.
            block_rows: expected rows per block of a sampled exposure (default
                ``BLOCK_ROWS``); blocks change how rows are grouped, never which rows exist.

        Time and memory: O((users + items) · dim) plus :meth:`SampledExposure.fit`.
        """
        generator = torch.Generator().manual_seed(config.seed)
        truth = sample_truth(config, generator)
        log_popularity = torch.randn(config.n_items, generator=generator, dtype=torch.float64)
        log_popularity *= config.popularity_sigma
        durations = torch.exp(
            3.4 + 0.7 * torch.randn(config.n_items, generator=generator, dtype=torch.float64)
        ).clamp(5.0, 600.0)
        model = ExposureModel(truth, log_popularity, config.exposure_preference, config.seed)
        if config.exposure == "pairwise":
            return cls(config, truth, durations, model, ((0, config.n_users),))
        expected = config.expected_observed_rows
        sampled = SampledExposure.fit(
            model,
            expected,
            clusters=config.exposure_clusters or default_clusters(expected / config.n_users),
            rings=config.exposure_rings,
        )
        blocks = _cut(sampled.expected_rows, block_rows or BLOCK_ROWS)
        return cls(config, truth, durations, sampled, blocks)

    def block(self, index: int) -> pa.Table:
        """The canonical rows of block ``index`` (``file = index``, ``line = file_row + 1``)."""
        start, stop = self.blocks[index]
        if isinstance(self.exposure, SampledExposure):
            users, items = self.exposure.sample(torch.arange(start, stop))
        else:
            users, items = pairwise_exposure(self.exposure, self.config.expected_observed_rows)
        return feedback_table(self.config, self.truth, self.durations, users, items, index)

    def stats(self, counts: dict[str, int]) -> dict[str, Any]:
        """Generation statistics from the summed :func:`count_rows` of every block.

        All-pairs shares are estimates from ``ALL_PAIRS_SAMPLE`` seeded uniform pairs.
        """
        config = self.config
        n_pairs, n_rows = config.n_pairs, counts["observed_rows"]
        number = torch.arange(ALL_PAIRS_SAMPLE)
        user_draw = hash_uniform(config.seed, _SALT_PAIR_SAMPLE, number, torch.zeros_like(number))
        item_draw = hash_uniform(config.seed, _SALT_PAIR_SAMPLE, number, torch.ones_like(number))
        users = (user_draw * config.n_users).long()
        items = (item_draw * config.n_items).long()
        all_pairs = float(self.truth.labels(users, items).double().mean())
        unobserved = (all_pairs * n_pairs - counts["observed_positives"]) / max(n_pairs - n_rows, 1)
        stats: dict[str, Any] = {
            "exposure": config.exposure,
            "observed_rows": n_rows,
            "observed_density": n_rows / n_pairs,
            "clear_rows": counts["clear_rows"],
            "labeled_density": counts["clear_rows"] / n_pairs,
            "true_positive_share_observed": counts["observed_positives"] / max(n_rows, 1),
            "true_positive_share_all_pairs_estimate": all_pairs,
            "true_positive_share_unobserved_estimate": min(max(unobserved, 0.0), 1.0),
            "all_pairs_sample": ALL_PAIRS_SAMPLE,
            "clear_label_agreement": counts["clear_agreeing"] / counts["clear_rows"]
            if counts["clear_rows"]
            else 1.0,
        }
        if isinstance(self.exposure, SampledExposure):
            stats["exposure_acceptance_estimate"] = self.exposure.acceptance
        return stats


def _cut(expected_rows: torch.Tensor, block_rows: int) -> tuple[tuple[int, int], ...]:
    """Contiguous user ranges of about ``block_rows`` expected rows each."""
    if not len(expected_rows):
        return ((0, 0),)
    starts = torch.cumsum(expected_rows, 0) - expected_rows
    _, sizes = torch.unique_consecutive(
        torch.div(starts, block_rows, rounding_mode="floor"), return_counts=True
    )
    edges = [0, *torch.cumsum(sizes, 0).tolist()]
    return tuple(zip(edges[:-1], edges[1:], strict=True))


def feedback_table(
    config: SyntheticConfig,
    truth: PlantedTruth,
    durations: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    file: int,
) -> pa.Table:
    """Canonical rows of observed pairs: feedback, raw ids and the hidden ``true_label``.

    Every value is a keyed hash of its pair: time and memory O(rows).
    """
    true_label = truth.labels(users, items)
    clear = hash_uniform(config.seed, _SALT_CLEAR, users, items) < config.clear_rate
    flipped = hash_uniform(config.seed, _SALT_NOISE, users, items) < config.label_noise
    label = (true_label.bool() ^ flipped).to(torch.int64)
    value = hash_uniform(config.seed, _SALT_VALUE, users, items)
    n_rows = len(users)
    columns: dict[str, Any] = {
        cn.FILE: pa.array(np.full(n_rows, file, dtype=np.int32)),
        cn.LINE: pa.array(np.arange(1, n_rows + 1, dtype=np.int64)),
        cn.FILE_ROW: pa.array(np.arange(n_rows, dtype=np.int64)),
        cn.USER_RAW: pc.cast(pa.array(users.numpy()), pa.string()),
        cn.ITEM_RAW: pc.cast(pa.array(items.numpy()), pa.string()),
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
    return pa.table(columns)


def count_rows(table: pa.Table, config: SyntheticConfig) -> dict[str, int]:
    """The additive counts (``ROW_COUNTS``) of a block of generated rows, read from its columns."""
    labels = config.default_rule().labels(table)
    truth = table.column(cn.TRUE_LABEL).to_numpy()
    clear = labels != UNCLEAR
    return {
        "observed_rows": table.num_rows,
        "clear_rows": int(clear.sum()),
        "observed_positives": int(truth.sum()),
        "clear_agreeing": int((labels[clear] == truth[clear]).sum()),
    }


def generate_interactions(config: SyntheticConfig) -> SyntheticSource:
    """Generate the observed interactions of ``config`` as a canonical table, block by block.

    Time and memory: see the module docstring (linear in rows for sampled exposure).
    """
    generator = SyntheticGenerator.prepare(config)
    tables = [generator.block(index) for index in range(len(generator.blocks))]
    counts = {name: 0 for name in ROW_COUNTS}
    for table in tables:
        for name, value in count_rows(table, config).items():
            counts[name] += value
    return SyntheticSource(
        table=pa.concat_tables(tables),
        truth=generator.truth,
        stats=generator.stats(counts),
        rows_per_block=tuple(table.num_rows for table in tables),
    )
