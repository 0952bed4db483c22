"""A Train-backed trial reports every epoch to Tune exactly once, across resumes."""

from __future__ import annotations

from invlearn_ray.experiments.tune.trial import missing_reports


def test_epochs_a_resumed_train_run_finished_without_telling_tune_are_reported_after():
    history = [{"epoch": e, "valid/gauc": 0.5 + e / 10} for e in range(4)]
    reported = (0, 1)
    # Checkpointed epoch 2, interrupted before Tune got its report; resumed at epoch 3.
    assert missing_reports(history, reported, resumed_from_epoch=3) == [history[2]]
    assert missing_reports(history, reported, resumed_from_epoch=2) == []
    assert missing_reports(history, [], resumed_from_epoch=None) == []
