"""The grid: the precedence of a cell's settings, the refused overrides, the planned runs."""

from __future__ import annotations

import pytest

from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT
from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError
from invlearn_ray.experiments.benchmark.given import GivenConfigs
from invlearn_ray.experiments.benchmark.grid import (
    Cell,
    check_overrides,
    plan_runs,
    resolve_cell_configs,
)
from invlearn_ray.experiments.benchmark.profiles import Profile
from invlearn_ray.experiments.datasets import DatasetSpec


def _profile(**changes) -> Profile:
    values = {
        "name": "t",
        "description": "",
        "datasets": (DatasetSpec("synthetic", preset="tiny"),),
        "backbones": ("gmf", "mf"),
        "entries": ("ns", "ig"),
        "seeds": 2,
    }
    return Profile(**{**values, **changes})


def test_cell_settings_follow_profile_then_configs_then_set_then_tuning():
    profile = _profile(train={"epochs": 2, "lr": 0.1, "batch_size": 64, "dual_lr_ratio": 5.0})
    given = GivenConfigs({"all": {"lr": 0.2, "batch_size": 96}, "ig": {"batch_size": 128}})
    overrides = {"batch_size": 256}
    tuned = {
        cell: {"dual_lr_ratio": 10.0, "seed": 0, "backbone": "gmf", "method": cell.entry}
        for cell in (Cell("d", b, e) for b in ("gmf", "mf") for e in ("ns", "ig"))
    }

    untuned = resolve_cell_configs(profile, ["d"], given, overrides)
    assert list(untuned) == [
        Cell("d", "gmf", "ns"),
        Cell("d", "gmf", "ig"),
        Cell("d", "mf", "ns"),
        Cell("d", "mf", "ig"),
    ]
    assert untuned[Cell("d", "mf", "ig")] == {
        "epochs": 2,  # the profile's
        "lr": 0.2,  # the configs file's 'all' over the profile
        "batch_size": 256,  # --set over the file's 'ig' over its 'all'
        "dual_lr_ratio": 5.0,
        "backbone": "mf",
        "method": "ig",
    }

    resolved = resolve_cell_configs(profile, ["d"], given, overrides, tuned)
    ig = resolved[Cell("d", "mf", "ig")]
    assert ig["dual_lr_ratio"] == 10.0 and ig["batch_size"] == 256
    # The grid's fields are the cell's, whatever the study stored; each run sets its seed.
    assert ig["backbone"] == "mf" and "seed" not in ig


def test_best_explicit_trains_the_tuned_or_given_loss():
    profile = _profile(entries=(BEST_EXPLICIT,), backbones=("gmf",))
    cell = Cell("d", "gmf", BEST_EXPLICIT)
    given = GivenConfigs({BEST_EXPLICIT: {"method": "sl_focal"}})
    assert resolve_cell_configs(profile, ["d"], GivenConfigs(), {})[cell]["method"] == (
        "sl_complement"
    )
    assert resolve_cell_configs(profile, ["d"], given, {})[cell]["method"] == "sl_focal"
    tuned = {cell: {"method": "sl_epsce"}}
    assert resolve_cell_configs(profile, ["d"], given, {}, tuned)[cell]["method"] == "sl_epsce"


@pytest.mark.parametrize(("field", "option"), [("seed", "--seeds"), ("method", "--methods")])
def test_set_of_a_grid_field_is_refused_naming_the_option(field, option):
    with pytest.raises(BenchmarkConfigError, match=f"set by the benchmark grid; use {option}"):
        check_overrides({field: 1})


def test_plan_runs_covers_rows_times_seeds_and_the_ratio_study(tmp_path):
    profile = _profile(ratio_study=(0.1, 10.0))  # 0.1 is IG's own ratio: not run twice
    datasets = {"synthetic-tiny": (profile.datasets[0], tmp_path / "d")}
    configs = {
        Cell("synthetic-tiny", backbone, entry): {
            "method": entry,
            "backbone": backbone,
            "epochs": 2,
        }
        for backbone in profile.backbones
        for entry in profile.entries
    }
    specs = plan_runs(profile, datasets, configs, tmp_path)
    keys = [spec.key for spec in specs]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2 * 2
    assert "synthetic-tiny/mf/ig@ratio10/seed1" in keys
    ratio = next(spec for spec in specs if spec.key.endswith("ig@ratio10/seed1"))
    assert ratio.config.dual_lr_ratio == 10.0 and ratio.config.seed == 1
    assert ratio.tags == {"entry": "ig", "group": "ratio_study", "label_fraction": "1"}
    assert {spec.config.seed for spec in specs} == {0, 1}
