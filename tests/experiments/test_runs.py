"""Run execution: a failed run is recorded and the others finish; finished runs are reused."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import mlflow
import pytest

from invlearn_ray.experiments.runs import (
    RunOutcome,
    RunSpec,
    execute_runs,
    finished_outcome,
)
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import DIRECTION_LOG_FILE

TINY_TRAIN = {"epochs": 2, "batch_size": 64, "test_batch_size": 64, "embedding_dim": 8}


pytestmark = pytest.mark.usefixtures("no_tracking_env")


def _spec(dataset: Path, out: Path, method: str, **changes) -> RunSpec:
    config = TrainConfig(method=method, **{**TINY_TRAIN, **changes})
    return RunSpec(
        key=f"tiny/gmf/{method}/seed{config.seed}",
        dataset=str(dataset),
        dataset_name="tiny",
        config=config,
        output_dir=str(out / method),
        tags={"entry": method, "group": "main"},
    )


@pytest.mark.ray
def test_a_failed_run_is_recorded_with_its_error_and_the_others_finish(
    ray_session, tiny_dataset, tmp_path, caplog
):
    tracker = Tracker("runs", tmp_path)
    specs = [
        _spec(tiny_dataset, tmp_path, "ig"),
        # A diverging learning rate: the trainer stops at the loss bound.
        _spec(tiny_dataset, tmp_path, "ns", lr=1e30),
    ]
    caplog.set_level(logging.INFO, logger="invlearn_ray.experiments.runs")
    outcomes = execute_runs(specs, tracker, role="cell")
    lines = [r.getMessage() for r in caplog.records if r.name == "invlearn_ray.experiments.runs"]
    good, bad = outcomes
    assert good.ok and 0 <= good.test["auc"] <= 1 and len(good.history) == good.epochs_run
    assert not bad.ok and bad.error.startswith("TrainingDiverged: training diverged at epoch 0")
    assert any("FAILED TrainingDiverged" in line for line in lines)
    assert len(lines) == 2

    mlflow.set_tracking_uri(tracker.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["runs"]).set_index("tags.run_key")
    assert runs.loc[good.spec.key, "status"] == "FINISHED"
    assert runs.loc[bad.spec.key, "status"] == "FAILED"
    assert runs.loc[bad.spec.key, "tags.error"] == bad.error
    assert runs.loc[good.spec.key, "metrics.test/auc"] == pytest.approx(good.test["auc"])
    assert runs.loc[good.spec.key, "params.method"] == "ig"
    artifacts = {a.path for a in tracker.client.list_artifacts(good.run_id)}
    assert {"model", "metrics.json", DIRECTION_LOG_FILE, "weight_histograms.json"} <= artifacts

    # A second invocation reuses the finished run (no retraining, no second MLflow run) and
    # retries the failed one.
    again = execute_runs(specs, tracker, role="cell")
    assert again[0].reused and again[0].run_id == good.run_id and again[0].test == good.test
    assert not again[1].ok and not again[1].reused
    assert len(mlflow.search_runs(experiment_names=["runs"])) == 3


def test_a_stored_outcome_is_reused_only_for_the_same_spec(tiny_dataset, tmp_path):
    spec = _spec(tiny_dataset, tmp_path, "ns")
    outcome = RunOutcome(spec=spec, status="ok", test={"auc": 0.6, "mrr": math.nan})
    Path(spec.output_dir).mkdir(parents=True)
    values = outcome.to_dict()
    values.pop("run_id")
    values["test"]["mrr"] = None  # as written: strict JSON, undefined metrics are null
    (Path(spec.output_dir) / "outcome.json").write_text(json.dumps(values))
    stored = finished_outcome(spec)
    assert stored.reused and stored.test["auc"] == 0.6 and math.isnan(stored.test["mrr"])
    changed = RunSpec(**{**vars(spec), "config": spec.config.replace(lr=0.5)})
    assert finished_outcome(changed) is None


def test_run_keys_must_be_unique(tiny_dataset, tmp_path):
    spec = _spec(tiny_dataset, tmp_path, "ns")
    with pytest.raises(ValueError, match="repeated"):
        execute_runs([spec, spec], None)
