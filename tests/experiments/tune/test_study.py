"""Ray Tune studies: a 4-trial IG study with 2 concurrent trials is interrupted and resumed
without redoing finished trials; trials and the final run are in MLflow; selection reads
validation only; Train-backed trials report every epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from ray import tune
from ray.exceptions import RayTaskError
from ray.tune import Callback

from invlearn_ray.experiments.spaces import SPACES_DIR, load_space
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune import (
    BEST_FILE,
    TRIALS_FILE,
    StudyBudget,
    StudyFailedError,
    StudyMismatchError,
    StudyResult,
    load_best_config,
    run_study,
)
from invlearn_ray.experiments.tune.search import first_draws, study_seed, tpe_searcher
from invlearn_ray.experiments.tune.study import summarize_trial
from invlearn_ray.experiments.tune.study_dir import EXPERIMENT, SEARCH_FIGURE, TUNE_DIR

SPACES = SPACES_DIR
EPOCHS = 3
TINY = {"backbone": "gmf", "epochs": EPOCHS, "batch_size": 64, "embedding_dim": 8}


pytestmark = pytest.mark.usefixtures("no_tracking_env")


class InterruptAfter(Callback):
    """Ctrl-C once ``trials`` trials have completed, as a person stopping the study would.

    Tune saves this callback with the experiment and brings it back on restore, so the marker
    file makes the interruption happen once.
    """

    def __init__(self, trials: int, marker: Path) -> None:
        self.trials = trials
        self.marker = marker
        self.completed = 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.completed += 1
        if self.completed < self.trials:
            return
        try:
            self.marker.open("x").close()
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGINT)


def test_a_study_folder_refuses_a_different_study(tiny_dataset, tmp_path):
    space = load_space(SPACES / "ig.yaml").pinned(**TINY)
    (tmp_path / "study.json").write_text(
        json.dumps({"space": {}, "dataset": str(tiny_dataset), "budget": {}})
    )
    with pytest.raises(StudyMismatchError, match=r"its budget, space differ"):
        run_study(space, tiny_dataset, StudyBudget(trials=2), tmp_path)


def _result(trial_id: str, reports: list[dict], error=None, done=True) -> tune.Result:
    last = {**reports[-1], "done": done} if reports else {}
    return tune.Result(
        metrics={**last, "trial_id": trial_id, "config": {"lr": 0.01}},
        checkpoint=None,
        error=error,
        path=f"/nowhere/{trial_id}",
        metrics_dataframe=pd.DataFrame(reports),
    )


def test_a_trial_is_summarized_from_its_tune_result_by_its_best_valid_epoch():
    reports = [
        {"epoch": 0, "valid/gauc": 0.61},
        {"epoch": 1, "valid/gauc": float("nan")},  # an undefined score never wins
        {"epoch": 2, "valid/gauc": 0.64},
        {"epoch": 3, "valid/gauc": 0.63},
    ]
    summary = summarize_trial(_result("a_00000", reports), "valid/gauc")
    assert summary == {
        "trial_id": "a_00000",
        "status": "TERMINATED",
        "params": {"lr": 0.01},
        "best_valid": 0.64,
        "best_epoch": 2,
        "epochs_reported": 4,
        "started": None,
        "error": None,
    }


def test_an_epoch_reported_twice_after_a_lost_node_counts_once():
    # Tune records a report before fetching its checkpoint; a node lost in between restarts
    # the trial from the checkpoint before, and the same epoch is reported again.
    reports = [
        {"epoch": 0, "valid/gauc": 0.61},
        {"epoch": 1, "valid/gauc": 0.65},
        {"epoch": 1, "valid/gauc": 0.65},
        {"epoch": 2, "valid/gauc": 0.64},
    ]
    summary = summarize_trial(_result("a_00003", reports), "valid/gauc")
    assert summary["epochs_reported"] == 3
    assert (summary["best_valid"], summary["best_epoch"]) == (0.65, 1)


def test_a_failed_trial_names_its_own_exception_and_an_unended_one_is_unfinished():
    cause = ValueError("no rows to train on\nrebuild the dataset")
    wrapped = RayTaskError("run_trial", "Traceback ...", cause).as_instanceof_cause()
    failed = summarize_trial(_result("a_00001", [], error=wrapped, done=False), "valid/gauc")
    assert failed["status"] == "ERROR" and failed["epochs_reported"] == 0
    assert failed["error"] == "ValueError: rebuild the dataset"
    assert failed["best_valid"] is None and failed["best_epoch"] is None
    reports = [{"epoch": 0, "valid/gauc": 0.6}]
    pending = summarize_trial(_result("a_00002", reports, done=False), "valid/gauc")
    assert pending["status"] == "UNFINISHED" and pending["best_epoch"] == 0


@pytest.mark.ray
def test_an_interrupted_ig_study_resumes_without_redoing_finished_trials(
    ray_session, tiny_dataset, tmp_path
):
    space = load_space(SPACES / "ig.yaml").pinned(**TINY)
    budget = StudyBudget(trials=4, concurrency=2, grace_period=EPOCHS)
    tracker = Tracker("ig-study", tmp_path)
    interrupt = InterruptAfter(2, tmp_path / "interrupted.marker")

    first = run_study(
        space,
        tiny_dataset,
        budget,
        tmp_path / "study",
        tracker=tracker,
        callbacks=[interrupt],
        verbose=0,
    )
    assert not first.complete and first.final is None
    finished = {t["trial_id"]: t for t in first.trials if t["status"] == "TERMINATED"}
    assert len(finished) >= 2
    assert all(t["epochs_reported"] == EPOCHS for t in finished.values())
    assert not (tmp_path / "study" / BEST_FILE).exists()
    reports_before = _reports(first, finished)

    second = run_study(space, tiny_dataset, budget, tmp_path / "study", tracker=tracker, verbose=0)
    assert second.complete and len(second.trials) == 4
    assert all(t["status"] == "TERMINATED" for t in second.trials)
    # Finished trials were not run again: their reports are exactly the ones from before.
    assert _reports(second, finished) == reports_before

    # Selection reads validation only: the best trial has the highest best-epoch valid GAUC,
    # and the final run (same config, seed 0) reproduces it before scoring test once.
    best = max(second.trials, key=lambda t: t["best_valid"])
    assert second.best_trial_id == best["trial_id"]
    assert second.best_valid == pytest.approx(best["best_valid"])
    assert second.best_config == space.trial_config(best["params"]).to_dict()
    assert second.final.ok and second.final.valid["gauc"] == pytest.approx(second.best_valid)
    assert 0 <= second.test["auc"] <= 1
    assert load_best_config(tmp_path / "study") == second.best_config
    stored = json.loads((tmp_path / "study" / BEST_FILE).read_text())
    assert stored["final"]["test"]["auc"] == pytest.approx(second.test["auc"])
    assert len((tmp_path / "study" / TRIALS_FILE).read_text().strip().splitlines()) == 5

    # MLflow: one run per trial (none duplicated by the resume), one point per reported epoch,
    # the full config as params, and the final run with its test metrics.
    mlflow.set_tracking_uri(tracker.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["ig-study"])
    trials = runs[runs["tags.role"] == "trial"].set_index("tags.trial_id")
    assert sorted(trials.index) == sorted(t["trial_id"] for t in second.trials)
    assert set(trials["status"]) == {"FINISHED"}
    assert set(trials["params.method"]) == {"ig"} and set(trials["params.seed"]) == {"0"}
    assert set(trials["tags.dataset"]) == {"synthetic"}
    for trial in second.trials:
        history = tracker.client.get_metric_history(
            trials.loc[trial["trial_id"], "run_id"], "valid/gauc"
        )
        assert [m.step for m in history] == list(range(trial["epochs_reported"]))
    final = runs[runs["tags.role"] == "final"]
    assert len(final) == 1
    assert final.iloc[0]["metrics.test/auc"] == pytest.approx(second.test["auc"])
    assert final.iloc[0]["tags.best_trial_id"] == second.best_trial_id
    completed = trials.loc[second.best_trial_id, "run_id"]
    artifacts = {a.path for a in tracker.client.list_artifacts(completed)}
    assert {"model", "direction_log.pt", "metrics.json"} <= artifacts

    # The study's picture lies beside its results and in its own MLflow run.
    assert (tmp_path / "study" / SEARCH_FIGURE).stat().st_size > 10_000
    (study_run,) = runs[runs["tags.role"] == "study"]["run_id"]
    artifacts = {a.path for a in tracker.client.list_artifacts(study_run)}
    assert {SEARCH_FIGURE, TRIALS_FILE, BEST_FILE} <= artifacts
    assert tracker.client.get_run(study_run).data.params["search"] == "random"  # 4 trials


def _reports(result: StudyResult, trial_ids) -> dict[str, list[dict]]:
    """Trial id -> what Tune recorded of each of the trial's reports, down to when it arrived."""
    columns = ["epoch", "valid/gauc", "timestamp", "time_total_s"]
    return {
        trial.metrics["trial_id"]: trial.metrics_dataframe[columns].to_dict("records")
        for trial in result.results
        if trial.metrics["trial_id"] in trial_ids
    }


