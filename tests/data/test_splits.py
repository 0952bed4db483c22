"""Split sizes, disjointness, determinism, layout independence, label density and cold rows."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from invlearn_ray.data import canonical as cn
from invlearn_ray.data import splits as sp
from invlearn_ray.data.errors import EmptySplitError
from invlearn_ray.data.labels import UNCLEAR


def _rows(n: int, seed: int = 0, n_users: int = 300, n_items: int = 200, unclear: float = 0.0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, n, replace=False)
    labels = rng.integers(0, 2, n).astype(np.int8)
    labels[rng.random(n) < unclear] = UNCLEAR
    return (keys // n_items).astype(np.int64), (keys % n_items).astype(np.int64), labels


def _split(users, items, labels, options, given=None):
    plan = sp.plan_splits(users, items, labels, given, options)
    return plan, sp.assign_splits(users, items, labels, given, plan)


@pytest.mark.parametrize("n", [10, 11, 997, 5000])
def test_split_sizes_follow_the_documented_rounding(n):
    users, items, labels = _rows(n)
    plan, codes = _split(users, items, labels, sp.SplitOptions(seed=1))
    train = int(Fraction(3, 5) * n + Fraction(1, 2))
    valid_end = int(Fraction(4, 5) * n + Fraction(1, 2))
    train_test = int(train * Fraction(1, 10) + Fraction(1, 2))
    counts = np.bincount(codes, minlength=6)
    assert counts[sp.TRAIN_TRAIN] == train - train_test
    assert counts[sp.TRAIN_TEST] == train_test
    assert counts[sp.VALID] == valid_end - train
    assert counts[sp.TEST] == n - valid_end
    assert counts.sum() == n
    assert plan.sizes["valid"] == counts[sp.VALID]


def test_each_row_lands_in_exactly_one_split_and_unclear_rows_stay_in_training():
    users, items, labels = _rows(4000, unclear=0.3)
    _, codes = _split(users, items, labels, sp.SplitOptions(seed=2))
    assert set(np.unique(codes)) == {
        sp.TRAIN_TRAIN,
        sp.TRAIN_TEST,
        sp.VALID,
        sp.TEST,
        sp.UNCLEAR_ROWS,
    }
    assert ((codes == sp.UNCLEAR_ROWS) == (labels == UNCLEAR)).all()
    labeled = int((labels != UNCLEAR).sum())
    assert (np.isin(codes, sp.LABELED_CODES)).sum() == labeled


def test_splits_are_deterministic_per_seed_and_change_with_it():
    users, items, labels = _rows(3000)
    _, first = _split(users, items, labels, sp.SplitOptions(seed=5))
    _, again = _split(users, items, labels, sp.SplitOptions(seed=5))
    _, other = _split(users, items, labels, sp.SplitOptions(seed=6))
    assert np.array_equal(first, again)
    assert (first != other).mean() > 0.3


def test_assignment_ignores_row_order_and_block_boundaries():
    users, items, labels = _rows(3000, unclear=0.2)
    options = sp.SplitOptions(seed=9, label_fraction=0.5)
    plan, whole = _split(users, items, labels, options)
    perm = np.random.default_rng(1).permutation(len(users))
    blocks = np.array_split(perm, 7)
    by_block = np.empty_like(whole)
    for block in blocks:
        by_block[block] = sp.assign_splits(users[block], items[block], labels[block], None, plan)
    assert np.array_equal(by_block, whole)


def test_the_split_is_a_uniform_random_split_of_rows():
    users, items, labels = _rows(20000)
    _, codes = _split(users, items, labels, sp.SplitOptions(seed=4))
    for low in (0, 10000):
        share_test = (codes[low : low + 10000] == sp.TEST).mean()
        assert abs(share_test - 0.2) < 0.02


def test_label_fraction_conserves_training_rows_and_is_deterministic():
    users, items, labels = _rows(6000, unclear=0.1)
    _, full = _split(users, items, labels, sp.SplitOptions(seed=3))
    plan, dense = _split(users, items, labels, sp.SplitOptions(seed=3, label_fraction=0.25))
    _, again = _split(users, items, labels, sp.SplitOptions(seed=3, label_fraction=0.25))
    _, other = _split(users, items, labels, sp.SplitOptions(seed=4, label_fraction=0.25))
    training = np.isin(full, (sp.TRAIN_TRAIN, sp.TRAIN_TEST))
    kept = np.isin(dense, (sp.TRAIN_TRAIN, sp.TRAIN_TEST))
    hidden = dense == sp.HIDDEN
    assert kept.sum() + hidden.sum() == training.sum()
    assert kept.sum() == int(training.sum() * Fraction(1, 4) + Fraction(1, 2))
    assert not (hidden & ~training).any()
    assert np.array_equal(dense[~training], full[~training])
    assert np.array_equal(dense, again)
    assert not np.array_equal(dense == sp.HIDDEN, other == sp.HIDDEN)
    assert plan.sizes["hidden"] == hidden.sum()


def test_presplit_keeps_given_splits_and_drops_unclear_evaluation_rows():
    users, items, labels = _rows(900, unclear=0.2)
    given = np.repeat(np.array([0, 1, 2], dtype=np.int8), 300)
    _, codes = _split(users, items, labels, sp.SplitOptions(seed=1), given)
    lab = labels != UNCLEAR
    assert (codes[lab & (given == 1)] == sp.VALID).all()
    assert (codes[lab & (given == 2)] == sp.TEST).all()
    assert np.isin(codes[lab & (given == 0)], (sp.TRAIN_TRAIN, sp.TRAIN_TEST)).all()
    assert (codes[~lab & (given == 0)] == sp.UNCLEAR_ROWS).all()
    assert (codes[~lab & (given != 0)] == sp.DROPPED_UNCLEAR_EVAL).all()


def test_presplit_plan_refuses_a_missing_given_split():
    users, items, labels = _rows(90)
    given = np.zeros(90, dtype=np.int8)
    plan = sp.plan_splits(
        users, items, labels, np.repeat(np.int8([0, 1, 2]), 30), sp.SplitOptions()
    )
    with pytest.raises(ValueError, match="given_split must be passed exactly"):
        sp.assign_splits(users, items, labels, None, plan)
    with pytest.raises(EmptySplitError, match=r"\['valid', 'test'\] would be empty"):
        sp.plan_splits(users, items, labels, given, sp.SplitOptions())


def test_too_few_rows_for_every_split_is_an_error():
    users, items, labels = _rows(3)
    with pytest.raises(
        EmptySplitError, match=r"split\(s\) \['train_test', 'valid'\] would be empty"
    ):
        sp.plan_splits(users, items, labels, None, sp.SplitOptions())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.6, 0.3, 0.2)}, "sum to 1"),
        ({"fractions": (0.8, 0.2, 0.0)}, "three positive"),
        ({"train_test_fraction": 0.0}, "train_test_fraction"),
        ({"label_fraction": 1.5}, "label_fraction"),
        ({"cold_policy": "flag"}, "cold_policy"),
    ],
)
def test_bad_split_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sp.SplitOptions(**kwargs)


def _split_table(users, items, codes):
    return pa.table({cn.USER: users, cn.ITEM: items, sp.SPLIT: pa.array(codes, type=pa.int8())})


def test_cold_rows_are_flagged_or_dropped_and_summarized():
    users = np.array([0, 1, 0, 2, 1, 0, 3], dtype=np.int64)
    items = np.array([0, 1, 1, 0, 2, 3, 3], dtype=np.int64)
    codes = np.array(
        [sp.TRAIN_TRAIN, sp.TRAIN_TEST, sp.UNCLEAR_ROWS, sp.VALID, sp.VALID, sp.TEST, sp.TEST],
        dtype=np.int8,
    )
    user_seen, item_seen = sp.training_presence(users, items, codes, 4, 4)
    assert user_seen.tolist() == [True, True, False, False]
    assert item_seen.tolist() == [True, True, False, False]
    kept = sp.flag_cold_column(_split_table(users, items, codes), user_seen, item_seen, "keep")
    cold = kept.column(sp.COLD).to_numpy(zero_copy_only=False)
    assert cold.tolist() == [False, False, False, True, True, True, True]
    assert np.array_equal(kept.column(sp.SPLIT).to_numpy(), codes)
    dropped = sp.flag_cold_column(_split_table(users, items, codes), user_seen, item_seen, "drop")
    assert dropped.column(sp.SPLIT).to_pylist()[3:] == [
        sp.DROPPED_COLD_VALID,
        sp.DROPPED_COLD_VALID,
        sp.DROPPED_COLD_TEST,
        sp.DROPPED_COLD_TEST,
    ]
    summary = sp.cold_summary(
        users, items, dropped.column(sp.SPLIT).to_numpy(), cold, user_seen, item_seen
    )
    assert summary == {
        "valid": {"rows": 2, "users": 1, "items": 1, "dropped": 2},
        "test": {"rows": 2, "users": 1, "items": 1, "dropped": 2},
    }
    with pytest.raises(EmptySplitError, match="'valid' is empty after dropping cold rows"):
        sp.check_evaluation_not_empty(dropped.column(sp.SPLIT).to_numpy())
