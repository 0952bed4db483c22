"""The popularity scorer: counts, the smoothed-rate formula, shards, and its run as a method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory, make_synthetic_recdata
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.recdata import Interactions
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.methods.popularity import fit_item_prior, item_counts, item_prior_logits
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

N_ITEMS = 6


def rows(items, labels) -> Interactions:
    items = torch.tensor(items)
    return Interactions(torch.zeros_like(items), items, torch.tensor(labels, dtype=torch.float32))


def reference_logits(items, labels, observed, prior, play_weight):
    """The formula item by item, in numpy."""
    items, labels = np.asarray(items), np.asarray(labels, dtype=float)
    global_rate = labels.mean()
    out = []
    for item in range(N_ITEMS):
        mine = labels[items == item]
        rate = (mine.sum() + prior * global_rate) / (len(mine) + prior)
        plays = len(mine) + int(np.sum(np.asarray(observed) == item))
        out.append(np.log(rate / (1 - rate)) + play_weight * np.log1p(plays))
    return np.array(out)


ITEMS = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4]
LABELS = [1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1]
OBSERVED = [5, 5, 5, 0, 2]


@pytest.mark.parametrize(("prior", "play_weight"), [(5.0, 0.0), (0.5, 0.3), (20.0, 1.5)])
def test_logits_are_the_smoothed_positive_rate_plus_weighted_log_plays(prior, play_weight):
    counts = item_counts(rows(ITEMS, LABELS), torch.tensor(OBSERVED), N_ITEMS)
    logits = item_prior_logits(counts, prior, play_weight)
    expected = reference_logits(ITEMS, LABELS, OBSERVED, prior, play_weight)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_an_item_without_labeled_rows_gets_the_global_rate():
    counts = item_counts(rows(ITEMS, LABELS), torch.tensor(OBSERVED), N_ITEMS)
    logits = item_prior_logits(counts, 5.0, 0.0)
    global_rate = np.mean(LABELS)
    assert logits[5].item() == pytest.approx(np.log(global_rate / (1 - global_rate)), rel=1e-5)


def test_a_strong_prior_leaves_the_play_count_to_rank_the_items():
    counts = item_counts(rows(ITEMS, LABELS), torch.tensor(OBSERVED), N_ITEMS)
    logits = item_prior_logits(counts, 1e9, 1.0)
    plays = counts[2]
    assert torch.equal(torch.argsort(logits, stable=True), torch.argsort(plays, stable=True))


def test_no_prior_and_a_sure_item_give_finite_logits():
    counts = item_counts(rows([0, 1], [1, 0]), torch.tensor([], dtype=torch.int64), N_ITEMS)
    logits = item_prior_logits(counts, 0.0, 0.0)
    assert torch.isfinite(logits).all() and logits[0] > 0 > logits[1]


def test_a_negative_prior_or_play_weight_is_an_error():
    counts = item_counts(rows(ITEMS, LABELS), torch.tensor(OBSERVED), N_ITEMS)
    with pytest.raises(ValueError, match="must be >= 0"):
        item_prior_logits(counts, -1.0, 0.0)


class OtherShard:
    """A collective whose all-reduce adds another worker's tensors (fixed in advance)."""

    world_size, rank = 2, 0

    def __init__(self, other: list[torch.Tensor]) -> None:
        self.other = other

    def all_reduce_sum_(self, tensors: list[torch.Tensor]) -> None:
        for tensor, other in zip(tensors, self.other, strict=True):
            tensor += other


def test_shards_summed_by_the_collective_give_the_whole_datas_scorer():
    whole = fit_item_prior(rows(ITEMS, LABELS), torch.tensor(OBSERVED), 2, N_ITEMS, 5.0, 0.4)
    first, second = rows(ITEMS[:6], LABELS[:6]), rows(ITEMS[6:], LABELS[6:])
    second_counts = item_counts(second, torch.tensor(OBSERVED[3:]), N_ITEMS)
    sharded = fit_item_prior(
        first, torch.tensor(OBSERVED[:3]), 2, N_ITEMS, 5.0, 0.4, OtherShard([second_counts])
    )
    torch.testing.assert_close(sharded.item_logits, whole.item_logits)