@pytest.mark.ray
def test_an_interrupted_tpe_study_resumes_its_searcher(ray_session, tiny_dataset, tmp_path):
    space = load_space(SPACES / "ig.yaml").pinned(**{**TINY, "epochs": 2})
    budget = StudyBudget(trials=6, concurrency=2, grace_period=2, search="tpe")
    study_dir = tmp_path / "study"
    interrupt = InterruptAfter(3, tmp_path / "interrupted.marker")
    first = run_study(
        space, tiny_dataset, budget, study_dir, score_best=False, callbacks=[interrupt]
    )
    assert not first.complete
    second = run_study(space, tiny_dataset, budget, study_dir, score_best=False)
    assert second.complete and len(second.trials) == 6

    # The restored searcher kept what it was told before the interruption: it has been told
    # every trial of the study, and it did not start its draws again (a fresh searcher with
    # the study's seed would repeat the first configurations).
    searcher = tpe_searcher(space, seed=0)
    searcher.restore_from_dir(str(study_dir / TUNE_DIR / EXPERIMENT))
    assert searcher.told_trials == 6
    drawn = [trial["params"] for trial in second.trials]
    assert len({json.dumps(params, sort_keys=True) for params in drawn}) == 6
    # The study's first two trials are the seeded searcher's first two draws, each once.
    seed = study_seed(space, "synthetic", 1.0)
    for draw in first_draws(space, "tpe", seed, 2):
        assert sum(params == draw for params in drawn) == 1
    assert (study_dir / SEARCH_FIGURE).is_file()


