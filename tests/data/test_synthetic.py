"""The planted-truth generator: reproducible, consistent with its oracle, realistically biased."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.labels import UNCLEAR, FinishRateRule, RatingRule
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import (
    PRESETS,
    PlantedTruth,
    SyntheticConfig,
    generate_interactions,
)

SMALL = SyntheticConfig(n_users=200, n_items=300, labeled_density=0.04, seed=3)


@pytest.fixture(scope="module")
def small():
    return generate_interactions(SMALL)


def _ids(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.from_numpy(np.array(table.column(cn.USER_RAW).to_pylist(), dtype=np.int64))
    items = torch.from_numpy(np.array(table.column(cn.ITEM_RAW).to_pylist(), dtype=np.int64))
    return users, items


def test_generation_is_reproducible_and_seed_dependent(small):
    assert generate_interactions(SMALL).table.equals(small.table)
    other = generate_interactions(SyntheticConfig(**{**SMALL.to_dict(), "seed": 4}))
    assert not other.table.equals(small.table)


def test_true_label_column_matches_the_oracle_in_any_batch(small):
    users, items = _ids(small.table)
    stored = small.table.column(cn.TRUE_LABEL).to_numpy()
    assert np.array_equal(small.truth.labels(users, items).numpy(), stored)
    assert np.array_equal(small.truth(users[7:19], items[7:19]).numpy(), stored[7:19])


def test_every_pair_has_a_label_and_probabilities_drive_it(small):
    users = torch.arange(200).repeat_interleave(300)
    items = torch.arange(300).repeat(200)
    labels = small.truth.labels(users, items)
    assert labels.dtype == torch.int8 and set(labels.unique().tolist()) == {0, 1}
    probability = small.truth.probabilities(users, items)
    high, low = probability > 0.8, probability < 0.2
    assert labels[high].float().mean() > 0.75 and labels[low].float().mean() < 0.25


def test_density_and_unclear_share_follow_the_config(small):
    stats = small.stats
    assert stats["labeled_density"] == pytest.approx(SMALL.labeled_density, rel=0.1)
    labels = FinishRateRule().labels(small.table)
    assert (labels != UNCLEAR).mean() == pytest.approx(SMALL.clear_rate, abs=0.03)
    assert (labels != UNCLEAR).sum() == stats["clear_rows"]


def test_clear_feedback_agrees_with_truth_up_to_the_noise(small):
    labels = FinishRateRule().labels(small.table)
    truth = small.table.column(cn.TRUE_LABEL).to_numpy()
    clear = labels != UNCLEAR
    assert (labels[clear] == truth[clear]).mean() == pytest.approx(1 - SMALL.label_noise, abs=0.02)


def test_rating_feedback_puts_unclear_rows_at_three():
    config = SyntheticConfig(**{**SMALL.to_dict(), "feedback": "rating"})
    source = generate_interactions(config)
    ratings = source.table.column(cn.RATING).to_numpy()
    assert set(np.unique(ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert config.default_rule() == RatingRule(4, 2)
    labels = config.default_rule().labels(source.table)
    assert ((labels == UNCLEAR) == (ratings == 3.0)).all()


def test_exposure_is_biased_but_unobserved_pairs_hold_positives(small):
    stats = small.stats
    assert stats["true_positive_share_observed"] > stats["true_positive_share_all_pairs"]
    assert 0.1 < stats["true_positive_share_unobserved"] < stats["true_positive_share_observed"]


def test_truth_round_trips_through_npz_without_pickle(tmp_path, small):
    small.truth.save(tmp_path / "truth.npz")
    loaded = PlantedTruth.load(tmp_path / "truth.npz")
    users, items = torch.randint(0, 200, (500,)), torch.randint(0, 300, (500,))
    assert torch.equal(loaded.labels(users, items), small.truth.labels(users, items))
    assert loaded.seed == small.truth.seed


def test_presets_and_bad_configs():
    assert set(PRESETS) == {"default", "tiny", "ml1m_scale"}
    assert SyntheticConfig.preset("tiny", seed=9).seed == 9
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'"):
        SyntheticConfig.preset("huge")
    with pytest.raises(ValueError, match="feedback must be one of"):
        SyntheticConfig(feedback="clicks")
    with pytest.raises(ValueError, match="observed density"):
        SyntheticConfig(labeled_density=0.9, clear_rate=0.5)


def test_make_synthetic_recdata_fills_every_field_and_hides_truth():
    data = make_synthetic_recdata(SMALL)
    assert (data.n_users, data.n_items) == (200, 300)
    for part in (data.train_train, data.train_test, data.valid, data.test):
        assert len(part) > 0 and part.labels.dtype == torch.float32
    unlabeled = data.observed_unlabeled
    assert len(unlabeled) > 0
    assert torch.equal(unlabeled.hidden_labels, data.truth(unlabeled.users, unlabeled.items))
    assert data.cold_valid.dtype == torch.bool and len(data.cold_test) == len(data.test)
    training = data.labeled_training()
    assert data.seen_in_training.contains(training.users, training.items).all()
    assert data.seen_in_training.contains(unlabeled.users, unlabeled.items).all()
    assert data.manifest.conservation["holds"]


def test_label_fraction_turns_labeled_rows_into_hidden_unlabeled_rows():
    full = make_synthetic_recdata(SMALL)
    sparse = make_synthetic_recdata(SMALL, split=SplitOptions(seed=SMALL.seed, label_fraction=0.3))
    again = make_synthetic_recdata(SMALL, split=SplitOptions(seed=SMALL.seed, label_fraction=0.3))
    n_full = len(full.labeled_training())
    n_kept = len(sparse.labeled_training())
    n_hidden = len(sparse.observed_unlabeled) - len(full.observed_unlabeled)
    assert n_kept + n_hidden == n_full
    assert n_kept == round(0.3 * n_full)
    assert torch.equal(sparse.train_train.users, again.train_train.users)
    assert len(sparse.valid) == len(full.valid) and len(sparse.test) == len(full.test)
    counts = sparse.manifest.counts["unclear"]
    assert counts["origin_label_fraction"] == n_hidden
