"""The sample-efficiency benchmark's arithmetic (benchmarks/search_curves.py): best after k
trials in draw order, and when a search first reaches another's best (the studies themselves
need Ray and minutes)."""

from __future__ import annotations

import pytest
from support.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/search_curves.py", "search_curves")


def test_best_after_k_reads_only_the_first_k_trials_and_skips_failed_ones(bench):
    scores = [0.51, None, 0.63, float("nan"), 0.58, 0.70]
    assert bench.best_after(scores, 1) == 0.51
    assert bench.best_after(scores, 2) == 0.51
    assert bench.best_after(scores, 5) == 0.63
    assert bench.best_after(scores, 64) == 0.70  # fewer trials than k: all of them
    assert bench.best_after([None, None], 2) is None


def test_best_so_far_never_falls(bench):
    assert bench.best_so_far([None, 0.5, 0.4, 0.6]) == [None, 0.5, 0.5, 0.6]


def test_first_reaching_counts_trials_from_one_and_is_none_when_never_reached(bench):
    curve = [None, 0.5, 0.5, 0.6, 0.7]
    assert bench.first_reaching(curve, 0.6) == 4
    assert bench.first_reaching(curve, 0.5) == 2
    assert bench.first_reaching(curve, 0.71) is None


def test_mean_curve_averages_seeds_where_every_seed_has_a_score(bench):
    assert bench.mean_curve([[None, 0.4, 0.6], [0.2, 0.6, 0.6]]) == [None, 0.5, 0.6]


def test_checkpoints_double_from_8_and_end_at_the_study_size(bench):
    assert bench.checkpoints(64) == [8, 16, 32, 64]
    assert bench.checkpoints(48) == [8, 16, 32, 48]
    assert bench.checkpoints(4) == [4]


def test_draw_index_reads_the_counter_tune_puts_in_a_trial_folder_name(bench):
    name = "run_trial_2352d7d6_12_dual_lr_ratio=1.0000,lr=0.0017_2026-12-07_18-38-47"
    assert bench.draw_index("2352d7d6", name) == 12
    with pytest.raises(ValueError, match="2352d7d6"):
        bench.draw_index("2352d7d6", "run_trial_other_3_x")
