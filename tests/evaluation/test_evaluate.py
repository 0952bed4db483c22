"""Scoring a model on a split: which full-ranking protocol runs, that each path is exact, and
annotation quality (thresholded and as a ranking)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import roc_auc_score

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.recdata import UNKNOWN_LABEL, UserItemIndex
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.evaluation.evaluate import (
    annotation_quality,
    evaluate_full_ranking,
    evaluate_split,
    evaluation_shard,
    resolve_full_ranking,
)
from invlearn_ray.evaluation.full_ranking import full_ranking_metrics
from invlearn_ray.evaluation.metrics import evaluate_rows
from invlearn_ray.methods.losses import idl_weights
from invlearn_ray.models.backbones import Backbone, build_backbone, score_all_pairwise
from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.training.config import TrainConfig


def small_data():
    config = SyntheticConfig(n_users=120, n_items=160, labeled_density=0.15, dim=4, seed=5)
    return make_synthetic_recdata(config)


@pytest.fixture(scope="module")
def data():
    return small_data()


def model(name: str, data, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return build_backbone(name, data.n_users, data.n_items, embedding_dim=8).eval()


def test_auto_is_exact_for_factorized_backbones_and_when_every_user_fits_the_sample():
    assert resolve_full_ranking("auto", True, 10**9, 1) == "exact"
    assert resolve_full_ranking("auto", False, 100, 100) == "exact"
    assert resolve_full_ranking("auto", False, 101, 100) == "sampled_users"
    assert resolve_full_ranking("exact", False, 10**9, 1) == "exact"
    assert resolve_full_ranking("sampled_users", True, 1, 100) == "sampled_users"
    with pytest.raises(ValueError, match="valid: \\['auto', 'exact', 'sampled_users'\\]"):
        resolve_full_ranking("sampled_items", True, 1, 1)


def test_a_factorized_model_ranks_as_its_pairwise_forward_ties_and_exclusions_included(data):
    gmf = model("gmf", data)
    with torch.no_grad():  # a coarse dyadic grid: exact products, many tied scores
        for parameter in gmf.parameters():
            parameter.copy_(torch.randint(-2, 3, parameter.shape).float() / 2)
    fast = evaluate_full_ranking(gmf, data.test, data.seen_in_training, ks=(5, 20)).metrics
    positives = data.test.take(data.test.labels > 0.5)
    relevant = UserItemIndex.from_pairs(positives.users, positives.items, 120, 160)
    generic = full_ranking_metrics(
        lambda users: score_all_pairwise(gmf, users),
        torch.unique(positives.users),
        relevant,
        data.seen_in_training,
        ks=(5, 20),
    )
    assert fast == generic


def test_auto_ranks_a_seeded_sample_of_users_for_neumf_beyond_the_sample_size(data):
    neumf = model("neumf", data)
    report = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="auto", sample_users=30, seed=4
    ).metrics
    assert not any(key.startswith("full_") for key in report)
    assert report["sampled_users_count"] == 30
    assert report["sampled_users_seed"] == 4
    assert report["sampled_users_recall_at_20_stderr"] > 0
    again = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="auto", sample_users=30, seed=4
    ).metrics
    assert again == report
    ranking = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="auto", sample_users=30, seed=4
    )
    assert ranking.record()["users"] == ranking.sample.users.tolist()
    assert len(ranking.record()["users"]) == 30
    other_seed = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="auto", sample_users=30, seed=5
    ).metrics
    assert other_seed["sampled_users_recall_at_20"] != report["sampled_users_recall_at_20"]


def test_exact_ranks_every_user_of_neumf_whatever_the_sample_size(data):
    neumf = model("neumf", data)
    exact = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="exact", sample_users=1
    ).metrics
    everyone = evaluate_full_ranking(
        neumf, data.test, data.seen_in_training, protocol="auto", sample_users=10**9
    ).metrics
    assert exact == everyone
    assert exact["full_users"] > 100


def test_a_sample_of_every_user_has_the_exact_means_and_no_standard_error(data):
    gmf = model("gmf", data)
    exact = evaluate_full_ranking(gmf, data.test, data.seen_in_training, protocol="exact").metrics
    sampled = evaluate_full_ranking(
        gmf, data.test, data.seen_in_training, protocol="sampled_users", sample_users=10**9
    ).metrics
    assert sampled["sampled_users_count"] == exact["full_users"]
    assert sampled["sampled_users_population"] == exact["full_users"]
    assert sampled["sampled_users_recall_at_20"] == pytest.approx(exact["full_recall_at_20"])
    assert sampled["sampled_users_recall_at_20_stderr"] == 0.0


def test_train_config_names_the_valid_protocols():
    with pytest.raises(ValueError, match="full_ranking = 'sampled_items' is not one of"):
        TrainConfig(full_ranking="sampled_items")
    with pytest.raises(ValueError, match="full_ranking_users must be > 0"):
        TrainConfig(full_ranking_users=0)


# --------------------------------------------------------------------------- sharded by user

SHARD_WORLD = 2
SAMPLE = 7  # users in the sampled full ranking: fewer than the tiny test split's population


def shard_reports(model_: Backbone, data_, collective=None) -> dict[str, dict]:
    """Validation row metrics and both test full rankings of ``data_`` (a worker's shard)."""
    return {
        "valid": evaluate_split(model_, data_.valid, collective=collective),
        "exact": evaluate_full_ranking(
            model_, data_.test, data_.seen_in_training, collective=collective
        ).metrics,
        "sampled": evaluate_full_ranking(
            model_,
            data_.test,
            data_.seen_in_training,
            protocol="sampled_users",
            sample_users=SAMPLE,
            seed=3,
            collective=collective,
        ).metrics,
    }


def sharded_worker(rank: int, store: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=SHARD_WORLD
    )
    try:
        torch.set_num_threads(1)
        full = small_data()
        shard = evaluation_shard(full, rank, SHARD_WORLD)
        reports = shard_reports(model("gmf", full), shard, TorchDistributedCollective())
        held = {"valid_users": shard.valid.users, "test_users": shard.test.users}
        torch.save({"reports": reports, "held": held}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_one_process_row_metrics_are_evaluate_rows_bit_for_bit(data):
    gmf = model("gmf", data)
    scores = gmf(data.valid.users, data.valid.items).detach()
    assert evaluate_split(gmf, data.valid) == evaluate_rows(
        scores, data.valid.labels, data.valid.users
    )


def test_two_user_shards_report_the_one_process_metrics_on_both_workers(tmp_path, data):
    mp.spawn(sharded_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=SHARD_WORLD)
    workers = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(SHARD_WORLD)]
    expected = shard_reports(model("gmf", data), data)

    # Every worker computes the same numbers from the same combined statistics: the early
    # stopping decisions taken on them agree without another message.
    assert workers[0]["reports"] == workers[1]["reports"]
    for name, report in expected.items():
        got = workers[0]["reports"][name]
        assert got.keys() == report.keys(), name
        for key, value in report.items():
            # Sums over users add in another order across shards: float64 rounding only.
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (name, key)
        counts = [key for key in report if key.endswith(("users", "skipped", "count", "seen"))]
        counts += [key for key in ("auc",) if key in report]  # rank counts: exact
        assert counts and all(got[key] == report[key] for key in counts), name
    # Each worker holds its users' rows only, and together they hold every row once.
    for split in ("valid", "test"):
        held = [worker["held"][f"{split}_users"] for worker in workers]
        assert set(held[0].tolist()).isdisjoint(held[1].tolist())
        assert sum(map(len, held)) == len(getattr(data, split))
        assert max(map(len, held)) < 0.7 * len(getattr(data, split))


# ---------------------------------------------------------------------------------------------
# Annotation quality: thresholded and as a ranking
# ---------------------------------------------------------------------------------------------


def annotation_rows(seed: int = 0, n: int = 400, scale: float = 2.0):
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 2, (n,), generator=generator)
    logits = scale * (torch.randn(n, generator=generator) + truth.float())
    logits[1:100:2] = logits[0:100:2]  # ties, which AUC must average
    hidden = truth.clone()
    hidden[::11] = UNKNOWN_LABEL  # rows without a hidden label are ignored
    return logits, hidden


