"""The single-process trainer on planted-truth synthetic data."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.recdata import ObservedUnlabeled
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.methods.registry import METHODS, method_spec
from invlearn_ray.models.backbones import build_backbone
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.diagnostics import WEIGHT_BINS
from invlearn_ray.training.trainer import (
    Trainer,
    TrainingDiverged,
    check_divergence,
    largest_weight,
)


@pytest.fixture(scope="session")
def planted():
    """300 users x 400 items, 15% labeled density: ~10k labeled training rows.

    Labels are Bernoulli draws of the planted probabilities, so even the true probabilities
    score only AUC 0.80 / GAUC 0.78 on its test split (the oracle ceiling).
    """
    config = SyntheticConfig(n_users=300, n_items=400, labeled_density=0.15, dim=4, seed=3)
    return make_synthetic_recdata(config)


@pytest.fixture(scope="session")
def small():
    """120 users x 160 items (~1.7k labeled training rows): for behaviour, not accuracy."""
    config = SyntheticConfig(n_users=120, n_items=160, labeled_density=0.15, dim=4, seed=5)
    return make_synthetic_recdata(config)


def config(**overrides) -> TrainConfig:
    values = {"backbone": "gmf", "epochs": 3, "batch_size": 256, "test_batch_size": 128}
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize(
    ("backbone", "lr", "epochs"),
    [
        ("mf", 0.03, 8),
        ("gmf", 0.03, 4),
        ("biased_mf", 0.03, 4),
        ("neumf", 0.003, 6),
        ("lightgcn", 0.01, 4),
    ],
)
def test_each_backbone_recovers_the_planted_preferences(planted, backbone, lr, epochs):
    settings = config(method="ns", backbone=backbone, lr=lr, epochs=epochs, patience=epochs)
    result = Trainer(settings, planted).fit()
    # A random scorer sits at 0.5 and the oracle at 0.80; measured 0.62-0.70 here.
    assert result.test["auc"] > 0.6, result.test
    assert result.test["gauc"] > 0.58, result.test


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_to_finite_metrics(small, method):
    result = Trainer(config(method=method, epochs=2), small).fit()
    assert result.epochs_run == (2 if method_spec(method).trains else 1)  # a scorer: computed once
    for key in ("auc", "gauc", "ndcg_at_10", "ndcg_at_20", "mrr", "full_recall_at_20"):
        assert 0.0 <= result.test[key] <= 1.0, (key, result.test[key])
    assert all(torch.isfinite(torch.tensor(r.train_loss)) for r in result.history)


def test_same_seed_gives_the_same_metrics_and_another_seed_does_not(small):
    first = Trainer(config(method="ig", seed=7), small).fit()
    again = Trainer(config(method="ig", seed=7), small).fit()
    other = Trainer(config(method="ig", seed=8), small).fit()
    assert first.test == again.test
    assert first.test["auc"] != other.test["auc"]


def test_ig_with_per_row_directions_and_a_rotating_judge_trains_and_is_seeded(small):
    settings = config(method="ig", ig_direction="per_row", ig_judge="rotating", seed=3)
    first, again = Trainer(settings, small).fit(), Trainer(settings, small).fit()
    assert first.test == again.test
    assert all(math.isfinite(record.train_loss) for record in first.history)
    assert 0.0 <= first.test["gauc"] <= 1.0


def test_resuming_from_a_state_dict_replays_an_uninterrupted_run(small):
    settings = config(method="ig", epochs=4, step_rule="adam", dual_lr_ratio=10.0)
    uninterrupted = Trainer(settings, small).fit()
    first_half = Trainer(settings, small)
    first_half.run_epoch(0)
    first_half.run_epoch(1)
    # A deep copy stands in for a checkpoint round trip.
    state = copy.deepcopy(first_half.state_dict())
    resumed = Trainer(settings, small)
    resumed.load_state_dict(state)
    assert resumed.next_epoch == 2
    result = resumed.fit()
    assert result.epochs_run == uninterrupted.epochs_run
    assert result.test == uninterrupted.test


def test_hidden_labels_never_reach_training(small):
    # Scramble the hidden labels of the observed-unlabeled rows: if training read them in any
    # way, the trained parameters would change. (Evaluation diagnostics may read them.)
    observed = small.observed_unlabeled
    scrambled = ObservedUnlabeled(
        observed.users, observed.items, 1 - observed.hidden_labels.clamp(min=0)
    )
    swapped = dataclasses.replace(small, observed_unlabeled=scrambled)
    for method in ("idl", "ig", "ns", "watched_positive"):
        settings = config(method=method, unlabeled_source="both", epochs=2)
        a, b = Trainer(settings, small), Trainer(settings, swapped)
        for epoch in range(2):
            a.run_epoch(epoch)
            b.run_epoch(epoch)
        for got, want in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(got, want), method
    # ... and the check itself can fail: the diagnostics do see the difference.
    assert a.history[-1].annotation != b.history[-1].annotation


def test_observed_source_without_observed_rows_is_an_error_not_a_silent_none(small):
    bare = dataclasses.replace(small, observed_unlabeled=ObservedUnlabeled.empty())
    for method in ("ns", "idl", "ig"):
        with pytest.raises(ValueError, match="has none .*unlabeled_source='sampled' or 'both'"):
            Trainer(config(method=method, unlabeled_source="observed"), bare)
        Trainer(config(method=method, unlabeled_source="both"), bare)  # sampled rows remain
    Trainer(config(method="none", unlabeled_source="observed"), bare)  # reads no unlabeled rows


def test_the_selected_model_is_the_best_validation_epoch(small):
    trainer = Trainer(config(method="ns", epochs=5, patience=5, lr=0.05), small)
    result = trainer.fit()
    best = max(result.history, key=lambda record: record.valid["gauc"])
    assert result.best_epoch == best.epoch
    assert result.valid == best.valid


def test_early_stopping_ends_the_run_after_patience_epochs_without_gain(small):
    # A learning rate of ~0 never improves validation after epoch 0.
    result = Trainer(config(method="none", epochs=20, patience=2, lr=1e-12), small).fit()
    assert result.epochs_run <= 1 + 2 + 1
    assert result.best_epoch <= 1


def test_ig_logs_every_meta_step_and_the_idl_weights(small):
    settings = config(method="ig", epochs=2, step_rule="adam", dual_lr_ratio=20.0)
    trainer = Trainer(settings, small)
    result = trainer.fit()
    n_steps = sum(sum(record.choices.values()) for record in result.history)
    assert n_steps == len(result.direction_log["choice"]) > 0
    assert result.direction_log["losses"].shape == (n_steps, len(CANDIDATES))
    assert torch.equal(result.direction_log["epoch"].unique(), torch.tensor([0, 1]))
    assert sorted(result.weight_histograms) == [0, 1]
    for histogram in result.weight_histograms.values():
        assert histogram.shape == (WEIGHT_BINS,) and histogram.sum() > 0


def test_warm_up_epochs_take_no_meta_steps(small):
    result = Trainer(config(method="ig", epochs=2, warmup_epochs=1), small).fit()
    assert result.history[0].choices == {}
    assert sum(result.history[1].choices.values()) > 0


def test_annotation_quality_is_measured_against_the_planted_truth(small):
    result = Trainer(config(method="idl", epochs=2), small).fit()
    for prefix in ("sampled", "observed"):
        assert 0.0 <= result.test[f"{prefix}_accuracy"] <= 1.0
        assert result.test[f"{prefix}_rows"] > 0


def test_unknown_options_are_errors_that_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        TrainConfig.from_dict({"method": "ig", "dual_learning_rate": 0.1})
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="gradient-reversal")
    with pytest.raises(ValueError, match="cuda_graphs"):
        Trainer(
            TrainConfig(cuda_graphs=True), make_synthetic_recdata(SyntheticConfig.preset("tiny"))
        )


@pytest.mark.parametrize("base", ["idl", "bsl"])
def test_ig_can_take_its_supervised_steps_with_another_methods_objective(small, base):
    trainer = Trainer(config(method="ig", ig_base=base, epochs=1), small)
    batch = trainer.batches.plan(0).supervised[0]
    if base == "idl":
        assert batch.unlabeled_users is not None and len(batch.unlabeled_users) > 0
    else:
        assert batch.negatives is not None
    result = trainer.fit()
    assert sum(result.history[0].choices.values()) > 0


def test_the_test_rankings_protocol_follows_the_config(small):
    # NeuMF beyond its pair budget: a named user sample by default, every user on request.
    settings = config(method="none", backbone="neumf", epochs=1, full_ranking_users=20)
    sampled = Trainer(settings, small).fit()
    assert sampled.test["sampled_users_count"] == 20
    assert "full_recall_at_20" not in sampled.test
    record = sampled.full_ranking_sample  # the drawn users go to metrics.json
    assert len(record["users"]) == 20 and record["seed"] == settings.seed
    exact = Trainer(settings.replace(full_ranking="exact"), small).fit()
    assert exact.test["full_users"] > 20
    assert "sampled_users_recall_at_20" not in exact.test
    assert exact.full_ranking_sample == {}


def test_a_finite_divergence_stops_the_run_with_its_epoch_and_value(small):
    # Issue 12: at lr 1e6 the loss reached 3.8e18 and the weights 1.7e6, and the run saved a
    # model whose metrics sat at chance.
    with pytest.raises(TrainingDiverged) as diverged:
        Trainer(config(method="none", lr=1e6), small).fit()
    message = str(diverged.value)
    assert message.startswith("training diverged at epoch 0: the training loss is ")
    assert "(bound max_train_loss=100)" in message and "Lower the learning rate (lr)" in message
    assert "\n" not in message


def test_a_weight_beyond_its_bound_stops_the_run_though_the_loss_is_finite(small):
    trainer = Trainer(config(method="none", max_weight=0.05), small)
    with pytest.raises(TrainingDiverged, match=r"epoch 0: the largest weight is 0\.\d+ \(bound"):
        trainer.run_epoch(0)
    assert trainer.history == [] and trainer.selection.best_state is None


def test_healthy_runs_stay_far_inside_the_bounds(small):
    trainer = Trainer(config(method="ig", lr=0.03), small)
    result = trainer.fit()
    assert max(r.train_loss for r in result.history) < TrainConfig.max_train_loss / 10
    assert largest_weight(trainer.model) < TrainConfig.max_weight / 10


def test_a_non_finite_weight_is_divergence_whatever_the_bounds():
    settings = config(max_train_loss=1e300, max_weight=1e300)
    check_divergence(settings, 3, 0.5, 1.0)
    with pytest.raises(TrainingDiverged, match="epoch 3: the largest weight is nan"):
        check_divergence(settings, 3, 0.5, math.nan)
    with pytest.raises(TrainingDiverged, match="epoch 3: the training loss is inf"):
        check_divergence(settings, 3, math.inf, 1.0)


def test_largest_weight_is_the_largest_absolute_parameter():
    model = build_backbone("mf", 3, 4, embedding_dim=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.5)
        next(model.parameters())[1, 1] = -7.0
    assert largest_weight(model) == 7.0


def test_a_method_without_a_static_step_is_never_captured_as_a_cuda_graph(small):
    # TrainConfig refuses cuda_graphs for such methods; the capture itself checks again.
    trainer = Trainer(config(method="dns"), small)
    with pytest.raises(RuntimeError, match="'dns' has no static step"):
        trainer._graph(("users", "items"), lambda *tensors: tensors)


def test_the_core_computes_subnormals_as_zero_on_every_intra_op_thread():
    # Adam's moments of untouched rows decay into float32's subnormal range, which CPUs compute
    # in a slow path: importing the core flushes them, before any thread pool starts.
    subnormal = torch.full((1 << 20,), 1e-39, dtype=torch.float32)
    assert float((subnormal * 1.0).abs().max()) == 0.0