def test_popularity_runs_as_a_method_scored_once_with_valid_and_test_metrics():
    data = make_synthetic_recdata(SyntheticConfig.preset("tiny"))
    config = TrainConfig(method="popularity", popularity_prior=2.0, popularity_play_weight=0.5)
    result = Trainer(config, data).fit()
    assert (result.epochs_run, result.best_epoch) == (1, 0)
    labeled = data.labeled_training()
    expected = reference_scores(data, labeled, prior=2.0, play_weight=0.5)
    test = data.test
    auc = roc_auc_score(test.labels.numpy(), expected[test.items.numpy()])
    assert result.test["auc"] == pytest.approx(auc, abs=1e-9)
    assert {"auc", "gauc", "full_recall_at_20"} <= set(result.valid) | set(result.test)
    assert np.isfinite(result.history[0].train_loss)


def reference_scores(data, labeled, prior, play_weight):
    items, labels = labeled.items.numpy(), labeled.labels.numpy()
    observed = data.observed_unlabeled.items.numpy()
    global_rate = labels.mean()
    positives = np.bincount(items, weights=labels, minlength=data.n_items)
    counts = np.bincount(items, minlength=data.n_items)
    plays = counts + np.bincount(observed, minlength=data.n_items)
    rate = (positives + prior * global_rate) / (counts + prior)
    return np.log(rate / (1 - rate)) + play_weight * np.log1p(plays)


def test_popularity_reproduces_the_ml100k_anchor(ml100k_dir, tmp_path):
    # Issue 13's anchor: smoothed item positive rate, prior weight 5, all labels:
    # test AUC 0.713 / GAUC 0.706 on the shared ML-100K split.
    source = SourceSpec.presplit(ml100k_dir / "split", "ml100k")
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions()), tmp_path / "ml")
    data = load_dataset(tmp_path / "ml")
    result = Trainer(TrainConfig(method="popularity", popularity_prior=5.0), data).fit()
    assert result.test["auc"] == pytest.approx(0.713, abs=5e-4)
    assert result.test["gauc"] == pytest.approx(0.706, abs=5e-4)


@pytest.mark.parametrize("method", ["none", "ig"])
def test_biased_mf_starts_from_the_popularity_scorer_of_every_labeled_row_it_may_read(method):
    # IG fits training-train and steps on training-test: both are labeled rows it reads, so
    # its prior counts both, and equals the prior of a method that fits all labeled rows.
    data = make_synthetic_recdata(SyntheticConfig.preset("tiny"))
    config = TrainConfig(
        method=method,
        backbone="biased_mf",
        bias_init="popularity",
        popularity_prior=2.0,
        popularity_play_weight=0.5,
    )
    model = Trainer(config, data).model
    expected = reference_scores(data, data.labeled_training(), prior=2.0, play_weight=0.5)
    start = (model.global_bias + model.item_bias.squeeze(1)).detach().numpy()
    np.testing.assert_allclose(start, expected, rtol=1e-5, atol=1e-5)
    assert float(model.item_bias.detach().mean()) == pytest.approx(0.0, abs=1e-5)
    assert not model.user_bias.detach().any()


def test_the_popularity_start_ranks_every_users_items_as_the_scorer_does():
    data = make_synthetic_recdata(SyntheticConfig.preset("tiny"))
    scorer = Trainer(TrainConfig(method="popularity"), data).model
    started = Trainer(
        TrainConfig(backbone="biased_mf", bias_init="popularity", init_scale=1e-4), data
    ).model
    users, items = data.test.users, data.test.items
    with torch.no_grad():
        torch.testing.assert_close(started(users, items), scorer(users, items), atol=1e-3, rtol=0)


def test_a_popularity_start_on_a_backbone_without_item_biases_is_a_clear_error():
    with pytest.raises(ValueError, match="bias_init='popularity'.*'gmf' has none"):
        TrainConfig(backbone="gmf", bias_init="popularity")