def test_annotation_auc_equals_sklearn_on_the_rows_with_a_hidden_label():
    logits, hidden = annotation_rows()
    report = annotation_quality(logits, hidden, "observed")
    known = hidden != UNKNOWN_LABEL
    assert report["observed_auc"] == pytest.approx(
        roc_auc_score(hidden[known].numpy(), logits[known].numpy()), abs=1e-12
    )
    assert report["observed_rows"] == int(known.sum())
    predicted = (logits[known] > 0).numpy()
    assert report["observed_accuracy"] == pytest.approx(
        float((predicted == hidden[known].numpy()).mean()), abs=1e-6
    )


@pytest.mark.parametrize("temperature", [0.25, 1.0, 4.0])
def test_the_idl_weights_auc_is_the_logits_auc_a_monotone_transform_adds_nothing(temperature):
    # w1 = sigmoid((2/T)(log l0 - log l1)) is strictly increasing in the logit for every T, so
    # it ranks the rows exactly as the logits do: the weight AUC is reported, but it is the
    # same figure, not new information (logits small enough that no weight saturates).
    logits, hidden = annotation_rows(scale=0.3)
    report = annotation_quality(logits, hidden, "observed", idl_temperature=temperature)
    assert report["observed_weight_auc"] == report["observed_auc"]
    weights, _ = idl_weights(logits, temperature)
    order = torch.argsort(logits)
    assert (weights[order].diff() >= 0).all()


def test_the_weight_auc_differs_only_where_saturated_weights_tie_distinct_logits():
    # At |z| of a few hundred w1 rounds to exactly 0 or 1 in float32: distinct logits become
    # ties, and only then can the two AUCs differ.
    truth = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([400.0, 300.0, -300.0, -400.0])
    weights, _ = idl_weights(logits, 1.0)
    assert weights[0] == weights[1] == 1.0 and weights[2] == weights[3] == 0.0
    report = annotation_quality(logits, truth, "observed", idl_temperature=1.0)
    assert report["observed_auc"] != report["observed_weight_auc"]
    assert report["observed_weight_auc"] == pytest.approx(
        roc_auc_score(truth.numpy(), weights.numpy()), abs=1e-12
    )


def test_annotation_auc_is_nan_when_the_rows_hold_one_class():
    report = annotation_quality(torch.tensor([0.3, -1.0]), torch.tensor([1, 1]), "observed", 1.0)
    assert math.isnan(report["observed_auc"]) and math.isnan(report["observed_weight_auc"])
