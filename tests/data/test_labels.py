"""Labeling rules at their boundaries, and their parameter checks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.labels import (
    UNCLEAR,
    FinishRateRule,
    GivenLabelRule,
    PlaytimeQuartileRule,
    RatingRule,
    apply_labels,
    check_rule_fits,
    default_rule,
    make_rule,
    rule_from_dict,
    rule_to_dict,
)


def _ratings(*values: float) -> pa.Table:
    return pa.table({cn.RATING: pa.array(values, type=pa.float64())})


def test_default_rating_rule_is_the_released_codes_rule():
    labels = RatingRule().labels(_ratings(1, 2, 2.5, 3, 4, 5))
    assert labels.tolist() == [0, 0, UNCLEAR, 1, 1, 1]


def test_rating_rule_thresholds_are_inclusive_with_an_unclear_band():
    rule = RatingRule(pos_threshold=4, neg_threshold=1)
    assert rule.labels(_ratings(1, 1.5, 2, 3, 3.99, 4, 5)).tolist() == [
        0,
        UNCLEAR,
        UNCLEAR,
        UNCLEAR,
        UNCLEAR,
        1,
        1,
    ]


def test_rating_rule_refuses_crossed_thresholds():
    with pytest.raises(ValueError, match="neg_threshold .* must be below pos_threshold"):
        RatingRule(pos_threshold=2, neg_threshold=2)


def test_finish_rate_rule_is_strict_at_both_boundaries():
    table = pa.table(
        {
            cn.PLAY_TIME: [0.0, 1.99, 2.0, 5.0, 8.0, 8.01, 12.0],
            cn.DURATION: [10.0] * 7,
        }
    )
    assert FinishRateRule().labels(table).tolist() == [0, 0, UNCLEAR, UNCLEAR, UNCLEAR, 1, 1]


def test_playtime_quartile_rule_fits_quantiles_then_labels_strictly():
    play = np.arange(1.0, 102.0)  # 1..101: quartiles 26 and 76
    table = pa.table({cn.PLAY_TIME: play, cn.DURATION: np.full(101, 200.0)})
    fitted = PlaytimeQuartileRule().fit(table)
    assert (fitted.lower_value, fitted.upper_value) == (26.0, 76.0)
    labels = fitted.labels(table)
    assert (labels[play < 26] == 0).all()
    assert (labels[(play >= 26) & (play <= 76)] == UNCLEAR).all()
    assert (labels[play > 76] == 1).all()
    assert (labels == 1).sum() == (labels == 0).sum() == 25


def test_playtime_quartile_rule_must_be_fitted():
    with pytest.raises(RuntimeError, match="call fit"):
        PlaytimeQuartileRule().labels(pa.table({cn.PLAY_TIME: [1.0]}))


def test_given_labels_pass_through_as_int8():
    table = pa.table({cn.LABEL: pa.array([1, 0, 1], type=pa.int8())})
    out = apply_labels(table, GivenLabelRule())
    assert out.column(cn.LABEL).to_pylist() == [1, 0, 1]
    assert out.column(cn.LABEL).type == pa.int8()


def test_apply_labels_appends_an_int8_label_column():
    out = apply_labels(_ratings(1, 5), RatingRule())
    assert out.column(cn.LABEL).type == pa.int8()
    assert out.column(cn.LABEL).to_pylist() == [0, 1]


def test_registry_refuses_unknown_rules_and_parameters():
    with pytest.raises(ValueError, match=r"unknown labeling rule 'stars'; valid: \["):
        make_rule("stars")
    with pytest.raises(ValueError, match="labeling rule 'rating'"):
        make_rule("rating", pos=3)


def test_rules_round_trip_through_their_manifest_form():
    for rule in (
        RatingRule(4, 1),
        FinishRateRule(0.9, 0.1),
        PlaytimeQuartileRule(lower_value=2.0, upper_value=9.0),
        GivenLabelRule(),
    ):
        assert rule_from_dict(rule_to_dict(rule)) == rule


def test_defaults_follow_the_feedback_kind():
    assert default_rule("rating") == RatingRule(3, 2)
    assert default_rule("micro_video") == FinishRateRule(0.8, 0.2)
    assert default_rule("label") == GivenLabelRule()


def test_a_rule_needs_its_feedback_columns():
    with pytest.raises(ValueError, match="'finish-rate' needs micro_video feedback"):
        check_rule_fits(FinishRateRule(), [cn.USER, cn.ITEM, cn.RATING])
