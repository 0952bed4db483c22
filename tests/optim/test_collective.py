"""The touched-row exchange between real processes (gloo on localhost, no Ray) equals the dense
all-reduce, and leaves every worker with bit-identical results."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp

from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.optim.gradients import RowGradient, WorkerMean, sum_row_gradients

WORLD = 3
SMALL_TABLE = 50
# Row ids whose int64 bits, read as float32, are NaN / infinity / denormal patterns, and ids
# beyond 2^32: the exchange carries indices bit-cast into the float buffer and must not alter
# them. The table is never densified, so its size can be that of a 10^12-row table.
HUGE_TABLE = 2**40
ODD_IDS = [3, 0x7F800000, 0x7F800001, 0x7FC00001, 0xFFFFFFFF, 2**33 + 5, HUGE_TABLE - 1]
# Rows of the small table each rank touches, step by step: the first step starts from no
# capacity, the second outgrows it on rank 1 only, the third fits (rank 2 touches none).
SMALL_ROWS = [(12, 17, 0), (12, 40, 0), (12, 17, 0)]


def local_gradients(rank: int, step: int) -> tuple[dict, int]:
    """Rank ``rank``'s gradient sums and row count at ``step``."""
    generator = torch.Generator().manual_seed(10 * step + rank)
    small = torch.randperm(SMALL_TABLE, generator=generator)[: SMALL_ROWS[step][rank]]
    odd = torch.tensor(ODD_IDS[2 * rank : 2 * rank + 3], dtype=torch.int64)  # overlapping
    grads = {
        "small": RowGradient(
            torch.sort(small).values, torch.randn(len(small), 4, generator=generator), SMALL_TABLE
        ),
        "head": torch.randn(5, generator=generator),
        "huge": RowGradient(odd, torch.randn(len(odd), 2, generator=generator), HUGE_TABLE),
        "bias": torch.randn(1, generator=generator),
    }
    return grads, 10 + rank + step


def exchange_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        collective = TorchDistributedCollective()
        mean = WorkerMean(collective)
        results = []
        for step in range(len(SMALL_ROWS)):
            grads, count = local_gradients(rank, step)
            dense = [grads["small"].dense(), grads["head"].clone(), grads["bias"].clone()]
            total = torch.tensor([float(count)])
            for tensor in (*dense, total):
                torch.distributed.all_reduce(tensor)
            calls = collective.stats.calls
            got = mean(grads, count)
            results.append(
                {
                    "calls": collective.stats.calls - calls,
                    "names": list(got),
                    "small": got["small"].dense(),
                    "head": got["head"],
                    "bias": got["bias"],
                    "huge_indices": got["huge"].indices,
                    "huge_rows": got["huge"].rows,
                    "reference_small": dense[0] / total,
                    "reference_head": dense[1] / total,
                    "reference_bias": dense[2] / total,
                }
            )
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_row_exchange_equals_the_dense_all_reduce_on_every_worker(tmp_path):
    mp.spawn(exchange_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    workers = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    for step in range(len(SMALL_ROWS)):
        local = [local_gradients(rank, step) for rank in range(WORLD)]
        expected_huge = sum_row_gradients([grads["huge"] for grads, _ in local])
        total = sum(count for _, count in local)
        for worker in workers:
            result = worker[step]
            assert result["names"] == ["small", "head", "huge", "bias"]
            for name in ("small", "head", "bias"):
                torch.testing.assert_close(result[name], result[f"reference_{name}"])
            assert torch.equal(result["huge_indices"], expected_huge.indices)
            torch.testing.assert_close(result["huge_rows"], expected_huge.rows / total)
            # Every worker sums the same gathered parts in the same order: identical bits.
            for key, value in result.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, workers[0][step][key]), key
        assert sorted(set(ODD_IDS)) == expected_huge.indices.tolist()
    # One all-gather per step, plus one more when a worker outgrew the agreed capacity.
    assert [result["calls"] for result in workers[0]] == [2, 2, 1]
