"""Seeded splits, label density and cold rows — exact sizes, independent of block layout.

Every labeled row is ranked by a seeded hash of its (user, item) key (ties, which need a 64-bit
collision, broken by the key itself). A split is a range of ranks, so it is fixed by the *cut*
— the key at which the next range starts. Planning needs only the key columns of all rows
(:func:`plan_splits`, run once, in memory or on the Ray driver); assigning compares each row's
rank with the cuts (:func:`assign_split_column`, a per-row function run as a Ray Data
``map_batches`` step). Neither the order of rows nor their grouping into blocks can change
which split a row lands in.

Sizes: with cumulative fractions ``c_k`` over ``n`` rows, the ranges end at
``floor(n * c_k + 1/2)`` (fractions taken as the exact decimals written), so sizes sum to ``n``
exactly and each is within one row of ``n * f_k``. The same rounding sets the kept count of the
label-density option and the training-test count of the 90/10 split.

Steps, in order (paper, §4.1 and Algorithm 1 line 1; method.md §1):

1. labeled rows: random 60/20/20 train/valid/test (or the split given by pre-split files);
   unclear rows carry no label to evaluate, so all of them join the training pool — except in
   pre-split sources, where an unclear row of the valid/test files is dropped (counted), since
   moving it into training would leak an evaluation interaction;
2. label density (optional): keep a seeded ``label_fraction`` of the labeled *training* rows; the
   others become observed-unlabeled ("hidden") rows whose label is kept only as a hidden label;
3. the kept labeled training rows split 90/10 into training-train and training-test.

Cold rows are valid/test rows whose user or item never occurs in the training split
(training-train, training-test, unclear and hidden rows); they are kept and flagged, or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.errors import EmptySplitError, SingleClassSplitError
from invlearn_ray.data.hashing import hash_keys
from invlearn_ray.data.labels import UNCLEAR

SPLIT = "split"
COLD = "cold"

TRAIN_TRAIN, TRAIN_TEST, VALID, TEST, UNCLEAR_ROWS, HIDDEN = 0, 1, 2, 3, 4, 5
DROPPED_UNCLEAR_EVAL, DROPPED_COLD_VALID, DROPPED_COLD_TEST = 6, 7, 8

SPLIT_NAMES = {
    TRAIN_TRAIN: "train_train",
    TRAIN_TEST: "train_test",
    VALID: "valid",
    TEST: "test",
    UNCLEAR_ROWS: "unclear",
    HIDDEN: "hidden",
    DROPPED_UNCLEAR_EVAL: "dropped_unclear_eval",
    DROPPED_COLD_VALID: "dropped_cold_valid",
    DROPPED_COLD_TEST: "dropped_cold_test",
}
"""Name of each ``split`` code; the last three are rows the build drops (and counts)."""

DROPPED_CODES = (DROPPED_UNCLEAR_EVAL, DROPPED_COLD_VALID, DROPPED_COLD_TEST)

TRAINING_CODES = (TRAIN_TRAIN, TRAIN_TEST, UNCLEAR_ROWS, HIDDEN)
"""Codes of rows in the training split: what "seen in training" means."""

LABELED_CODES = (TRAIN_TRAIN, TRAIN_TEST, VALID, TEST)
"""Codes of rows written to the labeled split directories; none may end up empty."""

COLD_POLICIES = ("keep", "drop")

DATA_SEED = 2026
"""The seed of every dataset the command lines build when none is given: the splits' (here) and
the synthetic generator's (``build_data.py --seed``, the benchmark's :class:`DatasetSpec`), so
``build_data.py``'s default dataset is the one ``full_benchmark.py --quick`` trains on."""

_SALT_SPLIT = 0x5B1D
_SALT_LABEL_FRACTION = 0x1AB3
_SALT_TRAIN_TEST = 0x7E57


@dataclass(frozen=True)
class SplitOptions:
    """Parameters of the split steps.

    Attributes:
        seed: seeds every hash-based choice.
        fractions: train/valid/test fractions of the labeled rows (ignored for pre-split
            sources); positive, summing to 1.
        train_test_fraction: share of the kept labeled training rows that become
            training-test data (IG's meta-validation set); the paper uses 10%.
        label_fraction: share of labeled training rows kept labeled (issue 6's label density);
            the rest become observed-unlabeled with hidden labels.
        cold_policy: ``"keep"`` (flag cold valid/test rows) or ``"drop"`` them.
    """

    seed: int = DATA_SEED
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    train_test_fraction: float = 0.1
    label_fraction: float = 1.0
    cold_policy: str = "keep"

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f <= 0 for f in self.fractions):
            raise ValueError(f"split fractions must be three positive numbers: {self.fractions}")
        if sum(_exact(f) for f in self.fractions) != 1:
            raise ValueError(f"split fractions must sum to 1: {self.fractions}")
        if not 0 < self.train_test_fraction < 1:
            raise ValueError(f"train_test_fraction must be in (0, 1): {self.train_test_fraction}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1]: {self.label_fraction}")
        if self.cold_policy not in COLD_POLICIES:
            raise ValueError(f"cold_policy must be one of {COLD_POLICIES}: {self.cold_policy!r}")


