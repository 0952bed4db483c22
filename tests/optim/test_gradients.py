"""Row gradients and their reduction, in one process (the multi-process exchange:
test_collective.py)."""

from __future__ import annotations

import torch

from invlearn_ray.optim.collective import LocalCollective
from invlearn_ray.optim.gradients import RowGradient, WorkerMean, sum_row_gradients


def row_gradient(indices: list[int], seed: int, n_rows: int = 20) -> RowGradient:
    generator = torch.Generator().manual_seed(seed)
    return RowGradient(
        torch.tensor(indices, dtype=torch.int64),
        torch.randn(len(indices), 3, generator=generator),
        n_rows,
    )


def test_sum_of_row_gradients_is_the_sum_of_their_dense_forms():
    parts = [row_gradient([1, 4, 7], 0), row_gradient([0, 4, 19], 1), row_gradient([], 2)]
    total = sum_row_gradients(parts)
    assert total.indices.tolist() == [0, 1, 4, 7, 19]
    torch.testing.assert_close(total.dense(), sum(part.dense() for part in parts))


def test_row_gradient_at_any_ids_reads_zero_off_its_rows():
    grad = row_gradient([3, 8], 0)
    ids = torch.tensor([8, 0, 3, 19, 8])
    torch.testing.assert_close(grad.at(ids), grad.dense()[ids])
    empty = RowGradient(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3), 20)
    assert torch.equal(empty.at(ids), torch.zeros(5, 3))


def test_one_process_mean_divides_dense_and_row_gradients_by_the_count():
    rows, head = row_gradient([2, 5], 0), torch.tensor([4.0, -2.0])
    collective = LocalCollective()
    mean = WorkerMean(collective)({"table": rows, "head": head.clone()}, 4)
    torch.testing.assert_close(mean["table"].dense(), rows.dense() / 4)
    torch.testing.assert_close(mean["head"], head / 4)
    assert list(mean) == ["table", "head"]
    assert collective.stats.calls == 0
