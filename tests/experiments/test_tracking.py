"""MLflow tracking: absolute default store, env override, experiments, params/metrics/tags and
artifacts read back with ``mlflow.search_runs`` and the client."""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import mlflow
import pytest

from invlearn_ray.experiments.tracking import (
    TRACKING_ENV,
    Tracker,
    config_params,
    finite_metrics,
    git_commit,
    ranking_protocol_tags,
    resolve_tracking_uri,
    run_tags,
)
from invlearn_ray.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("no_tracking_env")


def test_default_store_is_an_absolute_sqlite_file_under_the_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri("results/run")
    assert uri == f"sqlite:///{(tmp_path / 'results' / 'run' / 'mlflow.db').as_posix()}"
    assert uri.startswith("sqlite:////")


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(TRACKING_ENV, "http://127.0.0.1:5000")
    assert resolve_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_git_commit_names_the_checkout_and_says_unknown_outside_git(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit())
    assert git_commit(tmp_path) == "unknown"


def test_finite_metrics_keeps_nan_drops_infinities_and_non_numbers():
    kept = finite_metrics({"a": 1, "b": float("nan"), "c": float("inf"), "d": "x", "e": True}, "t/")
    assert set(kept) == {"t/a", "t/b"} and kept["t/a"] == 1.0 and math.isnan(kept["t/b"])


def test_a_run_records_params_tags_epoch_metrics_test_metrics_and_artifacts(tmp_path):
    tracker = Tracker("study-x", tmp_path / "out")
    config = TrainConfig(method="ig", backbone="neumf", seed=2, lr=3e-3)
    tags = run_tags(config, "synthetic", tracker.commit, role="final", study="study-x")
    run_id = tracker.start_run("ig-neumf-seed2", tags, config_params(config))
    history = [
        {"epoch": 0, "valid/gauc": 0.55, "train_loss": 0.7},
        {"epoch": 1, "valid/gauc": 0.61, "train_loss": 0.6},
    ]
    tracker.log_history(run_id, history)
    tracker.log_metrics(run_id, {"auc": 0.66, "ndcg_at_10": 0.9, "note": "x"}, prefix="test/")
    outputs = tmp_path / "run_outputs"
    (outputs / "model").mkdir(parents=True)
    (outputs / "model" / "model.json").write_text("{}")
    (outputs / "metrics.json").write_text("{}")
    tracker.log_artifacts(run_id, outputs)
    tracker.log_artifacts(run_id, outputs / "metrics.json", "copies")
    tracker.end_run(run_id)

    mlflow.set_tracking_uri(tracker.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["study-x"])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["params.method"] == "ig" and float(row["params.lr"]) == 3e-3
    assert row["params.dual_lr_ratio"] == "0.1"  # every TrainConfig field, not just changed ones
    assert row["tags.dataset"] == "synthetic" and row["tags.backbone"] == "neumf"
    assert row["tags.seed"] == "2" and row["tags.role"] == "final"
    assert row["tags.git_commit"] == tracker.commit
    assert row["metrics.test/auc"] == 0.66 and row["metrics.valid/gauc"] == 0.61
    steps = tracker.client.get_metric_history(run_id, "valid/gauc")
    assert [(m.step, m.value) for m in steps] == [(0, 0.55), (1, 0.61)]
    artifacts = {item.path for item in tracker.client.list_artifacts(run_id)}
    assert artifacts == {"run_outputs", "copies"}
    artifact_root = Path(row["artifact_uri"].removeprefix("file://"))
    assert artifact_root.is_relative_to((tmp_path / "out" / "mlartifacts").resolve())
    assert (artifact_root / "run_outputs" / "model" / "model.json").is_file()
    assert (artifact_root / "copies" / "metrics.json").is_file()


def test_experiments_are_reused_and_runs_found_by_tags(tmp_path):
    first = Tracker("study-y", tmp_path)
    run_id = first.start_run("trial", {"trial_id": "abc_00001", "study": "study-y"})
    again = Tracker("study-y", tmp_path)
    assert again.experiment_id == first.experiment_id
    assert again.find_run(trial_id="abc_00001", study="study-y") == run_id
    assert again.find_run(trial_id="abc_00002") is None


def test_a_tracker_survives_pickling(tmp_path):
    tracker = Tracker("study-z", tmp_path)
    _ = tracker.client
    restored = pickle.loads(pickle.dumps(tracker))
    run_id = restored.start_run("after-pickle", {"role": "trial"})
    assert restored.find_run(role="trial") == run_id


def test_a_deleted_experiment_is_an_error_not_a_silent_new_one(tmp_path):
    tracker = Tracker("gone", tmp_path)
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(RuntimeError, match="'gone' .* is deleted"):
        Tracker("gone", tmp_path)


def test_the_ranking_protocol_tag_says_exact_or_which_user_sample():
    exact = ranking_protocol_tags({"full_recall_at_20": 0.1, "full_users": 900})
    assert exact == {"full_ranking_protocol": "exact (900 users)"}
    sampled = ranking_protocol_tags(
        {"sampled_users_count": 127, "sampled_users_population": 37000, "sampled_users_seed": 2}
    )
    assert sampled == {"full_ranking_protocol": "sampled_users (127 of 37000 users, seed 2)"}
    assert ranking_protocol_tags({"auc": 0.7}) == {}


def test_a_submitted_job_takes_its_commit_from_the_environment(tmp_path, monkeypatch):
    # ray job submit --working-dir . does not upload .git: the submitter passes the commit.
    monkeypatch.setenv("INVLEARN_GIT_COMMIT", "0123abcd")
    assert git_commit(tmp_path) == "0123abcd"


def test_a_run_is_described_with_the_command_that_shows_a_local_store(tmp_path):
    tracker = Tracker("train", tmp_path)
    run_id = tracker.start_run("r", {"role": "train"})
    where = tracker.describe_run(run_id)
    assert where.startswith(f"run {run_id} in MLflow experiment 'train'")
    assert where.endswith(f"(mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'})")
