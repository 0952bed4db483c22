"""The touched-row exchange between real processes (gloo on localhost, no Ray) equals the dense
all-reduce, and leaves every worker with bit-identical results."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp

from invlearn_ray.core.collective import TorchDistributedCollective
from invlearn_ray.core.gradients import RowGradient, reduce_mean, sum_row_gradients

WORLD = 3
SMALL_TABLE = 50
# Row ids whose int64 bits, read as float32, are NaN / infinity / denormal patterns, and ids
# beyond 2^32: the exchange carries indices bit-cast into the float buffer and must not alter
# them. The table is never densified, so its size can be that of a 10^12-row table.
HUGE_TABLE = 2**40
ODD_IDS = [3, 0x7F800000, 0x7F800001, 0x7FC00001, 0xFFFFFFFF, 2**33 + 5, HUGE_TABLE - 1]


def local_gradients(rank: int) -> tuple[dict, int]:
    """Rank ``rank``'s gradient sums and row count; rank 2 touches no row of the small table."""
    generator = torch.Generator().manual_seed(rank)
    small = (
        torch.zeros(0, dtype=torch.int64)
        if rank == 2
        else torch.unique(torch.randint(0, SMALL_TABLE, (12 + 5 * rank,), generator=generator))
    )
    odd = torch.tensor(ODD_IDS[2 * rank : 2 * rank + 3], dtype=torch.int64)  # overlapping
    grads = {
        "small": RowGradient(small, torch.randn(len(small), 4, generator=generator), SMALL_TABLE),
        "head": torch.randn(5, generator=generator),
        "huge": RowGradient(odd, torch.randn(len(odd), 2, generator=generator), HUGE_TABLE),
    }
    return grads, 10 + rank


def exchange_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        grads, count = local_gradients(rank)
        dense = {"small": grads["small"].dense(), "head": grads["head"].clone()}
        total = torch.tensor([float(count)])
        for tensor in (*dense.values(), total):
            torch.distributed.all_reduce(tensor)
        mean = reduce_mean(grads, count, TorchDistributedCollective())
        torch.save(
            {
                "mean_small": mean["small"].dense(),
                "mean_huge_indices": mean["huge"].indices,
                "mean_huge_rows": mean["huge"].rows,
                "mean_head": mean["head"],
                "reference_small": dense["small"] / total,
                "reference_head": dense["head"] / total,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_row_exchange_equals_the_dense_all_reduce_on_every_worker(tmp_path):
    mp.spawn(exchange_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    parts = [local_gradients(rank)[0]["huge"] for rank in range(WORLD)]
    expected_huge = sum_row_gradients(parts)
    total = sum(local_gradients(rank)[1] for rank in range(WORLD))
    for result in results:
        torch.testing.assert_close(result["mean_small"], result["reference_small"])
        torch.testing.assert_close(result["mean_head"], result["reference_head"])
        assert torch.equal(result["mean_huge_indices"], expected_huge.indices)
        torch.testing.assert_close(result["mean_huge_rows"], expected_huge.rows / total)
        # Every worker sums the same gathered parts in the same order: identical bits.
        for key, value in result.items():
            assert torch.equal(value, results[0][key]), key
    assert sorted(set(ODD_IDS)) == expected_huge.indices.tolist()
