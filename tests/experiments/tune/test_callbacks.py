"""Tune callbacks in the driver: what reaches a trial's MLflow run; one line per ended trial."""

from __future__ import annotations

import logging

from invlearn_ray.experiments.tune import callbacks
from invlearn_ray.experiments.tune.callbacks import (
    HeapTrimCallback,
    TrialProgressCallback,
    epoch_metrics,
)


def test_only_reported_metrics_go_to_mlflow():
    result = {
        "epoch": 1,
        "valid/gauc": 0.6,
        "train_loss": 0.5,
        "ig/direct_steps": 3,
        "best_epoch": 1,
        "time_this_iter_s": 0.2,
        "training_iteration": 2,
        "checkpoint_path": "/x",
        "done": False,
    }
    assert epoch_metrics(result) == {
        "epoch": 1,
        "valid/gauc": 0.6,
        "train_loss": 0.5,
        "ig/direct_steps": 3,
        "best_epoch": 1,
    }


class _Trial:
    """What TrialProgressCallback reads of a Tune trial."""

    def __init__(self, trial_id: str, last_epoch: int) -> None:
        self.trial_id = trial_id
        self.last_result = {"epoch": last_epoch}


def test_each_ended_trial_is_one_line_with_its_best_validation_score(caplog):
    caplog.set_level(logging.INFO, logger="invlearn_ray.experiments.tune.callbacks")
    progress = TrialProgressCallback("d/gmf/ig", "valid/auc", "max", trials=2)
    done, failed = _Trial("a_1", last_epoch=2), _Trial("a_2", last_epoch=0)
    for epoch, auc in enumerate([0.61, 0.70, 0.65]):
        progress.on_trial_result(0, [], done, {"valid/auc": auc, "epoch": epoch})
    progress.on_trial_result(0, [], failed, {"valid/auc": float("nan"), "epoch": 0})
    progress.on_trial_complete(0, [], done)
    # A resumed study restores the callback: the count goes on where it stopped.
    restored = TrialProgressCallback("d/gmf/ig", "valid/auc", "max", trials=2)
    restored.set_state(progress.get_state())
    restored.on_trial_error(0, [], failed)
    assert [record.getMessage() for record in caplog.records] == [
        "[1/2] d/gmf/ig: trial a_1 done: best valid/auc 0.7000 at epoch 1 (3 epochs)",
        "[2/2] d/gmf/ig: trial a_2 FAILED (its error is in trials.csv)",
    ]


def test_the_driver_gives_back_its_freed_heap_after_every_ended_trial(monkeypatch):
    trims = []
    monkeypatch.setattr(callbacks, "release_freed_heap", lambda: trims.append(1) or True)
    trim = HeapTrimCallback()
    trim.on_trial_result(0, [], _Trial("a_1", last_epoch=0), {"epoch": 0})
    assert trims == []  # not per result: it costs milliseconds
    trim.on_trial_complete(0, [], _Trial("a_1", last_epoch=2))
    trim.on_trial_error(0, [], _Trial("a_2", last_epoch=0))
    assert len(trims) == 2