def _exact(value: float) -> Fraction:
    """The decimal a fraction was written as (0.6 → 3/5), so rounding has no float error."""
    return Fraction(repr(float(value)))


def rounded_share(n: int, fraction: float | Fraction) -> int:
    """``floor(n * fraction + 1/2)``, exactly."""
    share = fraction if isinstance(fraction, Fraction) else _exact(fraction)
    return int(n * share + Fraction(1, 2))


@dataclass(frozen=True)
class Cut:
    """Start of a rank range: the (hash, user, item) key of its first row."""

    hash: int
    user: int
    item: int


def _ranks_before(hashes: np.ndarray, users: np.ndarray, items: np.ndarray, cut: Cut | None):
    """True where a row ranks strictly before ``cut`` (None: after every row)."""
    if cut is None:
        return np.ones(len(hashes), dtype=bool)
    return (hashes < cut.hash) | (
        (hashes == cut.hash) & ((users < cut.user) | ((users == cut.user) & (items < cut.item)))
    )


def _cut_at(hashes: np.ndarray, users: np.ndarray, items: np.ndarray, count: int) -> Cut | None:
    """The cut after the ``count`` lowest-ranked rows (None when that is all of them)."""
    if count >= len(hashes):
        return None
    order = np.lexsort((items, users, hashes))
    first = order[count]
    return Cut(int(hashes[first]), int(users[first]), int(items[first]))


def _key_tensor(keys: np.ndarray) -> torch.Tensor:
    # A copy: Arrow-backed arrays are read-only, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(keys, dtype=np.int64))


