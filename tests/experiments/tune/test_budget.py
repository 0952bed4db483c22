"""A study's budget refuses impossible values and sizes a trial's resources."""

from __future__ import annotations

import pytest

from invlearn_ray.experiments.tune.budget import StudyBudget


def test_budget_rejects_impossible_values():
    with pytest.raises(ValueError, match="trials must be >= 1"):
        StudyBudget(trials=0)
    with pytest.raises(ValueError, match="driver_cpus must be > 0"):
        StudyBudget(driver_cpus=0)
    assert StudyBudget(workers=2).trial_resources() == {"CPU": 0.1}
    assert StudyBudget(cpus_per_trial=0.5).trial_resources() == {"CPU": 0.5}


def test_auto_search_is_tpe_from_16_trials_and_either_can_be_chosen():
    assert StudyBudget(trials=15).search_algorithm == "random"
    assert StudyBudget(trials=16).search_algorithm == "tpe"
    assert StudyBudget(trials=64, search="random").search_algorithm == "random"
    assert StudyBudget(trials=4, search="tpe").search_algorithm == "tpe"
    with pytest.raises(ValueError, match="search must be one of"):
        StudyBudget(search="grid")
