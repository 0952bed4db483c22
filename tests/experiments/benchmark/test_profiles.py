"""Named profiles are valid; a profile refuses unknown methods, backbones and settings."""

from __future__ import annotations

import pytest

from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT
from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError
from invlearn_ray.experiments.benchmark.profiles import PROFILES
from invlearn_ray.methods.registry import METHODS


def test_profiles_are_valid_and_the_sweep_is_a_profile():
    assert {"tiny", "quick", "standard", "sparse-sweep"} <= set(PROFILES)
    assert set(PROFILES["quick"].entries) == set(METHODS)
    assert PROFILES["quick"].tune is None and PROFILES["quick"].seeds == 3
    sweep = PROFILES["sparse-sweep"]
    assert sweep.label_fractions == (1.0, 0.3, 0.1, 0.03) and sweep.tune is not None
    assert BEST_EXPLICIT in sweep.entries and sweep.seeds == 3
    # Issue 13: the strong simple baselines are rows, biased MF a section, 16 trials per row.
    assert {"popularity", "none_ig_steps", "watched_positive"} <= set(sweep.entries)
    assert "biased_mf" in sweep.backbones and sweep.tune.trials >= 16


def test_profile_rejects_unknown_methods_backbones_and_train_options():
    base = PROFILES["tiny"]
    with pytest.raises(BenchmarkConfigError, match=r"unknown method\(s\) \['igg'\]"):
        base.replace(entries=("igg",))
    with pytest.raises(BenchmarkConfigError, match=r"unknown backbone\(s\) \['gmff'\]"):
        base.replace(backbones=("gmff",))
    with pytest.raises(BenchmarkConfigError, match="train settings: unknown TrainConfig"):
        base.replace(train={"epoch": 3})
