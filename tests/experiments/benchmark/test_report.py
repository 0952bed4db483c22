"""What the report says about the profile that ran."""

from __future__ import annotations

from invlearn_ray.experiments.benchmark.grid import Cell
from invlearn_ray.experiments.benchmark.profiles import PROFILES
from invlearn_ray.experiments.benchmark.report import edge_lines, profile_line
from invlearn_ray.experiments.datasets import DatasetSpec


def test_the_report_describes_a_narrowed_profile_by_its_grid_not_its_canned_text():
    standard = PROFILES["standard"]
    assert profile_line(standard).endswith(standard.description + ".")
    narrowed = standard.replace(tune=None, datasets=(DatasetSpec("ml100k"),), entries=("ig",))
    line = profile_line(narrowed)
    assert "tuned" not in line and "ml100k" in line and "GMF, NeuMF; IG; 3 seed(s)" in line
    assert "at label fraction(s) 1;" in line


def test_a_dataset_given_by_path_is_described_as_built_not_at_the_profiles_fractions():
    sweep = PROFILES["sparse-sweep"]
    narrowed = sweep.replace(datasets=(DatasetSpec("path", path="/data/mv1m-10pct"),))
    line = profile_line(narrowed)
    assert "mv1m-10pct as built;" in line and "fraction" not in line


def test_the_report_names_every_study_whose_best_value_sat_at_a_range_end():
    assert edge_lines({}) == []
    (line,) = edge_lines(
        {Cell("ml100k", "gmf", "none"): ["init_scale = 0.11 (low end of loguniform [0.1, 30])"]}
    )
    assert "widen the range" in line
    assert "ml100k/GMF/None: init_scale = 0.11 (low end of loguniform [0.1, 30])" in line
