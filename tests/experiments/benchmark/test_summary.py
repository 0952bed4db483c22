"""Aggregation over seeds."""

from __future__ import annotations

import math
import statistics

import pytest

from invlearn_ray.experiments.benchmark.summary import mean_std


def test_mean_std_is_the_sample_standard_deviation_and_skips_undefined_values():
    values = [0.61, 0.65, 0.58, math.nan]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values[:3]))
    assert std == pytest.approx(statistics.stdev(values[:3]))
    assert math.isnan(mean_std([0.5])[1])
    assert all(math.isnan(v) for v in mean_std([]))