def split_hash(seed: int, salt: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Seeded int64 hash of each (user, item) key — the rank of a row in one split step."""
    return hash_keys(seed, salt, _key_tensor(users), _key_tensor(items)).numpy()


@dataclass(frozen=True)
class SplitPlan:
    """The cuts that fix every row's split, plus the planned sizes (for the manifest)."""

    seed: int
    presplit: bool
    valid_cut: Cut | None
    test_cut: Cut | None
    keep_cut: Cut | None
    train_test_cut: Cut | None
    sizes: dict[str, int] = field(default_factory=dict)


def _first_split(
    seed: int,
    users: np.ndarray,
    items: np.ndarray,
    labeled: np.ndarray,
    given_split: np.ndarray | None,
    valid_cut: Cut | None,
    test_cut: Cut | None,
) -> np.ndarray:
    """Step 1: ``TRAIN_TRAIN`` (training, refined later), ``VALID``, ``TEST`` or unclear codes."""
    codes = np.full(len(users), UNCLEAR_ROWS, dtype=np.int8)
    if given_split is not None:
        mapped = np.array([TRAIN_TRAIN, VALID, TEST], dtype=np.int8)[given_split]
        codes[labeled] = mapped[labeled]
        codes[~labeled & (given_split != cn.GIVEN_SPLIT_CODES["train"])] = DROPPED_UNCLEAR_EVAL
        return codes
    hashes = split_hash(seed, _SALT_SPLIT, users, items)
    before_valid = _ranks_before(hashes, users, items, valid_cut)
    before_test = _ranks_before(hashes, users, items, test_cut)
    codes[labeled & before_valid] = TRAIN_TRAIN
    codes[labeled & ~before_valid & before_test] = VALID
    codes[labeled & ~before_test] = TEST
    return codes


def plan_splits(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    given_split: np.ndarray | None,
    options: SplitOptions,
) -> SplitPlan:
    """Compute the cuts from the key columns of every (de-duplicated) row.

    Args:
        users, items: int64 ids of every row.
        labels: int8 labels, ``UNCLEAR`` for unclear rows.
        given_split: ``given_split`` codes for pre-split sources, else None.
        options: fractions, seed, label fraction.

    Raises:
        EmptySplitError: if training-train, training-test, valid or test would be empty.
    """
    seed = options.seed
    labeled = labels != UNCLEAR
    valid_cut = test_cut = None
    if given_split is None:
        lab_users, lab_items = users[labeled], items[labeled]
        hashes = split_hash(seed, _SALT_SPLIT, lab_users, lab_items)
        n_labeled = len(lab_users)
        train_end = rounded_share(n_labeled, options.fractions[0])
        valid_end = rounded_share(
            n_labeled, _exact(options.fractions[0]) + _exact(options.fractions[1])
        )
        valid_cut = _cut_at(hashes, lab_users, lab_items, train_end)
        test_cut = _cut_at(hashes, lab_users, lab_items, valid_end)
    codes = _first_split(seed, users, items, labeled, given_split, valid_cut, test_cut)

    in_train = codes == TRAIN_TRAIN
    tr_users, tr_items = users[in_train], items[in_train]
    n_kept = rounded_share(len(tr_users), options.label_fraction)
    keep_hash = split_hash(seed, _SALT_LABEL_FRACTION, tr_users, tr_items)
    keep_cut = _cut_at(keep_hash, tr_users, tr_items, n_kept)
    kept = _ranks_before(keep_hash, tr_users, tr_items, keep_cut)

    kept_users, kept_items = tr_users[kept], tr_items[kept]
    n_train_test = rounded_share(len(kept_users), options.train_test_fraction)
    tt_hash = split_hash(seed, _SALT_TRAIN_TEST, kept_users, kept_items)
    train_test_cut = _cut_at(tt_hash, kept_users, kept_items, len(kept_users) - n_train_test)

    sizes = {
        "train_train": len(kept_users) - n_train_test,
        "train_test": n_train_test,
        "valid": int((codes == VALID).sum()),
        "test": int((codes == TEST).sum()),
        "unclear": int((codes == UNCLEAR_ROWS).sum()),
        "hidden": len(tr_users) - n_kept,
        "dropped_unclear_eval": int((codes == DROPPED_UNCLEAR_EVAL).sum()),
    }
    empty = [name for name in ("train_train", "train_test", "valid", "test") if not sizes[name]]
    if empty:
        raise EmptySplitError(
            f"split(s) {empty} would be empty: {len(users)} rows "
            f"({int(labeled.sum())} labeled) give planned sizes {sizes}. Use a larger source, "
            "larger fractions for those splits, or a larger label_fraction"
            + (
                "; a pre-split source needs a non-empty file for each split."
                if given_split is not None
                else "."
            )
        )
    return SplitPlan(
        seed, given_split is not None, valid_cut, test_cut, keep_cut, train_test_cut, sizes
    )


def assign_splits(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    given_split: np.ndarray | None,
    plan: SplitPlan,
) -> np.ndarray:
    """int8 split code of each row under ``plan`` (a pure per-row function)."""
    if (given_split is not None) != plan.presplit:
        raise ValueError("assign_splits: given_split must be passed exactly for pre-split plans")
    seed = plan.seed
    codes = _first_split(
        seed, users, items, labels != UNCLEAR, given_split, plan.valid_cut, plan.test_cut
    )
    in_train = codes == TRAIN_TRAIN
    keep_hash = split_hash(seed, _SALT_LABEL_FRACTION, users, items)
    kept = in_train & _ranks_before(keep_hash, users, items, plan.keep_cut)
    codes[in_train & ~kept] = HIDDEN
    tt_hash = split_hash(seed, _SALT_TRAIN_TEST, users, items)
    codes[kept & ~_ranks_before(tt_hash, users, items, plan.train_test_cut)] = TRAIN_TEST
    return codes


def _given_split(table: pa.Table) -> np.ndarray | None:
    if cn.GIVEN_SPLIT not in table.column_names:
        return None
    return table.column(cn.GIVEN_SPLIT).to_numpy()


def plan_table_splits(table: pa.Table, options: SplitOptions) -> SplitPlan:
    """:func:`plan_splits` over a labeled canonical table (or just its key columns)."""
    return plan_splits(
        table.column(cn.USER).to_numpy(),
        table.column(cn.ITEM).to_numpy(),
        table.column(cn.LABEL).to_numpy(),
        _given_split(table),
        options,
    )


def assign_split_column(table: pa.Table, plan: SplitPlan) -> pa.Table:
    """Add the int8 ``split`` column (``SPLIT_NAMES`` codes) to a labeled canonical table."""
    codes = assign_splits(
        table.column(cn.USER).to_numpy(),
        table.column(cn.ITEM).to_numpy(),
        table.column(cn.LABEL).to_numpy(),
        _given_split(table),
        plan,
    )
    return table.append_column(SPLIT, pa.array(codes, type=pa.int8()))


def training_presence(
    users: np.ndarray, items: np.ndarray, codes: np.ndarray, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the users and items that occur in the training split."""
    training = np.isin(codes, TRAINING_CODES)
    user_seen = np.zeros(n_users, dtype=bool)
    item_seen = np.zeros(n_items, dtype=bool)
    user_seen[users[training]] = True
    item_seen[items[training]] = True
    return user_seen, item_seen


def flag_cold_column(
    table: pa.Table, user_seen: np.ndarray, item_seen: np.ndarray, policy: str
) -> pa.Table:
    """Add the bool ``cold`` column; with ``policy="drop"`` recode cold valid/test rows.

    A row is cold when its user or item does not occur in the training split; only valid and
    test rows can be cold (training rows define what is seen). Dropped rows keep their place
    in the table under the ``dropped_cold_valid`` / ``dropped_cold_test`` codes, so they are
    counted, not lost.
    """
    if policy not in COLD_POLICIES:
        raise ValueError(f"cold_policy must be one of {COLD_POLICIES}: {policy!r}")
    users = table.column(cn.USER).to_numpy()
    items = table.column(cn.ITEM).to_numpy()
    codes = table.column(SPLIT).to_numpy().copy()
    cold = ((codes == VALID) | (codes == TEST)) & (~user_seen[users] | ~item_seen[items])
    if policy == "drop":
        codes[cold & (codes == VALID)] = DROPPED_COLD_VALID
        codes[cold & (codes == TEST)] = DROPPED_COLD_TEST
    table = table.set_column(
        table.schema.get_field_index(SPLIT), SPLIT, pa.array(codes, type=pa.int8())
    )
    return table.append_column(COLD, pa.array(cold))


def cold_summary(
    users: np.ndarray,
    items: np.ndarray,
    codes: np.ndarray,
    cold: np.ndarray,
    user_seen: np.ndarray,
    item_seen: np.ndarray,
) -> dict[str, dict[str, int]]:
    """Per evaluated split: cold rows, distinct unseen users and items, and rows dropped."""
    summary = {}
    for name, kept_code, dropped_code in (
        ("valid", VALID, DROPPED_COLD_VALID),
        ("test", TEST, DROPPED_COLD_TEST),
    ):
        home = (codes == kept_code) | (codes == dropped_code)
        summary[name] = {
            "rows": int((cold & home).sum()),
            "users": len(np.unique(users[home & ~user_seen[users]])),
            "items": len(np.unique(items[home & ~item_seen[items]])),
            "dropped": int((codes == dropped_code).sum()),
        }
    return summary


def check_evaluation_not_empty(codes: np.ndarray) -> None:
    """Raise if dropping cold rows emptied valid or test."""
    for code, dropped in ((VALID, DROPPED_COLD_VALID), (TEST, DROPPED_COLD_TEST)):
        if not (codes == code).any():
            raise EmptySplitError(
                f"split {SPLIT_NAMES[code]!r} is empty after dropping cold rows: all "
                f"{int((codes == dropped).sum())} of its rows have a user or item that never "
                "occurs in training. Use cold_policy 'keep' (--cold-policy keep), or a source "
                "with more interactions per user and item."
            )


SINGLE_CLASS_ALLOWED = ("train_train", "train_test")
"""Labeled splits that may hold one class (with a warning): training on positives only is the
implicit-feedback setting, where NS, IDL and IG draw their negatives from unlabeled rows.
Validation and test may not: AUC and GAUC, which select and score every model, need both."""


def check_label_classes(codes: np.ndarray, labels: np.ndarray) -> list[str]:
    """Check that every labeled split holds both labels.

    Args:
        codes: each row's split code (after cold rows were flagged or dropped).
        labels: each row's label (1, 0 or ``UNCLEAR``).

    Returns:
        One warning per training split that holds a single class (see
        :data:`SINGLE_CLASS_ALLOWED`), with its counts.

    Raises:
        SingleClassSplitError: validation or test holds a single class.
    """
    warnings = []
    for code in LABELED_CODES:
        split_labels = labels[codes == code]
        positives = int((split_labels == 1).sum())
        negatives = len(split_labels) - positives
        if not len(split_labels) or (positives and negatives):
            continue
        name = SPLIT_NAMES[code]
        counts = (
            f"split {name!r} holds {len(split_labels)} rows, all labeled "
            f"{1 if positives else 0} (label 1: {positives}, label 0: {negatives})"
        )
        if name not in SINGLE_CLASS_ALLOWED:
            everywhere = labels[np.isin(codes, LABELED_CODES)]
            raise SingleClassSplitError(
                f"{counts}: AUC and GAUC, which select and score models, need both labels. The "
                f"labeling rule gives {int((everywhere == 1).sum())} labeled rows label 1 and "
                f"{int((everywhere == 0).sum())} label 0; choose thresholds that label some rows "
                f"{0 if positives else 1} (e.g. --rule rating --neg-threshold), or a source "
                "with both kinds of feedback."
            )
        warnings.append(
            f"{counts}: methods that learn from labeled rows alone (none, T-CE, R-CE) cannot "
            "separate items; NS, IDL and IG draw negatives from unlabeled rows"
        )
    return warnings
