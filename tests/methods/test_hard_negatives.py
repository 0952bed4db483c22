"""DNS and SRNS candidate selection, and the score history SRNS reads its variance from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invlearn_ray.methods.hard_negatives import (
    ScoreHistory,
    dns_select,
    select_candidates,
    srns_alpha_schedule,
    srns_likelihood,
    srns_select,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# DNS
# ----------------------------------------------------------------------------------------------


def test_dns_picks_the_highest_scored_candidate_of_each_row():
    logits = torch.randn(50, 8, generator=_generator())
    chosen = dns_select(logits)
    expected = [max(range(8), key=lambda j, row=row: row[j]) for row in logits.tolist()]
    assert chosen.tolist() == expected


def test_dns_handles_extreme_scores():
    logits = torch.tensor([[-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]])
    assert dns_select(logits).tolist() == [1, 0]


def test_select_candidates_returns_the_chosen_items():
    items = torch.tensor([[10, 11, 12], [20, 21, 22]])
    assert select_candidates(items, torch.tensor([2, 0])).tolist() == [12, 20]


def test_dns_rejects_a_flat_score_vector():
    with pytest.raises(ValueError, match=r"\[batch, candidates\]"):
        dns_select(torch.zeros(5))


# ----------------------------------------------------------------------------------------------
# ScoreHistory
# ----------------------------------------------------------------------------------------------


def test_history_variance_matches_numpy_over_recorded_epochs():
    history = ScoreHistory(num_rows=6, num_candidates=4, window=5, dtype=torch.float64)
    records = torch.rand(3, 6, 4, generator=_generator(), dtype=torch.float64)
    rows = torch.arange(6)
    for epoch in range(3):
        history.update(rows, records[epoch])
    expected = np.var(records.numpy(), axis=0)  # population variance, as SRNS
    np.testing.assert_allclose(history.variance(rows).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(history.std(rows).numpy(), np.sqrt(expected), rtol=1e-12)


def test_history_keeps_only_the_last_window_epochs():
    history = ScoreHistory(num_rows=2, num_candidates=3, window=3, dtype=torch.float64)
    records = torch.rand(7, 2, 3, generator=_generator(1), dtype=torch.float64)
    rows = torch.tensor([0, 1])
    for epoch in range(7):
        history.update(rows, records[epoch])
    expected = np.var(records[-3:].numpy(), axis=0)
    np.testing.assert_allclose(history.variance(rows).numpy(), expected, rtol=1e-12)


def test_history_tracks_rows_updated_at_different_times_separately():
    history = ScoreHistory(num_rows=3, num_candidates=2, window=4, dtype=torch.float64)
    history.update(torch.tensor([0, 2]), torch.tensor([[0.0, 1.0], [0.5, 0.5]]))
    history.update(torch.tensor([0]), torch.tensor([[1.0, 1.0]]))
    history.update(torch.tensor([2, 0]), torch.tensor([[0.5, 0.1], [0.0, 1.0]]))
    variance = history.variance(torch.tensor([0, 1, 2]))
    expected_row0 = np.var([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]], axis=0)
    expected_row2 = np.var([[0.5, 0.5], [0.5, 0.1]], axis=0)
    np.testing.assert_allclose(variance[0].numpy(), expected_row0, rtol=1e-6)
    assert variance[1].tolist() == [0.0, 0.0]  # never recorded
    np.testing.assert_allclose(variance[2].numpy(), expected_row2, rtol=1e-6)


def test_history_variance_is_zero_with_a_single_record():
    history = ScoreHistory(num_rows=1, num_candidates=2)
    history.update(torch.tensor([0]), torch.tensor([[0.9, 0.1]]))
    assert history.variance(torch.tensor([0])).tolist() == [[0.0, 0.0]]


def test_history_rejects_a_row_repeated_in_one_update():
    history = ScoreHistory(num_rows=4, num_candidates=2)
    with pytest.raises(ValueError, match="repeats a row"):
        history.update(torch.tensor([1, 1]), torch.zeros(2, 2))


def test_history_rejects_rows_outside_its_range_naming_the_position():
    history = ScoreHistory(num_rows=4, num_candidates=2)
    with pytest.raises(IndexError, match=r"row_index\[1\] = 4 is outside \[0, 4\)"):
        history.variance(torch.tensor([0, 4]))


def test_history_rejects_scores_of_the_wrong_shape():
    history = ScoreHistory(num_rows=4, num_candidates=3)
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        history.update(torch.tensor([0, 1]), torch.zeros(2, 2))


def test_history_needs_a_window_of_at_least_two():
    with pytest.raises(ValueError, match="window >= 2"):
        ScoreHistory(num_rows=1, num_candidates=1, window=1)


# ----------------------------------------------------------------------------------------------
# SRNS
# ----------------------------------------------------------------------------------------------


def test_srns_likelihood_is_probability_candidate_outranks_positive():
    candidates = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    pos = torch.tensor([1.0, 1.0])
    expected = torch.sigmoid(candidates - pos.unsqueeze(1))
    torch.testing.assert_close(srns_likelihood(candidates, pos), expected)
    torch.testing.assert_close(srns_likelihood(candidates), torch.sigmoid(candidates))


def test_srns_with_zero_alpha_is_dns():
    logits = torch.randn(40, 6, generator=_generator(2))
    std = torch.rand(40, 6, generator=_generator(3))
    pos = torch.randn(40, generator=_generator(4))
    assert srns_select(logits, std, alpha=0.0, pos_logits=pos).tolist() == (
        dns_select(logits).tolist()
    )


def test_srns_prefers_a_fluctuating_candidate_over_a_steadily_high_one():
    # Candidate 0: highest score, steady (a likely false negative). Candidate 1: a bit lower,
    # fluctuating (an informative true negative). Candidate 2: low and steady.
    logits = torch.tensor([[2.0, 1.5, -3.0]])
    std = torch.tensor([[0.0, 0.2, 0.0]])
    assert dns_select(logits).item() == 0
    assert srns_select(logits, std, alpha=1.0).item() == 1


def test_srns_selects_fewer_false_negatives_than_dns_over_simulated_epochs():
    # Per row, candidate 0 is a false negative whose score stays high; the others are true
    # negatives whose scores move from epoch to epoch (the observation SRNS rests on).
    rows, candidates, epochs = 200, 8, 6
    gen = _generator(5)
    false_negative_score = 1.0 + 0.02 * torch.randn(epochs, rows, generator=gen)
    true_negative_score = 0.5 * torch.randn(epochs, rows, candidates - 1, generator=gen)
    scores = torch.cat([false_negative_score.unsqueeze(2), true_negative_score], dim=2)

    history = ScoreHistory(rows, candidates, window=5)
    row_index = torch.arange(rows)
    dns_false, srns_false = 0, 0
    for epoch in range(epochs):
        logits = scores[epoch]
        alpha = srns_alpha_schedule(epoch, alpha=5.0, warmup_epochs=2)
        srns_choice = srns_select(logits, history.std(row_index), alpha)
        history.update(row_index, srns_likelihood(logits))
        if epoch >= 3:  # once the history holds a few epochs
            dns_false += int((dns_select(logits) == 0).sum())
            srns_false += int((srns_choice == 0).sum())
    assert dns_false > 0.2 * 3 * rows
    assert srns_false < 0.25 * dns_false


def test_srns_alpha_warms_up_linearly():
    assert [srns_alpha_schedule(e, alpha=2.0, warmup_epochs=4) for e in range(6)] == [
        0.0,
        0.5,
        1.0,
        1.5,
        2.0,
        2.0,
    ]
    assert srns_alpha_schedule(0, alpha=2.0, warmup_epochs=0) == 2.0


def test_srns_rejects_std_of_another_shape():
    with pytest.raises(ValueError, match="ScoreHistory.std"):
        srns_select(torch.zeros(3, 4), torch.zeros(3, 5), alpha=1.0)


def test_srns_rejects_negative_alpha():
    with pytest.raises(ValueError, match="alpha"):
        srns_select(torch.zeros(3, 4), torch.zeros(3, 4), alpha=-1.0)
