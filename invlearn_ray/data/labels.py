"""Labeling rules: turn observed feedback into labels 1 / 0, or *unclear*.

A rule is a small frozen dataclass of parameters (never constants in code) with two steps:
``fit`` resolves thresholds that depend on the data (play-time quartiles) from the whole
de-duplicated input, and ``labels`` maps a batch to int8 labels — ``UNCLEAR`` (-1) for rows in
the band between the two thresholds, which go to the observed-unlabeled pool. ``labels`` is a
pure per-row function, so it runs unchanged as a Ray Data ``map_batches`` step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.errors import DataError, NoLabeledRowsError

UNCLEAR = -1
"""Label of a row whose feedback falls between the positive and negative thresholds."""


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _three_way(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    labels = np.full(len(positive), UNCLEAR, dtype=np.int8)
    labels[positive] = 1
    labels[negative] = 0
    return labels


@dataclass(frozen=True)
class RatingRule:
    """Explicit ratings: ``rating >= pos_threshold → 1``, ``rating <= neg_threshold → 0``.

    Ratings strictly between the two are unclear. The defaults (3, 2) are the paper's released
    code's rule for MovieLens (``rating > 2 → 1``, no unclear band), so results compare with
    it; the paper's text ("over 3 positive, under 2 negative") is ``pos_threshold=4,
    neg_threshold=1``, which leaves ratings 2 and 3 unclear.
    """

    pos_threshold: float = 3.0
    neg_threshold: float = 2.0
    name: ClassVar[str] = "rating"
    feedback: ClassVar[str] = "rating"

    def __post_init__(self) -> None:
        if not self.neg_threshold < self.pos_threshold:
            raise ValueError(
                f"rating rule: neg_threshold ({self.neg_threshold}) must be below "
                f"pos_threshold ({self.pos_threshold})"
            )

    def fit(self, table: pa.Table) -> RatingRule:
        return self

    def labels(self, table: pa.Table) -> np.ndarray:
        rating = _column(table, cn.RATING)
        return _three_way(rating >= self.pos_threshold, rating <= self.neg_threshold)


@dataclass(frozen=True)
class FinishRateRule:
    """Micro-video finish rate ``r = play_time / duration``: ``r > pos_above → 1``,
    ``r < neg_below → 0``, otherwise unclear (paper, Appendix A.4: 80% and 20%)."""

    pos_above: float = 0.8
    neg_below: float = 0.2
    name: ClassVar[str] = "finish-rate"
    feedback: ClassVar[str] = "micro_video"

    def __post_init__(self) -> None:
        if not self.neg_below <= self.pos_above:
            raise ValueError(
                f"finish-rate rule: neg_below ({self.neg_below}) must not exceed "
                f"pos_above ({self.pos_above})"
            )

    def fit(self, table: pa.Table) -> FinishRateRule:
        return self

    def labels(self, table: pa.Table) -> np.ndarray:
        # Readers refuse durations <= 0, so the division is always defined.
        rate = _column(table, cn.PLAY_TIME) / _column(table, cn.DURATION)
        return _three_way(rate > self.pos_above, rate < self.neg_below)


@dataclass(frozen=True)
class PlaytimeQuartileRule:
    """Play time above the upper quantile → 1, below the lower quantile → 0 (paper, Table 5).

    The quantiles (linear interpolation, over every de-duplicated input row) are resolved by
    ``fit`` and recorded in the manifest as ``upper_value`` / ``lower_value``.
    """

    lower_quantile: float = 0.25
    upper_quantile: float = 0.75
    lower_value: float | None = None
    upper_value: float | None = None
    name: ClassVar[str] = "playtime-quartile"
    feedback: ClassVar[str] = "micro_video"

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower_quantile <= self.upper_quantile <= 1.0:
            raise ValueError(
                "playtime-quartile rule: need 0 <= lower_quantile <= upper_quantile <= 1, got "
                f"{self.lower_quantile} and {self.upper_quantile}"
            )

    def fit(self, table: pa.Table) -> PlaytimeQuartileRule:
        play_time = _column(table, cn.PLAY_TIME)
        if not len(play_time):
            raise ValueError("playtime-quartile rule: no rows to compute quantiles from")
        lower, upper = np.quantile(play_time, [self.lower_quantile, self.upper_quantile])
        return replace(self, lower_value=float(lower), upper_value=float(upper))

    def labels(self, table: pa.Table) -> np.ndarray:
        if self.lower_value is None or self.upper_value is None:
            raise RuntimeError("playtime-quartile rule: call fit() before labels()")
        play_time = _column(table, cn.PLAY_TIME)
        return _three_way(play_time > self.upper_value, play_time < self.lower_value)


@dataclass(frozen=True)
class GivenLabelRule:
    """The source already holds 0/1 labels (readers have checked them); nothing is unclear."""

    name: ClassVar[str] = "given"
    feedback: ClassVar[str] = "label"

    def fit(self, table: pa.Table) -> GivenLabelRule:
        return self

    def labels(self, table: pa.Table) -> np.ndarray:
        return _column(table, cn.LABEL).astype(np.int8)


LabelRule = RatingRule | FinishRateRule | PlaytimeQuartileRule | GivenLabelRule

RULES: dict[str, type] = {
    "rating": RatingRule,
    "finish-rate": FinishRateRule,
    "playtime-quartile": PlaytimeQuartileRule,
    "given": GivenLabelRule,
}
"""Labeling rules by name."""

DEFAULT_RULES = {"rating": "rating", "micro_video": "finish-rate", "label": "given"}
"""The rule a source gets when none is named, by feedback kind (paper's choices)."""


def make_rule(name: str, **params: Any) -> LabelRule:
    """Build a rule by name; unknown names and parameters are errors."""
    if name not in RULES:
        raise ValueError(f"unknown labeling rule {name!r}; valid: {sorted(RULES)}")
    try:
        return RULES[name](**params)
    except TypeError as error:
        raise ValueError(f"labeling rule {name!r}: {error}") from None


def default_rule(feedback: str) -> LabelRule:
    """The default rule for a kind of feedback (``rating``, ``micro_video`` or ``label``)."""
    return make_rule(DEFAULT_RULES[feedback])


def rule_to_dict(rule: LabelRule) -> dict[str, Any]:
    """JSON form of a rule for the manifest: ``{"kind": name, **parameters}``."""
    return {"kind": rule.name, **asdict(rule)}


def rule_from_dict(spec: dict[str, Any]) -> LabelRule:
    """Inverse of :func:`rule_to_dict`."""
    params = dict(spec)
    return make_rule(params.pop("kind"), **params)


def check_rule_fits(rule: LabelRule, columns: list[str]) -> None:
    """Refuse a rule whose feedback columns the source does not have.

    Raises:
        DataError: the rule reads feedback the source does not carry.
    """
    kind = cn.feedback_kind(columns)
    if rule.feedback != kind:
        raise DataError(
            f"labeling rule {rule.name!r} needs {rule.feedback} feedback "
            f"({list(cn.FEEDBACK_KINDS[rule.feedback])}), but the source carries {kind} "
            f"feedback; use one of "
            f"{sorted(name for name, cls in RULES.items() if cls.feedback == kind)}"
        )


def apply_labels(table: pa.Table, rule: LabelRule) -> pa.Table:
    """Set the int8 ``label`` column (1, 0 or ``UNCLEAR``) from ``rule`` (already fitted)."""
    labels = pa.array(rule.labels(table), type=pa.int8())
    if cn.LABEL in table.column_names:
        return table.set_column(table.schema.get_field_index(cn.LABEL), cn.LABEL, labels)
    return table.append_column(cn.LABEL, labels)


def check_some_labeled(labels: np.ndarray, rule: LabelRule) -> None:
    """Refuse a rule that leaves every row unclear (nothing to train on or evaluate).

    Raises:
        NoLabeledRowsError: no label is 0 or 1 (with the row count and the rule).
    """
    if (labels != UNCLEAR).any():
        return
    raise NoLabeledRowsError(
        f"the labeling rule {rule_to_dict(rule)} labels none of the {len(labels)} rows: every "
        "one falls between its thresholds (unclear), so no split would hold a labeled row. "
        "Choose thresholds that label some rows 1 and some 0 (--pos-threshold/--neg-threshold, "
        "--finish-pos/--finish-neg, --lower-quantile/--upper-quantile), or another --rule."
    )