@pytest.mark.ray
def test_trials_on_ray_train_report_every_epoch_to_tune(ray_session, tiny_dataset, tmp_path, capfd):
    space = load_space(SPACES / "ig.yaml").pinned(**{**TINY, "epochs": 2})
    budget = StudyBudget(trials=2, concurrency=2, workers=1, grace_period=2)
    result = run_study(space, tiny_dataset, budget, tmp_path, score_best=False, verbose=0)
    printed = capfd.readouterr()
    # verbose=0: nothing from Tune's console (no experiment box, no status table).
    assert "Configuration for experiment" not in printed.out + printed.err
    assert "Trial status" not in printed.out + printed.err
    assert "max_concurrent_trials" not in printed.err
    assert os.environ.get("RAY_AIR_NEW_OUTPUT") is None  # set for fit() only
    assert result.complete and result.final is None
    assert [t["epochs_reported"] for t in result.trials] == [2, 2]
    assert result.best_valid == max(t["best_valid"] for t in result.trials)
    for trial in result.trials:
        outputs = tmp_path / "trial_outputs" / trial["trial_id"]
        assert (outputs / "model" / "model.json").is_file()


@pytest.mark.ray
def test_a_diverged_trial_is_a_failed_trial_with_its_one_line_reason(
    ray_session, tiny_dataset, tmp_path
):
    # A bound every healthy loss exceeds: the trial diverges at its first epoch. On Ray Train
    # workers, whose loop returns the reason rather than raising it (a trial in its own process
    # raises it from the trainer directly).
    space = load_space(SPACES / "ig.yaml").pinned(**{**TINY, "max_train_loss": 1e-3})
    budget = StudyBudget(trials=1, concurrency=1, workers=1, grace_period=EPOCHS)
    with pytest.raises(StudyFailedError, match="none of its 1 trials reported"):
        run_study(space, tiny_dataset, budget, tmp_path, score_best=False, verbose=0)
    (trial,) = csv.DictReader((tmp_path / TRIALS_FILE).open())
    assert trial["status"] == "ERROR" and trial["best_valid"] == ""
    assert "TrainingDiverged: training diverged at epoch 0: the training loss is" in trial["error"]
    assert "(bound max_train_loss=0.001)" in trial["error"]
    assert not (tmp_path / "trial_outputs" / trial["trial_id"] / "model").exists()


@pytest.mark.ray
def test_a_trial_whose_process_is_killed_restarts_from_its_checkpoint_and_the_study_ends(
    ray_session, tiny_dataset, tmp_path
):
    # SIGKILL at the start of epoch 1, once: what Ray's memory monitor or a lost spot node does.
    from invlearn_ray.data.loading import load_dataset
    from invlearn_ray.training.trainer import Trainer

    space = load_space(SPACES / "none.yaml").pinned(**TINY)
    budget = StudyBudget(trials=1, concurrency=1, grace_period=EPOCHS, search="random")
    switches = {
        "_test_fail_once_at_epoch": 1,
        "_test_fail_rank": 0,
        "_test_fail_marker": str(tmp_path / "killed"),
        "_test_kill": True,
    }
    result = run_study(
        space, tiny_dataset, budget, tmp_path / "study", score_best=False, test_switches=switches
    )
    assert (tmp_path / "killed").is_file()  # it did die once
    (trial,) = result.trials
    assert trial["status"] == "TERMINATED" and trial["epochs_reported"] == EPOCHS
    # The restarted trial ends where an uninterrupted run of its configuration ends.
    undisturbed = Trainer(space.trial_config(trial["params"]), load_dataset(tiny_dataset)).fit()
    metric = space.metric.removeprefix("valid/")
    assert trial["best_valid"] == pytest.approx(undisturbed.valid[metric], rel=1e-6)
